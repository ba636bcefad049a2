//! The seeded world, built through the API with the model beside it.

use super::*;

pub(super) const ACTION_PATTERNS: &[&str] = &[
    "*",
    "svc:*",
    "svc:device:*",
    "svc:doc:*",
    "svc:device:cmd:*",
    "svc:doc:share:*",
    "svc:device:read",
    "svc:device:write",
    "svc:device:cmd:reboot",
    "svc:doc:read",
    "svc:doc:share:grant",
    "iam:*",
    "iam:user:*",
    "iam:user:read",
    "iam:group:update",
    "other:thing:do",
];

/// Concrete actions asked about.
pub(super) const ACTIONS: &[&str] = &[
    "svc:device:read",
    "svc:device:write",
    "svc:device:delete",
    "svc:device:cmd:reboot",
    "svc:device:cmd:flash",
    "svc:doc:read",
    "svc:doc:write",
    "svc:doc:share:grant",
    "svc:doc:share:revoke",
    "iam:user:read",
    "iam:user:delete",
    "iam:group:update",
    "other:thing:do",
];

pub(super) const RESOURCE_PATTERNS: &[&str] = &[
    "*",
    "krn:svc:*",
    "krn:svc:t1:*",
    "krn:svc:t1::*",
    "krn:iam:t1:*",
    "krn:svc:t1::device/*",
    "krn:svc:t1::doc/*",
    "krn:svc:t1::device/floor1/*",
    "krn:svc:t1::device/floor1/room2/*",
    "krn:svc:t1::doc/archive/*",
    "krn:iam:t1::user/*",
    "krn:iam:t1::user/org1/*",
    "krn:iam:t1::user/org1/team/*",
    "krn:iam:t1::group/*",
    "krn:svc:t1::device/ghost",
];

pub(super) const PRINCIPAL_PATTERNS: &[&str] = &[
    "krn:iam:t1::user/*",
    "krn:iam:t1::user/org1/*",
    "krn:iam:t1::user/org1/team/*",
    "krn:iam:t1::group/*",
    "krn:iam:t1::group/g0/*",
    "krn:iam:t1:*",
    "krn:iam:t1::user/org1/ghost",
    ADMIN_ROLE,
];

/// KRNs asked about besides the registered resources and the principals.
pub(super) const EXTRA_RESOURCES: &[&str] = &[
    "krn:svc:t1::device/ghost",
    "krn:svc:t1::device/floor1/ghost",
    "krn:svc:t1::doc/archive/old",
    "krn:svc:t2::device/d0",
    "krn:other:t1::thing/x",
    "krn:iam:t1::user/org1/team/nobody",
    "krn:iam:t1::policy/p0",
];

pub(super) struct World {
    pub(super) model: Model,
    pub(super) users: Vec<String>,
    pub(super) groups: Vec<String>,
    /// Identity policies (p0.., the pool policies, and the two made later).
    pub(super) policies: Vec<String>,
    pub(super) resources: Vec<String>,
    /// Resource -> its resource-based policy KRN.
    pub(super) resource_policies: BTreeMap<String, String>,
    pub(super) pools: Vec<String>,
    /// User -> path.
    pub(super) user_paths: BTreeMap<String, String>,
    /// Resources deleted by `mutate` (still asked about, no longer registered).
    pub(super) deleted: BTreeSet<String>,
}

