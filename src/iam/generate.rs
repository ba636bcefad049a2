//! `iam generate`: fill a tenant with a synthetic directory and policy set for load tests,
//! written through the store in large transactions (not through the HTTP API, so it is fast),
//! and write sample evaluate requests whose decisions the generator worked out itself.
//!
//! What it writes, deterministically from `--seed`:
//! * users `krn:iam:<t>::user/o<k>/u<i>` (directory path `/o<k>`), with e-mail and names. Their
//!   password hash is the fixed string [`GENERATED_PASSWORD_HASH`], not an Argon2 hash: hashing
//!   10k passwords with Argon2 would take minutes, and IAM never checks a local password (users
//!   sign in through Keycloak), so generated users simply have no usable password;
//! * groups `g<j>` nested up to 4 levels through their parent, with the KRN the API gives them
//!   (`krn:iam:<t>::group/<ancestor names>/<name>`, path `/<ancestor names>`);
//! * memberships: every user in 1 to 3 groups;
//! * identity policies `p<k>` with about `statements / policies` statements each over a few
//!   services, resource types and paths (`krn:epr:<t>::endpoint/d3/t1/e42`); 30% of statements
//!   carry a wildcard action (`epr:endpoint:*`, `epr:*`, `*`) or resource (`…/d3/t1/*` up to
//!   `krn:epr:<t>:*`), 10% deny. Statements are stored exactly as the API stores them: the
//!   document is read and validated by [`PolicyDocument::from_json`] and written back by
//!   `to_json`;
//! * attachments: every policy to one user (40%) or one group (60%).
//!
//! Sample requests: `PREFIX.single.jsonl` (one `POST /api/v1/evaluate` body per line, one
//! resource each), `PREFIX.batch.jsonl` (one body per line, `--batch` resources each, for
//! `?filterResources=true`) and `PREFIX.expected.json` (every sample with the outcome of each of
//! its resources). Outcomes come from a plain reference evaluation: the statements of the
//! policies attached to the user, its groups and their ancestors, deny over allow, a pattern
//! ending in `*` matching by prefix and any other by equality. It shares nothing with the
//! service's index but that rule.
//!
//! Export (`--export FILE`): the tenant as one JSON document, for translating it into other
//! authorization systems (`scripts/bench-peers.sh`): every user with its groups, every group with
//! its parent, every policy with its statements (as stored) and the principal it is attached to,
//! the actions of the generated resource types and every concrete resource KRN the generator can
//! name (see `export_model`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::clock::now_ms;
use crate::policy::{Outcome, PolicyDocument};
use crate::storage::{BulkCount, BulkStore, Database, GroupRecord, NewPolicy, UserRecord};

/// The password hash of every generated user: deliberately not a hash at all (see the module
/// documentation), so no password can match it.
pub const GENERATED_PASSWORD_HASH: &str = "generated:no-password";

/// Deepest group nesting (a top-level group is level 1).
pub const MAX_GROUP_DEPTH: usize = 4;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    pub tenant: String,
    pub users: usize,
    pub groups: usize,
    pub policies: usize,
    pub statements: usize,
    pub seed: u64,
    /// Rows per transaction (0: the store's default, 1000).
    pub per_tx: usize,
    /// Single-resource sample requests; batches are a tenth as many (at least one).
    pub samples: usize,
    /// Resources per batch sample.
    pub batch: usize,
    /// Prefix of the request files; `None` writes none.
    pub requests: Option<PathBuf>,
    /// File to write the whole tenant to as one JSON document (users, groups, policies, actions, resources), for
    /// translating it into other authorization systems; `None` writes none.
    pub export: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            tenant: "bench".into(),
            users: 10_000,
            groups: 1_000,
            policies: 10_000,
            statements: 50_000,
            seed: 1,
            per_tx: 1000,
            samples: 1000,
            batch: 100,
            requests: None,
            export: None,
        }
    }
}

/// One sample request with the outcome expected for each of its resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub principal: String,
    pub action: String,
    pub resources: Vec<String>,
    pub expected: Vec<Outcome>,
}

impl Sample {
    /// The `POST /api/v1/evaluate` body.
    pub fn body(&self) -> Value {
        json!({
            "principal": self.principal,
            "action": self.action,
            "resources": self.resources,
        })
    }
}

/// Rows written to one table and how long building and writing them took.
#[derive(Debug, Clone, Copy)]
pub struct TableReport {
    pub table: &'static str,
    pub rows: u64,
    pub transactions: u64,
    pub elapsed: Duration,
}

/// What `generate` wrote.
#[derive(Debug, Clone)]
pub struct Report {
    pub tenant: String,
    pub tables: Vec<TableReport>,
    pub statements: u64,
    pub wildcard_statements: u64,
    pub deny_statements: u64,
    /// Groups per nesting level (index 0: top level).
    pub groups_per_level: Vec<u64>,
    pub attached_to_users: u64,
    pub attached_to_groups: u64,
    pub elapsed: Duration,
    pub single: Vec<Sample>,
    pub batch: Vec<Sample>,
    /// Files written (single, batch, expected), when asked for.
    pub files: Vec<PathBuf>,
}

impl Report {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    pub fn table(&self, name: &str) -> u64 {
        self.tables
            .iter()
            .find(|t| t.table == name)
            .map_or(0, |t| t.rows)
    }
}

