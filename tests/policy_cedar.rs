#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Differential test of `kaa::policy::Engine` against Cedar (cedar-policy 4.x).
//!
//! Random policy sets of one tenant (identity policies with exact and wildcard actions, resources
//! and principals, allow and deny, attachments to principals and pools, and resource-based policies)
//! and random concrete requests are decided by both engines. Each of our statements becomes one
//! Cedar `permit` / `forbid`:
//!
//! ```text
//! forbid (principal, action, resource) when {
//!   (context.action == "iam:user:read" || context.action like "iam:group:*")
//!   && (context.resource like "krn:iam:t1::user/*" || context.pools.contains("krn:iam:t1::pool/p1"))
//!   && ((principal has p0 && principal.p0 == "krn:iam:t1::user/alice") || (principal has p1 && ...) ...)
//! };
//! ```
//!
//! The request principal is one entity whose optional attributes `p0..p3` hold the query's principal
//! KRNs (absent slots are guarded by `has`, so even the pattern `*` cannot match an empty slot).
//! A trailing `*` in our patterns is Cedar's `like` wildcard, any other pattern is `==`; KRN and
//! action characters never include `*` elsewhere, `\` or `"`.
//!
//! Statements may carry a `conditions` block over the request context (`site`, `level`, `mfa`,
//! `kaa:SourceIp`), the principal's metadata (`iam:metadata/site`) and the resource's metadata
//! (`resource:metadata/site`), with the operators Cedar can express: string equality and `like`
//! (`*` only), numeric comparisons, booleans, IP ranges (the `ipaddr` extension), `IfExists`,
//! negated forms and `Null`, and the variable `${iam:metadata/site}` in a value. Each entry becomes
//! a conjunct of the `when` clause over `context`, `principal` and `resource` attributes:
//!
//! ```text
//! context has site && !(context.site == "a" || context.site == "b")      // StringNotEquals
//! (!(context has "kaa:SourceIp") || context["kaa:SourceIp"].isInRange(ip("10.0.0.0/8")))
//! resource has site && principal has site && resource.site == principal.site
//! ```
//!
//! Checked for every request: Allow vs not-Allow agree (Cedar has no explicit/implicit split), the
//! reasons agree with Cedar's determining policies (satisfied permits for Allow, satisfied forbids
//! for a deny, none for our ImplicitDeny, so ExplicitDeny is always decided by forbids), and Cedar
//! reports no evaluation error. `PROPTEST_CASES` overrides the default of 200 cases.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityUid, Policy, PolicyId,
    PolicySet, Request, RestrictedExpression,
};
use kaa::policy::{Action, Engine, Krn, MapEnv, PolicyDocument, Query, StoredPolicy};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const TENANT: &str = "t1";
/// Principal slots on the Cedar principal entity; queries list at most this many principals.
const SLOTS: usize = 4;
const REQUESTS_PER_CASE: usize = 24;

/// Concrete principals: users at several depths, nested groups, roles, and a foreign tenant's user.
const PRINCIPALS: &[&str] = &[
    "krn:iam:t1::user/alice",
    "krn:iam:t1::user/org1/bob",
    "krn:iam:t1::user/org1/carol",
    "krn:iam:t1::user/org10/erin",
    "krn:iam:t1::group/dev",
    "krn:iam:t1::group/dev/java",
    "krn:iam:t1::group/ops",
    "krn:iam:t1::role/tenant-admin",
    "krn:iam:t1::role/viewer",
    "krn:iam:t2::user/alice",
];

/// Principal patterns that are wildcards (statement principals draw from these and `PRINCIPALS`).
const PRINCIPAL_WILDCARDS: &[&str] = &[
    "*",
    "krn:iam:*",
    "krn:iam:t1:*",
    "krn:iam:t1::*",
    "krn:iam:t1::user/*",
    "krn:iam:t1::user/org1/*",
    "krn:iam:t1::group/*",
    "krn:iam:t1::group/dev/*",
    "krn:iam:t1::role/*",
    "krn:iam:t2::user/*",
];

const ACTIONS: &[&str] = &[
    "iam:user:read",
    "iam:user:update",
    "iam:user:delete",
    "iam:users:read",
    "iam:group:read",
    "iam:group:user:add",
    "iam:group:user:remove",
    "iam:policy:create",
    "iam:policy:user:attach",
    "endpoint:read",
    "endpoint:update",
    "epr:endpoint:read",
];