pub(super) fn random_statement(rng: &mut Rng, w: &World, resource_policy: Option<&str>) -> MStmt {
    let deny = rng.chance(25);
    // Most denies are narrow (no blanket action or tenant-wide resource), or they drown the rest.
    let narrow = deny && rng.chance(75);
    let action_pool = if narrow {
        &ACTION_PATTERNS[2..]
    } else {
        ACTION_PATTERNS
    };
    let mut actions: Vec<String> = rng
        .some(action_pool, 1, if deny { 2 } else { 3 })
        .into_iter()
        .map(String::from)
        .collect();
    if actions.is_empty() {
        actions.push("svc:*".into());
    }
    let resources = match resource_policy {
        Some(r) => {
            if rng.chance(50) {
                vec![r.to_string()]
            } else {
                Vec::new()
            }
        }
        None => {
            let patterns = if narrow {
                &RESOURCE_PATTERNS[5..]
            } else {
                RESOURCE_PATTERNS
            };
            let mut pool: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
            pool.extend(w.resources.iter().cloned());
            pool.extend(w.users.iter().take(4).cloned());
            // Exact resources more often than wildcards, so exact matches are common.
            let mut out = rng.some(&pool, 1, 3);
            if rng.chance(40) && !w.resources.is_empty() {
                let r = rng.pick(&w.resources).clone();
                if !out.contains(&r) {
                    out.push(r);
                }
            }
            out
        }
    };
    let mut principal_pool: Vec<String> =
        PRINCIPAL_PATTERNS.iter().map(|s| s.to_string()).collect();
    principal_pool.extend(w.users.iter().cloned());
    principal_pool.extend(w.groups.iter().cloned());
    // Resource policies need principals; a third of identity statements name some too.
    let principals = if resource_policy.is_some() || rng.chance(30) {
        rng.some(&principal_pool, 1, 2)
    } else {
        Vec::new()
    };
    MStmt {
        deny,
        actions,
        resources,
        principals,
    }
}

/// `POST /api/v1/{collection}`: 201 with the entity, `ETag: "1"`, and a `Location` that answers
/// the same entity.
pub(super) fn create(addr: SocketAddr, collection: &str, body: &Value, what: &str) -> Value {
    let r = call(addr, "POST", &format!("/api/v1/{collection}"), Some(body));
    let d = expect(&r, 201, what)["data"].clone();
    assert_eq!(r.header("etag"), Some("\"1\""), "{what}");
    let location = r
        .header("location")
        .unwrap_or_else(|| panic!("{what}: no Location"));
    assert!(
        location.starts_with(&format!("/api/v1/{collection}/")),
        "{what}: Location {location}"
    );
    let got = expect(&call(addr, "GET", location, None), 200, location);
    assert_eq!(got["data"]["krn"], d["krn"], "{what}: Location {location}");
    assert_eq!(got["data"]["version"], 1, "{what}");
    d
}

pub(super) fn post_policy(addr: SocketAddr, rng: &mut Rng, name: &str, stmts: &[MStmt]) -> String {
    let krn = format!("krn:iam:{T}::policy/{name}");
    let cap = rng.chance(15);
    let body = json!({
        "name": name, "tenantID": T, "description": format!("policy {name}"),
        "statements": stmts.iter().map(|s| s.to_json(cap)).collect::<Vec<_>>(),
    });
    let d = create(addr, "policies", &body, &format!("create policy {name}"));
    assert_eq!(d["krn"], krn.as_str());
    assert_eq!(d["id"], raw_id(&krn).as_str());
    assert_eq!(d["type"], "identity");
    assert_eq!(d["version"], 1);
    assert_eq!(
        d["statements"].as_array().map(Vec::len),
        Some(stmts.len()),
        "{d}"
    );
    krn
}

