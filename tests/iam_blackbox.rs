#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

// Black-box acceptance test of IAM's REST API, driven over HTTP only, like an outside client.
//
// 1. A seeded pseudo-random world is built through the API in tenant t1: users under paths,
//    groups nested three deep with members, identity policies mixing allow and deny, exact and
//    wildcard actions and resources, with and without `principals`, attached to users and
//    groups; devices with the configured resource-policy template, explicit resource policies,
//    pools with members and policies; and a noisy policy in tenant t2 that t1 must never see.
// 2. An independent model (spec §3.2 and docs/ENGINE_API.md "Semantics") answers the same
//    questions; more than a thousand decisions asked through `/evaluate` (explained, plain,
//    `filterResources`), `/evaluate/actions`, `/evaluate/resources` and `/evaluate/simulate`
//    must agree with it: outcome and the deciding (policyID, statement) pairs.
// 3. Every list pages consistently in every sort and order; duplicates answer 409, stale
//    versions 412, and nothing changes.
// 4. Malformed and hostile requests answer their 4xx with a JSON `message` and change nothing.
// 5. After documented cascades (deletes, detach, re-creation under the same KRN) decisions
//    still agree with the model.
// The story runs on SQLite and, with IAM_TEST_POSTGRES_URL, on PostgreSQL. Seeds are fixed;
// IAM_BLACKBOX_SEED=<n> explores other worlds. Smaller tests at the end hold documented rules
// that need their own configuration or users.
//
// Nothing of the crate is used but `kaa::policy::Krn`, and only to compute base64 ids.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kaa::policy::Krn;
use serde_json::{Value, json};
use support::proc::{Resp, call_json_with, request};

const T: &str = "t1";
/// Seeds of the world and of the questions: change them to explore, keep them to reproduce.
const SEED_WORLD: u64 = 0x5EED_1A4A_2026_1125;
const SEED_ASK: u64 = 0x0A5C_0FF1_CE00_0042;
const SEED_RECHECK: u64 = 0x00C0_FFEE_0BAD_F00D;
const SEED_MUTATE: u64 = 0x0DE1_E7ED_0000_0007;

/// The resource-policy template of type `device` (service `svc`): group g0 may read and send
/// commands to a device, users under `/org1/team` may never flash it.
const CONFIG: &str = r#"
iam:
  resource-policy-templates:
    device:
      statements:
        - effect: allow
          actions: ["svc:device:read", "svc:device:cmd:*"]
          resources: ["${resource}"]
          principals: ["krn:iam:${tenant}::group/g0"]
        - effect: deny
          actions: ["svc:device:cmd:flash"]
          principals: ["krn:iam:${tenant}::user/org1/team/*"]
"#;

const BASE_POLICY: &str = "tenant-admin";
const ADMIN_ROLE: &str = "krn:iam:t1::role/tenant-admin";

// ---------------------------------------------------------------- PRNG

/// A seed, moved by `IAM_BLACKBOX_SEED` (a number) to explore other worlds; fixed otherwise.
fn seed(base: u64) -> u64 {
    let extra = std::env::var("IAM_BLACKBOX_SEED")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    base ^ extra.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// xorshift64: tiny, deterministic, good enough to pick things.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        (self.next() % n as u64) as usize
    }

    /// True with `percent` % probability.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, X>(&mut self, xs: &'a [X]) -> &'a X {
        &xs[self.below(xs.len())]
    }

    /// Between `lo` and `hi` distinct elements of `xs`.
    fn some<X: Clone + PartialEq>(&mut self, xs: &[X], lo: usize, hi: usize) -> Vec<X> {
        let n = (lo + self.below(hi - lo + 1)).min(xs.len());
        let mut out: Vec<X> = Vec::new();
        let mut tries = 0;
        while out.len() < n && tries < 10_000 {
            let x = self.pick(xs).clone();
            if !out.contains(&x) {
                out.push(x);
            }
            tries += 1;
        }
        out
    }
}

// ---------------------------------------------------------------- HTTP

/// This story's timeout, longer than `CALL_TIMEOUT`.
const TIMEOUT: Duration = Duration::from_secs(30);

fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    request(addr, method, path, headers, body, TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `call_json` with this story's [`TIMEOUT`].
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Resp {
    call_json_with(addr, method, path, None, &[], body, TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Assert the status and return the JSON body (Null when empty).
fn expect(r: &Resp, status: u16, what: &str) -> Value {
    assert_eq!(r.status, status, "{what}: body {}", text(r));
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// Standard base64 id of a KRN, as the API answers it.
fn raw_id(krn: &str) -> String {
    Krn::parse(krn)
        .unwrap_or_else(|e| panic!("test bug: `{krn}` is not a KRN: {e}"))
        .to_id()
}

/// The id of a KRN for a path: `=` (and `/`, `+`, never produced by KRN text) percent-encoded.
fn id(krn: &str) -> String {
    raw_id(krn)
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("not a string: {x}"))
                .to_string()
        })
        .collect()
}

// ---------------------------------------------------------------- the model

/// Spec §1.3 / §3.2 matching: a pattern ending in `*` matches by prefix, else by equality.
fn matches(value: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    }
}

#[derive(Clone, Debug, PartialEq)]
struct MStmt {
    deny: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    principals: Vec<String>,
}

impl MStmt {
    /// The statement as sent; `Allow`/`Deny` capitalised now and then (documented input form).
    fn to_json(&self, capital: bool) -> Value {
        let effect = match (self.deny, capital) {
            (false, false) => "allow",
            (false, true) => "Allow",
            (true, false) => "deny",
            (true, true) => "Deny",
        };
        let mut m = json!({ "effect": effect, "actions": self.actions });
        if !self.resources.is_empty() {
            m["resources"] = json!(self.resources);
        }
        if !self.principals.is_empty() {
            m["principals"] = json!(self.principals);
        }
        m
    }
}

#[derive(Clone, Debug, Default)]
struct MPolicy {
    statements: Vec<MStmt>,
    /// Users and groups the policy is attached to.
    attached: BTreeSet<String>,
    /// Pools the policy is attached to.
    pools: BTreeSet<String>,
    /// The resource of a resource-based policy.
    bound: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MDecision {
    outcome: &'static str,
    reasons: Vec<(String, usize)>,
}

#[derive(Default, Clone)]
struct Model {
    /// By policy id: the policy KRN, or the name of a base policy.
    policies: BTreeMap<String, MPolicy>,
    /// Group -> parent group.
    parent: BTreeMap<String, String>,
    /// User -> groups it is a direct member of.
    groups_of: BTreeMap<String, BTreeSet<String>>,
    /// Resource -> pools it is a member of.
    pools_of: BTreeMap<String, BTreeSet<String>>,
    /// Users created with `enabled: false`: every decision for them is a deny.
    disabled: BTreeSet<String>,
}

impl Model {
    /// The principal, its groups and all their ancestors, and the extra roles.
    fn principal_set(&self, principal: &str, roles: &[String]) -> BTreeSet<String> {
        let mut set = BTreeSet::from([principal.to_string()]);
        for g in self.groups_of.get(principal).into_iter().flatten() {
            let mut cur = Some(g.clone());
            while let Some(c) = cur {
                cur = self.parent.get(&c).cloned();
                set.insert(c);
            }
        }
        set.extend(roles.iter().cloned());
        set
    }

    /// The principal and its direct groups only (no ancestors): to see ancestors at work.
    fn direct_set(&self, principal: &str) -> BTreeSet<String> {
        let mut set = BTreeSet::from([principal.to_string()]);
        set.extend(self.groups_of.get(principal).into_iter().flatten().cloned());
        set
    }