// ------------------------------------------------------------------------------ randomness

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

    /// 0..n (0 when n is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `percent`/100.
    fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// 1..=max, skewed towards small values.
    fn count(&mut self, max: usize) -> usize {
        1 + self.below(max).min(self.below(max))
    }
}

// ------------------------------------------------------------------------------ the model

struct ResourceType {
    service: &'static str,
    name: &'static str,
    /// Operations; one may carry a target type (`user:add` gives `iam:group:user:add`).
    ops: &'static [&'static str],
}

const TYPES: &[ResourceType] = &[
    ResourceType {
        service: "iam",
        name: "user",
        ops: &["read", "create", "update", "delete"],
    },
    ResourceType {
        service: "iam",
        name: "group",
        ops: &[
            "read",
            "create",
            "update",
            "delete",
            "user:add",
            "user:remove",
        ],
    },
    ResourceType {
        service: "iam",
        name: "policy",
        ops: &["read", "create", "update", "user:attach", "group:attach"],
    },
    ResourceType {
        service: "epr",
        name: "endpoint",
        ops: &["read", "create", "update", "delete"],
    },
    ResourceType {
        service: "epr",
        name: "filter",
        ops: &["read", "update"],
    },
    ResourceType {
        service: "cm",
        name: "application",
        ops: &["read", "update", "deploy"],
    },
    ResourceType {
        service: "cm",
        name: "config",
        ops: &["read", "update"],
    },
    ResourceType {
        service: "tsdb",
        name: "series",
        ops: &["read", "write"],
    },
    ResourceType {
        service: "ota",
        name: "firmware",
        ops: &["read", "deploy"],
    },
];

/// Departments and teams of resource paths.
const DEPTS: usize = 8;
const TEAMS: usize = 8;

/// A concrete resource of some type: `…::<type>/d<dept>/t<team>/<letter><id>`.
#[derive(Debug, Clone, Copy, Default)]
struct Coord {
    dept: u16,
    team: u16,
    id: u32,
}

/// One statement, kept compact (a million of them stay small) and rendered on demand.
#[derive(Debug, Clone, Copy, Default)]
struct Stmt {
    deny: bool,
    ty: u8,
    ops: [u8; 3],
    n_ops: u8,
    /// 0 none; 1 `svc:type:*`; 2 `svc:*`; 3 `*` (replaces the action list).
    action_wild: u8,
    res: [Coord; 2],
    n_res: u8,
    /// Applies to `res[0]`: 0 none; 1 `…/d/t/*`; 2 `…/d/*`; 3 `…::type/*`; 4 `krn:svc:t::*`;
    /// 5 `krn:svc:t:*`.
    res_wild: u8,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    User(u32),
    Group(u32),
}

struct Policy {
    first: usize,
    len: usize,
    target: Target,
}

/// The generated tenant, before it is written.
struct Model {
    tenant: String,
    ids: u32,
    orgs: usize,
    users: usize,
    group_parent: Vec<Option<u32>>,
    group_depth: Vec<u8>,
    group_krn: Vec<String>,
    user_groups: Vec<Vec<u32>>,
    policies: Vec<Policy>,
    stmts: Vec<Stmt>,
    /// Policies attached to each user / group.
    on_user: Vec<Vec<u32>>,
    on_group: Vec<Vec<u32>>,
}

fn ty(i: u8) -> &'static ResourceType {
    &TYPES[usize::from(i) % TYPES.len()]
}

impl Model {
    fn user_krn(&self, i: usize) -> String {
        format!("krn:iam:{}::user/o{}/u{i}", self.tenant, i % self.orgs)
    }

    fn resource(&self, t: u8, c: Coord) -> String {
        let rt = ty(t);
        format!(
            "krn:{}:{}::{}/d{}/t{}/{}{}",
            rt.service,
            self.tenant,
            rt.name,
            c.dept,
            c.team,
            &rt.name[..1],
            c.id
        )
    }

    fn random_coord(&self, rng: &mut Rng) -> Coord {
        Coord {
            dept: rng.below(DEPTS) as u16,
            team: rng.below(TEAMS) as u16,
            id: rng.below(self.ids as usize) as u32,
        }
    }

    fn action(t: u8, op: u8) -> String {
        let rt = ty(t);
        format!(
            "{}:{}:{}",
            rt.service,
            rt.name,
            rt.ops[usize::from(op) % rt.ops.len()]
        )
    }

    fn actions(&self, s: &Stmt) -> Vec<String> {
        let rt = ty(s.ty);
        match s.action_wild {
            1 => vec![format!("{}:{}:*", rt.service, rt.name)],
            2 => vec![format!("{}:*", rt.service)],
            3 => vec!["*".to_string()],
            _ => s.ops[..usize::from(s.n_ops)]
                .iter()
                .map(|&op| Model::action(s.ty, op))
                .collect(),
        }
    }

    fn resources(&self, s: &Stmt) -> Vec<String> {
        let rt = ty(s.ty);
        let t = &self.tenant;
        let mut out: Vec<String> = s.res[..usize::from(s.n_res)]
            .iter()
            .map(|&c| self.resource(s.ty, c))
            .collect();
        let c = s.res[0];
        let wild = match s.res_wild {
            1 => Some(format!(
                "krn:{}:{t}::{}/d{}/t{}/*",
                rt.service, rt.name, c.dept, c.team
            )),
            2 => Some(format!("krn:{}:{t}::{}/d{}/*", rt.service, rt.name, c.dept)),
            3 => Some(format!("krn:{}:{t}::{}/*", rt.service, rt.name)),
            4 => Some(format!("krn:{}:{t}::*", rt.service)),
            5 => Some(format!("krn:{}:{t}:*", rt.service)),
            _ => None,
        };
        if let (Some(w), Some(first)) = (wild, out.first_mut()) {
            *first = w;
        }
        out.dedup();
        out
    }

