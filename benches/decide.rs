#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Benchmarks of the policy engine (`kaa::policy`) on generated tenants of 1k, 10k and 100k
//! statements, side by side with cedar-policy's `Authorizer::is_authorized` on the same policies
//! translated statement by statement (as in `tests/policy_cedar.rs`).
//!
//! Workloads (criterion groups):
//! * `decide_single`: one decision, `Engine::decide` vs Cedar;
//! * `decide_batch100`: one principal set and action over 100 resources, through
//!   `PolicyIndex::allowed_resources`, `PolicyIndex::decide_matrix`,
//!   `PolicyIndex::decide_matrix_outcomes` (no reasons), 100 `Engine::decide` calls,
//!   and 100 Cedar calls (Cedar skipped at 100k: one decision takes tens of milliseconds);
//! * `index_build`: upserting every policy into an empty `PolicyIndex` (throughput = statements/s);
//! * `decide_conditions`: the same tenant as is and with a `conditions` block on every tenth
//!   statement (an IP range, a string and a numeric comparison, all holding for the request
//!   context), side by side: `Engine::decide_outcome`, `Engine::decide` and `Engine::explain`
//!   (with what each condition compared) on the single queries, and
//!   `Engine::decide_matrix_outcomes_with` on the batches, all with the same context.
//!
//! `KAA_BENCH_SIZES` (comma-separated statement counts, default `1000,10000,100000`) picks the
//! tenants, `KAA_BENCH_CEDAR=0` leaves Cedar out.
//!
//! Printed, not timed: heap bytes per indexed statement (the index with its documents, counted by a
//! global counting allocator), allocations per decision, the outcome mix of the generated queries
//! and a spot check that both engines agree on them. Every timing includes the counting allocator's
//! cost (two atomic adds per allocation and per free), for both engines alike.
//!
//! Tenants are generated deterministically: statements over several services, resource types,
//! user directories and pools; about 30% carry a wildcard (action, resource or principal), 10% are
//! denies; policies are attached to users, groups and roles, a few are resource-based.
//! All fixtures are built outside the timed loops. `scripts/bench-policy.sh` runs this and prints
//! a table of medians. Run without `--bench` (e.g. `cargo test --benches`) only the 1k tenant is
//! built and each benchmark runs once.

use std::alloc::System;
use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityUid, Policy, PolicyId,
    PolicySet, Request, RestrictedExpression,
};
use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use kaa::policy::{Action, Engine, Krn, MapEnv, PolicyDocument, PolicyIndex, Query, StoredPolicy};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, Stats, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const TENANT: &str = "acme";
const QUERIES: usize = 512;
const BATCHES: usize = 16;
const BATCH: usize = 100;
/// Principal slots of the Cedar principal entity (user, team group, department group, role).
const SLOTS: usize = 4;

// ---------------------------------------------------------------------------------------------
// Deterministic generator
// ---------------------------------------------------------------------------------------------

/// splitmix64: small, deterministic, good enough for fixtures.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    /// 1..=max, skewed towards small values.
    fn count(&mut self, max: usize) -> usize {
        1 + self.below(max).min(self.below(max))
    }
}

struct ResourceType {
    service: &'static str,
    name: &'static str,
    /// Operations; an operation may carry a target type (`user:add` gives `iam:group:user:add`).
    ops: &'static [&'static str],
    /// Resources of this type live in a site pool (`krn:epr:acme:/site/<s>/<f>:endpoint/...`).
    pooled: bool,
}

const TYPES: &[ResourceType] = &[
    ResourceType {
        service: "iam",
        name: "user",
        ops: &["create", "read", "update", "delete"],
        pooled: false,
    },
    ResourceType {
        service: "iam",
        name: "group",
        ops: &[
            "create",
            "read",
            "update",
            "delete",
            "user:add",
            "user:remove",
        ],
        pooled: false,
    },
    ResourceType {
        service: "iam",
        name: "policy",
        ops: &["create", "read", "update", "user:attach", "group:attach"],
        pooled: false,
    },
    ResourceType {
        service: "epr",
        name: "endpoint",
        ops: &["create", "read", "update", "delete"],
        pooled: true,
    },
    ResourceType {
        service: "epr",
        name: "filter",
        ops: &["read", "update"],
        pooled: false,
    },
    ResourceType {
        service: "cm",
        name: "application",
        ops: &["read", "update", "deploy"],
        pooled: false,
    },
    ResourceType {
        service: "cm",
        name: "config",
        ops: &["read", "update"],
        pooled: false,
    },
    ResourceType {
        service: "tsdb",
        name: "series",
        ops: &["read", "write"],
        pooled: true,
    },
    ResourceType {
        service: "ota",
        name: "firmware",
        ops: &["read", "create", "approve"],
        pooled: false,
    },
    ResourceType {
        service: "dashboard",
        name: "widget",
        ops: &["read", "update"],
        pooled: false,
    },
];

