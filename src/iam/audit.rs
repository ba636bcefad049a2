//! Who changed what: the tenant's audit trail (`GET /audit`), its retention, and the history of
//! policies (`/policies/{id}/versions`, restore). The rows themselves are written by the
//! storage writes, in their transactions (`storage::audit`).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::caller::Caller;
use super::err::IamError;
use super::model::{PolicyReplace, id_of};
use super::service::{Iam, collection, krn_filter, path_id, q};
use crate::clock::rfc3339_ms;
use crate::config::IamSection;
use crate::policy::Krn;
use crate::storage::{AuditFilter, AuditRecord, AuditStore, PolicyRecord, PolicyVersion, Trail};

/// One audit row as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub time: String,
    #[serde(rename = "tenantID")]
    pub tenant_id: String,
    /// The principal KRN, else the token subject; `anonymous` with security off, `service` for
    /// the service's own writes (base policies from the configuration).
    pub principal: String,
    pub subject: Option<String>,
    /// The caller's own tenant (the system tenant when it acts in another).
    #[serde(rename = "callerTenantID")]
    pub caller_tenant_id: Option<String>,
    #[serde(rename = "requestID")]
    pub request_id: Option<String>,
    pub source: Option<String>,
    pub action: String,
    /// The entity's KRN and id.
    pub entity: String,
    #[serde(rename = "entityID")]
    pub entity_id: String,
    pub version_before: Option<i64>,
    pub version_after: Option<i64>,
    /// Names of the fields that changed.
    pub fields: Vec<String>,
    pub detail: Value,
}

impl From<&AuditRecord> for AuditView {
    fn from(r: &AuditRecord) -> AuditView {
        AuditView {
            time: rfc3339_ms(r.at_ms),
            tenant_id: r.tenant.clone(),
            principal: r.principal.clone(),
            subject: r.subject.clone(),
            caller_tenant_id: r.actor_tenant.clone(),
            request_id: r.request_id.clone(),
            source: r.source.clone(),
            action: r.action.clone(),
            entity: r.entity.clone(),
            entity_id: id_of(&r.entity),
            version_before: r.before,
            version_after: r.after,
            fields: r.fields.clone(),
            detail: r.detail.clone(),
        }
    }
}

/// One kept version of a policy.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyVersionView {
    pub id: String,
    pub krn: String,
    pub version: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub statements: Value,
    #[serde(rename = "resourceID", skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// When this version was written, and by whom.
    pub written: String,
    pub principal: String,
}

impl From<&PolicyVersion> for PolicyVersionView {
    fn from(v: &PolicyVersion) -> PolicyVersionView {
        PolicyVersionView {
            id: id_of(&v.krn),
            krn: v.krn.clone(),
            version: v.version,
            name: v.name.clone(),
            kind: v.kind.clone(),
            description: v.description.clone(),
            statements: serde_json::from_str(&v.statements).unwrap_or(Value::Null),
            resource_id: v.resource_krn.as_deref().map(id_of),
            written: rfc3339_ms(v.at_ms),
            principal: v.principal.clone(),
        }
    }
}

pub use crate::audit::Retention;

fn parse_cursor(s: &str) -> Result<i64, IamError> {
    crate::audit::parse_cursor(s).map_err(IamError::invalid)
}

fn time_param(m: &HashMap<String, String>, field: &str) -> Result<Option<i64>, IamError> {
    match q(m, field) {
        None | Some("") => Ok(None),
        Some(s) => crate::audit::parse_time(field, s)
            .map(Some)
            .map_err(IamError::invalid),
    }
}

/// `iam.audit` (`retention-days`, `retention-rows`, `prune-interval`, `publish`, `subject`):
/// see [`crate::audit::trail_config`].
pub fn trail_config(
    section: &IamSection,
    nats_configured: bool,
) -> Result<crate::audit::TrailConfig, String> {
    crate::audit::trail_config(&section.audit, "iam", Trail::Iam, nats_configured)
}