    /// A concrete action the statement names (or its wildcard covers).
    fn example_action(&self, s: &Stmt, rng: &mut Rng) -> String {
        let op = s.ops[rng.below(usize::from(s.n_ops.max(1)))];
        Model::action(s.ty, op)
    }

    /// A concrete resource the statement names (or its wildcard covers).
    fn example_resource(&self, s: &Stmt, rng: &mut Rng) -> String {
        let k = rng.below(usize::from(s.n_res.max(1)));
        let mut c = s.res[k];
        if k == 0 {
            let r = self.random_coord(rng);
            match s.res_wild {
                1 => c.id = r.id,
                2 => (c.team, c.id) = (r.team, r.id),
                3..=5 => c = r,
                _ => {}
            }
        }
        self.resource(s.ty, c)
    }

    /// Statements that reach user `u`: those of policies attached to it, its groups and their
    /// ancestors.
    fn reachable(&self, u: usize) -> Vec<usize> {
        let mut groups: Vec<u32> = Vec::new();
        for &g in &self.user_groups[u] {
            let mut at = Some(g);
            while let Some(x) = at {
                if !groups.contains(&x) {
                    groups.push(x);
                }
                at = self.group_parent[x as usize];
            }
        }
        let mut out = Vec::new();
        let policies = self.on_user[u].iter().chain(
            groups
                .iter()
                .flat_map(|&g| self.on_group[g as usize].iter()),
        );
        for &p in policies {
            let p = &self.policies[p as usize];
            out.extend(p.first..p.first + p.len);
        }
        out
    }
}

/// A statement's patterns as strings, for the reference evaluation.
struct Rendered {
    deny: bool,
    actions: Vec<String>,
    resources: Vec<String>,
}

/// A pattern ending in `*` matches by prefix, any other by equality (the rule of KRNs and
/// actions alike).
fn matches(s: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => s.starts_with(prefix),
        None => s == pattern,
    }
}

fn reference(rendered: &[Rendered], action: &str, resource: &str) -> Outcome {
    let mut allow = false;
    for r in rendered {
        if r.actions.iter().any(|a| matches(action, a))
            && r.resources.iter().any(|p| matches(resource, p))
        {
            if r.deny {
                return Outcome::ExplicitDeny;
            }
            allow = true;
        }
    }
    if allow {
        Outcome::Allow
    } else {
        Outcome::ImplicitDeny
    }
}

// ------------------------------------------------------------------------------ building

fn build(opts: &Options) -> Result<Model, String> {
    if !super::service::valid_token(&opts.tenant) {
        return Err(format!(
            "`--tenant` `{}` may only hold letters, digits and - _ @ . +",
            opts.tenant
        ));
    }
    if opts.users == 0 || opts.policies == 0 {
        return Err("`--users` and `--policies` must be at least 1".into());
    }
    if opts.statements < opts.policies {
        return Err(format!(
            "`--statements` ({}) must be at least `--policies` ({}): every policy has a statement",
            opts.statements, opts.policies
        ));
    }
    if opts.statements > opts.policies * 100 {
        return Err("at most 100 statements per policy on average".into());
    }
    let mut rng = Rng(opts.seed ^ 0x6b61_615f_6961_6d21);
    let ids = (opts.statements / (TYPES.len() * DEPTS * TEAMS)).max(8) as u32;
    let orgs = (opts.users / 1000).clamp(1, 50);

    // Groups: 5% at the top, each other one under a random earlier group that is not at the
    // deepest level.
    let top = (opts.groups / 20).max(1).min(opts.groups);
    let mut group_parent: Vec<Option<u32>> = Vec::with_capacity(opts.groups);
    let mut group_depth: Vec<u8> = Vec::with_capacity(opts.groups);
    let mut group_krn: Vec<String> = Vec::with_capacity(opts.groups);
    let mut can_parent: Vec<u32> = Vec::new();
    for j in 0..opts.groups {
        let parent = if j < top || can_parent.is_empty() {
            None
        } else {
            Some(can_parent[rng.below(can_parent.len())])
        };
        let (depth, krn) = match parent {
            None => (1u8, format!("krn:iam:{}::group/g{j}", opts.tenant)),
            Some(p) => (
                group_depth[p as usize] + 1,
                format!("{}/g{j}", group_krn[p as usize]),
            ),
        };
        if usize::from(depth) < MAX_GROUP_DEPTH {
            can_parent.push(j as u32);
        }
        group_parent.push(parent);
        group_depth.push(depth);
        group_krn.push(krn);
    }

    // Memberships: 1 to 3 distinct groups per user.
    let mut user_groups: Vec<Vec<u32>> = Vec::with_capacity(opts.users);
    for _ in 0..opts.users {
        let want = (1 + rng.below(3)).min(opts.groups);
        let mut gs: Vec<u32> = Vec::with_capacity(want);
        while gs.len() < want {
            let g = rng.below(opts.groups) as u32;
            if !gs.contains(&g) {
                gs.push(g);
            }
        }
        user_groups.push(gs);
    }

    // Statements per policy: one each, the rest spread at random.
    let mut lens = vec![1usize; opts.policies];
    for _ in 0..opts.statements - opts.policies {
        lens[rng.below(opts.policies)] += 1;
    }
    let mut model = Model {
        tenant: opts.tenant.clone(),
        ids,
        orgs,
        users: opts.users,
        group_parent,
        group_depth,
        group_krn,
        user_groups,
        policies: Vec::with_capacity(opts.policies),
        stmts: Vec::with_capacity(opts.statements),
        on_user: vec![Vec::new(); opts.users],
        on_group: vec![Vec::new(); opts.groups],
    };
    for (k, &len) in lens.iter().enumerate() {
        let first = model.stmts.len();
        for _ in 0..len {
            let s = random_stmt(&model, &mut rng);
            model.stmts.push(s);
        }
        let target = if opts.groups > 0 && rng.percent(60) {
            let g = rng.below(opts.groups);
            model.on_group[g].push(k as u32);
            Target::Group(g as u32)
        } else {
            let u = rng.below(opts.users);
            model.on_user[u].push(k as u32);
            Target::User(u as u32)
        };
        model.policies.push(Policy { first, len, target });
    }
    Ok(model)
}

