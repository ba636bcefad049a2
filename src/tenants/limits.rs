//! Subscriptions in time and the limits they give. A tenant has one subscription (a package
//! type, a `subscription_type`, optional `start_date` and `end_date`); while it is in force the
//! tenant has its package type's limits, before its start and after its end those of the
//! configured fallback package type, or none at all (`SUSPENDED`: every limit is 0). What a read
//! shows is worked out from the dates at the moment of the read; the phase as last applied is
//! kept in `subscription_phases` so that a sweep on every replica sends one `updated` event when
//! a subscription starts or ends.

use serde_json::{Map, Value, json};

use super::err::TmError;
use super::service::Tm;
use crate::clients::tle::LifecycleKind;
use crate::clock::{now_ms, parse_date_ms, rfc3339_ms};
use crate::storage::{CatalogStore, DuePhase, StorageError, SubscriptionStore};

/// Phases of a subscription.
pub const NOT_STARTED: &str = "NOT_STARTED";
pub const ACTIVE: &str = "ACTIVE";
pub const EXPIRED: &str = "EXPIRED";

/// Effective states of a tenant's limits.
pub const STATE_ACTIVE: &str = "ACTIVE";
pub const STATE_FALLBACK: &str = "FALLBACK";
pub const STATE_SUSPENDED: &str = "SUSPENDED";
pub const STATE_NONE: &str = "NONE";

const KIND: &str = "tenant-subscription";

/// A tenant's subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub package_type_id: String,
    pub subscription_type: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

impl Subscription {
    pub fn from_body(id: &str, body: &Map<String, Value>) -> Subscription {
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(String::from);
        Subscription {
            id: id.to_string(),
            package_type_id: text("package_type_id").unwrap_or_default(),
            subscription_type: text("subscription_type"),
            start_ms: text("start_date").as_deref().and_then(parse_date_ms),
            end_ms: text("end_date").as_deref().and_then(parse_date_ms),
        }
    }

    /// The phase at `now`: the start is inside, the end outside.
    pub fn phase(&self, now: i64) -> &'static str {
        if self.start_ms.is_some_and(|s| now < s) {
            NOT_STARTED
        } else if self.end_ms.is_some_and(|e| now >= e) {
            EXPIRED
        } else {
            ACTIVE
        }
    }

    /// When the phase changes next after `now` (none: never).
    pub fn next_change(&self, now: i64) -> Option<i64> {
        match self.phase(now) {
            NOT_STARTED => self.start_ms,
            ACTIVE => self.end_ms,
            _ => None,
        }
    }
}

/// Check the dates and the type of a subscription body: dates as `2026-12-07` or RFC 3339
/// date-times, the end after the start, the type a non-empty string.
pub fn check_subscription(m: &Map<String, Value>) -> Result<(), TmError> {
    let mut dates = [None, None];
    for (i, f) in ["start_date", "end_date"].iter().enumerate() {
        if let Some(Value::String(s)) = m.get(*f) {
            dates[i] = Some(parse_date_ms(s).ok_or_else(|| {
                TmError::field(
                    f,
                    format!(
                        "must be a date (`2026-12-07`) or an RFC 3339 date-time \
                         (`2026-12-07T10:00:00Z`), got `{s}`"
                    ),
                )
            })?);
        }
    }
    if let [Some(start), Some(end)] = dates
        && end <= start
    {
        return Err(TmError::field("end_date", "must be after `start_date`"));
    }
    if let Some(Value::String(s)) = m.get("subscription_type")
        && (s.trim().is_empty() || s.len() > 64)
    {
        return Err(TmError::field(
            "subscription_type",
            "must be a non-empty string of at most 64 bytes",
        ));
    }
    Ok(())
}