const DEPT_NAMES: &[&str] = &[
    "sales", "eng", "ops", "hr", "finance", "support", "legal", "labs",
];
/// Team names: `team0`, `team1`, ...; the number of teams per department grows with the tenant.
fn team(i: usize) -> String {
    format!("team{i}")
}
const ROLE_NAMES: &[&str] = &["tenant-admin", "auditor", "operator", "viewer", "developer"];

/// Department `i`: `sales`, `eng`, ... then `sales1`, `eng1`, ... (their number grows with the tenant).
fn dept(i: usize) -> String {
    let name = DEPT_NAMES[i % DEPT_NAMES.len()];
    match i / DEPT_NAMES.len() {
        0 => name.to_string(),
        n => format!("{name}{n}"),
    }
}

/// Role `i`, named like departments.
fn role(i: usize) -> String {
    let name = ROLE_NAMES[i % ROLE_NAMES.len()];
    match i / ROLE_NAMES.len() {
        0 => name.to_string(),
        n => format!("{name}{n}"),
    }
}
const SITES: &[&str] = &["ber", "nyc", "sgp", "gru", "syd", "waw"];
const FLOORS: &[&str] = &["f1", "f2", "f3"];

/// Coordinates of one concrete resource.
#[derive(Clone, Copy)]
struct Coord {
    ty: usize,
    dept: usize,
    team: usize,
    site: usize,
    floor: usize,
    id: usize,
}

impl Coord {
    fn random(rng: &mut Rng, sz: &Sizes) -> Coord {
        Coord {
            ty: rng.below(TYPES.len()),
            dept: rng.below(sz.depts),
            team: rng.below(sz.teams),
            site: rng.below(SITES.len()),
            floor: rng.below(FLOORS.len()),
            id: rng.below(sz.ids),
        }
    }
    fn prefix(&self) -> String {
        let t = &TYPES[self.ty];
        if t.pooled {
            format!(
                "krn:{}:{TENANT}:/site/{}/{}:",
                t.service, SITES[self.site], FLOORS[self.floor]
            )
        } else {
            format!("krn:{}:{TENANT}::", t.service)
        }
    }
    fn krn(&self) -> String {
        let t = &TYPES[self.ty];
        format!(
            "{}{}/{}/{}/{}{}",
            self.prefix(),
            t.name,
            dept(self.dept),
            team(self.team),
            &t.name[..1],
            self.id
        )
    }
    /// A wildcard pattern covering this resource, at a random level.
    fn wildcard(&self, rng: &mut Rng) -> String {
        let t = &TYPES[self.ty];
        let r = rng.below(100);
        if t.pooled && r < 25 {
            return if r < 15 {
                format!("krn:{}:{TENANT}:/site/{}/*", t.service, SITES[self.site])
            } else {
                format!("krn:{}:{TENANT}:/site/*", t.service)
            };
        }
        match r {
            0..=39 => format!(
                "{}{}/{}/{}/*",
                self.prefix(),
                t.name,
                dept(self.dept),
                team(self.team)
            ),
            40..=74 => format!("{}{}/{}/*", self.prefix(), t.name, dept(self.dept)),
            75..=89 => format!("{}{}/*", self.prefix(), t.name),
            90..=96 => format!("{}*", self.prefix()),
            _ => format!("krn:{}:{TENANT}:*", t.service),
        }
    }
    fn action(&self, rng: &mut Rng) -> String {
        let t = &TYPES[self.ty];
        format!("{}:{}:{}", t.service, t.name, rng.pick(t.ops))
    }
}

fn action_wildcard(ty: usize, rng: &mut Rng) -> String {
    let t = &TYPES[ty];
    match rng.below(10) {
        0..=5 => format!("{}:{}:*", t.service, t.name),
        6..=8 => format!("{}:*", t.service),
        _ => "*".to_string(),
    }
}

#[derive(Clone, Copy)]
struct UserRef {
    dept: usize,
    team: usize,
    n: usize,
}

impl UserRef {
    fn krn(&self) -> String {
        format!(
            "krn:iam:{TENANT}::user/{}/{}/u{}",
            dept(self.dept),
            team(self.team),
            self.n
        )
    }
    /// The expanded principal set the IAM would pass: user, team group, its ancestor, maybe a role.
    fn principal_set(&self, rng: &mut Rng, sz: &Sizes) -> Vec<String> {
        let mut v = vec![
            self.krn(),
            format!(
                "krn:iam:{TENANT}::group/{}/{}",
                dept(self.dept),
                team(self.team)
            ),
            format!("krn:iam:{TENANT}::group/{}", dept(self.dept)),
        ];
        if rng.chance(0.3) {
            v.push(format!(
                "krn:iam:{TENANT}::role/{}",
                role(rng.below(sz.roles))
            ));
        }
        v
    }
}

