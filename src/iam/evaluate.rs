//! The evaluate family: decisions for one principal over actions × resources, explained on
//! request, and simulated against candidate policy changes without storing them.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::caller::Caller;
use super::err::IamError;
use super::model::EvaluateBody;
use super::service::*;
use super::state::{Disabled, Picked, is_pool};
use crate::policy::{
    Action, Decision, Krn, Outcome, PolicyDocument, StoredPolicy, check_context_entry,
};
use crate::storage::{Page, ResourceFilter, ResourceStore};

/// A parsed evaluation request.
pub struct Evaluation {
    pub tenant: String,
    pub principals: Vec<Krn>,
    /// The roles among `principals` (sent, or the caller's own when it asks for itself).
    pub roles: Vec<Krn>,
    pub actions: Vec<Action>,
    pub resources: Vec<Krn>,
    /// The request context, with `kaa:CurrentTime` (the service's clock when not sent).
    pub context: Map<String, Value>,
}

/// Most keys in a request context.
const MAX_CONTEXT_KEYS: usize = 64;

/// The request context of an evaluation, checked, with the service's time as `kaa:CurrentTime`
/// unless the caller sent one.
pub fn parse_context(b: &EvaluateBody) -> Result<Map<String, Value>, IamError> {
    let mut context = b.context.clone().unwrap_or_default();
    if context.len() > MAX_CONTEXT_KEYS {
        return Err(IamError::invalid(format!(
            "`context` has {} keys, at most {MAX_CONTEXT_KEYS}",
            context.len()
        )));
    }
    let errors: Vec<String> = context
        .iter()
        .filter_map(|(k, v)| check_context_entry(k, v).err())
        .map(|e| format!("context: {e}"))
        .collect();
    if !errors.is_empty() {
        return Err(IamError::Invalid("invalid context".into(), errors));
    }
    if !context.contains_key("kaa:CurrentTime") {
        context.insert(
            "kaa:CurrentTime".into(),
            Value::String(crate::clock::rfc3339_ms(crate::clock::now_ms())),
        );
    }
    Ok(context)
}

/// Decisions of an evaluation: `[action][resource]`, and per resource why it is denied whatever
/// the policies say (a disabled principal or resource).
pub struct Decided {
    pub eval: Evaluation,
    pub decisions: Vec<Vec<Decision>>,
    pub disabled: Vec<Option<Disabled>>,
    /// The decisions the decision log keeps, with their statements and policy versions.
    pub picked: Vec<Picked>,
}

impl Decided {
    /// The explanation of a decision denied because something is disabled, as JSON fields.
    pub fn disabled_fields(&self, resource: usize) -> Option<(&'static str, String)> {
        self.disabled
            .get(resource)
            .and_then(Option::as_ref)
            .map(|d| (d.kind(), d.message()))
    }
}