    fn decide(&self, set: &BTreeSet<String>, action: &str, resource: &str) -> MDecision {
        if set.iter().any(|p| self.disabled.contains(p)) {
            return MDecision {
                outcome: "explicitDeny",
                reasons: Vec::new(),
            };
        }
        let none = BTreeSet::new();
        let pools = self.pools_of.get(resource).unwrap_or(&none);
        let (mut allow, mut deny) = (Vec::new(), Vec::new());
        for (id, p) in &self.policies {
            for (i, st) in p.statements.iter().enumerate() {
                let action_ok = st.actions.iter().any(|a| matches(action, a));
                let resource_ok = st.resources.iter().any(|r| matches(resource, r))
                    || p.bound.as_deref() == Some(resource)
                    || p.pools.iter().any(|x| pools.contains(x));
                let principal_ok = st
                    .principals
                    .iter()
                    .chain(p.attached.iter())
                    .any(|k| set.iter().any(|s| matches(s, k)));
                if action_ok && resource_ok && principal_ok {
                    if st.deny {
                        deny.push((id.clone(), i));
                    } else {
                        allow.push((id.clone(), i));
                    }
                }
            }
        }
        // Sorted by (policy id, statement): the map iterates ids in order.
        if !deny.is_empty() {
            MDecision {
                outcome: "explicitDeny",
                reasons: deny,
            }
        } else if !allow.is_empty() {
            MDecision {
                outcome: "allow",
                reasons: allow,
            }
        } else {
            MDecision {
                outcome: "implicitDeny",
                reasons: Vec::new(),
            }
        }
    }
}

// ---------------------------------------------------------------- the world

const ACTION_PATTERNS: &[&str] = &[
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
const ACTIONS: &[&str] = &[
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

const RESOURCE_PATTERNS: &[&str] = &[
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

const PRINCIPAL_PATTERNS: &[&str] = &[
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
const EXTRA_RESOURCES: &[&str] = &[
    "krn:svc:t1::device/ghost",
    "krn:svc:t1::device/floor1/ghost",
    "krn:svc:t1::doc/archive/old",
    "krn:svc:t2::device/d0",
    "krn:other:t1::thing/x",
    "krn:iam:t1::user/org1/team/nobody",
    "krn:iam:t1::policy/p0",
];

struct World {
    model: Model,
    users: Vec<String>,
    groups: Vec<String>,
    /// Identity policies (p0.., the pool policies, and the two made later).
    policies: Vec<String>,
    resources: Vec<String>,
    /// Resource -> its resource-based policy KRN.
    resource_policies: BTreeMap<String, String>,
    pools: Vec<String>,
    /// User -> path.
    user_paths: BTreeMap<String, String>,
    /// Resources deleted by `mutate` (still asked about, no longer registered).
    deleted: BTreeSet<String>,
}

fn random_statement(rng: &mut Rng, w: &World, resource_policy: Option<&str>) -> MStmt {
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
fn create(addr: SocketAddr, collection: &str, body: &Value, what: &str) -> Value {
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

fn post_policy(addr: SocketAddr, rng: &mut Rng, name: &str, stmts: &[MStmt]) -> String {
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
fn build_world(addr: SocketAddr) -> World {
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

// ---------------------------------------------------------------- asking

struct Asker<'a> {
    addr: SocketAddr,
    w: &'a World,
    requests: usize,
    decisions: usize,
    by_endpoint: BTreeMap<&'static str, usize>,
    outcomes: BTreeMap<&'static str, usize>,
    coverage: BTreeMap<&'static str, usize>,
    mismatches: Vec<String>,
}

fn reasons_of(v: &Value) -> Option<Vec<(String, usize)>> {
    v.as_array()?
        .iter()
        .map(|r| {
            Some((
                r["policyID"].as_str()?.to_string(),
                usize::try_from(r["statement"].as_u64()?).ok()?,
            ))
        })
        .collect()
}

impl Asker<'_> {
    fn model(
        &mut self,
        principal: &str,
        set: &BTreeSet<String>,
        action: &str,
        resource: &str,
    ) -> MDecision {
        let m = &self.w.model;
        let d = m.decide(set, action, resource);
        *self.outcomes.entry(d.outcome).or_default() += 1;
        self.decisions += 1;
        // What took part, so a run shows it exercised every rule.
        let mut kinds = BTreeSet::new();
        let alone = BTreeSet::from([principal.to_string()]);
        if set.len() > 1 && m.decide(&alone, action, resource).outcome != d.outcome {
            kinds.insert("outcome set by groups or roles");
        }
        let direct = m.direct_set(principal);
        if direct.len() < set.len() && m.decide(&direct, action, resource).outcome != d.outcome {
            kinds.insert("outcome set by ancestor groups");
        }
        let none = BTreeSet::new();
        let pools = m.pools_of.get(resource).unwrap_or(&none);
        for (id, _) in &d.reasons {
            if id == BASE_POLICY {
                kinds.insert("base policy decides");
            } else if id.contains("::policy/resource/") {
                kinds.insert("resource-based policy decides");
            } else if m.policies[id].pools.iter().any(|p| pools.contains(p)) {
                kinds.insert("pool-attached policy decides");
            }
        }
        if d.reasons.len() > 1 {
            kinds.insert("several deciding statements");
        }
        if action.matches(':').count() == 3 && d.outcome == "allow" {
            kinds.insert("4-token action allowed");
        }
        for k in kinds {
            *self.coverage.entry(k).or_default() += 1;
        }
        d
    }

    fn post(&mut self, endpoint: &'static str, path: &str, body: &Value) -> Resp {
        self.requests += 1;
        *self.by_endpoint.entry(endpoint).or_default() += 1;
        call(self.addr, "POST", path, Some(body))
    }

    fn mismatch(&mut self, path: &str, body: &Value, want: &str, got: &Resp, why: &str) {
        self.mismatches.push(format!(
            "{why}\n  request: POST {path} {body}\n  model:   {want}\n  service: {} {}",
            got.status,
            text(got)
        ));
    }

    /// Compare an explained `decisions` array with the model's decisions.
    fn explained(&self, got: &Value, want: &[(String, MDecision)]) -> Result<(), String> {
        let list = got.as_array().ok_or("`decisions` is not an array")?;
        if list.len() != want.len() {
            return Err(format!("{} decisions, want {}", list.len(), want.len()));
        }
        for (g, (r, d)) in list.iter().zip(want) {
            if g["resource"] != r.as_str() {
                return Err(format!(
                    "decision for {} where {r} was asked",
                    g["resource"]
                ));
            }
            if g["outcome"] != d.outcome {
                return Err(format!("{r}: outcome {} want {}", g["outcome"], d.outcome));
            }
            let reasons = reasons_of(&g["reasons"]).ok_or("bad `reasons`")?;
            if reasons != d.reasons {
                let same_set = reasons.iter().collect::<BTreeSet<_>>()
                    == d.reasons.iter().collect::<BTreeSet<_>>();
                return Err(format!(
                    "{r}: reasons {reasons:?} want {:?}{}",
                    d.reasons,
                    if same_set {
                        " (same set, other order)"
                    } else {
                        ""
                    }
                ));
            }
        }
        Ok(())
    }

    fn want_text(want: &[(String, MDecision)]) -> String {
        let parts: Vec<String> = want
            .iter()
            .map(|(r, d)| format!("{r}: {} {:?}", d.outcome, d.reasons))
            .collect();
        parts.join("; ")
    }

    /// `POST /evaluate?explain=true`.
    fn explain(&mut self, principal: &str, roles: &[String], action: &str, resources: &[String]) {
        let set = self.w.model.principal_set(principal, roles);
        let want: Vec<(String, MDecision)> = resources
            .iter()
            .map(|r| (r.clone(), self.model(principal, &set, action, r)))
            .collect();
        let all = want.iter().all(|(_, d)| d.outcome == "allow");
        let mut body = json!({"principal": principal, "action": action, "resources": resources});
        if !roles.is_empty() {
            body["roles"] = json!(roles);
        }
        let path = "/api/v1/evaluate?explain=true";
        let r = self.post("explain", path, &body);
        let want_text = format!("allowed={all}; {}", Self::want_text(&want));
        if r.status != if all { 200 } else { 403 } {
            return self.mismatch(path, &body, &want_text, &r, "status");
        }
        let got = r.json();
        if got["allowed"] != all || got["action"] != action {
            return self.mismatch(path, &body, &want_text, &r, "`allowed` or `action`");
        }
        let principals: Option<BTreeSet<String>> = got["principals"].as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        });
        if principals.as_ref() != Some(&set) {
            return self.mismatch(
                path,
                &body,
                &format!("principal set {set:?}"),
                &r,
                "principal set (user, its groups and their ancestors)",
            );
        }
        if let Err(e) = self.explained(&got["decisions"], &want) {
            self.mismatch(path, &body, &want_text, &r, &e);
        }
    }

    /// `POST /evaluate`: 200 echoing the resources, or 403 naming the denied ones.
    fn plain(&mut self, principal: &str, action: &str, resources: &[String]) {
        let set = self.w.model.principal_set(principal, &[]);
        let denied: Vec<String> = resources
            .iter()
            .filter(|r| self.model(principal, &set, action, r).outcome != "allow")
            .cloned()
            .collect();
        let body = json!({"principal": principal, "action": action, "resources": resources});
        let path = "/api/v1/evaluate";
        let r = self.post("plain", path, &body);
        let want = format!("denied {denied:?}");
        let ok = if denied.is_empty() {
            r.status == 200 && r.json() == json!(resources)
        } else {
            r.status == 403 && {
                let v = r.json();
                v["denied"] == json!(denied) && v["message"].is_string()
            }
        };
        if !ok {
            self.mismatch(path, &body, &want, &r, "plain evaluate");
        }
    }

    /// `POST /evaluate?filterResources=true` (and with `explain=true`).
    fn filter(&mut self, principal: &str, action: &str, resources: &[String], explain: bool) {
        let set = self.w.model.principal_set(principal, &[]);
        let want: Vec<(String, MDecision)> = resources
            .iter()
            .map(|r| (r.clone(), self.model(principal, &set, action, r)))
            .collect();
        let allowed: Vec<&String> = want
            .iter()
            .filter(|(_, d)| d.outcome == "allow")
            .map(|(r, _)| r)
            .collect();
        let body = json!({"principal": principal, "action": action, "resources": resources});
        let path = if explain {
            "/api/v1/evaluate?filterResources=true&explain=true"
        } else {
            "/api/v1/evaluate?filterResources=true"
        };
        let r = self.post("filterResources", path, &body);
        let want_text = format!("allowed {allowed:?}; {}", Self::want_text(&want));
        if r.status != 200 {
            return self.mismatch(path, &body, &want_text, &r, "status");
        }
        let got = r.json();
        let data = if explain { &got["data"] } else { &got };
        if *data != json!(allowed) {
            return self.mismatch(path, &body, &want_text, &r, "allowed subset");
        }
        if explain && let Err(e) = self.explained(&got["decisions"], &want) {
            self.mismatch(path, &body, &want_text, &r, &e);
        }
    }

    /// `POST /evaluate/actions`: per action, the allowed and the denied resources.
    fn actions(&mut self, principal: &str, actions: &[&str], resources: &[String], explain: bool) {
        let set = self.w.model.principal_set(principal, &[]);
        let mut want = BTreeMap::new();
        for a in actions {
            let row: Vec<(String, MDecision)> = resources
                .iter()
                .map(|r| (r.clone(), self.model(principal, &set, a, r)))
                .collect();
            want.insert(a.to_string(), row);
        }
        let body = json!({"principal": principal, "actions": actions, "resources": resources});
        let path = if explain {
            "/api/v1/evaluate/actions?explain=true"
        } else {
            "/api/v1/evaluate/actions"
        };
        let r = self.post("actions", path, &body);
        let mut want_text = String::new();
        for (a, row) in &want {
            let _ = write!(want_text, "[{a}] {} ", Self::want_text(row));
        }
        if r.status != 200 {
            return self.mismatch(path, &body, &want_text, &r, "status");
        }
        let got = r.json();
        if got.as_object().map(|m| m.len()) != Some(actions.len()) {
            return self.mismatch(path, &body, &want_text, &r, "one entry per action");
        }
        for (a, row) in &want {
            let allowed: Vec<&String> = row
                .iter()
                .filter(|(_, d)| d.outcome == "allow")
                .map(|(r, _)| r)
                .collect();
            let denied: Vec<&String> = row
                .iter()
                .filter(|(_, d)| d.outcome != "allow")
                .map(|(r, _)| r)
                .collect();
            let g = &got[a.as_str()];
            if g["allowed"] != json!(allowed) || g["denied"] != json!(denied) {
                return self.mismatch(path, &body, &want_text, &r, &format!("action {a}"));
            }
            if explain && let Err(e) = self.explained(&g["decisions"], row) {
                return self.mismatch(path, &body, &want_text, &r, &format!("action {a}: {e}"));
            }
        }
    }
}

/// Ask `rounds` random questions of every kind; returns the asker with its tallies.
fn ask<'a>(addr: SocketAddr, w: &'a World, seed: u64, rounds: usize) -> Asker<'a> {
    let mut rng = Rng::new(seed);
    let mut a = Asker {
        addr,
        w,
        requests: 0,
        decisions: 0,
        by_endpoint: BTreeMap::new(),
        outcomes: BTreeMap::new(),
        coverage: BTreeMap::new(),
        mismatches: Vec::new(),
    };
    let mut candidates: Vec<String> = w.resources.clone();
    candidates.extend(w.resources.iter().cloned()); // registered ones twice as often
    candidates.extend(EXTRA_RESOURCES.iter().map(|s| s.to_string()));
    candidates.extend(w.users.iter().step_by(3).cloned());
    candidates.extend(w.groups.iter().step_by(2).cloned());
    for _ in 0..rounds {
        let principal = match rng.below(100) {
            0..=81 => rng.pick(&w.users).clone(),
            82..=89 => format!("krn:iam:{T}::user/org1/ghost"),
            90..=94 => ADMIN_ROLE.to_string(),
            _ => format!("krn:iam:{T}::user/nobody"),
        };
        let mut resources = rng.some(&candidates, 1, 5);
        let mut action = *rng.pick(ACTIONS);
        // The tenant-admin role (as principal or as an extra role) is asked about IAM: that is
        // where the base policy speaks.
        let roles = if rng.chance(5) {
            vec![ADMIN_ROLE.to_string()]
        } else {
            Vec::new()
        };
        if principal == ADMIN_ROLE || !roles.is_empty() {
            action = *rng.pick(&["iam:user:read", "iam:user:delete", "iam:group:update"]);
            let iam = rng.pick(&w.users).clone();
            if !resources.contains(&iam) {
                resources.push(iam);
            }
        }
        match rng.below(100) {
            _ if !roles.is_empty() => a.explain(&principal, &roles, action, &resources),
            0..=54 => a.explain(&principal, &[], action, &resources),
            55..=69 => a.plain(&principal, action, &resources),
            70..=84 => {
                let explain = rng.chance(50);
                a.filter(&principal, action, &resources, explain);
            }
            _ => {
                let actions = rng.some(ACTIONS, 2, 4);
                let explain = rng.chance(50);
                a.actions(&principal, &actions, &resources, explain);
            }
        }
    }
    a
}

/// `POST /evaluate/resources`: the registered resources of a type the principal may act on,
/// paged; and `POST /evaluate/simulate`: every decision now and with candidate changes.
fn other_evaluations(addr: SocketAddr, w: &World, seed: u64) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let mut failures = Vec::new();
    let mut decisions = 0;
    let m = &w.model;
    let mut requests = 0;
    for u in w.users.iter().step_by(2) {
        for rtype in ["device", "doc"] {
            let action = *rng.pick(ACTIONS);
            let set = m.principal_set(u, &[]);
            let want: BTreeSet<String> = w
                .resources
                .iter()
                .filter(|r| !w.deleted.contains(*r) && r.contains(&format!("::{rtype}/")))
                .filter(|r| m.decide(&set, action, r).outcome == "allow")
                .cloned()
                .collect();
            decisions += w.resources.len();
            let body =
                json!({"principal": u, "action": action, "resourceType": rtype, "tenantID": T});
            let mut got = BTreeSet::new();
            for page in 1..=4 {
                requests += 1;
                let path = format!("/api/v1/evaluate/resources?page={page}&pageSize=2");
                let r = call(addr, "POST", &path, Some(&body));
                if r.status != 200 || r.json()["count"] != want.len() {
                    failures.push(format!(
                        "POST {path} {body}\n  model: {want:?}\n  service: {} {}",
                        r.status,
                        text(&r)
                    ));
                    break;
                }
                let page_items = strings(&r.json()["data"]);
                assert!(page_items.len() <= 2, "{path}: page larger than pageSize");
                got.extend(page_items);
            }
            if got != want {
                failures.push(format!(
                    "/evaluate/resources {body}: pages {got:?}, model {want:?}"
                ));
            }
        }
    }
    // Simulations: candidates attached to users, groups or pools, replacing or removing stored
    // policies; the answer's `current` is the stored world, `outcome` the changed one.
    let mut names: Vec<String> = vec!["sim-a".into(), "sim-b".into()];
    names.extend(
        w.policies
            .iter()
            .take(6)
            .map(|p| p.rsplit('/').next().unwrap().to_string()),
    );
    let reasons = |d: &MDecision| -> Value {
        json!(
            d.reasons
                .iter()
                .map(|(p, i)| json!({"policyID": p, "statement": i}))
                .collect::<Vec<_>>()
        )
    };
    for round in 0..25 {
        let principal = rng.pick(&w.users).clone();
        let mut changed = m.clone();
        let mut add = Vec::new();
        let mut added = BTreeSet::new();
        for _ in 0..1 + rng.below(2) {
            let name = rng.pick(&names).clone();
            let stmts: Vec<MStmt> = (0..1 + rng.below(2))
                .map(|_| random_statement(&mut rng, w, None))
                .collect();
            let mut targets: Vec<String> = Vec::new();
            if rng.chance(60) {
                targets.push(principal.clone());
            }
            if rng.chance(40) {
                targets.push(rng.pick(&w.groups).clone());
            }
            if rng.chance(30) {
                targets.push(rng.pick(&w.pools).clone());
            }
            let mut mp = MPolicy {
                statements: stmts.clone(),
                ..MPolicy::default()
            };
            for t in &targets {
                if t.contains("::pool/") {
                    mp.pools.insert(t.clone());
                } else {
                    mp.attached.insert(t.clone());
                }
            }
            let krn = format!("krn:iam:{T}::policy/{name}");
            // The last of repeated added ids wins.
            changed.policies.insert(krn.clone(), mp);
            added.insert(krn);
            add.push(json!({"name": name, "attachedTo": targets,
                "statements": stmts.iter().map(|s| s.to_json(false)).collect::<Vec<_>>()}));
        }
        let mut remove = Vec::new();
        if round % 3 == 0 {
            let p = rng.pick(&w.policies).clone();
            // An id both removed and added is the added one.
            if !added.contains(&p) {
                changed.policies.remove(&p);
            }
            remove.push(if rng.chance(50) {
                p.clone()
            } else {
                raw_id(&p)
            });
        }
        let actions = rng.some(ACTIONS, 1, 2);
        let mut candidates = w.resources.clone();
        candidates.extend(EXTRA_RESOURCES.iter().map(|s| s.to_string()));
        let resources = rng.some(&candidates, 1, 3);
        let body = json!({"principal": principal, "actions": actions, "resources": resources,
            "add": add, "remove": remove});
        requests += 1;
        let r = call(addr, "POST", "/api/v1/evaluate/simulate", Some(&body));
        let set = m.principal_set(&principal, &[]);
        let mut want = Vec::new();
        for a in &actions {
            for res in &resources {
                let now = m.decide(&set, a, res);
                let then = changed.decide(&set, a, res);
                decisions += 1;
                let mut one = json!({"action": a, "resource": res,
                    "outcome": then.outcome, "reasons": reasons(&then),
                    "current": {"outcome": now.outcome, "reasons": reasons(&now)},
                    "changed": now.outcome != then.outcome});
                if m.disabled.contains(&principal) {
                    one["disabled"] = json!("principal");
                    one["message"] = json!(format!("the principal `{principal}` is disabled"));
                }
                want.push(one);
            }
        }
        if r.status != 200 || r.json()["data"]["results"] != json!(want) {
            failures.push(format!(
                "POST /api/v1/evaluate/simulate {body}\n  model: {}\n  service: {} {}",
                json!(want),
                r.status,
                text(&r)
            ));
        }
    }
    if !failures.is_empty() {
        let mut msg = format!(
            "{} other evaluations disagree with the model:\n",
            failures.len()
        );
        for f in failures.iter().take(8) {
            let _ = writeln!(msg, "- {f}");
        }
        panic!("{msg}");
    }
    (requests, decisions)
}

fn report_mismatches(what: &str, a: &Asker) {
    if a.mismatches.is_empty() {
        return;
    }
    let mut msg = format!(
        "{what}: {} of {} requests disagree with the model ({} decisions asked)\n",
        a.mismatches.len(),
        a.requests,
        a.decisions
    );
    for m in a.mismatches.iter().take(12) {
        let _ = writeln!(msg, "- {m}");
    }
    panic!("{msg}");
}

// ---------------------------------------------------------------- lists and paging

/// Walk every page of `base` (a list path with its query) at `size`; returns the keys in order.
fn walk(addr: SocketAddr, base: &str, size: u32, key: &str, total: usize) -> Vec<String> {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut out: Vec<String> = Vec::new();
    let pages = total.div_ceil(size as usize).max(1);
    for page in 1..=pages + 1 {
        let path = format!("{base}{sep}page={page}&pageSize={size}");
        let v = expect(&call(addr, "GET", &path, None), 200, &path);
        assert_eq!(v["count"], total as u64, "{path}: count");
        assert_eq!(v["page"], page as u64, "{path}");
        assert_eq!(v["pageSize"], size, "{path}");
        let items = v["data"].as_array().unwrap();
        let want_len = if page <= pages {
            (total - (page - 1) * size as usize).min(size as usize)
        } else {
            0
        };
        assert_eq!(items.len(), want_len, "{path}: items on the page: {v}");
        for it in items {
            let k = it[key].as_str().unwrap().to_string();
            assert!(!out.contains(&k), "{path}: {k} seen on an earlier page");
            out.push(k);
        }
    }
    out
}

/// Paging over a list: every sort and order and several sizes give the same order, pages don't
/// overlap, their union is the whole expected set, descending is ascending reversed.
fn check_list(addr: SocketAddr, base: &str, key: &str, sorts: &[&str], want: &BTreeSet<String>) {
    let sorts: Vec<Option<&str>> = std::iter::once(None)
        .chain(sorts.iter().map(|s| Some(*s)))
        .collect();
    for sort in sorts {
        let mut orders: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for order in ["asc", "desc"] {
            let sep = if base.contains('?') { '&' } else { '?' };
            let q = match sort {
                None => format!("{base}{sep}sortOrder={order}"),
                Some(s) => format!("{base}{sep}sort={s}&sortOrder={order}"),
            };
            let full = walk(addr, &q, 50, key, want.len());
            let got: BTreeSet<String> = full.iter().cloned().collect();
            assert_eq!(&got, want, "{q}: the union of the pages");
            for size in [2u32, 7] {
                let paged = walk(addr, &q, size, key, want.len());
                assert_eq!(
                    paged, full,
                    "{q}: pages of {size} in another order than one page"
                );
            }
            orders.insert(order, full);
        }
        let mut rev = orders["asc"].clone();
        rev.reverse();
        assert_eq!(
            rev, orders["desc"],
            "{base} sort {sort:?}: desc is not asc reversed"
        );
    }
}

fn krns_of(v: &Value) -> BTreeSet<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["krn"].as_str().unwrap().to_string())
        .collect()
}