fn random_stmt(m: &Model, rng: &mut Rng) -> Stmt {
    let t = rng.below(TYPES.len()) as u8;
    let n_ops_avail = ty(t).ops.len();
    let mut s = Stmt {
        deny: rng.percent(10),
        ty: t,
        ..Stmt::default()
    };
    let want = rng.count(3).min(n_ops_avail);
    while usize::from(s.n_ops) < want {
        let op = rng.below(n_ops_avail) as u8;
        if !s.ops[..usize::from(s.n_ops)].contains(&op) {
            s.ops[usize::from(s.n_ops)] = op;
            s.n_ops += 1;
        }
    }
    s.n_res = rng.count(2) as u8;
    s.res = [m.random_coord(rng), m.random_coord(rng)];
    if rng.percent(30) {
        if rng.percent(50) {
            s.action_wild = match rng.below(10) {
                0..=5 => 1,
                6..=8 => 2,
                _ => 3,
            };
        } else {
            s.res_wild = match rng.below(100) {
                0..=39 => 1,
                40..=69 => 2,
                70..=84 => 3,
                85..=94 => 4,
                _ => 5,
            };
        }
    }
    s
}

/// The statements JSON of a policy exactly as the API stores it: the document read and validated
/// by the engine, written back by `to_json`.
fn statements_json(m: &Model, name: &str, stmts: &[Stmt]) -> Result<String, String> {
    let list: Vec<Value> = stmts
        .iter()
        .map(|s| {
            json!({
                "effect": if s.deny { "deny" } else { "allow" },
                "actions": m.actions(s),
                "resources": m.resources(s),
            })
        })
        .collect();
    let doc = json!({ "name": name, "type": "identity", "statements": list });
    let parsed =
        PolicyDocument::from_json(&doc).map_err(|e| format!("generated policy `{name}`: {e}"))?;
    Ok(parsed.to_json()["statements"].to_string())
}

// ------------------------------------------------------------------------------ samples

fn render(m: &Model, idx: &[usize]) -> Vec<Rendered> {
    idx.iter()
        .map(|&i| {
            let s = &m.stmts[i];
            Rendered {
                deny: s.deny,
                actions: m.actions(s),
                resources: m.resources(s),
            }
        })
        .collect()
}

fn samples(m: &Model, opts: &Options) -> (Vec<Sample>, Vec<Sample>) {
    let mut rng = Rng(opts.seed ^ 0x7361_6d70_6c65_7321);
    let mut single = Vec::with_capacity(opts.samples);
    for _ in 0..opts.samples {
        let u = rng.below(m.users);
        let reach = m.reachable(u);
        let rendered = render(m, &reach);
        let want_deny = match rng.below(100) {
            0..=54 => Some(false),
            55..=69 => Some(true),
            _ => None,
        };
        let aimed: Vec<&Stmt> = match want_deny {
            Some(d) => reach
                .iter()
                .map(|&i| &m.stmts[i])
                .filter(|s| s.deny == d)
                .collect(),
            None => Vec::new(),
        };
        let (action, resource) = if aimed.is_empty() {
            let t = rng.below(TYPES.len()) as u8;
            let op = rng.below(ty(t).ops.len()) as u8;
            (
                Model::action(t, op),
                m.resource(t, m.random_coord(&mut rng)),
            )
        } else {
            let s = aimed[rng.below(aimed.len())];
            (
                m.example_action(s, &mut rng),
                m.example_resource(s, &mut rng),
            )
        };
        let outcome = reference(&rendered, &action, &resource);
        single.push(Sample {
            principal: m.user_krn(u),
            action,
            resources: vec![resource],
            expected: vec![outcome],
        });
    }
    let n_batches = (opts.samples / 10).max(1);
    let mut batch = Vec::with_capacity(n_batches);
    for _ in 0..n_batches {
        let u = rng.below(m.users);
        let reach = m.reachable(u);
        let rendered = render(m, &reach);
        let allows: Vec<&Stmt> = reach
            .iter()
            .map(|&i| &m.stmts[i])
            .filter(|s| !s.deny)
            .collect();
        let (t, action) = if allows.is_empty() {
            let t = rng.below(TYPES.len()) as u8;
            (t, Model::action(t, rng.below(ty(t).ops.len()) as u8))
        } else {
            let s = allows[rng.below(allows.len())];
            (s.ty, m.example_action(s, &mut rng))
        };
        let same_type: Vec<&Stmt> = reach
            .iter()
            .map(|&i| &m.stmts[i])
            .filter(|s| s.ty == t)
            .collect();
        let resources: Vec<String> = (0..opts.batch)
            .map(|_| {
                if !same_type.is_empty() && rng.percent(50) {
                    m.example_resource(same_type[rng.below(same_type.len())], &mut rng)
                } else {
                    m.resource(t, m.random_coord(&mut rng))
                }
            })
            .collect();
        let expected = resources
            .iter()
            .map(|r| reference(&rendered, &action, r))
            .collect();
        batch.push(Sample {
            principal: m.user_krn(u),
            action,
            resources,
            expected,
        });
    }
    (single, batch)
}