/// A tenant's limits at one moment.
#[derive(Debug, Clone)]
pub struct Effective {
    pub state: &'static str,
    pub subscription: Option<(Subscription, &'static str)>,
    /// The package type whose limits apply (none: suspended, or no subscription).
    pub package_type_id: Option<String>,
    pub limits: Map<String, Value>,
}

/// What a limit allows: a count from 0.
fn maximum(name: &str, v: &Value, package: Option<&str>) -> Result<u64, TmError> {
    v.as_u64().ok_or_else(|| {
        TmError::invalid(format!(
            "limit `{name}`{} is `{v}`, not a count that can be checked",
            package
                .map(|p| format!(" of package type `{p}`"))
                .unwrap_or_default()
        ))
    })
}

fn count(body: &Map<String, Value>, field: &str, min: u64) -> Result<u64, TmError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(TmError::field(field, "is required")),
        Some(v) => v.as_u64().filter(|n| *n >= min).ok_or_else(|| {
            TmError::field(
                field,
                format!("must be a whole number of at least {min}, got `{v}`"),
            )
        }),
    }
}

impl Tm {
    /// The tenant's subscription (an older database may hold several: the latest written).
    pub fn subscription_of(&self, tenant: &str) -> Result<Option<Subscription>, TmError> {
        let prefix = format!("{tenant}/");
        let latest = self
            .db
            .list_entries(KIND)?
            .into_iter()
            .filter(|e| e.id.starts_with(&prefix))
            .max_by(|a, b| (a.updated_ms, &a.id).cmp(&(b.updated_ms, &b.id)));
        Ok(match latest {
            None => None,
            Some(e) => match serde_json::from_str(&e.body) {
                Ok(Value::Object(m)) => Some(Subscription::from_body(&e.id, &m)),
                _ => {
                    return Err(TmError::Internal(format!(
                        "{KIND} `{}`: the stored body is not a JSON object",
                        e.id
                    )));
                }
            },
        })
    }