fn lists_and_paging(addr: SocketAddr, w: &World) {
    let users: BTreeSet<String> = w.users.iter().cloned().collect();
    check_list(
        addr,
        &format!("/api/v1/users?tenantID={T}"),
        "krn",
        &["username", "email", "path", "created", "updated"],
        &users,
    );
    // One page at a time, once.
    assert_eq!(
        walk(addr, &format!("/api/v1/users?tenantID={T}"), 1, "krn", 15),
        walk(addr, &format!("/api/v1/users?tenantID={T}"), 50, "krn", 15)
    );
    let groups: BTreeSet<String> = w.groups.iter().cloned().collect();
    check_list(
        addr,
        &format!("/api/v1/groups?tenantID={T}"),
        "krn",
        &["name", "path", "created", "updated"],
        &groups,
    );
    let mut policies: BTreeSet<String> = w.policies.iter().cloned().collect();
    policies.extend(w.resource_policies.values().cloned());
    check_list(
        addr,
        &format!("/api/v1/policies?tenantID={T}"),
        "krn",
        &["name", "created", "updated"],
        &policies,
    );
    let resources: BTreeSet<String> = w.resources.iter().cloned().collect();
    check_list(
        addr,
        &format!("/api/v1/resources?tenantID={T}"),
        "krn",
        &["krn", "name", "path", "resourceType", "created", "updated"],
        &resources,
    );
    let pools: BTreeSet<String> = w.pools.iter().cloned().collect();
    let p = walk(addr, &format!("/api/v1/pools?tenantID={T}"), 1, "krn", 2);
    assert_eq!(p.into_iter().collect::<BTreeSet<_>>(), pools);

    // Filters.
    let org1: BTreeSet<String> = w
        .user_paths
        .iter()
        .filter(|(_, p)| p.starts_with("/org1"))
        .map(|(u, _)| u.clone())
        .collect();
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/users?tenantID={T}&path=/org1&pageSize=50"),
            None,
        ),
        200,
        "users under /org1",
    );
    assert_eq!(krns_of(&v), org1);
    let docs: BTreeSet<String> = w
        .resources
        .iter()
        .filter(|r| r.contains("::doc/"))
        .cloned()
        .collect();
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/resources?tenantID={T}&resourceType=doc"),
            None,
        ),
        200,
        "docs",
    );
    assert_eq!(krns_of(&v), docs);
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/policies?tenantID={T}&type=resource&pageSize=50"),
            None,
        ),
        200,
        "resource policies",
    );
    assert_eq!(
        krns_of(&v),
        w.resource_policies
            .values()
            .cloned()
            .collect::<BTreeSet<_>>()
    );
    // `%` and `_` in a name filter are literal, a quote or semicolon is just a character.
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/policies?tenantID={T}&name=_&pageSize=50"),
            None,
        ),
        200,
        "name=_",
    );
    assert_eq!(
        krns_of(&v),
        BTreeSet::from([format!("krn:iam:{T}::policy/p_under")]),
        "`_` must match itself only"
    );
    for q in ["%25", "%27", "%3B", "%27%3B--", "p%25"] {
        let path = format!("/api/v1/policies?tenantID={T}&name={q}");
        let v = expect(&call(addr, "GET", &path, None), 200, &path);
        assert_eq!(v["count"], 0, "{path}: {v}");
    }
    let path = format!("/api/v1/users?tenantID={T}&search=%27%3B%20DROP%20TABLE%20users%3B--");
    assert_eq!(
        expect(&call(addr, "GET", &path, None), 200, &path)["count"],
        0
    );
    // pageSize is clamped to the server's maximum, silently.
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/users?tenantID={T}&pageSize=100000"),
            None,
        ),
        200,
        "huge pageSize",
    );
    assert_eq!(v["pageSize"], 50);
    assert_eq!(v["count"], 15);

    // Sub-lists: members, groups of a user, attached policies, with small pages.
    for g in &w.groups {
        let want: BTreeSet<String> = w
            .model
            .groups_of
            .iter()
            .filter(|(_, gs)| gs.contains(g))
            .map(|(u, _)| u.clone())
            .collect();
        let got = walk(
            addr,
            &format!("/api/v1/groups/{}/members", id(g)),
            2,
            "krn",
            want.len(),
        );
        assert_eq!(
            got.into_iter().collect::<BTreeSet<_>>(),
            want,
            "members of {g}"
        );
        let want: BTreeSet<String> = w
            .model
            .policies
            .iter()
            .filter(|(_, p)| p.attached.contains(g))
            .map(|(k, _)| k.clone())
            .collect();
        let got = walk(
            addr,
            &format!("/api/v1/groups/{}/policies", id(g)),
            1,
            "krn",
            want.len(),
        );
        assert_eq!(
            got.into_iter().collect::<BTreeSet<_>>(),
            want,
            "policies of {g}"
        );
    }
    for u in &w.users {
        let want: BTreeSet<String> = w.model.groups_of.get(u).cloned().unwrap_or_default();
        let got = walk(
            addr,
            &format!("/api/v1/users/{}/groups", id(u)),
            1,
            "krn",
            want.len(),
        );
        assert_eq!(
            got.into_iter().collect::<BTreeSet<_>>(),
            want,
            "groups of {u}"
        );
        let want: BTreeSet<String> = w
            .model
            .policies
            .iter()
            .filter(|(_, p)| p.attached.contains(u))
            .map(|(k, _)| k.clone())
            .collect();
        let got = walk(
            addr,
            &format!("/api/v1/users/{}/policies", id(u)),
            2,
            "krn",
            want.len(),
        );
        assert_eq!(
            got.into_iter().collect::<BTreeSet<_>>(),
            want,
            "policies of {u}"
        );
    }
    for p in &w.pools {
        let want: BTreeSet<String> = w
            .model
            .policies
            .iter()
            .filter(|(_, x)| x.pools.contains(p))
            .map(|(k, _)| k.clone())
            .collect();
        let got = walk(
            addr,
            &format!("/api/v1/pools/{}/policies", id(p)),
            1,
            "krn",
            want.len(),
        );
        assert_eq!(
            got.into_iter().collect::<BTreeSet<_>>(),
            want,
            "policies of {p}"
        );
        let v = expect(
            &call(addr, "GET", &format!("/api/v1/pools/{}", id(p)), None),
            200,
            "pool",
        );
        let members: BTreeSet<String> = strings(&v["data"]["resourceIDs"]).into_iter().collect();
        let want: BTreeSet<String> = w
            .model
            .pools_of
            .iter()
            .filter(|(_, ps)| ps.contains(p))
            .map(|(r, _)| raw_id(r))
            .collect();
        assert_eq!(members, want, "members of {p}");
    }
}