const ACTION_WILDCARDS: &[&str] = &[
    "*",
    "iam:*",
    "iam:user:*",
    "iam:group:*",
    "iam:group:user:*",
    "iam:policy:*",
    "endpoint:*",
    "epr:*",
];

const RESOURCES: &[&str] = &[
    "krn:iam:t1::user/alice",
    "krn:iam:t1::user/org1/bob",
    "krn:iam:t1::user/org1/carol",
    "krn:iam:t1::user/org10/erin",
    "krn:iam:t1::user/org1",
    "krn:iam:t1::users/bob",
    "krn:iam:t1::group/dev",
    "krn:iam:t1::group/dev/java",
    "krn:iam:t1::policy/readers",
    "krn:iam:t1:/p1:user/org1/bob",
    "krn:epr:t1::endpoint/e1",
    "krn:epr:t1::endpoint/e2",
    "krn:epr:t1:/a:endpoint/e3",
    "krn:epr:t1:/a/b:endpoint/e4",
    "krn:iam:t2::user/alice",
    "krn:iam:t10::user/alice",
];

const RESOURCE_WILDCARDS: &[&str] = &[
    "*",
    "krn:iam:*",
    "krn:iam:t1:*",
    "krn:iam:t1::*",
    "krn:iam:t1::user/*",
    "krn:iam:t1::user/org1/*",
    "krn:iam:t1::group/*",
    "krn:epr:t1:*",
    "krn:epr:t1::*",
    "krn:epr:t1:/a/*",
    "krn:epr:t1:/*",
    "krn:iam:t2:*",
];

const POOLS: &[&str] = &["krn:iam:t1::pool/p1", "krn:iam:t1::pool/p2"];

#[derive(Debug, Clone)]
struct GenStatement {
    allow: bool,
    actions: Vec<&'static str>,
    resources: Vec<&'static str>,
    /// Used as given by identity policies (possibly empty); resource policies use `fallback` when empty.
    principals: Vec<&'static str>,
    fallback_principal: &'static str,
    /// For resource policies: whether the statement names its bound resource (else it is empty).
    names_bound: bool,
    /// (operator, key, values) entries of its conditions block.
    conditions: Vec<(String, &'static str, serde_json::Value)>,
}

#[derive(Debug, Clone)]
struct GenPolicy {
    bound: Option<&'static str>,
    attached: Vec<&'static str>,
    pools: Vec<&'static str>,
    statements: Vec<GenStatement>,
}

#[derive(Debug, Clone)]
struct GenRequest {
    principals: Vec<&'static str>,
    action: &'static str,
    resource: &'static str,
    pools: Vec<&'static str>,
    /// Request context keys.
    site: Option<&'static str>,
    level: Option<i64>,
    mfa: Option<bool>,
    ip: Option<&'static str>,
    /// `site` metadata of the principal (a user) and of the resource.
    principal_site: Option<&'static str>,
    resource_site: Option<&'static str>,
}

/// One statement as both engines see it after attachment and binding are applied.
struct FlatStatement {
    policy: usize,
    index: usize,
    allow: bool,
    actions: Vec<&'static str>,
    resources: Vec<&'static str>,
    pools: Vec<&'static str>,
    principals: Vec<&'static str>,
    /// The conditions block as written in the document (an object, or null).
    conditions: serde_json::Value,
}

fn pick(
    exact: &'static [&'static str],
    wild: &'static [&'static str],
) -> BoxedStrategy<&'static str> {
    prop_oneof![
        7 => prop::sample::select(exact),
        3 => prop::sample::select(wild),
    ]
    .boxed()
}