/// Who a principal key designates, to build queries that reach the statement.
#[derive(Clone, Copy)]
enum Holder {
    User(UserRef),
    Team(usize, usize),
    Dept(usize),
    Role(usize),
}

impl Holder {
    fn key(&self) -> String {
        match *self {
            Holder::User(u) => u.krn(),
            Holder::Team(d, t) => format!("krn:iam:{TENANT}::group/{}/{}", dept(d), team(t)),
            Holder::Dept(d) => format!("krn:iam:{TENANT}::group/{}", dept(d)),
            Holder::Role(r) => format!("krn:iam:{TENANT}::role/{}", role(r)),
        }
    }
    /// A principal set this holder's key (or wildcard) matches.
    fn member(&self, rng: &mut Rng, sz: &Sizes) -> Vec<String> {
        match *self {
            Holder::User(u) => u.principal_set(rng, sz),
            Holder::Team(d, t) => UserRef {
                dept: d,
                team: t,
                n: rng.below(sz.users_per_team),
            }
            .principal_set(rng, sz),
            Holder::Dept(d) => UserRef {
                dept: d,
                team: rng.below(sz.teams),
                n: rng.below(sz.users_per_team),
            }
            .principal_set(rng, sz),
            Holder::Role(r) => {
                let mut v = random_user(rng, sz).principal_set(rng, sz);
                v.truncate(3);
                v.push(format!("krn:iam:{TENANT}::role/{}", role(r)));
                v
            }
        }
    }
}

fn random_user(rng: &mut Rng, sz: &Sizes) -> UserRef {
    UserRef {
        dept: rng.below(sz.depts),
        team: rng.below(sz.teams),
        n: rng.below(sz.users_per_team),
    }
}

fn random_holder(rng: &mut Rng, sz: &Sizes) -> Holder {
    match rng.below(100) {
        0..=34 => Holder::User(random_user(rng, sz)),
        35..=64 => Holder::Team(rng.below(sz.depts), rng.below(sz.teams)),
        65..=84 => Holder::Dept(rng.below(sz.depts)),
        _ => Holder::Role(rng.below(sz.roles)),
    }
}

/// One generated statement with the concrete examples its patterns were derived from.
struct GenStatement {
    deny: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    principals: Vec<String>,
    example_actions: Vec<String>,
    example_resources: Vec<String>,
    holders: Vec<Holder>,
}

struct GenPolicy {
    id: String,
    bound: Option<String>,
    attached: Vec<Holder>,
    statements: Vec<GenStatement>,
}

struct Sizes {
    users_per_team: usize,
    ids: usize,
    teams: usize,
    depts: usize,
    roles: usize,
}

fn gen_statement(rng: &mut Rng, sz: &Sizes, bound: Option<&Coord>) -> GenStatement {
    let wildcard = rng.chance(0.30);
    let c0 = bound.copied().unwrap_or_else(|| Coord::random(rng, sz));
    let n_res = if bound.is_some() { 1 } else { rng.count(3) };
    let mut example_resources = vec![c0.krn()];
    let mut coords = vec![c0];
    for _ in 1..n_res {
        let mut c = Coord::random(rng, sz);
        c.ty = c0.ty; // statements usually stay on one resource type
        example_resources.push(c.krn());
        coords.push(c);
    }
    let mut resources = example_resources.clone();
    let n_act = rng.count(3);
    let example_actions: Vec<String> = (0..n_act).map(|_| c0.action(rng)).collect();
    let mut actions = example_actions.clone();
    actions.dedup();
    let mut holders = Vec::new();
    let mut principals = Vec::new();
    if bound.is_some() || rng.chance(0.35) {
        for _ in 0..rng.count(2) {
            let h = random_holder(rng, sz);
            principals.push(h.key());
            holders.push(h);
        }
    }
    if wildcard {
        match rng.below(100) {
            0..=49 if bound.is_none() => resources[0] = coords[0].wildcard(rng),
            50..=79 => actions[0] = action_wildcard(c0.ty, rng),
            _ => {
                let d = rng.below(sz.depts);
                let h = if rng.chance(0.6) {
                    principals.push(format!("krn:iam:{TENANT}::user/{}/*", dept(d)));
                    Holder::Dept(d)
                } else {
                    principals.push(format!("krn:iam:{TENANT}::group/{}/*", dept(d)));
                    Holder::Team(d, rng.below(sz.teams))
                };
                holders.push(h);
            }
        }
    }
    GenStatement {
        deny: rng.chance(0.10),
        actions,
        resources: if bound.is_some() {
            Vec::new()
        } else {
            resources
        },
        principals,
        example_actions,
        example_resources,
        holders,
    }
}

