#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Runs the policy decision corpus in `tests/scenarios` (one scenario per YAML file, format in
//! `tests/scenarios/README.md`) through `kaa::policy::Engine`: every request through `decide` on an
//! engine holding the scenario's policies, and again through `simulate` on an engine holding only
//! the base policies with the policies passed as candidates. Both must give the expected outcome and
//! reasons. Scenarios without base policies are also checked against the tenant's `PolicyIndex`
//! directly (`decide`, `decide_matrix`, `allowed_resources`, `allowed_actions`). Requests may
//! carry a request context and metadata for statement conditions, and may name the conditional
//! statements the explanation must show; scenarios may list policies that must be refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kaa::policy::{
    Action, BasePolicy, Decision, Engine, Krn, MapEnv, PolicyDocument, PolicyIndex, Query,
    StoredPolicy,
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The corpus must not shrink below this many files.
const MIN_SCENARIOS: usize = 60;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[expect(dead_code, reason = "read by people, not by the test")]
    description: String,
    rule: String,
    #[serde(default)]
    base_policies: Vec<serde_json::Value>,
    #[serde(default)]
    policies: Vec<PolicySpec>,
    /// Documents that must be refused, each with a piece of the expected message.
    #[serde(default)]
    invalid_policies: Vec<InvalidSpec>,
    requests: Vec<RequestSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidSpec {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    statements: Vec<Value>,
    error: String,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    id: String,
    tenant: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    attached_principals: Vec<String>,
    #[serde(default)]
    attached_pools: Vec<String>,
    statements: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestSpec {
    #[serde(default)]
    note: Option<String>,
    tenant: String,
    principals: Vec<String>,
    action: String,
    resource: String,
    #[serde(default)]
    resource_pools: Vec<String>,
    /// The request context (`kaa:SourceIp`, `kaa:CurrentTime`, caller keys).
    #[serde(default)]
    context: Map<String, Value>,
    /// Metadata of the principal (the first of `principals`) and of the resource.
    #[serde(default)]
    principal_metadata: Map<String, Value>,
    #[serde(default)]
    resource_metadata: Map<String, Value>,
    expect: String,
    reasons: Vec<(String, usize)>,
    /// The statements with conditions or variables the decision must show as checked:
    /// [policy id, statement index, applied], sorted.
    #[serde(default)]
    checked: Option<Vec<(String, usize, bool)>>,
}

/// A request with its identifiers parsed.
struct ParsedRequest {
    tenant: String,
    principals: Vec<Krn>,
    action: Action,
    resource: Krn,
    pools: Vec<Krn>,
    env: MapEnv,
}

impl ParsedRequest {
    fn query(&self) -> Query<'_> {
        Query {
            env: &self.env,
            principals: &self.principals,
            action: &self.action,
            resource: &self.resource,
            resource_pools: &self.pools,
        }
    }
}

/// Outcome and reasons in a comparable, printable form.
type Observed = (String, Vec<(String, usize)>);

fn observe(d: &Decision) -> Observed {
    let outcome = match serde_json::to_value(d.outcome) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("<unserializable outcome: {other:?}>"),
    };
    let reasons = d
        .reasons
        .iter()
        .map(|r| (r.policy_id.clone(), r.statement))
        .collect();
    (outcome, reasons)
}

fn krn(s: &str) -> Result<Krn, String> {
    Krn::parse(s).map_err(|e| format!("bad KRN `{s}`: {e}"))
}

fn krns(v: &[String]) -> Result<Vec<Krn>, String> {
    v.iter().map(|s| krn(s)).collect()
}

fn base_policies(s: &Scenario) -> Result<Vec<BasePolicy>, String> {
    s.base_policies
        .iter()
        .enumerate()
        .map(|(i, v)| BasePolicy::from_json(v).map_err(|e| format!("base policy {i}: {e}")))
        .collect()
}