/// One (operator, key, values) entry Cedar can express.
fn condition_entry() -> impl Strategy<Value = (String, &'static str, serde_json::Value)> {
    use serde_json::json;
    let ie = || prop::sample::select(vec!["", "IfExists"]);
    let keyed = |ops: Vec<&'static str>, key: &'static str, values: Vec<serde_json::Value>| {
        (
            prop::sample::select(ops),
            prop::sample::select(vec!["", "IfExists"]),
            prop::sample::select(values),
        )
            .prop_map(move |(o, x, v)| (format!("{o}{x}"), key, v))
    };
    prop_oneof![
        keyed(
            vec!["StringEquals", "StringNotEquals"],
            "site",
            vec![json!("a"), json!(["a", "b"])]
        ),
        keyed(
            vec!["StringLike", "StringNotLike"],
            "site",
            vec![json!("a*"), json!(["*b", "x*"])]
        ),
        keyed(
            vec![
                "NumericLessThan",
                "NumericGreaterThanEquals",
                "NumericEquals",
                "NumericNotEquals"
            ],
            "level",
            vec![json!(3), json!([1, 5])]
        ),
        (ie(), prop::sample::select(vec![json!(true), json!(false)])).prop_map(|(x, v)| (
            format!("Bool{x}"),
            "mfa",
            v
        )),
        keyed(
            vec!["IpAddress", "NotIpAddress"],
            "kaa:SourceIp",
            vec![json!("10.0.0.0/8"), json!(["192.168.0.0/24", "10.1.2.3"])]
        ),
        keyed(
            vec!["StringEquals", "StringNotEquals"],
            "iam:metadata/site",
            vec![json!("a"), json!("b")]
        ),
        keyed(
            vec!["StringEquals", "StringNotEquals"],
            "resource:metadata/site",
            vec![json!("${iam:metadata/site}"), json!("a")]
        ),
        (
            prop::sample::select(vec!["site", "level", "iam:metadata/site"]),
            prop::sample::select(vec![json!(true), json!(false)])
        )
            .prop_map(|(k, v)| ("Null".to_string(), k, v)),
    ]
}

fn statement() -> impl Strategy<Value = GenStatement> {
    (
        prop::bool::weighted(0.75),
        prop::collection::vec(pick(ACTIONS, ACTION_WILDCARDS), 1..=3),
        prop::collection::vec(pick(RESOURCES, RESOURCE_WILDCARDS), 1..=3),
        prop::collection::vec(pick(PRINCIPALS, PRINCIPAL_WILDCARDS), 0..=2),
        pick(PRINCIPALS, PRINCIPAL_WILDCARDS),
        any::<bool>(),
        prop_oneof![
            1 => Just(Vec::new()),
            1 => prop::collection::vec(condition_entry(), 1..=3),
        ],
    )
        .prop_map(
            |(
                allow,
                actions,
                resources,
                principals,
                fallback_principal,
                names_bound,
                conditions,
            )| {
                GenStatement {
                    allow,
                    actions,
                    resources,
                    principals,
                    fallback_principal,
                    names_bound,
                    conditions,
                }
            },
        )
}

/// The conditions block of a statement (entries of the same operator and key: the last wins).
fn conditions_block(s: &GenStatement) -> serde_json::Value {
    if s.conditions.is_empty() {
        return serde_json::Value::Null;
    }
    let mut ops = serde_json::Map::new();
    for (op, key, values) in &s.conditions {
        let e = ops
            .entry(op.clone())
            .or_insert_with(|| serde_json::json!({}));
        e[*key] = values.clone();
    }
    serde_json::Value::Object(ops)
}

fn policy() -> impl Strategy<Value = GenPolicy> {
    (
        prop::option::weighted(0.2, prop::sample::select(RESOURCES)),
        prop::sample::subsequence(PRINCIPALS, 0..=2),
        prop::option::weighted(0.25, prop::sample::select(POOLS)),
        prop::collection::vec(statement(), 1..=4),
    )
        .prop_map(|(bound, attached, pool, statements)| GenPolicy {
            bound,
            attached,
            // Pools are attached to identity policies only.
            pools: if bound.is_none() {
                pool.into_iter().collect()
            } else {
                Vec::new()
            },
            statements,
        })
}