/// (allow, explicitDeny, implicitDeny) over every decision of the samples.
pub fn outcome_mix(samples: &[Sample]) -> (usize, usize, usize) {
    let mut mix = (0, 0, 0);
    for o in samples.iter().flat_map(|s| s.expected.iter()) {
        match o {
            Outcome::Allow => mix.0 += 1,
            Outcome::ExplicitDeny => mix.1 += 1,
            Outcome::ImplicitDeny => mix.2 += 1,
        }
    }
    mix
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Allow => "allow",
        Outcome::ExplicitDeny => "explicitDeny",
        Outcome::ImplicitDeny => "implicitDeny",
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The generated tenant as one JSON document:
///
/// ```json
/// {"tenant": "t",
///  "users": [{"krn": "krn:iam:t::user/o0/u0", "groups": ["krn:iam:t::group/g3"]}],
///  "groups": [{"krn": "krn:iam:t::group/g3", "parent": null}],
///  "policies": [{"krn": "krn:iam:t::policy/p0", "name": "p0",
///                "attachedTo": "krn:iam:t::group/g3",
///                "statements": [{"effect": "allow", "actions": [...], "resources": [...]}]}],
///  "actions": ["iam:user:read", ...],
///  "resources": ["krn:iam:t::user/d0/t0/u0", ...]}
/// ```
///
/// Statements are exactly the stored ones. A user gets the policies attached to it, to its groups
/// and to their ancestors; `actions` lists every action of the generated resource types and
/// `resources` every concrete resource the statements and sample requests can name.
fn export_model(m: &Model) -> Result<Value, String> {
    let users: Vec<Value> = (0..m.users)
        .map(|u| {
            let groups: Vec<&str> = m.user_groups[u]
                .iter()
                .map(|&g| m.group_krn[g as usize].as_str())
                .collect();
            json!({ "krn": m.user_krn(u), "groups": groups })
        })
        .collect();
    let groups: Vec<Value> = (0..m.group_krn.len())
        .map(|j| {
            let parent = m.group_parent[j].map(|p| m.group_krn[p as usize].as_str());
            json!({ "krn": m.group_krn[j], "parent": parent })
        })
        .collect();
    let policies = m
        .policies
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let attached = match p.target {
                Target::User(u) => m.user_krn(u as usize),
                Target::Group(g) => m.group_krn[g as usize].clone(),
            };
            let name = format!("p{k}");
            let stored = statements_json(m, &name, &m.stmts[p.first..p.first + p.len])?;
            let statements: Value = serde_json::from_str(&stored)
                .map_err(|e| format!("generated policy `{name}`: {e}"))?;
            Ok(json!({
                "krn": format!("krn:iam:{}::policy/{name}", m.tenant),
                "name": name,
                "attachedTo": attached,
                "statements": statements,
            }))
        })
        .collect::<Result<Vec<Value>, String>>()?;
    let mut actions = Vec::new();
    for (t, rt) in TYPES.iter().enumerate() {
        for op in 0..rt.ops.len() {
            actions.push(Model::action(t as u8, op as u8));
        }
    }
    let mut resources = Vec::new();
    for t in 0..TYPES.len() {
        for dept in 0..DEPTS {
            for team in 0..TEAMS {
                for id in 0..m.ids {
                    let c = Coord {
                        dept: dept as u16,
                        team: team as u16,
                        id,
                    };
                    resources.push(m.resource(t as u8, c));
                }
            }
        }
    }
    Ok(json!({
        "tenant": m.tenant,
        "users": users,
        "groups": groups,
        "policies": policies,
        "actions": actions,
        "resources": resources,
    }))
}

fn write_requests(prefix: &Path, report: &Report) -> Result<Vec<PathBuf>, String> {
    if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let lines = |list: &[Sample]| {
        let mut text = String::new();
        for s in list {
            text.push_str(&s.body().to_string());
            text.push('\n');
        }
        text
    };
    let single = with_suffix(prefix, ".single.jsonl");
    let batch = with_suffix(prefix, ".batch.jsonl");
    let expected = with_suffix(prefix, ".expected.json");
    write(&single, &lines(&report.single))?;
    write(&batch, &lines(&report.batch))?;
    let detail = |list: &[Sample]| -> Vec<Value> {
        list.iter()
            .map(|s| {
                json!({
                    "principal": s.principal,
                    "action": s.action,
                    "resources": s.resources,
                    "expected": s.expected.iter().map(|o| outcome_name(*o)).collect::<Vec<_>>(),
                })
            })
            .collect()
    };
    let doc = json!({
        "tenant": report.tenant,
        "single": detail(&report.single),
        "batch": detail(&report.batch),
    });
    write(&expected, &doc.to_string())?;
    Ok(vec![single, batch, expected])
}

