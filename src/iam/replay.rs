//! `POST /evaluate/replay`: logged decisions decided again under today's policies, each with the
//! outcome then and now and the statements (and policy versions) behind each.

use std::io::BufRead;

use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::Caller;
use super::decision_log::{LoggedDecision, LoggedStatement, logged_statements};
use super::err::IamError;
use super::model::EvaluateBody;
use super::service::Iam;
use crate::clock::parse_date_ms;
use crate::policy::{Krn, Outcome};

/// Most decisions one replay decides.
pub const MAX_REPLAY: usize = 1000;

/// A replay of the decisions this replica logged to its file in a time range.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeBody {
    from: Option<String>,
    to: Option<String>,
    #[serde(rename = "tenantID")]
    tenant_id: Option<String>,
    principal: Option<String>,
    action: Option<String>,
    /// Logged decisions as JSON objects (instead of lines).
    decisions: Option<Vec<Value>>,
}

fn invalid(m: impl Into<String>) -> IamError {
    IamError::invalid(m)
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Allow => "allow",
        Outcome::ExplicitDeny => "explicitDeny",
        Outcome::ImplicitDeny => "implicitDeny",
    }
}

/// `allow by statement 0 of krn:... version 2`, `implicitDeny: no statement applies`.
fn describe(outcome: Outcome, statements: &[LoggedStatement], disabled: Option<&str>) -> String {
    let o = outcome_name(outcome);
    if let Some(d) = disabled {
        return format!("{o}: the {d} is disabled");
    }
    if statements.is_empty() {
        return format!("{o}: no statement applies");
    }
    let by: Vec<String> = statements
        .iter()
        .map(|s| {
            let v = s
                .version
                .map_or_else(|| "version unknown".to_string(), |v| format!("version {v}"));
            format!("statement {} of {} {v}", s.statement, s.policy_id)
        })
        .collect();
    format!("{o} by {}", by.join(", "))
}

/// One logged decision parsed from `value`, named `what` in messages.
fn parse_logged(value: Value, what: &str) -> Result<LoggedDecision, IamError> {
    if !value.is_object() {
        return Err(invalid(format!(
            "{what}: a logged decision must be a JSON object"
        )));
    }
    serde_json::from_value::<LoggedDecision>(value)
        .map_err(|e| invalid(format!("{what}: not a logged decision: {e}")))
}