fn stored(p: &PolicySpec) -> Result<StoredPolicy, String> {
    let name = p
        .name
        .clone()
        .unwrap_or_else(|| p.id.rsplit('/').next().unwrap_or(&p.id).to_string());
    let mut doc = serde_json::json!({ "name": name, "type": p.kind, "statements": p.statements });
    if let Some(d) = &p.description {
        doc["description"] = serde_json::Value::String(d.clone());
    }
    let document =
        PolicyDocument::from_json(&doc).map_err(|e| format!("policy `{}`: {e}", p.id))?;
    Ok(StoredPolicy {
        id: p.id.clone(),
        document,
        attached_principals: krns(&p.attached_principals)?,
        attached_pools: krns(&p.attached_pools)?,
        resource: p.resource.as_deref().map(krn).transpose()?,
    })
}

/// The policies of `tenant` as they stand after upserting all of them in order: the last version
/// of each id, in the order of those last versions.
fn effective_policies(s: &Scenario, tenant: &str) -> Vec<PolicySpec> {
    let mut out: Vec<PolicySpec> = Vec::new();
    for p in s.policies.iter().filter(|p| p.tenant == tenant) {
        out.retain(|q| q.id != p.id);
        out.push(p.clone());
    }
    out
}

fn parse_request(r: &RequestSpec) -> Result<ParsedRequest, String> {
    let resource = krn(&r.resource)?;
    let mut env = MapEnv {
        context: r.context.clone(),
        principal_metadata: r.principal_metadata.clone(),
        ..MapEnv::default()
    };
    if !r.resource_metadata.is_empty() {
        env.resource_metadata
            .insert(resource.as_str().to_string(), r.resource_metadata.clone());
    }
    Ok(ParsedRequest {
        tenant: r.tenant.clone(),
        principals: krns(&r.principals)?,
        action: Action::parse(&r.action).map_err(|e| format!("bad action `{}`: {e}", r.action))?,
        resource,
        pools: krns(&r.resource_pools)?,
        env,
    })
}

/// The conditional statements a decision shows as checked.
fn checked(d: &Decision) -> Vec<(String, usize, bool)> {
    d.checks
        .iter()
        .map(|c| (c.policy_id.clone(), c.statement, c.applied))
        .collect()
}

/// Checks the corpus itself: expectations well formed, reasons sorted and unique.
fn lint_request(r: &RequestSpec) -> Result<(), String> {
    match r.expect.as_str() {
        "allow" | "explicitDeny" if r.reasons.is_empty() => {
            return Err(format!("expect `{}` needs reasons", r.expect));
        }
        "allow" | "explicitDeny" => {}
        "implicitDeny" if !r.reasons.is_empty() => {
            return Err("implicitDeny has no reasons".to_string());
        }
        "implicitDeny" => {}
        other => return Err(format!("unknown expectation `{other}`")),
    }
    if r.reasons.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "reasons must be sorted by (policy id, statement) and unique: {:?}",
            r.reasons
        ));
    }
    Ok(())
}

fn show(o: &Observed) -> String {
    let reasons: Vec<String> = o.1.iter().map(|(p, s)| format!("[{p}, {s}]")).collect();
    format!("{} [{}]", o.0, reasons.join(", "))
}