// ------------------------------------------------------------------------------ writing

/// Generate the tenant into `db` (which must not hold any of its rows yet) and, when asked,
/// write the sample request files.
pub fn generate(db: &Database, opts: &Options) -> Result<Report, String> {
    let started = Instant::now();
    let existing = db
        .tenant_counts(&opts.tenant)
        .map_err(|e| format!("storage: {e}"))?;
    if !existing.is_empty() {
        return Err(format!(
            "tenant `{}` already holds {} users, {} groups and {} policies: use another \
             `--tenant` or a fresh database",
            opts.tenant, existing.users, existing.groups, existing.policies
        ));
    }
    let m = build(opts)?;
    let t = opts.tenant.as_str();
    let per_tx = if opts.per_tx == 0 {
        crate::storage::ROWS_PER_TX
    } else {
        opts.per_tx
    };
    let now = now_ms();
    let store = |e: crate::storage::StorageError| format!("storage: {e}");
    let mut tables = Vec::new();

    // Users.
    let clock = Instant::now();
    let mut count = BulkCount::default();
    for chunk in (0..m.users).collect::<Vec<_>>().chunks(per_tx) {
        let rows: Vec<UserRecord> = chunk
            .iter()
            .map(|&i| UserRecord {
                tenant: t.to_string(),
                krn: m.user_krn(i),
                username: format!("u{i}"),
                path: format!("/o{}", i % m.orgs),
                email: Some(format!("u{i}@o{}.example.com", i % m.orgs)),
                first_name: Some(format!("First{i}")),
                last_name: Some(format!("Last{i}")),
                enabled: true,
                auth_id: None,
                password_hash: Some(GENERATED_PASSWORD_HASH.to_string()),
                metadata: "{}".into(),
                required_actions: "[]".into(),
                version: 1,
                created_ms: now,
                updated_ms: now,
                pools: Vec::new(),
            })
            .collect();
        let c = db.bulk_users(t, &rows, per_tx).map_err(store)?;
        count.rows += c.rows;
        count.transactions += c.transactions;
    }
    tables.push(TableReport {
        table: "users",
        rows: count.rows,
        transactions: count.transactions,
        elapsed: clock.elapsed(),
    });

    // Groups, parents first (they come before their children in the model).
    let clock = Instant::now();
    let mut count = BulkCount::default();
    let groups: Vec<usize> = (0..m.group_krn.len()).collect();
    for chunk in groups.chunks(per_tx) {
        let rows: Vec<GroupRecord> = chunk
            .iter()
            .map(|&j| {
                let parent = m.group_parent[j].map(|p| m.group_krn[p as usize].clone());
                let path = match &parent {
                    None => "/".to_string(),
                    Some(p) => {
                        let rest = p
                            .split_once("::group/")
                            .map_or("", |(_, rest)| rest)
                            .to_string();
                        format!("/{rest}")
                    }
                };
                GroupRecord {
                    tenant: t.to_string(),
                    krn: m.group_krn[j].clone(),
                    name: format!("g{j}"),
                    display_name: Some(format!("Group {j}")),
                    parent_krn: parent,
                    path,
                    metadata: "{}".into(),
                    version: 1,
                    created_ms: now,
                    updated_ms: now,
                    pools: Vec::new(),
                }
            })
            .collect();
        let c = db.bulk_groups(t, &rows, per_tx).map_err(store)?;
        count.rows += c.rows;
        count.transactions += c.transactions;
    }
    tables.push(TableReport {
        table: "groups",
        rows: count.rows,
        transactions: count.transactions,
        elapsed: clock.elapsed(),
    });

    // Memberships.
    let clock = Instant::now();
    let pairs: Vec<(usize, u32)> = m
        .user_groups
        .iter()
        .enumerate()
        .flat_map(|(u, gs)| gs.iter().map(move |&g| (u, g)))
        .collect();
    let mut count = BulkCount::default();
    for chunk in pairs.chunks(per_tx) {
        let rows: Vec<(String, String)> = chunk
            .iter()
            .map(|&(u, g)| (m.user_krn(u), m.group_krn[g as usize].clone()))
            .collect();
        let c = db.bulk_memberships(t, &rows, per_tx).map_err(store)?;
        count.rows += c.rows;
        count.transactions += c.transactions;
    }
    tables.push(TableReport {
        table: "memberships",
        rows: count.rows,
        transactions: count.transactions,
        elapsed: clock.elapsed(),
    });

    // Policies.
    let clock = Instant::now();
    let policy_krn = |k: usize| format!("krn:iam:{t}::policy/p{k}");
    let mut count = BulkCount::default();
    let ks: Vec<usize> = (0..m.policies.len()).collect();
    for chunk in ks.chunks(per_tx) {
        let rows = chunk
            .iter()
            .map(|&k| {
                let p = &m.policies[k];
                let name = format!("p{k}");
                let statements = statements_json(&m, &name, &m.stmts[p.first..p.first + p.len])?;
                Ok(NewPolicy {
                    tenant: t.to_string(),
                    krn: policy_krn(k),
                    name,
                    kind: "identity".into(),
                    description: Some(format!("generated policy {k}")),
                    statements,
                    origin: "api".into(),
                    now_ms: now,
                    resource_krn: None,
                    pools: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let c = db.bulk_policies(t, &rows, per_tx).map_err(store)?;
        count.rows += c.rows;
        count.transactions += c.transactions;
    }
    tables.push(TableReport {
        table: "policies",
        rows: count.rows,
        transactions: count.transactions,
        elapsed: clock.elapsed(),
    });

    // Attachments.
    let clock = Instant::now();
    let mut count = BulkCount::default();
    let (mut to_users, mut to_groups) = (0u64, 0u64);
    for chunk in ks.chunks(per_tx) {
        let rows: Vec<(String, String)> = chunk
            .iter()
            .map(|&k| {
                let target = match m.policies[k].target {
                    Target::User(u) => {
                        to_users += 1;
                        m.user_krn(u as usize)
                    }
                    Target::Group(g) => {
                        to_groups += 1;
                        m.group_krn[g as usize].clone()
                    }
                };
                (policy_krn(k), target)
            })
            .collect();
        let c = db.bulk_attachments(t, &rows, per_tx).map_err(store)?;
        count.rows += c.rows;
        count.transactions += c.transactions;
    }
    tables.push(TableReport {
        table: "attachments",
        rows: count.rows,
        transactions: count.transactions,
        elapsed: clock.elapsed(),
    });
    let elapsed = started.elapsed();

    let mut groups_per_level = vec![0u64; MAX_GROUP_DEPTH];
    for &d in &m.group_depth {
        if let Some(n) = groups_per_level.get_mut(usize::from(d).saturating_sub(1)) {
            *n += 1;
        }
    }
    let (single, batch) = samples(&m, opts);
    let mut report = Report {
        tenant: t.to_string(),
        tables,
        statements: m.stmts.len() as u64,
        wildcard_statements: m
            .stmts
            .iter()
            .filter(|s| s.action_wild > 0 || s.res_wild > 0)
            .count() as u64,
        deny_statements: m.stmts.iter().filter(|s| s.deny).count() as u64,
        groups_per_level,
        attached_to_users: to_users,
        attached_to_groups: to_groups,
        elapsed,
        single,
        batch,
        files: Vec::new(),
    };
    if let Some(prefix) = &opts.requests {
        report.files = write_requests(prefix, &report)?;
    }
    if let Some(path) = &opts.export {
        let text = export_model(&m)?.to_string();
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        report.files.push(path.clone());
    }
    Ok(report)
}

// ------------------------------------------------------------------------------ command line

/// `iam generate --help`.
pub const USAGE: &str = "usage: iam generate [--tenant T] [--users N] [--groups N] [--policies N] \
[--statements N] [--seed S] [--per-tx N] [--samples N] [--batch N] [--requests PREFIX]
[--export FILE]

Fills tenant T (default `bench`) with N users (10000), groups (1000, nested up to 4 levels),
policies (10000) and statements (50000; 30% wildcards, 10% deny), each policy attached to a user
or a group, written through the store configured as for `iam serve` (APP_CONFIG_PATH and the
environment: SQLite by default, PostgreSQL with KAA_POSTGRESQL_*) in transactions of --per-tx
rows (1000). Writes sample evaluate requests to PREFIX.single.jsonl, PREFIX.batch.jsonl and
PREFIX.expected.json (default prefix `<T>-requests`): --samples single requests (1000) and a tenth
as many batches of --batch resources (100). Generated users have no usable password.
--export FILE also writes the whole tenant as one JSON document (users with their groups, groups
with their parent, policies with their statements and attachment, the actions and resources).";

fn number(flag: &str, v: Option<&String>) -> Result<usize, String> {
    let v = v.ok_or_else(|| format!("`{flag}` needs a value"))?;
    let clean = v.replace('_', "");
    let (digits, mult) = match clean.strip_suffix(['k', 'K']) {
        Some(d) => (d.to_string(), 1000),
        None => match clean.strip_suffix(['m', 'M']) {
            Some(d) => (d.to_string(), 1_000_000),
            None => (clean, 1),
        },
    };
    digits
        .parse::<usize>()
        .map(|n| n * mult)
        .map_err(|_| format!("`{flag}` must be a whole number, got `{v}`"))
}

/// Read the options after `generate`; `Ok(None)` for `--help`.
pub fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options::default();
    let mut requests: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (flag.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned());
        match name {
            "--help" | "-h" => return Ok(None),
            "--tenant" => o.tenant = value().ok_or("`--tenant` needs a value")?,
            "--users" => o.users = number(name, value().as_ref())?,
            "--groups" => o.groups = number(name, value().as_ref())?,
            "--policies" => o.policies = number(name, value().as_ref())?,
            "--statements" => o.statements = number(name, value().as_ref())?,
            "--seed" => o.seed = number(name, value().as_ref())? as u64,
            "--per-tx" => o.per_tx = number(name, value().as_ref())?,
            "--samples" => o.samples = number(name, value().as_ref())?,
            "--batch" => o.batch = number(name, value().as_ref())?.max(1),
            "--requests" => {
                requests = Some(PathBuf::from(value().ok_or("`--requests` needs a value")?))
            }
            "--export" => {
                o.export = Some(PathBuf::from(value().ok_or("`--export` needs a value")?))
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    o.requests = Some(requests.unwrap_or_else(|| PathBuf::from(format!("{}-requests", o.tenant))));
    Ok(Some(o))
}

fn per_second(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn percent(n: usize, total: usize) -> f64 {
    100.0 * n as f64 / total.max(1) as f64
}

/// Print what was written, one table row per kind, then the sample mix and files.
pub fn print_report(out: &mut impl Write, r: &Report, target: &str) -> std::io::Result<()> {
    writeln!(out, "generated tenant `{}` into {target}", r.tenant)?;
    writeln!(
        out,
        "  {:<12} {:>9} {:>6} {:>9} {:>11}",
        "table", "rows", "tx", "seconds", "rows/s"
    )?;
    for t in &r.tables {
        writeln!(
            out,
            "  {:<12} {:>9} {:>6} {:>9.2} {:>11.0}",
            t.table,
            t.rows,
            t.transactions,
            t.elapsed.as_secs_f64(),
            per_second(t.rows, t.elapsed)
        )?;
    }
    writeln!(
        out,
        "  {:<12} {:>9} {:>6} {:>9.2} {:>11.0}",
        "total",
        r.rows(),
        r.tables.iter().map(|t| t.transactions).sum::<u64>(),
        r.elapsed.as_secs_f64(),
        per_second(r.rows(), r.elapsed)
    )?;
    let levels: Vec<String> = r.groups_per_level.iter().map(u64::to_string).collect();
    writeln!(
        out,
        "  groups per level (top first): {}",
        levels.join(" / ")
    )?;
    writeln!(
        out,
        "  statements: {} ({:.1} per policy), {} with a wildcard ({:.1}%), {} deny ({:.1}%)",
        r.statements,
        r.statements as f64 / r.table("policies").max(1) as f64,
        r.wildcard_statements,
        percent(r.wildcard_statements as usize, r.statements as usize),
        r.deny_statements,
        percent(r.deny_statements as usize, r.statements as usize)
    )?;
    writeln!(
        out,
        "  attachments: {} to users, {} to groups",
        r.attached_to_users, r.attached_to_groups
    )?;
    for (label, list) in [("single", &r.single), ("batch", &r.batch)] {
        let (a, e, i) = outcome_mix(list);
        let total = a + e + i;
        writeln!(
            out,
            "requests-{label}: {} requests, {} decisions: allow {:.1}%, explicitDeny {:.1}%, implicitDeny {:.1}%",
            list.len(),
            total,
            percent(a, total),
            percent(e, total),
            percent(i, total)
        )?;
    }
    for f in &r.files {
        writeln!(out, "wrote {}", f.display())?;
    }
    writeln!(
        out,
        "summary: rows={} seconds={:.3} rows_per_s={:.0}",
        r.rows(),
        r.elapsed.as_secs_f64(),
        per_second(r.rows(), r.elapsed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Options {
        Options {
            users: 50,
            groups: 20,
            policies: 40,
            statements: 200,
            samples: 30,
            batch: 10,
            ..Options::default()
        }
    }

    #[test]
    fn the_model_has_the_asked_sizes_and_shape() {
        let m = build(&small()).unwrap();
        assert_eq!(m.stmts.len(), 200);
        assert_eq!(m.policies.len(), 40);
        assert!(m.policies.iter().all(|p| p.len >= 1));
        assert!(
            m.group_depth
                .iter()
                .all(|&d| (1..=MAX_GROUP_DEPTH as u8).contains(&d))
        );
        assert!(m.user_groups.iter().all(|g| (1..=3).contains(&g.len())));
        for (j, k) in m.group_krn.iter().enumerate() {
            assert!(k.ends_with(&format!("/g{j}")));
            assert_eq!(k.matches('/').count(), usize::from(m.group_depth[j]));
            crate::policy::Krn::parse(k).unwrap();
        }
    }

    #[test]
    fn every_generated_policy_is_valid_and_stored_as_the_api_stores_it() {
        let m = build(&small()).unwrap();
        for (k, p) in m.policies.iter().enumerate() {
            let text =
                statements_json(&m, &format!("p{k}"), &m.stmts[p.first..p.first + p.len]).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            let doc = PolicyDocument::from_json(&json!({"name": "x", "statements": v})).unwrap();
            assert_eq!(doc.to_json()["statements"].to_string(), text);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_samples_and_they_mix_outcomes() {
        let o = Options {
            users: 300,
            groups: 60,
            policies: 400,
            statements: 2000,
            samples: 200,
            ..Options::default()
        };
        let a = samples(&build(&o).unwrap(), &o);
        let b = samples(&build(&o).unwrap(), &o);
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1);
        let (allow, explicit, implicit) = outcome_mix(&a.0);
        assert!(
            allow > 0 && explicit > 0 && implicit > 0,
            "{allow} {explicit} {implicit}"
        );
    }

    #[test]
    fn options_are_read_with_defaults_and_suffixes() {
        let args: Vec<String> = ["--users", "2k", "--tenant=t1", "--statements", "1m"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = parse_args(&args).unwrap().unwrap();
        assert_eq!((o.users, o.statements, o.groups), (2000, 1_000_000, 1000));
        assert_eq!(o.requests, Some(PathBuf::from("t1-requests")));
        assert!(parse_args(&["--bogus".to_string()]).is_err());
        assert_eq!(o.export, None);
        let o = parse_args(&["--export".to_string(), "t.json".to_string()])
            .unwrap()
            .unwrap();
        assert_eq!(o.export, Some(PathBuf::from("t.json")));
        assert!(parse_args(&["--export".to_string()]).is_err());
    }
}