impl Iam {
    /// `GET /audit`: one page of the tenant's trail, newest first, and the cursor of the next.
    pub fn list_audit(
        &self,
        caller: &Caller,
        m: &HashMap<String, String>,
    ) -> Result<(Vec<AuditRecord>, Option<String>), IamError> {
        let tenant = self.tenant_for(caller, q(m, "tenantID"))?;
        self.authorize(caller, "iam:audit:read", &collection(&tenant, "audit")?)?;
        let size = match q(m, "pageSize") {
            None | Some("") => self.max_page_size.min(100),
            Some(s) => match s.parse::<u32>() {
                Ok(n) if n >= 1 => n.min(self.max_page_size),
                _ => {
                    return Err(IamError::invalid(format!(
                        "`pageSize` must be a whole number of at least 1, got `{s}`"
                    )));
                }
            },
        };
        let mut entity_query = m.clone();
        if let Some(e) = m.get("entity") {
            entity_query.insert("krn".into(), e.clone());
        }
        let entity = if m.contains_key("entity") {
            krn_filter(&entity_query)
                .map_err(|e| IamError::invalid(e.to_string().replace("`krn`", "`entity`")))?
        } else {
            None
        };
        let (from_ms, to_ms) = (time_param(m, "from")?, time_param(m, "to")?);
        if let (Some(f), Some(t)) = (from_ms, to_ms)
            && f > t
        {
            return Err(IamError::invalid("`from` is after `to`"));
        }
        let before_id = match q(m, "next") {
            None | Some("") => None,
            Some(c) => Some(parse_cursor(c)?),
        };
        let nonempty = |k: &str| q(m, k).filter(|v| !v.is_empty()).map(str::to_string);
        let filter = AuditFilter {
            trail: Trail::Iam,
            tenant: Some(tenant),
            entity,
            principal: nonempty("principal"),
            action: nonempty("action"),
            from_ms,
            to_ms,
            before_id,
            limit: size + 1,
        };
        let mut rows = self.db.audit(&filter)?;
        let next = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map(|r| crate::audit::cursor(r.id))
        } else {
            None
        };
        Ok((rows, next))
    }

    /// The policy of a history call: its KRN, with the caller's right to read it.
    fn history_policy(&self, caller: &Caller, id: &str) -> Result<Krn, IamError> {
        let k = path_id(id, "policy", caller)?;
        self.authorize(caller, "iam:policy:read", &k)?;
        Ok(k)
    }

    /// `GET /policies/{id}/versions`: the kept versions, newest first (also of a deleted policy).
    pub fn policy_versions(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Vec<PolicyVersion>, IamError> {
        let k = self.history_policy(caller, id)?;
        let list = self.db.policy_versions(k.tenant(), k.as_str())?;
        if list.is_empty() && !self.exists(k.tenant(), "policy", k.as_str())? {
            return Err(super::err::not_found("policy", k.as_str()));
        }
        Ok(list)
    }

    /// `GET /policies/{id}/versions/{n}`.
    pub fn policy_version(
        &self,
        caller: &Caller,
        id: &str,
        n: &str,
    ) -> Result<PolicyVersion, IamError> {
        let k = self.history_policy(caller, id)?;
        let n = version_number(n)?;
        self.db
            .policy_version(k.tenant(), k.as_str(), n)
            .map_err(|e| match e {
                crate::storage::StorageError::NotFound => IamError::NotFound(format!(
                    "policy `{k}` has no version {n} kept (the history starts with the first \
                     write after the upgrade that introduced it)"
                )),
                other => IamError::Storage(other),
            })
    }

    /// `POST /policies/{id}/versions/{n}/restore`: write a new version whose description and
    /// statements are those of version `n`, checked and authorized as a replace of them is.
    pub fn restore_policy_version(
        &self,
        caller: &Caller,
        id: &str,
        n: &str,
        if_match: Option<i64>,
    ) -> Result<PolicyRecord, IamError> {
        let old = self.policy_version(caller, id, n)?;
        let body = PolicyReplace {
            description: old.description.clone(),
            statements: serde_json::from_str(&old.statements).unwrap_or(Value::Null),
            version: None,
            pool_ids: None,
            ro_id: None,
            ro_krn: None,
            ro_tenant_id: None,
            ro_created: None,
            ro_updated: None,
            ro_name: None,
            ro_kind: None,
            ro_origin: None,
            ro_resource_id: None,
        };
        match &old.resource_krn {
            Some(resource) if old.kind == "resource" => {
                let rid = Krn::parse(resource)
                    .map_err(|e| IamError::invalid(e.to_string()))?
                    .to_id();
                self.put_resource_policy(caller, &rid, body, if_match)
            }
            _ => self.replace_policy(caller, id, body, if_match),
        }
    }
}

fn version_number(n: &str) -> Result<i64, IamError> {
    match n.parse::<i64>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(IamError::invalid(format!(
            "the version must be a whole number of at least 1, got `{n}`"
        ))),
    }
}

/// Prune the trail every `r.every` as `r` says, while the service lives.
pub fn spawn_pruner(iam: &Arc<Iam>, r: Retention) {
    crate::audit::spawn_pruner(iam, r, move |iam: &Iam| {
        match crate::audit::prune_once(&iam.db, Trail::Iam, r) {
            Ok(0) => {}
            Ok(n) => {
                iam.audit_pruned
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                log::info!("audit: {n} rows past the retention deleted");
            }
            Err(e) => log::warn!("audit: pruning failed, tried again later: {e}"),
        }
        iam.audit_prune_passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
}