// ---------------------------------------------------------------- conflicts and versions

/// Everything a client can see of the tenant, to prove a request changed nothing.
fn snapshot(addr: SocketAddr, w: &World) -> Value {
    let mut paths = list_paths();
    for g in &w.groups {
        paths.push(format!("/api/v1/groups/{}/members?pageSize=50", id(g)));
    }
    for u in w.users.iter().take(2) {
        for sub in ["policies", "groups"] {
            paths.push(format!("/api/v1/users/{}/{sub}?pageSize=50", id(u)));
        }
    }
    for p in &w.pools {
        paths.push(format!("/api/v1/pools/{}/policies?pageSize=50", id(p)));
    }
    view(addr, &paths)
}

/// The tenant's lists (every entity with its version) and the base policies.
fn list_paths() -> Vec<String> {
    let mut paths: Vec<String> = ["users", "groups", "policies", "resources", "pools"]
        .iter()
        .map(|l| format!("/api/v1/{l}?tenantID={T}&pageSize=50"))
        .collect();
    paths.push("/api/v1/policies?type=base".into());
    paths
}

/// The `data` of each path, by path; lists must fit one page.
fn view(addr: SocketAddr, paths: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    for path in paths {
        let v = expect(&call(addr, "GET", path, None), 200, path);
        assert!(
            v["count"].as_u64().unwrap_or(0) <= 50,
            "{path}: the snapshot would be partial"
        );
        out.insert(path.clone(), v["data"].clone());
    }
    Value::Object(out)
}

/// Where two snapshots differ (first few keys), for a readable failure.
fn diff(a: &Value, b: &Value) -> String {
    let mut out = Vec::new();
    if let (Some(x), Some(y)) = (a.as_object(), b.as_object()) {
        for (k, v) in x {
            if y.get(k) != Some(v) {
                out.push(format!(
                    "{k}: before {} / after {}",
                    v,
                    y.get(k).unwrap_or(&Value::Null)
                ));
            }
        }
    }
    out.join("\n")
}