fn generate(statements: usize, seed: u64) -> (Vec<GenPolicy>, Sizes) {
    let mut rng = Rng(seed);
    let sz = Sizes {
        users_per_team: (statements / 1000).max(3),
        ids: (statements / 300).max(4),
        teams: (statements / 2000).max(4),
        depts: (statements / 1250).max(8),
        roles: (statements / 2000).max(5),
    };
    let mut policies = Vec::new();
    let mut total = 0;
    while total < statements {
        let n = rng.count(5).min(statements - total);
        let bound = if rng.chance(0.05) {
            Some(Coord::random(&mut rng, &sz))
        } else {
            None
        };
        let attached: Vec<Holder> = (0..rng.below(3))
            .map(|_| random_holder(&mut rng, &sz))
            .collect();
        let stmts = (0..n)
            .map(|_| gen_statement(&mut rng, &sz, bound.as_ref()))
            .collect();
        policies.push(GenPolicy {
            id: format!("krn:iam:{TENANT}::policy/p{}", policies.len()),
            bound: bound.map(|c| c.krn()),
            attached,
            statements: stmts,
        });
        total += n;
    }
    (policies, sz)
}

// ---------------------------------------------------------------------------------------------
// Fixtures: our stored policies, Cedar policies, queries and batches
// ---------------------------------------------------------------------------------------------

fn krn(s: &str) -> Krn {
    Krn::parse(s).unwrap_or_else(|e| panic!("generated KRN `{s}` refused: {e}"))
}

fn stored(p: &GenPolicy) -> StoredPolicy {
    stored_with(p, &mut |_| None)
}

/// The conditions of the `decide_conditions` tenants: they hold for [`bench_context`].
fn bench_conditions() -> serde_json::Value {
    serde_json::json!({
        "IpAddress": {"kaa:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]},
        "StringEquals": {"site": ["ber", "nyc"]},
        "NumericLessThanEquals": {"level": 5},
    })
}

fn bench_context() -> MapEnv {
    let mut env = MapEnv::default();
    env.context.insert("kaa:SourceIp".into(), "10.1.2.3".into());
    env.context.insert("site".into(), "nyc".into());
    env.context.insert("level".into(), 3.into());
    env
}

/// The policy with `conditions(n)` added to its statements, `n` counting statements over every
/// policy built this way.
fn stored_with(
    p: &GenPolicy,
    conditions: &mut dyn FnMut(usize) -> Option<serde_json::Value>,
) -> StoredPolicy {
    let statements: Vec<serde_json::Value> = p
        .statements
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut st = serde_json::json!({
                "effect": if s.deny { "deny" } else { "allow" },
                "actions": s.actions,
                "resources": s.resources,
                "principals": s.principals,
            });
            if let Some(c) = conditions(i) {
                st["conditions"] = c;
            }
            st
        })
        .collect();
    let name = p.id.rsplit('/').next().unwrap_or("p");
    let doc = serde_json::json!({
        "name": name,
        "type": if p.bound.is_some() { "resource" } else { "identity" },
        "statements": statements,
    });
    let document = PolicyDocument::from_json(&doc)
        .unwrap_or_else(|e| panic!("generated policy refused: {e}\n{doc:#}"));
    StoredPolicy {
        id: p.id.clone(),
        document,
        attached_principals: p.attached.iter().map(|h| krn(&h.key())).collect(),
        attached_pools: Vec::new(),
        resource: p.bound.as_deref().map(krn),
    }
}

fn string_match(subject: &str, pattern: &str) -> String {
    if pattern.ends_with('*') {
        format!("{subject} like \"{pattern}\"")
    } else {
        format!("{subject} == \"{pattern}\"")
    }
}

fn any_of(terms: Vec<String>) -> String {
    if terms.is_empty() {
        "false".to_string()
    } else {
        format!("({})", terms.join(" || "))
    }
}

/// One Cedar policy per statement: exact principal keys test the principal's set `ps`, wildcard
/// keys the slots `p0..p3` (guarded by `has`).
fn cedar_text(p: &GenPolicy, s: &GenStatement) -> String {
    let actions = any_of(
        s.actions
            .iter()
            .map(|a| string_match("context.action", a))
            .collect(),
    );
    let mut res: Vec<&str> = s.resources.iter().map(String::as_str).collect();
    res.extend(p.bound.as_deref());
    let resources = any_of(
        res.iter()
            .map(|r| string_match("context.resource", r))
            .collect(),
    );
    let mut keys: Vec<String> = s.principals.clone();
    keys.extend(p.attached.iter().map(Holder::key));
    let principals = any_of(
        keys.iter()
            .flat_map(|k| {
                if k.ends_with('*') {
                    (0..SLOTS)
                        .map(|i| {
                            format!(
                                "(principal has p{i} && {})",
                                string_match(&format!("principal.p{i}"), k)
                            )
                        })
                        .collect::<Vec<_>>()
                } else {
                    vec![format!("principal.ps.contains(\"{k}\")")]
                }
            })
            .collect(),
    );
    let effect = if s.deny { "forbid" } else { "permit" };
    format!(
        "{effect} (principal, action, resource) when {{ {actions} && {resources} && {principals} }};"
    )
}

