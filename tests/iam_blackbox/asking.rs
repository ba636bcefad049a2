//! Questions asked through the evaluate family and compared with the model.

use super::*;

pub(super) struct Asker<'a> {
    pub(super) addr: SocketAddr,
    pub(super) w: &'a World,
    pub(super) requests: usize,
    pub(super) decisions: usize,
    pub(super) by_endpoint: BTreeMap<&'static str, usize>,
    pub(super) outcomes: BTreeMap<&'static str, usize>,
    pub(super) coverage: BTreeMap<&'static str, usize>,
    pub(super) mismatches: Vec<String>,
}

pub(super) fn reasons_of(v: &Value) -> Option<Vec<(String, usize)>> {
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
    pub(super) fn model(
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

    pub(super) fn post(&mut self, endpoint: &'static str, path: &str, body: &Value) -> Resp {
        self.requests += 1;
        *self.by_endpoint.entry(endpoint).or_default() += 1;
        call(self.addr, "POST", path, Some(body))
    }

    pub(super) fn mismatch(&mut self, path: &str, body: &Value, want: &str, got: &Resp, why: &str) {
        self.mismatches.push(format!(
            "{why}\n  request: POST {path} {body}\n  model:   {want}\n  service: {} {}",
            got.status,
            text(got)
        ));
    }

    /// Compare an explained `decisions` array with the model's decisions.
    pub(super) fn explained(
        &self,
        got: &Value,
        want: &[(String, MDecision)],
    ) -> Result<(), String> {
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

    pub(super) fn want_text(want: &[(String, MDecision)]) -> String {
        let parts: Vec<String> = want
            .iter()
            .map(|(r, d)| format!("{r}: {} {:?}", d.outcome, d.reasons))
            .collect();
        parts.join("; ")
    }

    /// `POST /evaluate?explain=true`.
    pub(super) fn explain(
        &mut self,
        principal: &str,
        roles: &[String],
        action: &str,
        resources: &[String],
    ) {
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
    pub(super) fn plain(&mut self, principal: &str, action: &str, resources: &[String]) {
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
    pub(super) fn filter(
        &mut self,
        principal: &str,
        action: &str,
        resources: &[String],
        explain: bool,
    ) {
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
    pub(super) fn actions(
        &mut self,
        principal: &str,
        actions: &[&str],
        resources: &[String],
        explain: bool,
    ) {
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
pub(super) fn ask<'a>(addr: SocketAddr, w: &'a World, seed: u64, rounds: usize) -> Asker<'a> {
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
pub(super) fn other_evaluations(addr: SocketAddr, w: &World, seed: u64) -> (usize, usize) {
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

pub(super) fn report_mismatches(what: &str, a: &Asker) {
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