/// Checks made through the tenant's `PolicyIndex` alone (valid when there are no base policies).
fn index_checks(
    index: Option<&PolicyIndex>,
    q: &ParsedRequest,
    expected: &Observed,
) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(index) = index else {
        if expected.0 != "implicitDeny" {
            errs.push("tenant has no index but the expectation is not implicitDeny".to_string());
        }
        return errs;
    };
    let got = observe(&index.decide(&q.query()));
    if &got != expected {
        errs.push(format!("PolicyIndex::decide gave {}", show(&got)));
    }
    let outcome = observe(&Decision::of(index.decide_outcome(&q.query())));
    if outcome.0 != expected.0 {
        errs.push(format!("PolicyIndex::decide_outcome gave {}", outcome.0));
    }
    let resources = vec![(q.resource.clone(), q.pools.clone())];
    let matrix = index.decide_matrix_with(
        &q.env,
        &q.principals,
        std::slice::from_ref(&q.action),
        &resources,
    );
    let outcomes = index.decide_matrix_outcomes_with(
        &q.env,
        &q.principals,
        std::slice::from_ref(&q.action),
        &resources,
    );
    if outcomes.first().and_then(|row| row.first())
        != matrix
            .first()
            .and_then(|row| row.first())
            .map(|d| &d.outcome)
    {
        errs.push(format!(
            "PolicyIndex::decide_matrix_outcomes_with gave {outcomes:?}"
        ));
    }
    if index.conditional_count() > 0 {
        // The batch forms below take no request context.
        return errs;
    }
    match matrix.first().and_then(|row| row.first()) {
        Some(d) if matrix.len() == 1 && matrix[0].len() == 1 => {
            let got = observe(d);
            if &got != expected {
                errs.push(format!("PolicyIndex::decide_matrix gave {}", show(&got)));
            }
        }
        _ => errs.push(format!(
            "PolicyIndex::decide_matrix returned a {}-row matrix for 1 action x 1 resource",
            matrix.len()
        )),
    }
    let allowed = expected.0 == "allow";
    let ar = index.allowed_resources(&q.principals, &q.action, &resources);
    if ar != if allowed { vec![0] } else { vec![] } {
        errs.push(format!("PolicyIndex::allowed_resources gave {ar:?}"));
    }
    let aa = index.allowed_actions(
        &q.principals,
        std::slice::from_ref(&q.action),
        &q.resource,
        &q.pools,
    );
    if aa != if allowed { vec![0] } else { vec![] } {
        errs.push(format!("PolicyIndex::allowed_actions gave {aa:?}"));
    }
    errs
}

/// Runs one scenario file; returns the number of requests and one message per failed check.
fn run_scenario(path: &Path) -> (usize, Vec<String>) {
    let mut requests = 0;
    let failures = run_scenario_inner(path, &mut requests);
    (requests, failures)
}