fn conflicts_and_versions(addr: SocketAddr, w: &World) {
    let before = snapshot(addr, w);
    // Duplicate creates: 409, nothing changes.
    let dups = [
        (
            "/api/v1/users",
            json!({"username": "u0", "password": "pass-word-0", "confirmPassword": "pass-word-0", "tenantID": T}),
        ),
        (
            "/api/v1/groups",
            json!({"name": "g1", "tenantID": T, "parentID": raw_id(&w.groups[0])}),
        ),
        ("/api/v1/groups", json!({"name": "g0", "tenantID": T})),
        (
            "/api/v1/policies",
            json!({"name": "p3", "tenantID": T, "statements": [{"effect": "allow", "actions": ["other:inert:never"], "resources": ["krn:other:t1::inert/none"]}]}),
        ),
        (
            "/api/v1/resources",
            json!({"service": "svc", "resourceType": "device", "name": "d0", "tenantID": T,
                   "path": w.resources[0].split("::device").nth(1).unwrap().rsplit_once('/').unwrap().0}),
        ),
        ("/api/v1/pools", json!({"name": "pool0", "tenantID": T})),
    ];
    for (path, body) in &dups {
        let r = call(addr, "POST", path, Some(body));
        let v = expect(&r, 409, &format!("duplicate {path} {body}"));
        assert!(v["message"].is_string(), "{v}");
    }
    let after = snapshot(addr, w);
    assert!(
        before == after,
        "duplicate creates changed something:\n{}",
        diff(&before, &after)
    );

    // Stale versions: a good write with the current version, then the same version again: 412,
    // and the entity keeps the first write.
    let p0 = &w.policies[0];
    let g = expect(
        &call(addr, "GET", &format!("/api/v1/policies/{}", id(p0)), None),
        200,
        "get p0",
    );
    let v0 = g["data"]["version"].as_i64().unwrap();
    let stmts = g["data"]["statements"].clone();
    let etag = format!("\"{v0}\"");
    let r = call_json_with(
        addr,
        "PUT",
        &format!("/api/v1/policies/{}", id(p0)),
        None,
        &[("If-Match", &etag)],
        Some(&json!({"description": "first writer", "statements": stmts})),
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(expect(&r, 200, "put p0")["data"]["version"], v0 + 1);
    assert_eq!(r.header("etag"), Some(format!("\"{}\"", v0 + 1).as_str()));
    for (body, headers) in [
        (
            json!({"description": "stale writer", "statements": [{"effect": "allow", "actions": ["other:inert:never"], "resources": ["krn:other:t1::inert/none"]}]}),
            vec![("If-Match", etag.as_str())],
        ),
        (
            json!({"description": "stale writer", "statements": [{"effect": "allow", "actions": ["other:inert:never"], "resources": ["krn:other:t1::inert/none"]}], "version": v0}),
            vec![],
        ),
    ] {
        let r = call_json_with(
            addr,
            "PUT",
            &format!("/api/v1/policies/{}", id(p0)),
            None,
            &headers,
            Some(&body),
            TIMEOUT,
        )
        .unwrap();
        let v = expect(&r, 412, "stale put p0");
        assert!(v["message"].is_string());
    }
    let g = expect(
        &call(addr, "GET", &format!("/api/v1/policies/{}", id(p0)), None),
        200,
        "get p0",
    );
    assert_eq!(g["data"]["version"], v0 + 1);
    assert_eq!(g["data"]["description"], "first writer");
    assert_eq!(g["data"]["statements"], stmts);

    // PATCH of users, groups, resources, pools and PUT of a resource policy.
    let k0 = &w.resources[6];
    let cases: Vec<(String, &str, Value, &str)> = vec![
        (
            format!("/api/v1/users/{}", id(&w.users[1])),
            "PATCH",
            json!({"firstName": "Ann"}),
            "firstName",
        ),
        (
            format!("/api/v1/groups/{}", id(&w.groups[3])),
            "PATCH",
            json!({"displayName": "Renamed"}),
            "displayName",
        ),
        (
            format!("/api/v1/resources/{}", id(&w.resources[2])),
            "PATCH",
            json!({"displayName": "Thermostat"}),
            "displayName",
        ),
        (
            format!("/api/v1/pools/{}", id(&w.pools[0])),
            "PATCH",
            json!({"description": "fleet"}),
            "description",
        ),
        (
            format!("/api/v1/resources/{}/policy", id(k0)),
            "PUT",
            json!({"description": "same statements", "statements": w.model.policies[&w.resource_policies[k0]]
                .statements.iter().map(|s| s.to_json(false)).collect::<Vec<_>>()}),
            "description",
        ),
    ];
    for (path, method, body, field) in cases {
        let g = expect(&call(addr, "GET", &path, None), 200, &path);
        let v = g["data"]["version"].as_i64().unwrap();
        let etag = format!("\"{v}\"");
        let r = call_json_with(
            addr,
            method,
            &path,
            None,
            &[("If-Match", &etag)],
            Some(&body),
            TIMEOUT,
        )
        .unwrap();
        let d = expect(&r, 200, &format!("{method} {path}"));
        assert_eq!(d["data"]["version"], v + 1, "{path}");
        assert_eq!(d["data"][field], body[field], "{path}");
        let mut stale = body.clone();
        stale[field] = json!("stale");
        for headers in [
            vec![("If-Match", etag.as_str())],
            vec![("If-Match", "W/\"1\"")],
        ] {
            let r =
                call_json_with(addr, method, &path, None, &headers, Some(&stale), TIMEOUT).unwrap();
            let e = expect(&r, 412, &format!("stale {method} {path} {headers:?}"));
            assert!(e["message"].is_string());
        }
        let mut in_body = stale.clone();
        in_body["version"] = json!(v);
        let r = call(addr, method, &path, Some(&in_body));
        expect(&r, 412, &format!("stale {method} {path} with `version`"));
        let g = expect(&call(addr, "GET", &path, None), 200, &path);
        assert_eq!(g["data"]["version"], v + 1, "{path}");
        assert_eq!(g["data"][field], body[field], "{path}");
        assert_eq!(
            call(addr, "GET", &path, None).header("etag"),
            Some(format!("\"{}\"", v + 1).as_str())
        );
    }

    // A common valid address that Kaa 1.4's documented pattern would refuse (DECISIONS.md).
    let u2 = format!("/api/v1/users/{}", id(&w.users[2]));
    let v = expect(
        &call(
            addr,
            "PATCH",
            &u2,
            Some(&json!({"email": "first.last+tag@example.co.uk"})),
        ),
        200,
        "e-mail with + and a two-level domain",
    );
    assert_eq!(v["data"]["email"], "first.last+tag@example.co.uk");

    // Ids: the base64 id travels percent-encoded, raw (`=` is fine in a path), unpadded (the
    // URL-safe form), with lowercase escapes, escaped char by char; bodies take the same forms.
    let p = w.policies.iter().find(|p| p.ends_with("/pad")).unwrap();
    let std = raw_id(p);
    let unpadded = std.trim_end_matches('=').to_string();
    assert!(std.ends_with('='), "pick a policy whose id is padded: {p}");
    let each: String = std.bytes().map(|b| format!("%{b:02X}")).collect();
    for variant in [
        id(p),
        std.clone(),
        unpadded.clone(),
        std.replace('=', "%3d"),
        each,
    ] {
        let path = format!("/api/v1/policies/{variant}");
        let v = expect(&call(addr, "GET", &path, None), 200, &path);
        assert_eq!(v["data"]["krn"], p.as_str(), "{path}");
    }
    let u = &w.users[0];
    let unattached = w
        .policies
        .iter()
        .find(|x| !w.model.policies[*x].attached.contains(u))
        .unwrap();
    let un_id = raw_id(unattached).trim_end_matches('=').to_string();
    expect(
        &call(
            addr,
            "PUT",
            &format!(
                "/api/v1/users/{}/policies/attach",
                raw_id(u).trim_end_matches('=')
            ),
            Some(&json!({"policyIDs": [un_id]})),
        ),
        204,
        "attach with unpadded ids",
    );
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/users/{}/policies?pageSize=50", id(u)),
            None,
        ),
        200,
        "policies of u0",
    );
    assert!(krns_of(&v).contains(unattached));
    expect(
        &call(
            addr,
            "POST",
            &format!("/api/v1/users/{}/policies/detach", id(u)),
            Some(&json!({"policyIDs": [raw_id(unattached)]})),
        ),
        204,
        "detach",
    );
    // The writes above changed versions and fields only: the same entities are listed, and
    // members and attachments are as at the start (attach + detach left no trace).
    let after = snapshot(addr, w);
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x["krn"].as_str().unwrap().to_string())
            .collect()
    };
    for (path, was) in before.as_object().unwrap() {
        assert_eq!(keys(was), keys(&after[path.as_str()]), "{path}");
    }
}

// ---------------------------------------------------------------- hostile input

struct Hostile<'a> {
    addr: SocketAddr,
    w: &'a World,
    /// Full snapshot at the start (every path `watch` may name is in it).
    before: Value,
    /// Paths besides the lists that the next cases could change.
    watch: Vec<String>,
    cases: usize,
    failures: Vec<String>,
}

impl Hostile<'_> {
    fn raw(
        &mut self,
        name: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        status: u16,
    ) {
        self.cases += 1;
        let r = send(self.addr, method, path, headers, body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let mut problems = Vec::new();
        if r.status != status {
            problems.push(format!("status {} want {status}", r.status));
        }
        let message = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(String::from));
        match message {
            Some(m) if !m.is_empty() => {}
            _ => problems.push("no JSON `message`".into()),
        }
        // The lists, and what the case aims at (members, attachments), as at the start.
        let mut paths = list_paths();
        paths.extend(self.watch.iter().cloned());
        let after = view(self.addr, &paths);
        let before: serde_json::Map<String, Value> = paths
            .iter()
            .map(|p| (p.clone(), self.before[p.as_str()].clone()))
            .collect();
        let before = Value::Object(before);
        if after != before {
            problems.push(format!("state changed:\n{}", diff(&before, &after)));
            self.before = snapshot(self.addr, self.w);
        }
        if !problems.is_empty() {
            self.failures.push(format!(
                "[{name}] {method} {path} {shown}\n  -> {} {}\n  {}",
                r.status,
                String::from_utf8_lossy(&r.body[..r.body.len().min(400)]),
                problems.join("; ")
            ));
        }
    }

    fn json(&mut self, name: &str, method: &str, path: &str, body: &Value, status: u16) {
        self.raw(
            name,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
            status,
        );
    }

    fn text(&mut self, name: &str, method: &str, path: &str, body: &str, status: u16) {
        self.raw(
            name,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
            status,
        );
    }
}