impl Iam {
    /// The decisions a replay body names: logged lines (one JSON object per line), or an object
    /// with `decisions` and/or a time range of this replica's log file.
    fn replay_input(&self, caller: &Caller, body: &[u8]) -> Result<Vec<LoggedDecision>, IamError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| invalid("the body is not UTF-8 text"))?
            .trim();
        if text.is_empty() {
            return Err(invalid(
                "the body is empty: send logged decisions (one JSON line each, as logged) or \
                 {\"from\": ..., \"to\": ...} to replay this replica's log file",
            ));
        }
        // One JSON value: a logged line, or a request object.
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) {
            if map.contains_key("outcome") {
                return Ok(vec![parse_logged(Value::Object(map), "line 1")?]);
            }
            let range: RangeBody = serde_json::from_value(Value::Object(map))
                .map_err(|e| invalid(format!("invalid replay request: {e}")))?;
            return self.replay_request(caller, range);
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.len() > MAX_REPLAY {
            return Err(invalid(format!(
                "{} decisions sent, at most {MAX_REPLAY} per replay",
                lines.len()
            )));
        }
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let what = format!("line {}", i + 1);
            let value: Value = serde_json::from_str(line)
                .map_err(|e| invalid(format!("{what}: malformed JSON: {e}")))?;
            out.push(parse_logged(value, &what)?);
        }
        Ok(out)
    }

    /// A request object: its `decisions`, and the logged lines of its time range.
    fn replay_request(
        &self,
        caller: &Caller,
        r: RangeBody,
    ) -> Result<Vec<LoggedDecision>, IamError> {
        let mut out = Vec::new();
        let sent = r.decisions.unwrap_or_default();
        if sent.len() > MAX_REPLAY {
            return Err(invalid(format!(
                "{} decisions sent, at most {MAX_REPLAY} per replay",
                sent.len()
            )));
        }
        for (i, v) in sent.into_iter().enumerate() {
            out.push(parse_logged(v, &format!("decisions[{i}]"))?);
        }
        let ranged = r.from.is_some()
            || r.to.is_some()
            || r.tenant_id.is_some()
            || r.principal.is_some()
            || r.action.is_some();
        if !ranged {
            if out.is_empty() {
                return Err(invalid(
                    "nothing to replay: send logged decisions, or `from`/`to` to replay this \
                     replica's log file",
                ));
            }
            return Ok(out);
        }
        let time = |field: &str, v: &Option<String>| -> Result<Option<i64>, IamError> {
            match v.as_deref() {
                None | Some("") => Ok(None),
                Some(s) => parse_date_ms(s).map(Some).ok_or_else(|| {
                    invalid(format!(
                        "`{field}` must be an RFC 3339 date-time (2026-12-07T10:00:00Z) or a \
                         date (2026-12-07), got `{s}`"
                    ))
                }),
            }
        };
        let (from, to) = (time("from", &r.from)?, time("to", &r.to)?);
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(invalid("`from` is after `to`"));
        }
        let tenant = self.tenant_for(caller, r.tenant_id.as_deref())?;
        if !self.state.knows_tenant(&tenant) {
            return Err(invalid(format!(
                "unknown tenant `{tenant}`: IAM holds nothing of it"
            )));
        }
        let Some(path) = self.decision_log.get().and_then(|l| l.file()) else {
            return Err(invalid(
                "this replica writes no decision log file (`iam.decision-log.destination` is \
                 stdout, or the log is off): send the logged decisions in the body instead",
            ));
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(IamError::Unavailable(format!(
                    "the decision log file cannot be read: {e}"
                )));
            }
        };
        // Read up to the end the file has now (lines written meanwhile are not waited for).
        let end = file.metadata().map(|m| m.len()).unwrap_or(0);
        let reader = std::io::BufReader::new(std::io::Read::take(file, end));
        for line in reader.lines() {
            let Ok(line) = line else { break };
            let Some(at) = line_time(&line) else { continue };
            if from.is_some_and(|f| at < f) || to.is_some_and(|t| at >= t) {
                continue;
            }
            // A line cut short (the service stopped while writing) is not a decision.
            let Ok(d) = serde_json::from_str::<LoggedDecision>(&line) else {
                continue;
            };
            if d.tenant_id != tenant
                || r.principal.as_ref().is_some_and(|p| *p != d.principal)
                || r.action.as_ref().is_some_and(|a| *a != d.action)
            {
                continue;
            }
            if out.len() >= MAX_REPLAY {
                return Err(invalid(format!(
                    "the range holds more than {MAX_REPLAY} decisions, at most {MAX_REPLAY} per \
                     replay: narrow it (`from`, `to`, `principal`, `action`)"
                )));
            }
            out.push(d);
        }
        Ok(out)
    }

    /// `POST /evaluate/replay`: each logged decision decided again now. The caller must be
    /// allowed to evaluate for each one's principal (as `/evaluate` and `/evaluate/simulate`
    /// require), in its own tenant (the system tenant in any).
    pub fn replay(
        &self,
        caller: &Caller,
        body: &[u8],
        changed_only: bool,
    ) -> Result<Value, IamError> {
        let logged = self.replay_input(caller, body)?;
        // Every decision is checked before any is decided: one bad or forbidden decision
        // refuses the whole replay.
        let mut evals = Vec::with_capacity(logged.len());
        for (i, d) in logged.iter().enumerate() {
            let what = format!("decision {}", i + 1);
            if d.tenant_id != caller.tenant && !caller.is_system() {
                return Err(IamError::Forbidden(format!(
                    "{what}: tenant `{}` is not the caller's",
                    d.tenant_id
                )));
            }
            let principal = Krn::parse(&d.principal)
                .map_err(|e| invalid(format!("{what}: `principal`: {e}")))?;
            if principal.tenant() != d.tenant_id {
                return Err(invalid(format!(
                    "{what}: the principal `{}` is not of tenant `{}`",
                    d.principal, d.tenant_id
                )));
            }
            if !self.state.knows_tenant(&d.tenant_id) {
                return Err(invalid(format!(
                    "{what}: unknown tenant `{}`: IAM holds nothing of it",
                    d.tenant_id
                )));
            }
            let body = EvaluateBody {
                principal: Some(d.principal.clone()),
                action: Some(d.action.clone()),
                resources: vec![d.resource.clone()],
                roles: d.roles.clone(),
                context: Some(d.context.clone()),
                ..EvaluateBody::default()
            };
            let eval = self.evaluation(caller, &body, false).map_err(|e| match e {
                IamError::Invalid(m, errors) => IamError::Invalid(format!("{what}: {m}"), errors),
                IamError::Forbidden(m) => IamError::Forbidden(format!("{what}: {m}")),
                other => other,
            })?;
            evals.push(eval);
        }
        let mut results = Vec::new();
        let mut changed = 0usize;
        for (d, eval) in logged.iter().zip(&evals) {
            let mut always = |_: Outcome| true;
            let (decisions, disabled, picked) = self.state.decide_matrix_picking(
                &eval.tenant,
                &eval.context,
                &eval.principals,
                &eval.actions,
                &eval.resources,
                Some(&mut always),
            );
            let now = &decisions[0][0];
            let versions = picked
                .first()
                .map(|p| p.versions.clone())
                .unwrap_or_default();
            let now_statements = logged_statements(now, &versions);
            let now_disabled = disabled
                .first()
                .and_then(Option::as_ref)
                .map(|x| x.kind().to_string());
            let then_statements: Vec<Value> = d
                .statements
                .iter()
                .map(|s| {
                    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut v {
                        m.insert(
                            "versionNow".into(),
                            json!(self.state.policy_version(&d.tenant_id, &s.policy_id)),
                        );
                    }
                    v
                })
                .collect();
            let is_changed = now.outcome != d.outcome;
            if is_changed {
                changed += 1;
            } else if changed_only {
                continue;
            }
            let then_text = describe(d.outcome, &d.statements, d.disabled.as_deref());
            let now_text = describe(now.outcome, &now_statements, now_disabled.as_deref());
            let why = if is_changed {
                format!("was {then_text}; now {now_text}")
            } else {
                format!("unchanged: {now_text}")
            };
            let mut logged_part = json!({ "outcome": d.outcome, "statements": then_statements });
            if let (Some(x), Value::Object(m)) = (&d.disabled, &mut logged_part) {
                m.insert("disabled".into(), json!(x));
            }
            let mut current = json!({ "outcome": now.outcome, "statements": now_statements });
            if let (Some(x), Value::Object(m)) = (&now_disabled, &mut current) {
                m.insert("disabled".into(), json!(x));
            }
            results.push(json!({
                "time": d.time,
                "requestID": d.request_id,
                "tenantID": d.tenant_id,
                "principal": d.principal,
                "action": d.action,
                "resource": d.resource,
                "logged": logged_part,
                "current": current,
                "changed": is_changed,
                "why": why,
            }));
        }
        Ok(json!({
            "replayed": logged.len(),
            "changed": changed,
            "results": results,
        }))
    }
}

/// The time of a logged line, read from its start (`{"time":"...`) without parsing the rest.
fn line_time(line: &str) -> Option<i64> {
    let rest = line.strip_prefix("{\"time\":\"")?;
    let end = rest.find('"')?;
    parse_date_ms(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_times_are_read_from_the_start() {
        assert_eq!(
            line_time(r#"{"time":"2026-12-07T10:00:00.000Z","x":1}"#),
            parse_date_ms("2026-12-07T10:00:00Z")
        );
        assert_eq!(line_time(r#"{"x":1}"#), None);
        assert_eq!(line_time(r#"{"time":"2026-12-07T10:00"#), None);
    }
}