fn request() -> impl Strategy<Value = GenRequest> {
    (
        prop::sample::subsequence(PRINCIPALS, 0..=SLOTS),
        prop::sample::select(ACTIONS),
        prop::sample::select(RESOURCES),
        prop::sample::subsequence(POOLS, 0..=2),
        (
            prop::option::of(prop::sample::select(vec!["a", "b", "ab", "xb"])),
            prop::option::of(prop::sample::select(vec![1i64, 3, 5])),
            prop::option::of(any::<bool>()),
            prop::option::of(prop::sample::select(vec![
                "10.1.2.3",
                "192.168.0.9",
                "172.16.0.1",
            ])),
            prop::option::of(prop::sample::select(vec!["a", "b"])),
            prop::option::of(prop::sample::select(vec!["a", "b"])),
        ),
    )
        .prop_map(
            |(principals, action, resource, pools, (site, level, mfa, ip, ps, rs))| GenRequest {
                principals,
                action,
                resource,
                pools,
                site,
                level,
                mfa,
                ip,
                principal_site: ps,
                resource_site: rs,
            },
        )
}

fn case() -> impl Strategy<Value = (Vec<GenPolicy>, Vec<GenRequest>)> {
    (
        prop::collection::vec(policy(), 1..=6),
        prop::collection::vec(request(), REQUESTS_PER_CASE),
    )
}

fn policy_id(i: usize) -> String {
    format!("pol{i}")
}

fn cedar_id(policy: usize, statement: usize) -> String {
    format!("pol{policy}.s{statement}")
}

/// The `resources` and `principals` a generated statement's document carries: a resource-based
/// policy's statements name either nothing or the bound resource, and always some principal.
fn document_keys(p: &GenPolicy, s: &GenStatement) -> (Vec<&'static str>, Vec<&'static str>) {
    match p.bound {
        Some(b) => {
            let named = if s.names_bound { vec![b] } else { vec![] };
            let mut principals = s.principals.clone();
            if principals.is_empty() {
                principals.push(s.fallback_principal);
            }
            (named, principals)
        }
        None => (s.resources.clone(), s.principals.clone()),
    }
}

/// Applies attachments and binding the way ENGINE_API.md defines the indexed entries.
fn flatten(policies: &[GenPolicy]) -> Vec<FlatStatement> {
    let mut out = Vec::new();
    for (pi, p) in policies.iter().enumerate() {
        for (si, s) in p.statements.iter().enumerate() {
            let (resources, principals) = document_keys(p, s);
            let mut resource_keys = resources;
            resource_keys.extend(p.bound);
            let mut principal_keys = principals;
            principal_keys.extend(p.attached.iter().copied());
            out.push(FlatStatement {
                policy: pi,
                index: si,
                allow: s.allow,
                actions: s.actions.clone(),
                resources: resource_keys,
                pools: p.pools.clone(),
                principals: principal_keys,
                conditions: conditions_block(s),
            });
        }
    }
    out
}

/// Builds our stored policies from the generated ones.
fn stored_policies(policies: &[GenPolicy]) -> Vec<StoredPolicy> {
    policies
        .iter()
        .enumerate()
        .map(|(pi, p)| {
            let statements: Vec<serde_json::Value> = p
                .statements
                .iter()
                .map(|s| {
                    let (resources, principals) = document_keys(p, s);
                    let mut st = serde_json::json!({
                        "effect": if s.allow { "allow" } else { "deny" },
                        "actions": s.actions,
                        "resources": resources,
                        "principals": principals,
                    });
                    let block = conditions_block(s);
                    if !block.is_null() {
                        st["conditions"] = block;
                    }
                    st
                })
                .collect();
            let kind = if p.bound.is_some() {
                "resource"
            } else {
                "identity"
            };
            let doc = serde_json::json!({
                "name": policy_id(pi),
                "type": kind,
                "statements": statements,
            });
            let document = PolicyDocument::from_json(&doc)
                .unwrap_or_else(|e| panic!("generated policy refused: {e}\n{doc:#}"));
            StoredPolicy {
                id: policy_id(pi),
                document,
                attached_principals: p.attached.iter().map(|k| parse_krn(k)).collect(),
                attached_pools: p.pools.iter().map(|k| parse_krn(k)).collect(),
                resource: p.bound.map(parse_krn),
            }
        })
        .collect()
}

fn parse_krn(s: &str) -> Krn {
    Krn::parse(s).unwrap_or_else(|e| panic!("bad KRN `{s}`: {e}"))
}

/// `subject == "x"` for an exact pattern, `subject like "x*"` for a trailing-`*` pattern.
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