fn hostile(addr: SocketAddr, w: &World) -> usize {
    let before = snapshot(addr, w);
    let mut h = Hostile {
        addr,
        w,
        before,
        watch: Vec::new(),
        cases: 0,
        failures: Vec::new(),
    };
    let st = |actions: Value, resources: Value| json!({"name": "h", "tenantID": T, "statements": [{"effect": "allow", "actions": actions, "resources": resources}]});
    let pol = "/api/v1/policies";
    // Policies: wrong types, unknown and missing fields, bad KRNs and actions, bad names.
    h.json(
        "name of the wrong type",
        "POST",
        pol,
        &json!({"name": 5, "tenantID": T, "statements": []}),
        400,
    );
    h.json(
        "statements not a list",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": "allow all"}),
        400,
    );
    h.json(
        "unknown effect",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [{"effect": "maybe", "actions": ["svc:*"], "resources": ["*"]}]}),
        400,
    );
    h.json(
        "unknown top-level field",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [], "owner": "me"}),
        400,
    );
    h.json(
        "unknown statement field",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [{"effect": "allow", "actions": ["svc:*"], "resources": ["*"], "condition": {}}]}),
        400,
    );
    h.json(
        "condition value of the wrong type",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [{"effect": "allow", "actions": ["svc:*"], "resources": ["*"],
                "conditions": {"NumericLessThan": {"kaa:CurrentHour": "noon"}}}]}),
        400,
    );
    h.json(
        "unknown condition operator",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [{"effect": "allow", "actions": ["svc:*"], "resources": ["*"],
                "conditions": {"StringMatches": {"site": "a"}}}]}),
        400,
    );
    h.json(
        "resource variable with an unknown key",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [{"effect": "allow", "actions": ["svc:*"],
                "resources": ["krn:svc:t1::device/${iam:nobody}"]}]}),
        400,
    );
    h.json(
        "missing statements",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T}),
        400,
    );
    h.json(
        "missing name",
        "POST",
        pol,
        &json!({"tenantID": T, "statements": []}),
        400,
    );
    h.json(
        "partial-token KRN wildcard",
        "POST",
        pol,
        &st(json!(["svc:*"]), json!(["krn:svc:t1::device/d*"])),
        400,
    );
    h.json(
        "wildcard inside a KRN path",
        "POST",
        pol,
        &st(json!(["svc:*"]), json!(["krn:svc:t1::device/*/d0"])),
        400,
    );
    h.json(
        "not a KRN",
        "POST",
        pol,
        &st(json!(["svc:*"]), json!(["arn:aws:s3:::bucket"])),
        400,
    );
    h.json(
        "KRN with too many tokens",
        "POST",
        pol,
        &st(json!(["svc:*"]), json!(["krn:svc:t1::device/d0:extra"])),
        400,
    );
    h.json(
        "upper-case action",
        "POST",
        pol,
        &st(json!(["svc:Device:read"]), json!(["*"])),
        400,
    );
    h.json(
        "partial-token action wildcard",
        "POST",
        pol,
        &st(json!(["svc:dev*"]), json!(["*"])),
        400,
    );
    h.json(
        "five-token action",
        "POST",
        pol,
        &st(json!(["a:b:c:d:e"]), json!(["*"])),
        400,
    );
    h.json("no actions", "POST", pol, &st(json!([]), json!(["*"])), 400);
    h.json(
        "identity statement without resources",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [{"effect": "allow", "actions": ["svc:*"]}]}),
        400,
    );
    h.json(
        "action of the wrong type",
        "POST",
        pol,
        &st(json!([7]), json!(["*"])),
        400,
    );
    for name in [
        "it's",
        "x;DROP TABLE policies;--",
        "100%",
        "a b",
        "a/b",
        "h\u{0}",
    ] {
        h.json(
            &format!("policy name {name:?}"),
            "POST",
            pol,
            &json!({"name": name, "tenantID": T, "statements": []}),
            400,
        );
    }
    h.json(
        "type base",
        "POST",
        pol,
        &json!({"name": "h", "type": "base", "tenantID": T, "statements": []}),
        400,
    );
    h.json(
        "type resource",
        "POST",
        pol,
        &json!({"name": "h", "type": "resource", "tenantID": T, "statements": []}),
        400,
    );
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"effect": "allow", "actions": ["svc:*"], "resources": [format!("krn:svc:t1::doc/x{i}")]}))
        .collect();
    h.json(
        "1001 statements",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": many}),
        400,
    );
    let resources: Vec<String> = (0..1001).map(|i| format!("krn:svc:t1::doc/x{i}")).collect();
    h.json(
        "1001 resources in a statement",
        "POST",
        pol,
        &st(json!(["svc:*"]), json!(resources)),
        400,
    );
    // Bodies that are not what they claim.
    h.text(
        "duplicate key",
        "POST",
        pol,
        r#"{"name": "h1", "name": "h2", "tenantID": "t1", "statements": []}"#,
        400,
    );
    let deep = format!(
        r#"{{"name": "h", "tenantID": "t1", "statements": {}{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    h.text("nesting 5000 deep", "POST", pol, &deep, 400);
    h.raw(
        "not UTF-8",
        "POST",
        pol,
        &[("Content-Type", "application/json")],
        b"{\"name\": \"h\xff\xfe\", \"tenantID\": \"t1\", \"statements\": []}",
        400,
    );
    h.text("null body", "POST", pol, "null", 400);
    h.text("array body", "POST", pol, "[]", 400);
    h.text("empty body", "POST", pol, "", 400);
    h.text(
        "truncated JSON",
        "POST",
        pol,
        r#"{"name": "h", "statements": ["#,
        400,
    );
    h.raw(
        "text/plain",
        "POST",
        pol,
        &[("Content-Type", "text/plain")],
        json!({"name": "h", "tenantID": T, "statements": []})
            .to_string()
            .as_bytes(),
        415,
    );
    h.raw(
        "form-encoded",
        "POST",
        "/api/v1/groups",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=h&tenantID=t1",
        415,
    );
    for t in ["t1;drop", "../kaa", "t*", "t1'--", "t 1"] {
        h.json(
            &format!("tenantID {t:?} in a body"),
            "POST",
            "/api/v1/groups",
            &json!({"name": "h", "tenantID": t}),
            400,
        );
    }
    for t in ["t%2A", "t1%27--", "t1%3BDROP", "%2E%2E%2Fkaa"] {
        h.json(
            &format!("tenantID {t} in a query"),
            "GET",
            &format!("/api/v1/users?tenantID={t}"),
            &Value::Null,
            400,
        );
    }
    // Users and groups.
    let pw = "pass-word-x";
    h.json(
        "username with a quote",
        "POST",
        "/api/v1/users",
        &json!({"username": "bob\"", "password": pw, "confirmPassword": pw, "tenantID": T}),
        400,
    );
    h.json(
        "username with a semicolon",
        "POST",
        "/api/v1/users",
        &json!({"username": "bob;--", "password": pw, "confirmPassword": pw, "tenantID": T}),
        400,
    );
    h.json(
        "missing password",
        "POST",
        "/api/v1/users",
        &json!({"username": "h", "tenantID": T}),
        400,
    );
    h.json(
        "enabled is a string",
        "POST",
        "/api/v1/users",
        &json!({"username": "h", "password": pw, "confirmPassword": pw, "tenantID": T, "enabled": "yes"}),
        400,
    );
    h.json(
        "path without a leading slash",
        "POST",
        "/api/v1/users",
        &json!({"username": "h", "password": pw, "confirmPassword": pw, "tenantID": T, "path": "org1"}),
        400,
    );
    h.json(
        "path with a wildcard",
        "POST",
        "/api/v1/users",
        &json!({"username": "h", "password": pw, "confirmPassword": pw, "tenantID": T, "path": "/org1/*"}),
        400,
    );
    h.json(
        "user in an unknown group",
        "POST",
        "/api/v1/users",
        &json!({"username": "h", "password": pw, "confirmPassword": pw, "tenantID": T,
                "groups": [raw_id("krn:iam:t1::group/nope")]}),
        400,
    );
    let long_email = format!("{}@example.com", "a".repeat(243));
    assert_eq!(long_email.len(), 255);
    for email in [
        "a@b",
        "a b@example.com",
        "a@@example.com",
        "@example.com",
        "x@.com",
        "x@example.",
        long_email.as_str(),
    ] {
        h.json(
            &format!("e-mail {email:.40}"),
            "PATCH",
            &format!("/api/v1/users/{}", id(&w.users[0])),
            &json!({ "email": email }),
            400,
        );
    }
    for (name, password, confirm) in [
        ("password of 7 characters", "1234567", "1234567"),
        ("confirmPassword differs", "pass-word-1", "pass-word-2"),
        (
            "password of 257 characters",
            &"p".repeat(257),
            &"p".repeat(257),
        ),
    ] {
        h.json(
            name,
            "POST",
            "/api/v1/users",
            &json!({"username": "h", "password": password, "confirmPassword": confirm, "tenantID": T}),
            400,
        );
    }
    h.json(
        "group name with a quote",
        "POST",
        "/api/v1/groups",
        &json!({"name": "g\"1", "tenantID": T}),
        400,
    );
    h.json(
        "parentID names a user",
        "POST",
        "/api/v1/groups",
        &json!({"name": "h", "tenantID": T, "parentID": raw_id(&w.users[0])}),
        400,
    );
    h.json(
        "parentID is not base64",
        "POST",
        "/api/v1/groups",
        &json!({"name": "h", "tenantID": T, "parentID": "not base64!"}),
        400,
    );
    h.json(
        "parentID of a missing group",
        "POST",
        "/api/v1/groups",
        &json!({"name": "h", "tenantID": T, "parentID": raw_id("krn:iam:t1::group/nope")}),
        400,
    );
    h.json(
        "delete a group that has subgroups",
        "DELETE",
        &format!("/api/v1/groups/{}", id(&w.groups[0])),
        &Value::Null,
        409,
    );
    // Ids of the wrong type, not base64, tricks with escapes.
    let u0 = id(&w.users[0]);
    let g0 = id(&w.groups[0]);
    let p0 = id(&w.policies[0]);
    let get = |h: &mut Hostile, name: &str, method: &str, path: String, status: u16| {
        h.raw(name, method, &path, &[], b"", status);
    };
    get(
        &mut h,
        "user path, group id",
        "GET",
        format!("/api/v1/users/{g0}"),
        404,
    );
    get(
        &mut h,
        "group path, policy id",
        "GET",
        format!("/api/v1/groups/{p0}"),
        404,
    );
    get(
        &mut h,
        "delete policy with a user id",
        "DELETE",
        format!("/api/v1/policies/{u0}"),
        404,
    );
    get(
        &mut h,
        "delete user with a group id",
        "DELETE",
        format!("/api/v1/users/{g0}"),
        404,
    );
    get(
        &mut h,
        "pool path, resource id",
        "GET",
        format!("/api/v1/pools/{}", id(&w.resources[0])),
        404,
    );
    get(
        &mut h,
        "not base64",
        "GET",
        "/api/v1/policies/not-base64!!".into(),
        404,
    );
    get(
        &mut h,
        "wildcard id",
        "GET",
        format!("/api/v1/users/{}", id("krn:iam:t1::user/*")),
        404,
    );
    get(
        &mut h,
        "delete a wildcard resource id",
        "DELETE",
        format!("/api/v1/resources/{}", id("krn:svc:t1::device/*")),
        404,
    );
    get(
        &mut h,
        "truncated escape",
        "GET",
        format!("/api/v1/users/{}%2", &u0[..u0.len() - 3]),
        404,
    );
    get(
        &mut h,
        "NUL escape",
        "GET",
        format!("/api/v1/users/{u0}%00"),
        404,
    );
    get(
        &mut h,
        "escaped slash inside the id",
        "GET",
        format!("/api/v1/users/{}%2F{}", &u0[..8], &u0[8..]),
        404,
    );
    get(
        &mut h,
        "dot-dot segment",
        "GET",
        "/api/v1/users/..%2F..%2Fpolicies".into(),
        404,
    );
    get(
        &mut h,
        "id of a KRN with a trailing space",
        "GET",
        format!(
            "/api/v1/users/{}",
            base64_std(format!("{} ", w.users[0]).as_bytes())
        ),
        404,
    );
    get(
        &mut h,
        "id of an upper-case prefix KRN",
        "GET",
        format!(
            "/api/v1/users/{}",
            base64_std(w.users[0].replacen("krn", "KRN", 1).as_bytes())
        ),
        404,
    );
    get(
        &mut h,
        "user of another tenant",
        "GET",
        format!("/api/v1/users/{}", id("krn:iam:t2::user/u0")),
        404,
    );
    // Attachments and members: bad ids, unknown ids (all or nothing), wrong shapes.
    let attach = format!("/api/v1/users/{u0}/policies/attach");
    h.watch = vec![
        format!("/api/v1/users/{u0}/policies?pageSize=50"),
        format!("/api/v1/groups/{}/members?pageSize=50", id(&w.groups[5])),
    ];
    h.json(
        "attach a user id as policy",
        "PUT",
        &attach,
        &json!({"policyIDs": [raw_id(&w.users[1])]}),
        400,
    );
    h.json(
        "attach a non-base64 policy id",
        "PUT",
        &attach,
        &json!({"policyIDs": ["%%%"]}),
        400,
    );
    let free = w
        .policies
        .iter()
        .find(|p| !w.model.policies[*p].attached.contains(&w.users[0]))
        .unwrap();
    h.json(
        "attach a good and an unknown policy",
        "PUT",
        &attach,
        &json!({"policyIDs": [raw_id(free), raw_id("krn:iam:t1::policy/ghost")]}),
        404,
    );
    h.json(
        "attach a resource-based policy",
        "PUT",
        &attach,
        &json!({"policyIDs": [raw_id(w.resource_policies.values().next().unwrap())]}),
        409,
    );
    h.json("attach without policyIDs", "PUT", &attach, &json!({}), 400);
    h.json(
        "policyIDs is a string",
        "PUT",
        &attach,
        &json!({"policyIDs": raw_id(free)}),
        400,
    );
    let ids: Vec<String> = (0..1001)
        .map(|i| raw_id(&format!("krn:iam:t1::policy/x{i}")))
        .collect();
    h.json(
        "attach 1001 policies",
        "PUT",
        &attach,
        &json!({ "policyIDs": ids }),
        400,
    );
    let outsider = w
        .users
        .iter()
        .find(|u| {
            !w.model
                .groups_of
                .get(*u)
                .is_some_and(|s| s.contains(&w.groups[5]))
        })
        .unwrap();
    h.json(
        "add a good and an unknown member",
        "POST",
        &format!("/api/v1/groups/{}/members/add", id(&w.groups[5])),
        &json!({"userIDs": [raw_id(outsider), raw_id("krn:iam:t1::user/ghost")]}),
        404,
    );
    h.json(
        "delete a good and an unknown user",
        "POST",
        &format!("/api/v1/users/delete?tenantID={T}"),
        &json!({"userIDs": [raw_id(&w.users[3]), raw_id("krn:iam:t1::user/ghost")]}),
        404,
    );
    let ids: Vec<String> = (0..1001)
        .map(|i| raw_id(&format!("krn:iam:t1::user/x{i}")))
        .collect();
    h.json(
        "bulk delete 1001 users",
        "POST",
        &format!("/api/v1/users/delete?tenantID={T}"),
        &json!({ "userIDs": ids }),
        400,
    );
    h.json(
        "pool with an unknown resource",
        "POST",
        "/api/v1/pools",
        &json!({"name": "h", "tenantID": T, "resourceIDs": [raw_id("krn:svc:t1::doc/ghost")]}),
        400,
    );
    h.json(
        "resource of service *",
        "POST",
        "/api/v1/resources",
        &json!({"service": "*", "resourceType": "doc", "name": "h", "tenantID": T}),
        400,
    );
    h.json(
        "resource name with %",
        "POST",
        "/api/v1/resources",
        &json!({"service": "svc", "resourceType": "doc", "name": "50%", "tenantID": T}),
        400,
    );
    // Evaluation.
    let ev = "/api/v1/evaluate";
    let me = &w.users[0];
    h.json(
        "wildcard action",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:*", "resources": [w.resources[0]]}),
        400,
    );
    h.json(
        "blanket action",
        "POST",
        ev,
        &json!({"principal": me, "action": "*", "resources": [w.resources[0]]}),
        400,
    );
    h.json(
        "wildcard resource",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "resources": ["krn:svc:t1::device/*"]}),
        400,
    );
    h.json(
        "wildcard principal",
        "POST",
        ev,
        &json!({"principal": "krn:iam:t1::user/*", "action": "svc:device:read", "resources": [w.resources[0]]}),
        400,
    );
    h.json(
        "resources is a string",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "resources": w.resources[0]}),
        400,
    );
    h.json(
        "no resources",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "resources": []}),
        400,
    );
    h.json(
        "both action and actions",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "actions": ["svc:device:read"], "resources": [w.resources[0]]}),
        400,
    );
    h.json(
        "unknown field in evaluate",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "resources": [w.resources[0]], "environment": {}}),
        400,
    );
    h.json(
        "reserved key in an evaluate context",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "resources": [w.resources[0]],
                "context": {"iam:username": "root"}}),
        400,
    );
    h.json(
        "source address that is no address",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "resources": [w.resources[0]],
                "context": {"kaa:SourceIp": "10.0.0.300"}}),
        400,
    );
    h.json(
        "wildcard role",
        "POST",
        "/api/v1/evaluate",
        &json!({"principal": w.users[0], "roles": ["krn:iam:t1::role/*"], "action": "svc:device:read", "resources": [w.resources[0]]}),
        400,
    );
    h.json(
        "empty actions list",
        "POST",
        "/api/v1/evaluate/actions",
        &json!({"principal": me, "actions": [], "resources": [w.resources[0]]}),
        400,
    );
    h.json(
        "explain=maybe",
        "POST",
        "/api/v1/evaluate?explain=maybe",
        &json!({"principal": me, "action": "svc:device:read", "resources": [w.resources[0]]}),
        400,
    );
    let huge: Vec<String> = (0..10_001)
        .map(|i| format!("krn:svc:t1::doc/x{i}"))
        .collect();
    h.json(
        "10001 resources",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:doc:read", "resources": huge}),
        400,
    );
    // Paging parameters.
    for q in [
        "page=0",
        "page=-1",
        "pageSize=0",
        "pageSize=-5",
        "page=99999999999999999999",
        "pageSize=abc",
        "page=1.5",
        "sort=password",
        "sort=username%3BDROP%20TABLE%20users",
        "sortOrder=sideways",
    ] {
        h.raw(
            &format!("query {q}"),
            "GET",
            &format!("/api/v1/users?tenantID={T}&{q}"),
            &[],
            b"",
            400,
        );
    }
    h.raw(
        "huge page on groups",
        "GET",
        &format!("/api/v1/groups?tenantID={T}&page=4294967296"),
        &[],
        b"",
        400,
    );
    // Versions and resource policies.
    let p0_path = format!("/api/v1/policies/{p0}");
    let same = json!({"statements": w.model.policies[&w.policies[0]].statements.iter().map(|s| s.to_json(false)).collect::<Vec<_>>()});
    h.raw(
        "If-Match not a version",
        "PUT",
        &p0_path,
        &[("Content-Type", "application/json"), ("If-Match", "abc")],
        same.to_string().as_bytes(),
        400,
    );
    let mut disagree = same.clone();
    disagree["version"] = json!(1);
    h.raw(
        "version and If-Match disagree",
        "PUT",
        &p0_path,
        &[("Content-Type", "application/json"), ("If-Match", "\"2\"")],
        disagree.to_string().as_bytes(),
        400,
    );
    let k2 = &w.resources[8];
    h.json(
        "resource policy naming another resource",
        "PUT",
        &format!("/api/v1/resources/{}/policy", id(k2)),
        &json!({"statements": [{"effect": "allow", "actions": ["svc:doc:read"],
            "resources": [w.resources[9]], "principals": [w.users[0]]}]}),
        400,
    );
    h.json(
        "resource policy without principals",
        "PUT",
        &format!("/api/v1/resources/{}/policy", id(k2)),
        &json!({"statements": [{"effect": "allow", "actions": ["svc:doc:read"]}]}),
        400,
    );
    h.json(
        "resource policy of a missing resource",
        "PUT",
        &format!("/api/v1/resources/{}/policy", id("krn:svc:t1::doc/ghost")),
        &json!({"statements": [{"effect": "allow", "actions": ["svc:doc:read"], "principals": [w.users[0]]}]}),
        404,
    );
    let base = id("krn:iam:kaa::policy/tenant-admin");
    h.json(
        "replace a base policy",
        "PUT",
        &format!("/api/v1/policies/{base}"),
        &json!({"statements": []}),
        409,
    );
    h.raw(
        "delete a base policy",
        "DELETE",
        &format!("/api/v1/policies/{base}"),
        &[],
        b"",
        409,
    );
    h.raw(
        "delete a resource-based policy directly",
        "DELETE",
        &format!(
            "/api/v1/policies/{}",
            id(w.resource_policies.values().next().unwrap())
        ),
        &[],
        b"",
        409,
    );
    h.watch.clear();
    let end = snapshot(addr, w);
    if end != h.before {
        h.failures.push(format!(
            "after all hostile requests: state changed:\n{}",
            diff(&h.before, &end)
        ));
    }
    if !h.failures.is_empty() {
        let mut msg = format!(
            "{} of {} hostile requests were not refused cleanly:\n",
            h.failures.len(),
            h.cases
        );
        for f in &h.failures {
            let _ = writeln!(msg, "- {f}");
        }
        panic!("{msg}");
    }
    h.cases
}