/// Build the world through the API and the model beside it.
pub(super) fn build_world(addr: SocketAddr) -> World {
    let mut rng = Rng::new(seed(SEED_WORLD));
    let mut w = World {
        model: Model::default(),
        users: Vec::new(),
        groups: Vec::new(),
        policies: Vec::new(),
        resources: Vec::new(),
        resource_policies: BTreeMap::new(),
        pools: Vec::new(),
        user_paths: BTreeMap::new(),
        deleted: BTreeSet::new(),
    };
    // The base policy of configuration (default `tenant-admin`), instantiated for t1.
    w.model.policies.insert(
        BASE_POLICY.into(),
        MPolicy {
            statements: vec![MStmt {
                deny: false,
                actions: vec!["iam:*".into()],
                resources: vec![format!("krn:iam:{T}:*")],
                principals: vec![ADMIN_ROLE.into()],
            }],
            ..MPolicy::default()
        },
    );

    // Noise in another tenant: t1's decisions must never see it (spec §3.2, tenant isolation).
    let intruder = json!({"name": "intruder", "tenantID": "t2", "statements": [
        {"effect": "deny", "actions": ["*"], "resources": ["*"], "principals": ["*"]},
        {"effect": "allow", "actions": ["*"], "resources": ["*"], "principals": ["*"]}]});
    expect(
        &call(addr, "POST", "/api/v1/policies", Some(&intruder)),
        201,
        "t2 noise",
    );

    // Groups: g0 > g1 > g2 is a three-level chain, the rest nest at random (depth <= 3).
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..8 {
        let name = format!("g{i}");
        let parent = match i {
            0 => None,
            1 | 2 => Some(w.groups[i - 1].clone()),
            _ if rng.chance(35) => None,
            _ => {
                let shallow: Vec<String> =
                    w.groups.iter().filter(|g| depth[*g] < 3).cloned().collect();
                Some(rng.pick(&shallow).clone())
            }
        };
        let krn = match &parent {
            None => format!("krn:iam:{T}::group/{name}"),
            Some(p) => format!("{p}/{name}"),
        };
        let mut body = json!({"name": name, "tenantID": T, "displayName": format!("Group {i}")});
        if let Some(p) = &parent {
            body["parentID"] = json!(raw_id(p));
        }
        let d = create(addr, "groups", &body, &format!("create group {name}"));
        assert_eq!(d["krn"], krn.as_str(), "{d}");
        let dp = parent.as_ref().map_or(1, |p| depth[p] + 1);
        depth.insert(krn.clone(), dp);
        if let Some(p) = parent {
            assert_eq!(d["parentID"], raw_id(&p).as_str());
            w.model.parent.insert(krn.clone(), p);
        }
        w.groups.push(krn);
    }

    // Users: under no path, /org1 or /org1/team (first the path-less ones, so early users exist
    // for statements below).
    let paths = ["", "/org1", "/org1/team"];
    let mut user_specs = Vec::new();
    for i in 0..15 {
        let path = if i < 3 { paths[i] } else { *rng.pick(&paths) };
        let krn = format!("krn:iam:{T}::user{path}/u{i}");
        user_specs.push((i, path, krn.clone()));
        w.users.push(krn.clone());
        w.user_paths.insert(krn, path.to_string());
    }

    // Identity policies p0..p19 (statements may name the users above, created next).
    for i in 0..20 {
        let n = 1 + rng.below(4);
        let stmts: Vec<MStmt> = (0..n)
            .map(|_| random_statement(&mut rng, &w, None))
            .collect();
        let krn = post_policy(addr, &mut rng, &format!("p{i}"), &stmts);
        w.model.policies.insert(
            krn.clone(),
            MPolicy {
                statements: stmts,
                ..MPolicy::default()
            },
        );
        w.policies.push(krn);
    }

    for (i, path, krn) in &user_specs {
        let pw = format!("pass-word-{i}");
        let mut body = json!({"username": format!("u{i}"), "password": pw, "confirmPassword": pw,
            "tenantID": T, "enabled": rng.chance(70)});
        if !path.is_empty() {
            body["path"] = json!(path);
        } else if rng.chance(50) {
            body["path"] = json!("/");
        }
        if rng.chance(50) {
            body["email"] = json!(format!("u{i}@example.com"));
        }
        let groups = if rng.chance(50) {
            rng.some(&w.groups, 1, 1)
        } else {
            Vec::new()
        };
        let policies = if rng.chance(30) {
            rng.some(&w.policies, 1, 2)
        } else {
            Vec::new()
        };
        body["groups"] = json!(groups.iter().map(|g| raw_id(g)).collect::<Vec<_>>());
        body["policyIDs"] = json!(policies.iter().map(|p| raw_id(p)).collect::<Vec<_>>());
        let d = create(addr, "users", &body, &format!("create user u{i}"));
        assert_eq!(d["krn"], krn.as_str(), "{d}");
        if body["enabled"] == false {
            w.model.disabled.insert(krn.clone());
        }
        assert_eq!(d["path"], if path.is_empty() { "/" } else { path });
        for g in groups {
            w.model.groups_of.entry(krn.clone()).or_default().insert(g);
        }
        for p in policies {
            w.model
                .policies
                .get_mut(&p)
                .unwrap()
                .attached
                .insert(krn.clone());
        }
    }

    // More members: through the group and through the user.
    for g in w.groups.clone() {
        let candidates: Vec<String> = w
            .users
            .iter()
            .filter(|u| !w.model.groups_of.get(*u).is_some_and(|s| s.contains(&g)))
            .cloned()
            .collect();
        let add = rng.some(&candidates, 0, 3);
        if add.is_empty() {
            continue;
        }
        let body = json!({"userIDs": add.iter().map(|u| raw_id(u)).collect::<Vec<_>>()});
        expect(
            &call(
                addr,
                "POST",
                &format!("/api/v1/groups/{}/members/add", id(&g)),
                Some(&body),
            ),
            204,
            "add members",
        );
        for u in add {
            w.model.groups_of.entry(u).or_default().insert(g.clone());
        }
    }
    for u in w.users.clone().iter().step_by(4) {
        let candidates: Vec<String> = w
            .groups
            .iter()
            .filter(|g| !w.model.groups_of.get(u).is_some_and(|s| s.contains(*g)))
            .cloned()
            .collect();
        let add = rng.some(&candidates, 1, 2);
        let body = json!({"groupIDs": add.iter().map(|g| raw_id(g)).collect::<Vec<_>>()});
        expect(
            &call(
                addr,
                "POST",
                &format!("/api/v1/users/{}/groups/add", id(u)),
                Some(&body),
            ),
            204,
            "user joins groups",
        );
        for g in add {
            w.model.groups_of.entry(u.clone()).or_default().insert(g);
        }
    }

    // Attachments to users and groups, several policies per call.
    let targets: Vec<(String, &str)> = w
        .users
        .iter()
        .map(|u| (u.clone(), "users"))
        .chain(w.groups.iter().map(|g| (g.clone(), "groups")))
        .collect();
    for (target, kind) in targets {
        let candidates: Vec<String> = w
            .policies
            .iter()
            .filter(|p| !w.model.policies[*p].attached.contains(&target))
            .cloned()
            .collect();
        let hi = if kind == "groups" { 3 } else { 2 };
        let attach = rng.some(&candidates, 0, hi);
        if attach.is_empty() {
            continue;
        }
        let body = json!({"policyIDs": attach.iter().map(|p| raw_id(p)).collect::<Vec<_>>()});
        expect(
            &call(
                addr,
                "PUT",
                &format!("/api/v1/{kind}/{}/policies/attach", id(&target)),
                Some(&body),
            ),
            204,
            "attach",
        );
        for p in attach {
            w.model
                .policies
                .get_mut(&p)
                .unwrap()
                .attached
                .insert(target.clone());
        }
    }

    // Resources: six devices (template policy) and four docs (none), some under paths.
    for i in 0..10 {
        let (rtype, name, path) = if i < 6 {
            (
                "device",
                format!("d{i}"),
                *rng.pick(&["", "/floor1", "/floor1/room2", "/floor2"]),
            )
        } else {
            ("doc", format!("k{}", i - 6), *rng.pick(&["", "/archive"]))
        };
        let krn = format!("krn:svc:{T}::{rtype}{path}/{name}");
        let mut body =
            json!({"service": "svc", "resourceType": rtype, "name": name, "tenantID": T});
        if !path.is_empty() {
            body["path"] = json!(path);
        }
        let d = create(addr, "resources", &body, &format!("create resource {name}"));
        assert_eq!(d["krn"], krn.as_str(), "{d}");
        if rtype == "device" {
            let pk = format!("krn:iam:{T}::policy/resource/svc/{rtype}{path}/{name}");
            assert_eq!(d["policyID"], raw_id(&pk).as_str(), "{d}");
            w.model.policies.insert(
                pk.clone(),
                MPolicy {
                    statements: vec![
                        MStmt {
                            deny: false,
                            actions: vec!["svc:device:read".into(), "svc:device:cmd:*".into()],
                            resources: vec![krn.clone()],
                            principals: vec![format!("krn:iam:{T}::group/g0")],
                        },
                        MStmt {
                            deny: true,
                            actions: vec!["svc:device:cmd:flash".into()],
                            resources: Vec::new(),
                            principals: vec![format!("krn:iam:{T}::user/org1/team/*")],
                        },
                    ],
                    bound: Some(krn.clone()),
                    ..MPolicy::default()
                },
            );
            w.resource_policies.insert(krn.clone(), pk);
        } else {
            assert!(d.get("policyID").is_none(), "no template for doc: {d}");
        }
        w.resources.push(krn);
    }
    // The template's policy as stored.
    let d0 = w.resources[0].clone();
    let rp = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/resources/{}/policy", id(&d0)),
            None,
        ),
        200,
        "template policy",
    )["data"]
        .clone();
    assert_eq!(rp["type"], "resource");
    assert_eq!(rp["krn"], w.resource_policies[&d0].as_str());
    assert_eq!(rp["resourceID"], raw_id(&d0).as_str());
    assert_eq!(rp["statements"][0]["resources"], json!([d0]));
    assert_eq!(
        rp["statements"][0]["principals"],
        json!([format!("krn:iam:{T}::group/g0")])
    );

    // Explicit resource policies: two docs get one, one device's template policy is replaced.
    for r in [
        w.resources[6].clone(),
        w.resources[7].clone(),
        w.resources[1].clone(),
    ] {
        let n = 1 + rng.below(3);
        let stmts: Vec<MStmt> = (0..n)
            .map(|_| random_statement(&mut rng, &w, Some(&r)))
            .collect();
        let body = json!({"description": "explicit",
            "statements": stmts.iter().map(|s| s.to_json(false)).collect::<Vec<_>>()});
        let replacing = w.resource_policies.contains_key(&r);
        let headers: &[(&str, &str)] = if replacing {
            &[("If-Match", "\"1\"")]
        } else {
            &[]
        };
        let d = expect(
            &call_json_with(
                addr,
                "PUT",
                &format!("/api/v1/resources/{}/policy", id(&r)),
                None,
                headers,
                Some(&body),
                TIMEOUT,
            )
            .unwrap(),
            200,
            "put resource policy",
        )["data"]
            .clone();
        assert_eq!(d["type"], "resource");
        assert_eq!(d["version"], if replacing { 2 } else { 1 });
        let pk = d["krn"].as_str().unwrap().to_string();
        let tail = r.split_once("::").unwrap().1;
        assert_eq!(pk, format!("krn:iam:{T}::policy/resource/svc/{tail}"));
        w.model.policies.insert(
            pk.clone(),
            MPolicy {
                statements: stmts,
                bound: Some(r.clone()),
                ..MPolicy::default()
            },
        );
        w.resource_policies.insert(r, pk);
    }

    // Pools: pool0 made with members, pool1 filled afterwards; each has its own policy, and
    // pool1 also gets one of the identity policies (which keeps its user attachments).
    for i in 0..2 {
        let name = format!("pool{i}");
        let krn = format!("krn:iam:{T}::pool/{name}");
        let members = rng.some(&w.resources, 3, 3);
        let mut body = json!({"name": name, "tenantID": T});
        if i == 0 {
            body["resourceIDs"] = json!(members.iter().map(|m| raw_id(m)).collect::<Vec<_>>());
        }
        let d = create(addr, "pools", &body, "create pool");
        assert_eq!(d["krn"], krn.as_str());
        if i == 1 {
            let b = json!({"resourceIDs": members.iter().map(|m| raw_id(m)).collect::<Vec<_>>()});
            expect(
                &call(
                    addr,
                    "POST",
                    &format!("/api/v1/pools/{}/resources/add", id(&krn)),
                    Some(&b),
                ),
                204,
                "pool members",
            );
        }
        for m in members {
            w.model.pools_of.entry(m).or_default().insert(krn.clone());
        }
        let stmts: Vec<MStmt> = (0..2)
            .map(|_| {
                let mut s = random_statement(&mut rng, &w, None);
                if s.principals.is_empty() {
                    s.principals = rng.some(&w.groups, 1, 2);
                }
                s
            })
            .collect();
        let pk = post_policy(addr, &mut rng, &format!("{name}-rules"), &stmts);
        let mut attached_ids = vec![raw_id(&pk)];
        let mut mp = MPolicy {
            statements: stmts,
            ..MPolicy::default()
        };
        mp.pools.insert(krn.clone());
        w.model.policies.insert(pk.clone(), mp);
        w.policies.push(pk);
        if i == 1 {
            let p = w.policies[rng.below(20)].clone();
            w.model
                .policies
                .get_mut(&p)
                .unwrap()
                .pools
                .insert(krn.clone());
            attached_ids.push(raw_id(&p));
        }
        expect(
            &call(
                addr,
                "PUT",
                &format!("/api/v1/pools/{}/policies/attach", id(&krn)),
                Some(&json!({ "policyIDs": attached_ids })),
            ),
            204,
            "attach to pool",
        );
        w.pools.push(krn);
    }
    w
}