fn cedar_texts(policies: &[GenPolicy]) -> Vec<(String, String)> {
    policies
        .iter()
        .enumerate()
        .flat_map(|(pi, p)| {
            p.statements
                .iter()
                .enumerate()
                .map(move |(si, s)| (format!("p{pi}.s{si}"), cedar_text(p, s)))
        })
        .collect()
}

fn cedar_set(texts: &[(String, String)]) -> PolicySet {
    let mut set = PolicySet::new();
    for (id, text) in texts {
        let policy = Policy::parse(Some(PolicyId::new(id)), text)
            .unwrap_or_else(|e| panic!("cedar refused `{text}`: {e}"));
        set.add(policy).expect("unique cedar id");
    }
    set
}

struct CedarQuery {
    request: Request,
    entities: Entities,
}

fn cedar_entities(principals: &[String]) -> Entities {
    let uid = EntityUid::from_str(r#"P::"caller""#).expect("uid");
    let mut attrs: HashMap<String, RestrictedExpression> = principals
        .iter()
        .take(SLOTS)
        .enumerate()
        .map(|(i, p)| (format!("p{i}"), RestrictedExpression::new_string(p.clone())))
        .collect();
    attrs.insert(
        "ps".to_string(),
        RestrictedExpression::new_set(
            principals
                .iter()
                .map(|p| RestrictedExpression::new_string(p.clone())),
        ),
    );
    let entity = Entity::new(uid, attrs, HashSet::new()).expect("entity");
    Entities::from_entities([entity], None).expect("entities")
}

fn cedar_request(action: &str, resource: &str) -> Request {
    let context = Context::from_pairs([
        (
            "action".to_string(),
            RestrictedExpression::new_string(action.to_string()),
        ),
        (
            "resource".to_string(),
            RestrictedExpression::new_string(resource.to_string()),
        ),
    ])
    .expect("context");
    Request::new(
        EntityUid::from_str(r#"P::"caller""#).expect("uid"),
        EntityUid::from_str(r#"Action::"any""#).expect("uid"),
        EntityUid::from_str(r#"R::"any""#).expect("uid"),
        context,
        None,
    )
    .expect("request")
}

struct Q {
    principals: Vec<Krn>,
    action: Action,
    resource: Krn,
    raw_principals: Vec<String>,
    raw_action: String,
    raw_resource: String,
}

impl Q {
    fn query(&self) -> Query<'_> {
        Query {
            env: &kaa::policy::NoEnv,
            principals: &self.principals,
            action: &self.action,
            resource: &self.resource,
            resource_pools: &[],
        }
    }
}

struct Batch {
    principals: Vec<Krn>,
    action: Action,
    resources: Vec<(Krn, Vec<Krn>)>,
    queries: Vec<Q>,
}

fn make_q(principals: Vec<String>, action: String, resource: String) -> Q {
    Q {
        principals: principals.iter().map(|p| krn(p)).collect(),
        action: Action::parse(&action).unwrap_or_else(|e| panic!("action `{action}`: {e}")),
        resource: krn(&resource),
        raw_principals: principals,
        raw_action: action,
        raw_resource: resource,
    }
}

/// 70% of queries are aimed at a random statement (a principal it names, one of its actions and
/// resources), 30% are random.
fn make_queries(policies: &[GenPolicy], sz: &Sizes, rng: &mut Rng, n: usize) -> Vec<Q> {
    (0..n)
        .map(|_| {
            if rng.chance(0.7) {
                let p = rng.pick(policies);
                let s = rng.pick(&p.statements);
                let mut holders: Vec<Holder> = s.holders.clone();
                holders.extend(p.attached.iter().copied());
                let principals = if holders.is_empty() {
                    random_user(rng, sz).principal_set(rng, sz)
                } else {
                    rng.pick(&holders).member(rng, sz)
                };
                make_q(
                    principals,
                    rng.pick(&s.example_actions).clone(),
                    rng.pick(&s.example_resources).clone(),
                )
            } else {
                let c = Coord::random(rng, sz);
                make_q(
                    random_user(rng, sz).principal_set(rng, sz),
                    c.action(rng),
                    c.krn(),
                )
            }
        })
        .collect()
}

fn make_batches(policies: &[GenPolicy], sz: &Sizes, rng: &mut Rng) -> Vec<Batch> {
    (0..BATCHES)
        .map(|_| {
            let head = make_queries(policies, sz, rng, 1).pop().expect("one query");
            let resources: Vec<String> = (0..BATCH)
                .map(|_| {
                    if rng.chance(0.5) {
                        let p = rng.pick(policies);
                        let s = rng.pick(&p.statements);
                        rng.pick(&s.example_resources).clone()
                    } else {
                        Coord::random(rng, sz).krn()
                    }
                })
                .collect();
            let queries: Vec<Q> = resources
                .iter()
                .map(|r| {
                    make_q(
                        head.raw_principals.clone(),
                        head.raw_action.clone(),
                        r.clone(),
                    )
                })
                .collect();
            Batch {
                principals: head.principals.clone(),
                action: head.action.clone(),
                resources: resources.iter().map(|r| (krn(r), Vec::new())).collect(),
                queries,
            }
        })
        .collect()
}

struct Fixture {
    label: String,
    statements: usize,
    stored: Vec<StoredPolicy>,
    engine: Engine,
    /// The same tenant with conditions on every tenth statement.
    conditional: Engine,
    queries: Vec<Q>,
    batches: Vec<Batch>,
    cedar: Option<CedarFixture>,
}

struct CedarFixture {
    set: PolicySet,
    queries: Vec<CedarQuery>,
    batches: Vec<Vec<CedarQuery>>,
}

fn net(s: Stats) -> i64 {
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

fn mb(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn label(n: usize) -> String {
    if n >= 1000 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn build_index(policies: Vec<StoredPolicy>) -> PolicyIndex {
    let mut index = PolicyIndex::new();
    for p in policies {
        if let Err(e) = index.upsert(p) {
            panic!("upsert refused: {e}");
        }
    }
    index
}

fn build_fixture(statements: usize, with_cedar: bool) -> Fixture {
    let t0 = Instant::now();
    let (gen_policies, sz) = generate(statements, 0x5EED ^ statements as u64);
    let stored: Vec<StoredPolicy> = gen_policies.iter().map(stored).collect();
    let wildcard_statements = gen_policies
        .iter()
        .flat_map(|p| &p.statements)
        .filter(|s| {
            s.actions
                .iter()
                .chain(&s.resources)
                .chain(&s.principals)
                .any(|x| x.ends_with('*'))
        })
        .count();
    let denies = gen_policies
        .iter()
        .flat_map(|p| &p.statements)
        .filter(|s| s.deny)
        .count();
    let label = label(statements);

    // Heap: the stored documents alone, then the whole index (documents moved into it).
    let region = Region::new(GLOBAL);
    let copy = stored.clone();
    let documents = net(region.change());
    let index = build_index(copy);
    let retained = net(region.change());
    println!(
        "[heap] {label}: {} policies, {statements} statements ({:.0}% with a wildcard, {:.0}% deny); \
         the index retains {:.1} MiB = {} B/statement (the stored documents alone: {} B/statement)",
        stored.len(),
        100.0 * wildcard_statements as f64 / statements as f64,
        100.0 * denies as f64 / statements as f64,
        mb(retained),
        retained / statements as i64,
        documents / statements as i64,
    );
    if index.statement_count() != statements {
        println!(
            "[note] {label}: the index reports {} statements, {statements} were stored",
            index.statement_count()
        );
    }
    drop(index);

    let mut engine = Engine::new(Vec::new());
    for p in stored.iter().cloned() {
        if let Err(e) = engine.upsert(TENANT, p) {
            panic!("upsert refused: {e}");
        }
    }
    let mut conditional = Engine::new(Vec::new());
    let mut n = 0usize;
    let mut every_tenth = |_: usize| {
        n += 1;
        (n % 10 == 0).then(bench_conditions)
    };
    for p in &gen_policies {
        if let Err(e) = conditional.upsert(TENANT, stored_with(p, &mut every_tenth)) {
            panic!("upsert refused: {e}");
        }
    }
    println!(
        "[conditions] {label}: {} of {statements} statements have conditions",
        conditional
            .tenant(TENANT)
            .map_or(0, PolicyIndex::conditional_count)
    );
    let mut rng = Rng(0xC0FFEE ^ statements as u64);
    let queries = make_queries(&gen_policies, &sz, &mut rng, QUERIES);
    let batches = make_batches(&gen_policies, &sz, &mut rng);

    let (mut allow, mut explicit, mut implicit) = (0, 0, 0);
    for q in &queries {
        match serde_json::to_value(engine.decide(TENANT, &q.query()).outcome) {
            Ok(serde_json::Value::String(s)) if s == "allow" => allow += 1,
            Ok(serde_json::Value::String(s)) if s == "explicitDeny" => explicit += 1,
            _ => implicit += 1,
        }
    }
    let region = Region::new(GLOBAL);
    for q in &queries {
        black_box(engine.decide(TENANT, &q.query()));
    }
    let ours_allocs = region.change().allocations as f64 / queries.len() as f64;
    let region = Region::new(GLOBAL);
    for q in &queries {
        black_box(engine.decide_outcome(TENANT, &q.query()));
    }
    let outcome_allocs = region.change().allocations as f64 / queries.len() as f64;
    println!(
        "[queries] {label}: {QUERIES} queries: {allow} allow, {explicit} explicitDeny, {implicit} implicitDeny; \
         kaa allocations per decide: {ours_allocs:.1}, per decide_outcome: {outcome_allocs:.1}"
    );

    let cedar = with_cedar.then(|| {
        let texts = cedar_texts(&gen_policies);
        let region = Region::new(GLOBAL);
        let t = Instant::now();
        let set = cedar_set(&texts);
        let parse = t.elapsed();
        let cedar_heap = net(region.change());
        println!(
            "[heap] {label}: cedar policy set {:.1} MiB = {} B/statement (parsed in {:.2} s)",
            mb(cedar_heap),
            cedar_heap / statements as i64,
            parse.as_secs_f64()
        );
        let to_cedar = |q: &Q| CedarQuery {
            request: cedar_request(&q.raw_action, &q.raw_resource),
            entities: cedar_entities(&q.raw_principals),
        };
        let cq: Vec<CedarQuery> = queries.iter().map(to_cedar).collect();
        let cb: Vec<Vec<CedarQuery>> = batches
            .iter()
            .map(|b| b.queries.iter().map(to_cedar).collect())
            .collect();
        // Spot check: both engines agree on Allow for a sample of the queries.
        let sample = if statements >= 100_000 { 4 } else { 48 };
        let auth = Authorizer::new();
        let mut agree = 0;
        let region = Region::new(GLOBAL);
        let t = Instant::now();
        for (q, c) in queries.iter().zip(&cq).take(sample) {
            let ours = matches!(
                serde_json::to_value(engine.decide(TENANT, &q.query()).outcome),
                Ok(serde_json::Value::String(ref s)) if s == "allow"
            );
            let theirs = auth.is_authorized(&c.request, &set, &c.entities).decision()
                == CedarDecision::Allow;
            agree += usize::from(ours == theirs);
        }
        let per = t.elapsed() / sample as u32;
        let cedar_allocs = region.change().allocations as f64 / sample as f64;
        println!(
            "[check] {label}: kaa and cedar agree on {agree}/{sample} sampled decisions \
             (cedar ~{:.2} ms and ~{cedar_allocs:.0} allocations per decision)",
            per.as_secs_f64() * 1e3
        );
        CedarFixture {
            set,
            queries: cq,
            batches: cb,
        }
    });
    println!(
        "[fixture] {label}: built in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Fixture {
        label,
        statements,
        stored,
        engine,
        conditional,
        queries,
        batches,
        cedar,
    }
}

// ---------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------

fn bench_single(c: &mut Criterion, f: &Fixture, quick: bool) {
    let mut g = c.benchmark_group("decide_single");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500));
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("kaa", &f.label), |b| {
        b.iter(|| {
            let q = &f.queries[i % f.queries.len()];
            i = i.wrapping_add(1);
            black_box(f.engine.decide(TENANT, &q.query()))
        });
    });
    if let Some(cf) = &f.cedar {
        let auth = Authorizer::new();
        g.sampling_mode(SamplingMode::Flat);
        if f.statements >= 10_000 && !quick {
            g.sample_size(10)
                .warm_up_time(Duration::from_millis(200))
                .measurement_time(Duration::from_secs(1));
        }
        let mut j = 0usize;
        g.bench_function(BenchmarkId::new("cedar", &f.label), |b| {
            b.iter(|| {
                let q = &cf.queries[j % cf.queries.len()];
                j = j.wrapping_add(1);
                black_box(auth.is_authorized(&q.request, &cf.set, &q.entities))
            });
        });
    }
    g.finish();
}

fn bench_batch(c: &mut Criterion, f: &Fixture, quick: bool) {
    let mut g = c.benchmark_group("decide_batch100");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500));
    let index = f.engine.tenant(TENANT).expect("tenant index");
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("kaa_allowed_resources", &f.label), |b| {
        b.iter(|| {
            let bt = &f.batches[i % f.batches.len()];
            i = i.wrapping_add(1);
            black_box(index.allowed_resources(&bt.principals, &bt.action, &bt.resources))
        });
    });
    g.bench_function(BenchmarkId::new("kaa_decide_matrix", &f.label), |b| {
        b.iter(|| {
            let bt = &f.batches[i % f.batches.len()];
            i = i.wrapping_add(1);
            black_box(index.decide_matrix(
                &bt.principals,
                std::slice::from_ref(&bt.action),
                &bt.resources,
            ))
        });
    });
    g.bench_function(BenchmarkId::new("kaa_matrix_outcomes", &f.label), |b| {
        b.iter(|| {
            let bt = &f.batches[i % f.batches.len()];
            i = i.wrapping_add(1);
            black_box(index.decide_matrix_outcomes(
                &bt.principals,
                std::slice::from_ref(&bt.action),
                &bt.resources,
            ))
        });
    });
    g.bench_function(BenchmarkId::new("kaa_decide_loop", &f.label), |b| {
        b.iter(|| {
            let bt = &f.batches[i % f.batches.len()];
            i = i.wrapping_add(1);
            for q in &bt.queries {
                black_box(f.engine.decide(TENANT, &q.query()));
            }
        });
    });
    match &f.cedar {
        Some(cf) if f.statements < 100_000 || quick => {
            let auth = Authorizer::new();
            g.sampling_mode(SamplingMode::Flat)
                .sample_size(10)
                .warm_up_time(Duration::from_millis(200))
                .measurement_time(Duration::from_secs(1));
            let mut j = 0usize;
            g.bench_function(BenchmarkId::new("cedar_loop", &f.label), |b| {
                b.iter(|| {
                    let bt = &cf.batches[j % cf.batches.len()];
                    j = j.wrapping_add(1);
                    for q in bt {
                        black_box(auth.is_authorized(&q.request, &cf.set, &q.entities));
                    }
                });
            });
        }
        _ => println!(
            "[note] decide_batch100/cedar_loop/{}: skipped (100 Cedar decisions take seconds at this size; \
             see decide_single/cedar/{} for one)",
            f.label, f.label
        ),
    }
    g.finish();
}