    fn package_limits(&self, package: &str) -> Result<Option<Map<String, Value>>, TmError> {
        match self.db.get_entry("package-type", package) {
            Ok(e) => Ok(Some(
                match serde_json::from_str::<Value>(&e.body)
                    .ok()
                    .and_then(|b| b.get("limits").cloned())
                {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                },
            )),
            Err(StorageError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The tenant's limits at `now`, from its subscription's dates (not from what the sweep
    /// applied last: a read after the end never shows the old limits).
    pub fn effective_limits(&self, tenant: &str, now: i64) -> Result<Effective, TmError> {
        let Some(sub) = self.subscription_of(tenant)? else {
            return Ok(Effective {
                state: STATE_NONE,
                subscription: None,
                package_type_id: None,
                limits: Map::new(),
            });
        };
        let phase = sub.phase(now);
        let subscribed = self
            .package_limits(&sub.package_type_id)?
            .unwrap_or_default();
        if phase == ACTIVE {
            return Ok(Effective {
                state: STATE_ACTIVE,
                package_type_id: Some(sub.package_type_id.clone()),
                subscription: Some((sub, phase)),
                limits: subscribed,
            });
        }
        // Not in force: the fallback's limits, the subscribed package's other names at 0.
        let fallback = match &self.settings.fallback_package_type {
            Some(p) => self.package_limits(p)?.map(|l| (p.clone(), l)),
            None => None,
        };
        let (state, package, mut limits) = match fallback {
            Some((p, l)) => (STATE_FALLBACK, Some(p), l),
            None => (STATE_SUSPENDED, None, Map::new()),
        };
        for name in subscribed.keys() {
            limits.entry(name.clone()).or_insert(Value::from(0));
        }
        Ok(Effective {
            state,
            subscription: Some((sub, phase)),
            package_type_id: package,
            limits,
        })
    }

    /// `GET /tenants/{id}/limits`.
    pub fn limits_view(&self, tenant: &str) -> Result<Value, TmError> {
        let t = self.get_tenant(tenant)?;
        let eff = self.effective_limits(tenant, now_ms())?;
        let date = |ms: Option<i64>| ms.map(rfc3339_ms);
        let subscription = eff.subscription.as_ref().map(|(s, phase)| {
            json!({
                "id": s.id,
                "package_type_id": s.package_type_id,
                "subscription_type": s.subscription_type,
                "start_date": date(s.start_ms),
                "end_date": date(s.end_ms),
                "phase": phase,
            })
        });
        Ok(json!({
            "tenant_id": t.id,
            "subscription_type": t.subscription_type,
            "state": eff.state,
            "package_type_id": eff.package_type_id,
            "subscription": subscription,
            "limits": eff.limits,
        }))
    }

    /// `POST /tenants/{id}/limits/check`: may the tenant, having `current` of a limit's things,
    /// have `requested` more?
    pub fn check_limit(&self, tenant: &str, body: &Value) -> Result<Value, TmError> {
        let Value::Object(b) = body else {
            return Err(TmError::invalid("the body must be a JSON object"));
        };
        if let Some(k) = b
            .keys()
            .find(|k| !["limit", "current", "requested"].contains(&k.as_str()))
        {
            return Err(TmError::field(k, "unknown field"));
        }
        let name = match b.get("limit") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(TmError::field(
                    "limit",
                    "is required: the name of one of the tenant's limits",
                ));
            }
        };
        let current = count(b, "current", 0)?;
        let requested = count(b, "requested", 1)?;
        let t = self.get_tenant(tenant)?;
        let eff = self.effective_limits(&t.id, now_ms())?;
        let Some(v) = eff.limits.get(&name) else {
            let mut known: Vec<&str> = eff.limits.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(TmError::field(
                "limit",
                format!(
                    "tenant `{}` has no limit `{name}` (its limits: {})",
                    t.id,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            ));
        };
        let max = maximum(&name, v, eff.package_type_id.as_deref())?;
        let allowed = current
            .checked_add(requested)
            .is_some_and(|total| total <= max);
        Ok(json!({
            "tenant_id": t.id,
            "limit": name,
            "maximum": max,
            "current": current,
            "requested": requested,
            "allowed": allowed,
            "remaining": max.saturating_sub(current),
            "state": eff.state,
            "package_type_id": eff.package_type_id,
        }))
    }

    /// Move on every subscription whose start or end came: its phase once, with the tenant's
    /// `updated` event when the phase changed. Safe on any number of replicas at once. How many
    /// tenants' phases this call moved.
    pub fn sweep_subscriptions(&self, now: i64) -> Result<usize, TmError> {
        let mut moved = 0;
        for due in self.db.due_phases(now, 100)? {
            moved += usize::from(self.advance(&due, now)?);
        }
        Ok(moved)
    }

    fn advance(&self, due: &DuePhase, now: i64) -> Result<bool, TmError> {
        let (phase, next) = match self.subscription_of(&due.tenant_id)? {
            Some(s) => (s.phase(now), s.next_change(now)),
            // Nothing left to move (the subscription went with its tenant).
            None => (due.phase.as_str(), None),
        };
        let event = if phase != due.phase {
            self.event(LifecycleKind::Updated, &due.tenant_id)?
        } else {
            None
        };
        let moved = self
            .db
            .advance_phase(due, phase, next, event.as_ref(), now)?;
        if moved && phase != due.phase {
            log::info!(
                "subscriptions: tenant `{}`: {} -> {phase}",
                due.tenant_id,
                due.phase
            );
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(start: Option<i64>, end: Option<i64>) -> Subscription {
        Subscription {
            id: "t/p".into(),
            package_type_id: "p".into(),
            subscription_type: None,
            start_ms: start,
            end_ms: end,
        }
    }

    #[test]
    fn phases_follow_the_dates() {
        let s = sub(Some(100), Some(200));
        assert_eq!((s.phase(99), s.next_change(99)), (NOT_STARTED, Some(100)));
        assert_eq!((s.phase(100), s.next_change(100)), (ACTIVE, Some(200)));
        assert_eq!((s.phase(200), s.next_change(200)), (EXPIRED, None));
        let open = sub(None, None);
        assert_eq!((open.phase(0), open.next_change(0)), (ACTIVE, None));
    }

    #[test]
    fn subscription_bodies_are_checked() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert!(check_subscription(&m(json!({"start_date": "2026-12-07"}))).is_ok());
        assert!(check_subscription(&m(json!({"end_date": "next week"}))).is_err());
        assert!(
            check_subscription(&m(
                json!({"start_date": "2026-12-07", "end_date": "2026-12-07T00:00:00Z"})
            ))
            .is_err()
        );
        assert!(check_subscription(&m(json!({"subscription_type": " "}))).is_err());
    }
}
