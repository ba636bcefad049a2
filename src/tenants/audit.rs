//! The Tenant Manager's audit trail as `GET /api/v1/audit` reads it, and who may read it: the
//! system realm's callers with the scope `kaa:tenant:audit:read` on `kaa-system` read every
//! tenant's trail; a tenant's own administrator, with a token of the tenant's realm and the
//! scope `tenant:audit:read` on the realm's `tenant-system` resource (decided by the realm's
//! Keycloak, UMA), reads only that tenant's. The rows are written by the storage writes.

use std::collections::HashMap;

use serde_json::Value;

use super::err::TmError;
use super::service::Tm;
use crate::storage::{AuditFilter, AuditStore, TenantFilter, TenantStore, Trail};

/// The tenant realms' scope a tenant's administrator needs to read its trail.
pub const TENANT_SCOPE: &str = "tenant:audit:read";
/// The system realm's scope (on `kaa-system`) that reads every tenant's trail.
pub const SYSTEM_SCOPE: &str = "kaa:tenant:audit:read";

/// One page of the trail: the rows as the API and the NATS feed show them, and the cursor of
/// the next page (none on the last).
pub type AuditPage = (Vec<Value>, Option<String>);

impl Tm {
    /// `GET /audit`: one page of the trail of `tenant` (none: every tenant's), newest first,
    /// filtered by `entity`, `principal` (KRN or token subject), `action`, `from`, `to`; `limit`
    /// rows (50, at most `max_page`), after the cursor `next`.
    pub fn list_audit(
        &self,
        tenant: Option<String>,
        q: &HashMap<String, String>,
        max_page: u32,
    ) -> Result<AuditPage, TmError> {
        let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let size = match get("limit") {
            None => 50.min(max_page),
            Some(s) => match s.parse::<u32>() {
                Ok(n) if n >= 1 && n <= max_page => n,
                _ => {
                    return Err(TmError::field(
                        "limit",
                        format!("must be a whole number from 1 to {max_page}, got `{s}`"),
                    ));
                }
            },
        };
        let time = |k: &str| -> Result<Option<i64>, TmError> {
            get(k)
                .map(|s| crate::audit::parse_time(k, s).map_err(|m| TmError::field(k, m)))
                .transpose()
        };
        let (from_ms, to_ms) = (time("from")?, time("to")?);
        if let (Some(f), Some(t)) = (from_ms, to_ms)
            && f > t
        {
            return Err(TmError::field("from", "is after `to`"));
        }
        let before_id = get("next")
            .map(|c| crate::audit::parse_cursor(c).map_err(|m| TmError::field("next", m)))
            .transpose()?;
        let filter = AuditFilter {
            trail: Trail::TenantManager,
            tenant,
            entity: get("entity").map(str::to_string),
            principal: get("principal").map(str::to_string),
            action: get("action").map(str::to_string),
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
        let views = rows
            .iter()
            .map(|r| crate::storage::audit::feed_message(Trail::TenantManager, r))
            .collect();
        Ok((views, next))
    }

    /// The tenant whose realm is `realm`, if any.
    pub fn tenant_of_realm(
        &self,
        realm: &str,
    ) -> Result<Option<crate::storage::TenantRecord>, TmError> {
        let filter = TenantFilter {
            realm_name: Some(realm.to_string()),
            ..TenantFilter::default()
        };
        Ok(self
            .db
            .list_tenants(&filter, 0, Some(1))?
            .0
            .into_iter()
            .next())
    }
}