/// Standard base64 with padding, for ids of texts that are not KRNs.
fn base64_std(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

// ---------------------------------------------------------------- changes

fn del(addr: SocketAddr, path: &str) {
    expect(&call(addr, "DELETE", path, None), 204, path);
    expect(
        &call(addr, "GET", path, None),
        404,
        &format!("{path} after delete"),
    );
}

/// Change the world through the API (deletes with their documented cascades, detach, member
/// removal, re-creation under the same KRN, replaced statements) and the model beside it.
fn mutate(addr: SocketAddr, w: &mut World) -> usize {
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

// ---------------------------------------------------------------- the story

fn story(addr: SocketAddr, backend: &str) {
    let t0 = Instant::now();
    let mut w = build_world(addr);
    // Two inert policies for the filter and id checks: one statement about nothing asked.
    let mut rng = Rng::new(1);
    let inert = vec![MStmt {
        deny: false,
        actions: vec!["other:inert:never".into()],
        resources: vec![format!("krn:other:{T}::inert/none")],
        principals: Vec::new(),
    }];
    for name in ["p_under", "pad"] {
        let krn = post_policy(addr, &mut rng, name, &inert);
        w.model.policies.insert(
            krn.clone(),
            MPolicy {
                statements: inert.clone(),
                ..MPolicy::default()
            },
        );
        w.policies.push(krn);
    }
    let built = t0.elapsed();

    let a = ask(addr, &w, seed(SEED_ASK), 260);
    report_mismatches(&format!("{backend}: decisions"), &a);
    assert!(
        a.decisions >= 400,
        "only {} decisions were asked",
        a.decisions
    );
    // The fixed world must exercise every rule; an explored one (IAM_BLACKBOX_SEED) only says so.
    let explored = seed(0) != 0;
    let mut dull = Vec::new();
    for outcome in ["allow", "explicitDeny", "implicitDeny"] {
        let n = a.outcomes.get(outcome).copied().unwrap_or(0);
        if n < 40 {
            dull.push(format!("{n} {outcome} decisions"));
        }
    }
    for kind in [
        "outcome set by groups or roles",
        "outcome set by ancestor groups",
        "base policy decides",
        "resource-based policy decides",
        "pool-attached policy decides",
        "several deciding statements",
        "4-token action allowed",
    ] {
        let n = a.coverage.get(kind).copied().unwrap_or(0);
        if n < 5 {
            dull.push(format!("{kind}: {n}"));
        }
    }
    if explored && !dull.is_empty() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{backend}: a dull world: {dull:?}");
    } else {
        assert!(
            dull.is_empty(),
            "the world is too dull: {dull:?} ({:?}, {:?})",
            a.outcomes,
            a.coverage
        );
    }
    let asked = t0.elapsed();
    let summary = format!(
        "{} decisions in {} requests {:?} (outcomes {:?}, coverage {:?})",
        a.decisions, a.requests, a.by_endpoint, a.outcomes, a.coverage
    );
    drop(a);
    let (other_requests, other_decisions) = other_evaluations(addr, &w, seed(SEED_ASK ^ 1));

    lists_and_paging(addr, &w);
    conflicts_and_versions(addr, &w);
    let listed = t0.elapsed();
    let cases = hostile(addr, &w);
    let hostile_done = t0.elapsed();

    // After all that, decisions are still what the model says...
    let again = ask(addr, &w, seed(SEED_RECHECK), 60);
    report_mismatches(&format!("{backend}: decisions after the rest"), &again);
    let again = again.decisions;
    // ...and after changes with cascades.
    let changes = mutate(addr, &mut w);
    let changed = ask(addr, &w, seed(SEED_RECHECK ^ SEED_MUTATE), 120);
    report_mismatches(
        &format!("{backend}: decisions after {changes} changes"),
        &changed,
    );
    other_evaluations(addr, &w, seed(SEED_RECHECK ^ 1));

    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{backend}: {summary}; {other_decisions} in {other_requests} requests to \
         /evaluate/resources and /evaluate/simulate; {again} more after, {} after {changes} changes; {cases} hostile \
         requests refused; built {built:?}, asked {:?}, lists {:?}, hostile {:?}, total {:?}",
        changed.decisions,
        asked - built,
        listed - asked,
        hostile_done - listed,
        t0.elapsed()
    );
}

