//! Documented cascades (deletes, detach, re-creation) applied to the world and the model.

use super::*;

pub(super) fn del(addr: SocketAddr, path: &str) {
    expect(&call(addr, "DELETE", path, None), 204, path);
    expect(
        &call(addr, "GET", path, None),
        404,
        &format!("{path} after delete"),
    );
}

/// Change the world through the API (deletes with their documented cascades, detach, member
/// removal, re-creation under the same KRN, replaced statements) and the model beside it.
pub(super) fn mutate(addr: SocketAddr, w: &mut World) -> usize {
    let mut rng = Rng::new(seed(SEED_MUTATE));
    let mut changes = 0;
    let m = &mut w.model;
    // A leaf group with members or attachments: they go with it.
    let leaf = w
        .groups
        .iter()
        .filter(|g| !m.parent.values().any(|p| p == *g))
        .max_by_key(|g| {
            m.groups_of.values().filter(|s| s.contains(*g)).count()
                + m.policies
                    .values()
                    .filter(|p| p.attached.contains(*g))
                    .count()
        })
        .unwrap()
        .clone();
    del(addr, &format!("/api/v1/groups/{}", id(&leaf)));
    m.parent.remove(&leaf);
    for gs in m.groups_of.values_mut() {
        gs.remove(&leaf);
    }
    for p in m.policies.values_mut() {
        p.attached.remove(&leaf);
    }
    w.groups.retain(|g| *g != leaf);
    changes += 1;

    // A member leaves a group.
    let (u, g) = m
        .groups_of
        .iter()
        .find_map(|(u, gs)| gs.iter().next().map(|g| (u.clone(), g.clone())))
        .unwrap();
    expect(
        &call(
            addr,
            "POST",
            &format!("/api/v1/groups/{}/members/remove", id(&g)),
            Some(&json!({"userIDs": [raw_id(&u)]})),
        ),
        204,
        "remove member",
    );
    m.groups_of.get_mut(&u).unwrap().remove(&g);
    changes += 1;

    // A policy is detached from a group.
    let (p, g) = m
        .policies
        .iter()
        .find_map(|(p, x)| {
            x.attached
                .iter()
                .find(|t| t.contains("::group/"))
                .map(|g| (p.clone(), g.clone()))
        })
        .unwrap();
    expect(
        &call(
            addr,
            "POST",
            &format!("/api/v1/groups/{}/policies/detach", id(&g)),
            Some(&json!({"policyIDs": [raw_id(&p)]})),
        ),
        204,
        "detach from group",
    );
    m.policies.get_mut(&p).unwrap().attached.remove(&g);
    changes += 1;

    // A resource leaves pool1.
    let pool1 = w.pools[1].clone();
    let r = m
        .pools_of
        .iter()
        .find(|(_, ps)| ps.contains(&pool1))
        .map(|(r, _)| r.clone())
        .unwrap();
    expect(
        &call(
            addr,
            "POST",
            &format!("/api/v1/pools/{}/resources/remove", id(&pool1)),
            Some(&json!({"resourceIDs": [raw_id(&r)]})),
        ),
        204,
        "pool member removal",
    );
    m.pools_of.get_mut(&r).unwrap().remove(&pool1);
    changes += 1;

    // A device in a pool is deleted: its resource policy and pool memberships go with it.
    let gone = w
        .resources
        .iter()
        .find(|r| {
            w.resource_policies.contains_key(*r)
                && m.pools_of.get(*r).is_some_and(|p| !p.is_empty())
        })
        .unwrap_or(&w.resources[0])
        .clone();
    del(addr, &format!("/api/v1/resources/{}", id(&gone)));
    expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/resources/{}/policy", id(&gone)),
            None,
        ),
        404,
        "policy of a deleted resource",
    );
    let rp = w.resource_policies.remove(&gone).unwrap();
    expect(
        &call(addr, "GET", &format!("/api/v1/policies/{}", id(&rp)), None),
        404,
        "resource policy of a deleted resource",
    );
    m.policies.remove(&rp);
    m.pools_of.remove(&gone);
    w.deleted.insert(gone.clone());
    changes += 1;

    // A user with groups and policies is deleted and made again: the new one starts bare.
    let u = w
        .users
        .iter()
        .max_by_key(|u| {
            m.groups_of.get(*u).map_or(0, BTreeSet::len)
                + m.policies
                    .values()
                    .filter(|p| p.attached.contains(*u))
                    .count()
        })
        .unwrap()
        .clone();
    del(addr, &format!("/api/v1/users/{}", id(&u)));
    m.groups_of.remove(&u);
    for p in m.policies.values_mut() {
        p.attached.remove(&u);
    }
    let name = u.rsplit('/').next().unwrap();
    let path = &w.user_paths[&u];
    let body = json!({"username": name, "path": if path.is_empty() { "/" } else { path },
        "password": "pass-word-again", "confirmPassword": "pass-word-again", "tenantID": T});
    let d = expect(
        &call(addr, "POST", "/api/v1/users", Some(&body)),
        201,
        "user again",
    );
    assert_eq!(d["data"]["krn"], u.as_str());
    for sub in ["policies", "groups"] {
        let v = expect(
            &call(
                addr,
                "GET",
                &format!("/api/v1/users/{}/{sub}", id(&u)),
                None,
            ),
            200,
            "bare user",
        );
        assert_eq!(v["count"], 0, "a user made again inherits old {sub}: {v}");
    }
    changes += 1;

    // An attached policy is deleted and made again with other statements: it starts unattached.
    let p = m
        .policies
        .iter()
        .filter(|(k, _)| k.contains("::policy/p"))
        .max_by_key(|(_, x)| x.attached.len() + x.pools.len())
        .map(|(k, _)| k.clone())
        .unwrap();
    del(addr, &format!("/api/v1/policies/{}", id(&p)));
    let name = p.rsplit('/').next().unwrap().to_string();
    let stmts: Vec<MStmt> = (0..3)
        .map(|_| random_statement(&mut rng, w, None))
        .collect();
    post_policy(addr, &mut rng, &name, &stmts);
    let m = &mut w.model;
    m.policies.insert(
        p.clone(),
        MPolicy {
            statements: stmts,
            ..MPolicy::default()
        },
    );
    changes += 1;

    // Statements of an attached policy are replaced (no version: last writer wins).
    let p = m
        .policies
        .iter()
        .filter(|(k, x)| k.contains("::policy/p") && !x.attached.is_empty())
        .map(|(k, _)| k.clone())
        .next()
        .unwrap();
    let stmts: Vec<MStmt> = (0..3)
        .map(|_| random_statement(&mut rng, w, None))
        .collect();
    let body = json!({"statements": stmts.iter().map(|s| s.to_json(false)).collect::<Vec<_>>()});
    expect(
        &call(
            addr,
            "PUT",
            &format!("/api/v1/policies/{}", id(&p)),
            Some(&body),
        ),
        200,
        "replace statements",
    );
    let m = &mut w.model;
    m.policies.get_mut(&p).unwrap().statements = stmts;
    changes += 1;

    // A doc is registered straight into pool1 (`poolIDs`).
    let k9 = format!("krn:svc:{T}::doc/k9");
    let body = json!({"service": "svc", "resourceType": "doc", "name": "k9", "tenantID": T,
        "poolIDs": [raw_id(&pool1)]});
    create(addr, "resources", &body, "resource into a pool");
    let v = expect(
        &call(addr, "GET", &format!("/api/v1/pools/{}", id(&pool1)), None),
        200,
        "pool1",
    );
    assert!(
        strings(&v["data"]["resourceIDs"]).contains(&raw_id(&k9)),
        "{v}"
    );
    let m = &mut w.model;
    m.pools_of
        .entry(k9.clone())
        .or_default()
        .insert(pool1.clone());
    w.resources.push(k9);
    changes += 1;

    // pool0 is deleted and made again empty: its attachments do not come back.
    let pool0 = w.pools[0].clone();
    del(addr, &format!("/api/v1/pools/{}", id(&pool0)));
    expect(
        &call(
            addr,
            "POST",
            "/api/v1/pools",
            Some(&json!({"name": "pool0", "tenantID": T})),
        ),
        201,
        "pool again",
    );
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/pools/{}/policies", id(&pool0)),
            None,
        ),
        200,
        "bare pool",
    );
    assert_eq!(
        v["count"], 0,
        "a pool made again inherits old policies: {v}"
    );
    for p in m.policies.values_mut() {
        p.pools.remove(&pool0);
    }
    for ps in m.pools_of.values_mut() {
        ps.remove(&pool0);
    }
    changes += 1;
    changes
}