fn bench_conditions_group(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("decide_conditions");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500));
    let env = bench_context();
    // The conditions hold: both tenants decide alike.
    for q in &f.queries {
        let query = Query {
            env: &env,
            ..q.query()
        };
        assert_eq!(
            f.engine.decide_outcome(TENANT, &query),
            f.conditional.decide_outcome(TENANT, &query)
        );
    }
    for (name, engine) in [("plain", &f.engine), ("cond10", &f.conditional)] {
        let mut i = 0usize;
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new(format!("outcome_{name}"), &f.label), |b| {
            b.iter(|| {
                let q = &f.queries[i % f.queries.len()];
                i = i.wrapping_add(1);
                black_box(engine.decide_outcome(
                    TENANT,
                    &Query {
                        env: &env,
                        ..q.query()
                    },
                ))
            });
        });
        g.bench_function(BenchmarkId::new(format!("decide_{name}"), &f.label), |b| {
            b.iter(|| {
                let q = &f.queries[i % f.queries.len()];
                i = i.wrapping_add(1);
                black_box(engine.decide(
                    TENANT,
                    &Query {
                        env: &env,
                        ..q.query()
                    },
                ))
            });
        });
        g.bench_function(BenchmarkId::new(format!("explain_{name}"), &f.label), |b| {
            b.iter(|| {
                let q = &f.queries[i % f.queries.len()];
                i = i.wrapping_add(1);
                black_box(engine.explain(
                    TENANT,
                    &Query {
                        env: &env,
                        ..q.query()
                    },
                ))
            });
        });
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(
            BenchmarkId::new(format!("matrix_outcomes_{name}"), &f.label),
            |b| {
                b.iter(|| {
                    let bt = &f.batches[i % f.batches.len()];
                    i = i.wrapping_add(1);
                    black_box(engine.decide_matrix_outcomes_with(
                        TENANT,
                        &env,
                        &bt.principals,
                        std::slice::from_ref(&bt.action),
                        &bt.resources,
                    ))
                });
            },
        );
    }
    g.finish();
}

fn bench_build(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("index_build");
    g.throughput(Throughput::Elements(f.statements as u64));
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    g.bench_function(BenchmarkId::new("kaa", &f.label), |b| {
        b.iter_batched(|| f.stored.clone(), build_index, BatchSize::PerIteration);
    });
    g.finish();
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then run a quick smoke pass.
    let quick = !std::env::args().any(|a| a == "--bench");
    let mut criterion = Criterion::default().configure_from_args();
    let cedar = std::env::var("KAA_BENCH_CEDAR").map_or(true, |v| v != "0");
    let sizes: Vec<usize> = match std::env::var("KAA_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().expect("KAA_BENCH_SIZES: statement counts"))
            .collect(),
        Err(_) if quick => vec![1_000],
        Err(_) => vec![1_000, 10_000, 100_000],
    };
    for n in sizes {
        let f = build_fixture(n, cedar);
        bench_single(&mut criterion, &f, quick);
        bench_batch(&mut criterion, &f, quick);
        bench_build(&mut criterion, &f);
        bench_conditions_group(&mut criterion, &f);
    }
    criterion.final_summary();
}