/// The `has` test and the access of a condition key in Cedar.
fn cedar_key(key: &str) -> (&'static str, &'static str) {
    match key {
        "site" => ("context has site", "context.site"),
        "level" => ("context has level", "context.level"),
        "mfa" => ("context has mfa", "context.mfa"),
        "kaa:SourceIp" => ("context has \"kaa:SourceIp\"", "context[\"kaa:SourceIp\"]"),
        "iam:metadata/site" => ("principal has site", "principal.site"),
        "resource:metadata/site" => ("resource has site", "resource.site"),
        other => panic!("no Cedar form for key {other}"),
    }
}

/// One (operator, key, values) entry as a Cedar expression.
fn cedar_condition(op: &str, key: &str, values: &serde_json::Value) -> String {
    let (has, acc) = cedar_key(key);
    if op == "Null" {
        return if values == &serde_json::json!(true) {
            format!("!({has})")
        } else {
            format!("({has})")
        };
    }
    let (base, if_exists) = match op.strip_suffix("IfExists") {
        Some(b) => (b, true),
        None => (op, false),
    };
    let list: Vec<serde_json::Value> = match values {
        serde_json::Value::Array(a) => a.clone(),
        v => vec![v.clone()],
    };
    // A variable without a value makes the entry false: its `has` guards the comparison.
    let mut guard = "true".to_string();
    let terms: Vec<String> = list
        .iter()
        .map(|v| {
            let lit = match v {
                serde_json::Value::String(t) if t == "${iam:metadata/site}" => {
                    guard = "principal has site".into();
                    "principal.site".to_string()
                }
                serde_json::Value::String(t) => format!("\"{t}\""),
                other => other.to_string(),
            };
            match base {
                "StringEquals" | "StringNotEquals" | "NumericEquals" | "NumericNotEquals"
                | "Bool" => format!("{acc} == {lit}"),
                "StringLike" | "StringNotLike" => format!("{acc} like {lit}"),
                "NumericLessThan" => format!("{acc} < {lit}"),
                "NumericGreaterThanEquals" => format!("{acc} >= {lit}"),
                "IpAddress" | "NotIpAddress" => format!("{acc}.isInRange(ip({lit}))"),
                other => panic!("no Cedar form for operator {other}"),
            }
        })
        .collect();
    let any = format!("({})", terms.join(" || "));
    let compared = if base.contains("Not") {
        format!("({guard} && !{any})")
    } else {
        format!("({guard} && {any})")
    };
    if if_exists {
        format!("(!({has}) || {compared})")
    } else {
        format!("({has} && {compared})")
    }
}

fn cedar_policy_text(s: &FlatStatement) -> String {
    let actions = any_of(
        s.actions
            .iter()
            .map(|a| string_match("context.action", a))
            .collect(),
    );
    let mut resource_terms: Vec<String> = s
        .resources
        .iter()
        .map(|r| string_match("context.resource", r))
        .collect();
    resource_terms.extend(
        s.pools
            .iter()
            .map(|p| format!("context.pools.contains(\"{p}\")")),
    );
    let resources = any_of(resource_terms);
    let principals = any_of(
        s.principals
            .iter()
            .flat_map(|p| {
                (0..SLOTS).map(move |i| {
                    format!(
                        "(principal has p{i} && {})",
                        string_match(&format!("principal.p{i}"), p)
                    )
                })
            })
            .collect(),
    );
    let mut conditions = String::new();
    if let serde_json::Value::Object(ops) = &s.conditions {
        for (op, keys) in ops {
            for (key, values) in keys.as_object().into_iter().flatten() {
                conditions.push_str(" && ");
                conditions.push_str(&cedar_condition(op, key, values));
            }
        }
    }
    let effect = if s.allow { "permit" } else { "forbid" };
    format!(
        "{effect} (principal, action, resource) when {{ {actions} && {resources} && {principals}{conditions} }};"
    )
}

fn cedar_policies(flat: &[FlatStatement]) -> PolicySet {
    let mut set = PolicySet::new();
    for s in flat {
        let text = cedar_policy_text(s);
        let id = cedar_id(s.policy, s.index);
        let policy = Policy::parse(Some(PolicyId::new(&id)), &text)
            .unwrap_or_else(|e| panic!("cedar refused `{text}`: {e}"));
        set.add(policy).expect("unique cedar policy id");
    }
    set
}