#[test]
fn sqlite_blackbox() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), CONFIG);
    story(svc.addr, "sqlite");
}

#[test]
fn postgres_blackbox() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_blackbox");
    };
    let svc = support::service::start_iam(&pg.storage(), CONFIG);
    story(svc.addr, "postgres");
}

/// docs/DECISIONS.md: in a template, `${owner}` is the registering principal and "statements
/// naming it are dropped when there is none" (security off: no principal). Start IAM with the
/// `device` template `statements`, register a device, and return its policy's statements and the
/// outcome of `svc:device:read` for group `readers`.
fn owner_template(statements: &str) -> (Vec<Value>, String) {
    let config =
        format!("iam:\n  resource-policy-templates:\n    device:\n      statements:\n{statements}");
    let dir = support::TempDir::new();
    let settings = support::sqlite_settings(&dir);
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        support::service::start_iam(&settings, &config)
    }));
    let Ok(svc) = started else {
        panic!(
            "IAM refused to start with a template whose statements name `${{owner}}`; \
             DECISIONS.md says such statements are dropped when there is no owner:\n{config}"
        );
    };
    let addr = svc.addr;
    let body = json!({"service": "svc", "resourceType": "device", "name": "e1", "tenantID": T});
    let d = expect(
        &call(addr, "POST", "/api/v1/resources", Some(&body)),
        201,
        "register a device without an owner",
    );
    assert!(d["data"]["policyID"].is_string(), "{d}");
    let e1 = format!("krn:svc:{T}::device/e1");
    let rp = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/resources/{}/policy", id(&e1)),
            None,
        ),
        200,
        "its policy",
    );
    let readers = format!("krn:iam:{T}::group/readers");
    let r = call(
        addr,
        "POST",
        "/api/v1/evaluate?explain=true",
        Some(&json!({"principal": readers, "action": "svc:device:read", "resources": [e1]})),
    );
    let outcome = r.json()["decisions"][0]["outcome"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (
        rp["data"]["statements"].as_array().unwrap().clone(),
        outcome,
    )
}

const READERS_MAY_READ: &str = r#"        - effect: allow
          actions: ["svc:device:read"]
          principals: ["krn:iam:${tenant}::group/readers"]
"#;

#[test]
fn a_template_statement_naming_only_the_owner_is_dropped_without_one() {
    let (statements, outcome) = owner_template(&format!(
        "{READERS_MAY_READ}        - effect: allow\n          actions: [\"svc:device:*\"]\n          principals: [\"${{owner}}\"]\n"
    ));
    assert_eq!(statements.len(), 1, "{statements:?}");
    assert_eq!(outcome, "allow");
}

#[test]
fn a_template_statement_naming_the_owner_and_others_is_dropped_without_one() {
    let (statements, outcome) = owner_template(&format!(
        "{READERS_MAY_READ}        - effect: deny\n          actions: [\"svc:device:read\"]\n          principals: [\"${{owner}}\", \"krn:iam:${{tenant}}::group/readers\"]\n"
    ));
    assert_eq!(
        statements.len(),
        1,
        "the deny statement names `${{owner}}`: it must be dropped, not kept without the owner: \
         {statements:?}"
    );
    assert_eq!(outcome, "allow", "readers are denied by the kept statement");
}

/// DECISIONS.md: "Passwords: 8 to 256 characters" and e-mail "at most 254 bytes".
#[test]
fn passwords_are_counted_in_characters_and_emails_in_bytes() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), "");
    let addr = svc.addr;
    let user = |name: &str, password: &str, email: Option<&str>| {
        let mut body = json!({"username": name, "password": password,
            "confirmPassword": password, "tenantID": T});
        if let Some(e) = email {
            body["email"] = json!(e);
        }
        call(addr, "POST", "/api/v1/users", Some(&body))
    };
    let mut problems = Vec::new();
    let email = format!("{}@example.com", "a".repeat(242));
    assert_eq!(email.len(), 254);
    let long = "é".repeat(256);
    for (name, password, email, status, what) in [
        (
            "long-pw",
            long.as_str(),
            None,
            201,
            "256 characters (512 bytes)",
        ),
        (
            "short-pw",
            &"é".repeat(8),
            None,
            201,
            "8 characters (16 bytes)",
        ),
        (
            "too-short",
            &"é".repeat(7),
            None,
            400,
            "7 characters (14 bytes)",
        ),
        ("too-long", &"é".repeat(257), None, 400, "257 characters"),
        (
            "mail-254",
            "pass-word-1",
            Some(email.as_str()),
            201,
            "an e-mail of 254 bytes",
        ),
    ] {
        let r = user(name, password, email);
        if r.status != status {
            problems.push(format!("{what}: {} want {status}: {}", r.status, text(&r)));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