fn parse_actions(b: &EvaluateBody, many: bool) -> Result<Vec<Action>, IamError> {
    let texts: Vec<String> = match (&b.action, &b.actions) {
        (Some(_), Some(_)) => {
            return Err(IamError::invalid("send `action` or `actions`, not both"));
        }
        (Some(a), None) => vec![a.clone()],
        (None, Some(list)) if many => list.clone(),
        (None, Some(_)) => return Err(IamError::invalid("this request takes one `action`")),
        (None, None) => return Err(IamError::invalid("`action` is required")),
    };
    if texts.is_empty() {
        return Err(IamError::invalid("`actions` must name at least one action"));
    }
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        match Action::parse(t) {
            Ok(a) if a.is_wildcard() => errors.push(format!(
                "actions[{i}]: `{t}` is a wildcard; ask about a concrete action"
            )),
            Ok(a) => {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
            Err(e) => errors.push(format!("actions[{i}]: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(IamError::Invalid("invalid actions".into(), errors))
    }
}

fn parse_resources(list: &[String]) -> Result<Vec<Krn>, IamError> {
    if list.is_empty() {
        return Err(IamError::invalid(
            "`resources` must name at least one resource KRN",
        ));
    }
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        match Krn::parse(t) {
            Ok(k) if k.is_wildcard() => errors.push(format!(
                "resources[{i}]: `{t}` is a wildcard; ask about a concrete resource"
            )),
            Ok(k) => out.push(k),
            Err(e) => errors.push(format!("resources[{i}]: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(IamError::Invalid("invalid resources".into(), errors))
    }
}

impl Iam {
    /// The principal set a request is decided for: the named principal (which needs
    /// `iam:user:evaluate` on it unless it is the caller) or the caller itself.
    fn evaluation_principals(
        &self,
        caller: &Caller,
        b: &EvaluateBody,
    ) -> Result<(String, Vec<Krn>, Vec<Krn>), IamError> {
        let mut roles = Vec::new();
        for (i, r) in b.roles.iter().enumerate() {
            let k = Krn::parse(r).map_err(|e| IamError::invalid(format!("roles[{i}]: {e}")))?;
            if k.is_wildcard() {
                return Err(IamError::invalid(format!(
                    "roles[{i}]: `{r}` is a wildcard"
                )));
            }
            roles.push(k);
        }
        let named = match &b.principal {
            Some(p) => {
                let k =
                    Krn::parse(p).map_err(|e| IamError::invalid(format!("`principal`: {e}")))?;
                if k.is_wildcard() {
                    return Err(IamError::invalid(format!(
                        "`principal` `{p}` is a wildcard; name one principal"
                    )));
                }
                Some(k)
            }
            None => None,
        };
        match (named, &caller.principal) {
            (Some(p), me) => {
                if me.as_ref() != Some(&p) {
                    if p.tenant() != caller.tenant && !caller.is_system() {
                        return Err(IamError::Forbidden(format!(
                            "`{p}` belongs to another tenant"
                        )));
                    }
                    self.authorize(caller, "iam:user:evaluate", &p)?;
                }
                let tenant = p.tenant().to_string();
                let set = self.state.principal_set(&tenant, &p, &roles);
                Ok((tenant, set, roles))
            }
            (None, Some(me)) => {
                let mut all = caller.roles.clone();
                all.extend(roles);
                let set = self.state.principal_set(&caller.tenant, me, &all);
                Ok((caller.tenant.clone(), set, all))
            }
            (None, None) => Err(IamError::invalid(
                "`principal` is required: name the principal's KRN",
            )),
        }
    }

    pub(crate) fn evaluation(
        &self,
        caller: &Caller,
        b: &EvaluateBody,
        many_actions: bool,
    ) -> Result<Evaluation, IamError> {
        let actions = parse_actions(b, many_actions)?;
        let resources = parse_resources(&b.resources)?;
        let context = parse_context(b)?;
        if actions.len().saturating_mul(resources.len()) > MAX_EVALUATIONS {
            return Err(IamError::invalid(format!(
                "at most {MAX_EVALUATIONS} action × resource pairs per request"
            )));
        }
        let (tenant, principals, roles) = self.evaluation_principals(caller, b)?;
        Ok(Evaluation {
            tenant,
            principals,
            roles,
            actions,
            resources,
            context,
        })
    }

    /// `/evaluate` (one action) and `/evaluate/actions` (many).
    pub fn evaluate(
        &self,
        caller: &Caller,
        b: &EvaluateBody,
        many_actions: bool,
    ) -> Result<Decided, IamError> {
        let eval = self.evaluation(caller, b, many_actions)?;
        let mut pick = self.decision_log.get().and_then(|l| l.picker());
        let (decisions, disabled, picked) = self.state.decide_matrix_picking(
            &eval.tenant,
            &eval.context,
            &eval.principals,
            &eval.actions,
            &eval.resources,
            pick.as_mut().map(|p| p as &mut dyn FnMut(Outcome) -> bool),
        );
        Ok(Decided {
            eval,
            decisions,
            disabled,
            picked,
        })
    }

    /// Each of `resources` that is not registered, as a 404 message names it: IAM's own
    /// entities (users, groups, policies, pools) by their records, anything else by the resource
    /// registry. Reads storage: never for the in-memory decision routes.
    pub fn unregistered(&self, resources: &[Krn]) -> Result<Vec<String>, IamError> {
        let mut gone = Vec::new();
        for r in resources {
            let kind = match (r.service(), r.resource_type()) {
                ("iam", t @ ("user" | "group" | "policy" | "pool")) => t,
                _ => "resource",
            };
            if !self.exists(r.tenant(), kind, r.as_str())? {
                gone.push(super::err::not_found_message(kind, r.as_str()));
            }
        }
        Ok(gone)
    }

    /// [`Iam::evaluate`] for a caller that does not ask for an explanation: the decisions carry
    /// their outcomes only (no reasons).
    pub fn evaluate_outcomes(
        &self,
        caller: &Caller,
        b: &EvaluateBody,
        many_actions: bool,
    ) -> Result<Decided, IamError> {
        let eval = self.evaluation(caller, b, many_actions)?;
        let mut pick = self.decision_log.get().and_then(|l| l.picker());
        let (outcomes, disabled, picked) = self.state.decide_outcomes_picking(
            &eval.tenant,
            &eval.context,
            &eval.principals,
            &eval.actions,
            &eval.resources,
            pick.as_mut().map(|p| p as &mut dyn FnMut(Outcome) -> bool),
        );
        let decisions = outcomes
            .into_iter()
            .map(|row| row.into_iter().map(Decision::of).collect())
            .collect();
        Ok(Decided {
            eval,
            decisions,
            disabled,
            picked,
        })
    }

    /// `/evaluate/resources`: registered resources of a type the principal may act on (none
    /// when it is disabled: the reason comes last).
    pub fn allowed_registered(
        &self,
        caller: &Caller,
        b: &EvaluateBody,
        m: &HashMap<String, String>,
    ) -> Result<(Vec<Krn>, u64, Page, Option<Disabled>), IamError> {
        let actions = parse_actions(b, false)?;
        let Some(rtype) = b.resource_type.clone() else {
            return Err(IamError::invalid("`resourceType` is required"));
        };
        let context = parse_context(b)?;
        let (tenant, principals, _) = self.evaluation_principals(caller, b)?;
        let page = self.page(
            m.get("page").map(String::as_str),
            m.get("pageSize").map(String::as_str),
        )?;
        if let Some(why) = self.state.disabled_principal(&tenant, &principals) {
            return Ok((Vec::new(), 0, page, Some(why)));
        }
        let mut allowed = Vec::new();
        let mut scan = Page {
            page: 1,
            size: 1000,
        };
        loop {
            let filter = ResourceFilter {
                tenant: tenant.clone(),
                service: b.service.clone(),
                resource_type: Some(rtype.clone()),
                ..Default::default()
            };
            let (batch, total) = self.db.list_resources(&filter, scan)?;
            let krns: Vec<Krn> = batch
                .iter()
                .filter_map(|r| Krn::parse(&r.krn).ok())
                .collect();
            let (d, _) =
                self.state
                    .decide_outcomes(&tenant, &context, &principals, &actions, &krns);
            if let Some(row) = d.first() {
                for (k, outcome) in krns.iter().zip(row) {
                    if *outcome == Outcome::Allow {
                        allowed.push(k.clone());
                    }
                }
            }
            if u64::from(scan.page) * u64::from(scan.size) >= total || batch.is_empty() {
                break;
            }
            scan.page += 1;
        }
        let count = allowed.len() as u64;
        let start = usize::try_from(page.offset()).unwrap_or(usize::MAX);
        let items = allowed
            .into_iter()
            .skip(start)
            .take(page.size as usize)
            .collect();
        Ok((items, count, page, None))
    }

    /// `/evaluate/simulate`: each decision now and with the candidate changes.
    pub fn simulate(&self, caller: &Caller, b: &EvaluateBody) -> Result<Value, IamError> {
        let eval = self.evaluation(caller, b, true)?;
        if b.add.len() > 100 || b.remove.len() > 1000 {
            return Err(IamError::invalid(
                "at most 100 candidate policies and 1000 removals",
            ));
        }
        let mut add = Vec::new();
        for (i, raw) in b.add.iter().enumerate() {
            add.push(candidate(raw, i, &eval.tenant)?);
        }
        let mut remove = Vec::new();
        for (i, r) in b.remove.iter().enumerate() {
            let k = Krn::parse(r)
                .or_else(|_| Krn::from_id(r))
                .map_err(|e| IamError::invalid(format!("remove[{i}]: {e}")))?;
            remove.push(k.as_str().to_string());
        }
        let remove_refs: Vec<&str> = remove.iter().map(String::as_str).collect();
        let (now, _) = self.state.decide_matrix(
            &eval.tenant,
            &eval.context,
            &eval.principals,
            &eval.actions,
            &eval.resources,
        );
        let mut results = Vec::new();
        for (ai, a) in eval.actions.iter().enumerate() {
            for (ri, r) in eval.resources.iter().enumerate() {
                let (sim, disabled) = self.state.simulate(
                    &eval.tenant,
                    &eval.context,
                    &eval.principals,
                    a,
                    r,
                    &add,
                    &remove_refs,
                );
                let cur = &now[ai][ri];
                let mut current = json!({ "outcome": cur.outcome, "reasons": cur.reasons });
                if !cur.checks.is_empty()
                    && let Value::Object(m) = &mut current
                {
                    m.insert("checked".into(), json!(cur.checks));
                }
                let mut result = json!({
                    "action": a.as_str(),
                    "resource": r.as_str(),
                    "outcome": sim.outcome,
                    "reasons": sim.reasons,
                    "current": current,
                    "changed": sim.outcome != cur.outcome,
                });
                if !sim.checks.is_empty()
                    && let Value::Object(m) = &mut result
                {
                    m.insert("checked".into(), json!(sim.checks));
                }
                if let (Some(d), Value::Object(m)) = (disabled, &mut result) {
                    m.insert("disabled".into(), Value::from(d.kind()));
                    m.insert("message".into(), Value::from(d.message()));
                }
                results.push(result);
            }
        }
        Ok(json!({
            "principals": eval.principals.iter().map(Krn::as_str).collect::<Vec<_>>(),
            "results": results,
        }))
    }
}

/// A candidate policy of a simulation: a document plus `id` and `attachedTo`.
fn candidate(raw: &Value, i: usize, tenant: &str) -> Result<StoredPolicy, IamError> {
    let Value::Object(map) = raw else {
        return Err(IamError::invalid(format!(
            "add[{i}] must be a policy document object"
        )));
    };
    let mut doc = map.clone();
    let attached = doc.remove("attachedTo").unwrap_or(Value::Array(Vec::new()));
    let resource = doc.remove("resource");
    let id = doc.remove("id");
    doc.entry("type").or_insert(Value::from("identity"));
    let document = PolicyDocument::from_json(&Value::Object(doc))
        .map_err(|e| IamError::invalid(format!("add[{i}]: {e}")))?;
    require_statements(&document).map_err(|e| IamError::invalid(format!("add[{i}]: {e}")))?;
    let Value::Array(targets) = attached else {
        return Err(IamError::invalid(format!(
            "add[{i}]: `attachedTo` must be a list of KRNs"
        )));
    };
    let mut principals = Vec::new();
    let mut pools = Vec::new();
    for (j, t) in targets.iter().enumerate() {
        let k = t
            .as_str()
            .ok_or_else(|| {
                IamError::invalid(format!("add[{i}].attachedTo[{j}] must be a KRN string"))
            })
            .and_then(|s| {
                Krn::parse(s)
                    .map_err(|e| IamError::invalid(format!("add[{i}].attachedTo[{j}]: {e}")))
            })?;
        if is_pool(&k) {
            pools.push(k);
        } else {
            principals.push(k);
        }
    }
    let resource = match resource {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(Krn::parse(&s).map_err(|e| IamError::invalid(format!("add[{i}].resource: {e}")))?)
        }
        Some(_) => {
            return Err(IamError::invalid(format!(
                "add[{i}].resource must be a KRN string"
            )));
        }
    };
    let id = match id {
        Some(Value::String(s)) => s,
        _ => format!("krn:iam:{tenant}::policy/{}", document.name),
    };
    let p = StoredPolicy {
        id,
        document,
        attached_principals: principals,
        attached_pools: pools,
        resource,
    };
    p.validate()
        .map_err(|e| IamError::invalid(format!("add[{i}]: {e}")))?;
    Ok(p)
}