fn run_scenario_inner(path: &Path, requests: &mut usize) -> Vec<String> {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut failures = Vec::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("{file}: cannot read: {e}")],
    };
    let scenario: Scenario = match serde_norway::from_str(&text) {
        Ok(s) => s,
        Err(e) => return vec![format!("{file}: bad YAML: {e}")],
    };
    if scenario.requests.is_empty() {
        failures.push(format!("{file}: no requests"));
    }
    *requests = scenario.requests.len();

    // Engine 1: everything upserted.
    let mut engine = match base_policies(&scenario) {
        Ok(b) => Engine::new(b),
        Err(e) => return vec![format!("{file}: {e}")],
    };
    for p in &scenario.policies {
        match stored(p) {
            Ok(sp) => {
                if let Err(e) = engine.upsert(&p.tenant, sp) {
                    failures.push(format!("{file}: upsert of `{}` refused: {e}", p.id));
                }
            }
            Err(e) => failures.push(format!("{file}: {e}")),
        }
    }
    // Engine 2: base policies only; stored policies become simulation candidates.
    let empty = match base_policies(&scenario) {
        Ok(b) => Engine::new(b),
        Err(e) => return vec![format!("{file}: {e}")],
    };
    for (i, bad) in scenario.invalid_policies.iter().enumerate() {
        let doc = serde_json::json!({
            "name": "invalid",
            "type": bad.kind.as_deref().unwrap_or("identity"),
            "statements": bad.statements,
        });
        match PolicyDocument::from_json(&doc) {
            Ok(_) => failures.push(format!("{file}: invalid policy {i} was accepted")),
            Err(e) if !e.to_string().contains(&bad.error) => failures.push(format!(
                "{file}: invalid policy {i} refused with `{e}`, expected a message with `{}`",
                bad.error
            )),
            Err(_) => {}
        }
    }
    if !failures.is_empty() {
        return failures;
    }

    for (i, r) in scenario.requests.iter().enumerate() {
        let at = format!(
            "{file} request {i} [rule: {}]{}",
            scenario.rule,
            r.note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
        if let Err(e) = lint_request(r) {
            failures.push(format!("{at}: corpus error: {e}"));
            continue;
        }
        let q = match parse_request(r) {
            Ok(q) => q,
            Err(e) => {
                failures.push(format!("{at}: {e}"));
                continue;
            }
        };
        let expected: Observed = (r.expect.clone(), r.reasons.clone());
        let mut errs = Vec::new();

        let decision = engine.decide(&q.tenant, &q.query());
        let got = observe(&decision);
        if got != expected {
            errs.push(format!("Engine::decide gave {}", show(&got)));
        }
        let explained = engine.explain(&q.tenant, &q.query());
        if observe(&explained) != got {
            errs.push(format!(
                "Engine::explain gave {}",
                show(&observe(&explained))
            ));
        }
        if let Some(want) = &r.checked {
            let got = checked(&explained);
            if &got != want {
                errs.push(format!(
                    "Engine::explain checked {got:?}, expected {want:?}"
                ));
            }
        }
        let m = engine.decide_matrix_explained(
            &q.tenant,
            &q.env,
            &q.principals,
            std::slice::from_ref(&q.action),
            &[(q.resource.clone(), q.pools.clone())],
        );
        if m.first().and_then(|row| row.first()) != Some(&explained) {
            errs.push(format!(
                "Engine::decide_matrix_explained gave {m:?}, explain gave {explained:?}"
            ));
        }
        let matrix = engine.decide_matrix_with(
            &q.tenant,
            &q.env,
            &q.principals,
            std::slice::from_ref(&q.action),
            &[(q.resource.clone(), q.pools.clone())],
        );
        match matrix.first().and_then(|row| row.first()) {
            Some(d) if d == &decision => {}
            other => errs.push(format!(
                "Engine::decide_matrix_with gave {other:?}, decide gave {decision:?}"
            )),
        }

        let got = observe(&engine.simulate(&q.tenant, &q.query(), &[], &[]));
        if got != expected {
            errs.push(format!(
                "Engine::simulate with no change gave {}",
                show(&got)
            ));
        }

        let add: Result<Vec<StoredPolicy>, String> = effective_policies(&scenario, &q.tenant)
            .iter()
            .map(stored)
            .collect();
        match add {
            Ok(add) => {
                let simulated = empty.simulate(&q.tenant, &q.query(), &add, &[]);
                let got = observe(&simulated);
                if let Some(want) = &r.checked {
                    let got = checked(&simulated);
                    if &got != want {
                        errs.push(format!(
                            "Engine::simulate adding the policies checked {got:?}, expected {want:?}"
                        ));
                    }
                }
                if got != expected {
                    errs.push(format!(
                        "Engine::simulate adding the policies to an empty engine gave {}",
                        show(&got)
                    ));
                }
            }
            Err(e) => errs.push(e),
        }

        if scenario.base_policies.is_empty() {
            errs.extend(index_checks(engine.tenant(&q.tenant), &q, &expected));
        }

        for e in errs {
            failures.push(format!("{at}: expected {}; {e}", show(&expected)));
        }
    }
    failures
}

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// `NNN_short_name.yaml`: three digits, an underscore, lowercase words joined by underscores.
fn valid_file_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".yaml") else {
        return false;
    };
    let b = stem.as_bytes();
    b.len() > 4
        && b[..3].iter().all(u8::is_ascii_digit)
        && b[3] == b'_'
        && b[4..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

#[test]
fn policy_scenarios() {
    let files = scenario_files();
    assert!(
        files.len() >= MIN_SCENARIOS,
        "the corpus has {} scenario files, at least {MIN_SCENARIOS} expected",
        files.len()
    );
    let mut failures = Vec::new();
    let mut numbers = BTreeSet::new();
    let mut requests = 0usize;
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !valid_file_name(&name) {
            failures.push(format!("{name}: file name is not NNN_short_name.yaml"));
        } else if !numbers.insert(name[..3].to_string()) {
            failures.push(format!("{name}: number {} used twice", &name[..3]));
        }
        let (n, f) = run_scenario(f);
        requests += n;
        failures.extend(f);
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    eprintln!(
        "{} scenario files, {requests} requests, {} failed checks",
        files.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of the checks over {} scenario files ({requests} requests) failed; see FAIL lines above",
        failures.len(),
        files.len()
    );
}