fn cedar_decide(
    authorizer: &Authorizer,
    policies: &PolicySet,
    r: &GenRequest,
) -> (bool, BTreeSet<String>, usize) {
    let principal = EntityUid::from_str(r#"P::"q""#).expect("principal uid");
    let mut attrs: HashMap<String, RestrictedExpression> = r
        .principals
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                format!("p{i}"),
                RestrictedExpression::new_string((*p).to_string()),
            )
        })
        .collect();
    // Metadata belongs to a user principal (the first of the set).
    if let (Some(site), true) = (r.principal_site, first_is_user(r)) {
        attrs.insert(
            "site".into(),
            RestrictedExpression::new_string(site.to_string()),
        );
    }
    let entity = Entity::new(principal.clone(), attrs, HashSet::new()).expect("principal entity");
    let resource_uid = EntityUid::from_str(r#"R::"r""#).expect("resource uid");
    let mut resource_attrs = HashMap::new();
    if let Some(site) = r.resource_site {
        resource_attrs.insert(
            "site".to_string(),
            RestrictedExpression::new_string(site.to_string()),
        );
    }
    let resource_entity =
        Entity::new(resource_uid.clone(), resource_attrs, HashSet::new()).expect("resource entity");
    let entities = Entities::from_entities([entity, resource_entity], None).expect("entities");
    let mut pairs = vec![
        (
            "action".to_string(),
            RestrictedExpression::new_string(r.action.to_string()),
        ),
        (
            "resource".to_string(),
            RestrictedExpression::new_string(r.resource.to_string()),
        ),
        (
            "pools".to_string(),
            RestrictedExpression::new_set(
                r.pools
                    .iter()
                    .map(|p| RestrictedExpression::new_string((*p).to_string())),
            ),
        ),
    ];
    if let Some(site) = r.site {
        pairs.push(("site".into(), RestrictedExpression::new_string(site.into())));
    }
    if let Some(level) = r.level {
        pairs.push(("level".into(), RestrictedExpression::new_long(level)));
    }
    if let Some(mfa) = r.mfa {
        pairs.push(("mfa".into(), RestrictedExpression::new_bool(mfa)));
    }
    if let Some(ip) = r.ip {
        pairs.push(("kaa:SourceIp".into(), RestrictedExpression::new_ip(ip)));
    }
    let context = Context::from_pairs(pairs).expect("context");
    let request = Request::new(
        principal,
        EntityUid::from_str(r#"Action::"a""#).expect("action uid"),
        resource_uid,
        context,
        None,
    )
    .expect("request");
    let response = authorizer.is_authorized(&request, policies, &entities);
    let reasons = response
        .diagnostics()
        .reason()
        .map(ToString::to_string)
        .collect();
    let errors = response.diagnostics().errors().count();
    (response.decision() == CedarDecision::Allow, reasons, errors)
}

fn first_is_user(r: &GenRequest) -> bool {
    r.principals
        .first()
        .is_some_and(|p| p.starts_with("krn:iam:") && p.contains("::user/"))
}

/// The request context and metadata our engine reads, as the Cedar request carries them.
fn our_env(r: &GenRequest) -> MapEnv {
    let mut env = MapEnv::default();
    if let Some(site) = r.site {
        env.context.insert("site".into(), site.into());
    }
    if let Some(level) = r.level {
        env.context.insert("level".into(), level.into());
    }
    if let Some(mfa) = r.mfa {
        env.context.insert("mfa".into(), mfa.into());
    }
    if let Some(ip) = r.ip {
        env.context.insert("kaa:SourceIp".into(), ip.into());
    }
    if let Some(site) = r.principal_site {
        // Given whatever the principal is: the engine reads it for a user principal only.
        env.principal_metadata.insert("site".into(), site.into());
    }
    if let Some(site) = r.resource_site {
        let mut m = serde_json::Map::new();
        m.insert("site".into(), site.into());
        env.resource_metadata.insert(r.resource.to_string(), m);
    }
    env
}

static ALLOWS: AtomicUsize = AtomicUsize::new(0);
static EXPLICIT: AtomicUsize = AtomicUsize::new(0);
static IMPLICIT: AtomicUsize = AtomicUsize::new(0);

fn check_case(policies: &[GenPolicy], requests: &[GenRequest]) -> Result<(), TestCaseError> {
    let mut engine = Engine::new(Vec::new());
    for p in stored_policies(policies) {
        engine
            .upsert(TENANT, p)
            .map_err(|e| TestCaseError::fail(format!("upsert refused: {e}")))?;
    }
    let flat = flatten(policies);
    let cedar_set = cedar_policies(&flat);
    let authorizer = Authorizer::new();
    let deny_ids: HashSet<String> = flat
        .iter()
        .filter(|s| !s.allow)
        .map(|s| cedar_id(s.policy, s.index))
        .collect();

    for (ri, r) in requests.iter().enumerate() {
        let principals: Vec<Krn> = r.principals.iter().map(|k| parse_krn(k)).collect();
        let action = Action::parse(r.action).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let resource = parse_krn(r.resource);
        let pools: Vec<Krn> = r.pools.iter().map(|k| parse_krn(k)).collect();
        let env = our_env(r);
        let q = Query {
            env: &env,
            principals: &principals,
            action: &action,
            resource: &resource,
            resource_pools: &pools,
        };
        let ours = engine.decide(TENANT, &q);
        let outcome = match serde_json::to_value(ours.outcome) {
            Ok(serde_json::Value::String(s)) => s,
            other => return Err(TestCaseError::fail(format!("outcome: {other:?}"))),
        };
        let our_reasons: BTreeSet<String> = ours
            .reasons
            .iter()
            .map(|x| {
                let pi: usize = x
                    .policy_id
                    .trim_start_matches("pol")
                    .parse()
                    .unwrap_or(usize::MAX);
                cedar_id(pi, x.statement)
            })
            .collect();
        let (cedar_allow, cedar_reasons, cedar_errors) = cedar_decide(&authorizer, &cedar_set, r);

        let context = || {
            let statements: Vec<String> = flat.iter().map(cedar_policy_text).collect();
            format!(
                "request {ri}: {r:?}\nours: {outcome} {our_reasons:?}\ncedar: allow={cedar_allow} \
                 {cedar_reasons:?}\ncedar policies:\n  {}",
                statements.join("\n  ")
            )
        };
        prop_assert_eq!(cedar_errors, 0, "cedar evaluation errors\n{}", context());
        prop_assert_eq!(
            outcome == "allow",
            cedar_allow,
            "allow disagrees\n{}",
            context()
        );
        match outcome.as_str() {
            "allow" => {
                ALLOWS.fetch_add(1, Ordering::Relaxed);
            }
            "explicitDeny" => {
                EXPLICIT.fetch_add(1, Ordering::Relaxed);
                prop_assert!(
                    cedar_reasons.iter().all(|id| deny_ids.contains(id)),
                    "explicit deny not decided by forbids in cedar\n{}",
                    context()
                );
                prop_assert!(
                    !cedar_reasons.is_empty(),
                    "cedar found no forbid\n{}",
                    context()
                );
            }
            "implicitDeny" => {
                IMPLICIT.fetch_add(1, Ordering::Relaxed);
            }
            other => return Err(TestCaseError::fail(format!("unknown outcome {other}"))),
        }
        prop_assert_eq!(
            &our_reasons,
            &cedar_reasons,
            "reasons disagree\n{}",
            context()
        );
        prop_assert_eq!(
            ours.reasons.len(),
            our_reasons.len(),
            "duplicate reasons\n{}",
            context()
        );
    }
    Ok(())
}

#[test]
fn decisions_agree_with_cedar() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let config = Config {
        cases,
        // Do not write regression files into the source tree; a failure prints its minimal case.
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |(policies, requests)| {
        check_case(&policies, &requests)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (a, e, i) = (
        ALLOWS.load(Ordering::Relaxed),
        EXPLICIT.load(Ordering::Relaxed),
        IMPLICIT.load(Ordering::Relaxed),
    );
    eprintln!("{cases} cases: {a} allow, {e} explicitDeny, {i} implicitDeny decisions compared");
    // The generator must exercise all three outcomes, or the comparison says little.
    let total = a + e + i;
    assert!(
        a * 50 >= total && e * 50 >= total && i * 50 >= total,
        "skewed generator: {a} allow, {e} explicitDeny, {i} implicitDeny"
    );
}
