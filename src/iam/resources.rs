//! Resources (the registry of things other services own, each with its resource-based policy
//! made from the configured template of its type) and pools (resource groups whose attached
//! policies apply to their member resources).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::caller::Caller;
use super::err::{IamError, storage};
use super::model::*;
use super::service::*;
use super::state::Delta;
use crate::clock::now_ms;
use crate::policy::{Krn, PolicyDocument};
use crate::storage::{
    NewPolicy, Page, PolicyRecord, PolicyStore, PoolRecord, PoolStore, ResourceFilter,
    ResourcePatch, ResourceRecord, ResourceStore, StorageError,
};

/// A pool and the KRNs of its member resources.
pub type PoolWithMembers = (PoolRecord, Vec<String>);

/// The KRN of a resource's resource-based policy.
fn resource_policy_krn(resource: &Krn) -> Result<Krn, IamError> {
    let mut s = format!(
        "krn:iam:{}::policy/resource/{}/{}",
        resource.tenant(),
        resource.service(),
        resource.resource_type()
    );
    for seg in resource.path() {
        s.push('/');
        s.push_str(seg);
    }
    s.push('/');
    s.push_str(resource.id());
    krn(&s)
}

impl Iam {
    fn resource_document(
        &self,
        resource: &Krn,
        description: Option<&str>,
        statements: &Value,
    ) -> Result<PolicyDocument, IamError> {
        let doc = json!({
            "name": resource.id(),
            "type": "resource",
            "description": description,
            "statements": statements,
        });
        let d = PolicyDocument::from_json(&doc).map_err(|e| IamError::invalid(e.to_string()))?;
        require_statements(&d)?;
        let mut errors = Vec::new();
        for (i, st) in d.statements.iter().enumerate() {
            if let Some(r) = st.resources.iter().find(|r| *r != resource) {
                errors.push(format!(
                    "statement {i}: a resource-based policy applies only to `{resource}`, not `{r}`"
                ));
            }
        }
        if errors.is_empty() {
            Ok(d)
        } else {
            Err(IamError::Invalid(
                "statements name other resources".into(),
                errors,
            ))
        }
    }

    pub fn create_resource(
        &self,
        caller: &Caller,
        b: ResourceCreate,
    ) -> Result<(ResourceRecord, Option<PolicyRecord>), IamError> {
        let tenant = self.tenant_for(caller, b.tenant_id.as_deref())?;
        let mut errors = Vec::new();
        let service = b.service.clone().unwrap_or_default();
        if !valid_token(&service) || service == "*" {
            errors.push(format!(
                "`service` `{service}` must be a token such as `epr` (letters, digits, - _ @ . +)"
            ));
        }
        if !valid_token(&b.resource_type) {
            errors.push(format!(
                "`resourceType` `{}` must be a token such as `endpoint`",
                b.resource_type
            ));
        }
        if !valid_token(&b.name) {
            errors.push(format!(
                "`name` `{}` must be a token (letters, digits, - _ @ . +; 1 to 128)",
                b.name
            ));
        }
        if !errors.is_empty() {
            return Err(IamError::Invalid("invalid resource".into(), errors));
        }
        optional_text("displayName", b.display_name.as_deref(), 255)?;
        optional_text("description", b.description.as_deref(), 4096)?;
        let (path, segs) = parse_path("path", b.path.as_deref())?;
        if let Some(bad) = segs
            .iter()
            .chain(std::iter::once(&b.name))
            .find(|s| s.starts_with('.'))
        {
            return Err(IamError::invalid(format!(
                "names and path segments may not start with `.`: `{bad}`"
            )));
        }
        let mut text = format!("krn:{service}:{tenant}::{}", b.resource_type);
        for s in &segs {
            text.push('/');
            text.push_str(s);
        }
        text.push('/');
        text.push_str(&b.name);
        let rk = krn(&text)?;
        self.authorize(caller, "iam:resource:create", &rk)?;
        let pools = ids(&b.pool_ids, "poolIDs", "pool", &tenant)?;
        self.authorize_pool_change(caller, &[], &pools)?;
        let now = now_ms();
        let owner = caller.principal.as_ref().map(|p| p.as_str().to_string());
        let statements = self
            .templates
            .get(&b.resource_type)
            .map(|t| instantiate_template(t, &tenant, rk.as_str(), owner.as_deref()))
            // A template whose statements all name the owner makes nothing without one.
            .filter(|s| s.as_array().is_none_or(|a| !a.is_empty()));
        let policy = match statements {
            None => None,
            Some(statements) => {
                let doc = self.resource_document(
                    &rk,
                    Some("made from the resource-policy template"),
                    &statements,
                )?;
                Some(NewPolicy {
                    tenant: tenant.clone(),
                    krn: resource_policy_krn(&rk)?.as_str().to_string(),
                    name: doc.name.clone(),
                    kind: "resource".into(),
                    description: doc.description.clone(),
                    statements: doc.to_json()["statements"].to_string(),
                    origin: "template".into(),
                    now_ms: now,
                    resource_krn: Some(rk.as_str().to_string()),
                    pools: Vec::new(),
                })
            }
        };
        let rec = ResourceRecord {
            tenant: tenant.clone(),
            krn: rk.as_str().to_string(),
            service,
            resource_type: b.resource_type.clone(),
            name: b.name.clone(),
            path,
            display_name: b.display_name.clone(),
            description: b.description.clone(),
            enabled: b.enabled.unwrap_or(true),
            metadata: metadata(b.metadata.as_ref())?,
            version: 1,
            created_ms: now,
            updated_ms: now,
            pools: pools.clone(),
        };
        let out = self
            .db
            .insert_resource(&rec, policy.as_ref(), &pools)
            .map_err(|e| {
                let named: Vec<(&str, &str)> = pools.iter().map(|p| ("pool", p.as_str())).collect();
                self.reference_error(
                    &tenant,
                    e,
                    "`poolIDs` names a pool that does not exist",
                    &named,
                    |other| storage(other, "resource", rk.as_str()),
                )
            })?;
        self.committed(&tenant);
        let policy = match policy {
            Some(_) => Some(self.db.resource_policy(&tenant, &out.krn)?),
            None => None,
        };
        Ok((out, policy))
    }

    pub fn get_resource(&self, caller: &Caller, id: &str) -> Result<ResourceRecord, IamError> {
        let k = resource_id(id, caller)?;
        self.authorize(caller, "iam:resource:read", &k)?;
        self.db
            .get_resource(k.tenant(), k.as_str())
            .map_err(|e| storage(e, "resource", k.as_str()))
    }

    pub fn list_resources(
        &self,
        caller: &Caller,
        m: &HashMap<String, String>,
    ) -> Result<(Vec<ResourceRecord>, u64, Page), IamError> {
        let tenant = self.tenant_for(caller, q(m, "tenantID"))?;
        let all = collection(&tenant, "resource")?;
        self.authorize(caller, "iam:resource:read", &all)?;
        let page = self.page(q(m, "page"), q(m, "pageSize"))?;
        let sort = q(m, "sort").unwrap_or("krn");
        if !["krn", "name", "path", "resourceType", "created", "updated"].contains(&sort) {
            return Err(IamError::invalid(format!(
                "`sort` must be one of krn, name, path, resourceType, created, updated, got `{sort}`"
            )));
        }
        let enabled = match q(m, "enabled") {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(IamError::invalid(format!(
                    "`enabled` must be true or false, got `{other}`"
                )));
            }
        };
        let filter = ResourceFilter {
            tenant,
            krn: krn_filter(m)?,
            service: m.get("service").or_else(|| m.get("application")).cloned(),
            resource_type: m.get("resourceType").cloned(),
            path_prefix: m.get("path").cloned(),
            display_name: m.get("displayName").cloned(),
            enabled,
            sort: sort.to_string(),
            order: sort_order(q(m, "sortOrder"))?,
        };
        let (items, count) = self.db.list_resources(&filter, page)?;
        Ok((items, count, page))
    }

    pub fn update_resource(
        &self,
        caller: &Caller,
        id: &str,
        b: ResourceUpdate,
        if_match: Option<i64>,
    ) -> Result<ResourceRecord, IamError> {
        let k = resource_id(id, caller)?;
        self.authorize(caller, "iam:resource:update", &k)?;
        if b.has_read_only() {
            let cur = self
                .db
                .get_resource(k.tenant(), k.as_str())
                .map_err(|e| storage(e, "resource", k.as_str()))?;
            let mut stored = view_json(&ResourceView::from(&cur));
            // The create answer carries the id of the resource-based policy, when there is one.
            match self.db.resource_policy(k.tenant(), k.as_str()) {
                Ok(p) => {
                    if let Value::Object(m) = &mut stored {
                        m.insert("policyID".into(), Value::from(id_of(&p.krn)));
                    }
                }
                Err(StorageError::NotFound) => {}
                Err(e) => return Err(IamError::Storage(e)),
            }
            b.check_read_only(&stored)?;
        }
        if let Some(Some(d)) = &b.display_name {
            optional_text("displayName", Some(d), 255)?;
        }
        if let Some(Some(d)) = &b.description {
            optional_text("description", Some(d), 4096)?;
        }
        let pools = match &b.pool_ids {
            Some(list) => {
                let after = ids(list, "poolIDs", "pool", k.tenant())?;
                let before = self
                    .db
                    .get_resource(k.tenant(), k.as_str())
                    .map_err(|e| storage(e, "resource", k.as_str()))?
                    .pools;
                self.authorize_pool_change(caller, &before, &after)?;
                Some(after)
            }
            None => None,
        };
        let patch = ResourcePatch {
            display_name: b.display_name.clone(),
            description: b.description.clone(),
            enabled: b.enabled,
            metadata: match &b.metadata {
                Some(v) => Some(metadata(Some(v))?),
                None => None,
            },
            pools,
        };
        let out = self
            .db
            .update_resource(
                k.tenant(),
                k.as_str(),
                &patch,
                version_of(b.version, if_match)?,
                now_ms(),
            )
            .map_err(|e| {
                self.pool_error(k.tenant(), e, patch.pools.as_deref().unwrap_or(&[]), |e| {
                    storage(e, "resource", k.as_str())
                })
            })?;
        // Its enabled state and its pools matter to decisions.
        self.committed_with(
            k.tenant(),
            &Delta {
                resource_states: vec![(out.krn.clone(), out.enabled)],
                resource_metadata: vec![(out.krn.clone(), out.metadata.clone())],
                resources: if patch.pools.is_some() {
                    vec![out.krn.clone()]
                } else {
                    Vec::new()
                },
                ..Delta::default()
            },
        );
        Ok(out)
    }

    pub fn delete_resources(&self, caller: &Caller, krns: &[Krn]) -> Result<(), IamError> {
        let Some(first) = krns.first() else {
            return Err(IamError::invalid("name at least one resource"));
        };
        let tenant = first.tenant().to_string();
        if krns.iter().any(|k| k.tenant() != tenant) {
            return Err(IamError::invalid(
                "resources of one bulk delete must share a tenant",
            ));
        }
        for k in krns {
            self.authorize(caller, "iam:resource:delete", k)?;
        }
        let list: Vec<String> = krns.iter().map(|k| k.as_str().to_string()).collect();
        self.db.delete_resources(&tenant, &list).map_err(|e| {
            let named: Vec<(&str, &str)> = list.iter().map(|k| ("resource", k.as_str())).collect();
            self.write_error(&tenant, e, &named)
        })?;
        self.committed(&tenant);
        Ok(())
    }

    /// `{"resourceIDs": [...]}` of a bulk delete.
    pub fn resource_ids(&self, caller: &Caller, list: &[String]) -> Result<Vec<Krn>, IamError> {
        if list.len() > MAX_IDS {
            return Err(IamError::invalid(format!(
                "`resourceIDs` holds more than {MAX_IDS} ids"
            )));
        }
        list.iter().map(|id| resource_id(id, caller)).collect()
    }

    pub fn resource_policy(&self, caller: &Caller, id: &str) -> Result<PolicyRecord, IamError> {
        let k = resource_id(id, caller)?;
        self.authorize(caller, "iam:resource:read", &k)?;
        self.db
            .get_resource(k.tenant(), k.as_str())
            .map_err(|e| storage(e, "resource", k.as_str()))?;
        self.db
            .resource_policy(k.tenant(), k.as_str())
            .map_err(|e| match e {
                StorageError::NotFound => {
                    IamError::NotFound(format!("resource `{k}` has no resource-based policy"))
                }
                other => IamError::Storage(other),
            })
    }

    /// Create or replace a resource's resource-based policy.
    pub fn put_resource_policy(
        &self,
        caller: &Caller,
        id: &str,
        b: PolicyReplace,
        if_match: Option<i64>,
    ) -> Result<PolicyRecord, IamError> {
        let k = resource_id(id, caller)?;
        self.authorize(caller, "iam:resource:policy:update", &k)?;
        if b.pool_ids.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(IamError::invalid(
                "`poolIDs`: a resource-based policy belongs to its resource and cannot be attached to pools",
            ));
        }
        self.db
            .get_resource(k.tenant(), k.as_str())
            .map_err(|e| storage(e, "resource", k.as_str()))?;
        let pk = resource_policy_krn(&k)?;
        let current = match self.db.resource_policy(k.tenant(), k.as_str()) {
            Ok(cur) => Some(cur),
            Err(StorageError::NotFound) => None,
            Err(e) => return Err(IamError::Storage(e)),
        };
        if b.has_read_only() {
            let stored = match &current {
                Some(cur) => view_json(&PolicyView::from(cur)),
                // What the policy about to be made will be.
                None => json!({
                    "id": pk.to_id(),
                    "krn": pk.as_str(),
                    "tenantID": k.tenant(),
                    "name": k.id(),
                    "type": "resource",
                    "origin": "api",
                    "resourceID": k.to_id(),
                    "created": b.ro_created,
                }),
            };
            b.check_read_only(&stored)?;
        }
        let doc = self.resource_document(&k, b.description.as_deref(), &b.statements)?;
        let statements = doc.to_json()["statements"].to_string();
        let out = match current {
            Some(cur) => self
                .db
                .replace_policy(
                    k.tenant(),
                    &cur.krn,
                    version_of(b.version, if_match)?,
                    doc.description.as_deref(),
                    &statements,
                    None,
                    now_ms(),
                )
                .map_err(|e| storage(e, "policy", &cur.krn))?,
            None => self
                .db
                .insert_policy(&NewPolicy {
                    tenant: k.tenant().to_string(),
                    krn: pk.as_str().to_string(),
                    name: doc.name.clone(),
                    kind: "resource".into(),
                    description: doc.description.clone(),
                    statements,
                    origin: "api".into(),
                    now_ms: now_ms(),
                    resource_krn: Some(k.as_str().to_string()),
                    pools: Vec::new(),
                })
                .map_err(|e| storage(e, "policy", pk.as_str()))?,
        };
        self.committed_with(k.tenant(), &Delta::policies(vec![out.krn.clone()]));
        Ok(out)
    }

    // ------------------------------------------------------------ pools

    pub fn create_pool(
        &self,
        caller: &Caller,
        b: PoolCreate,
    ) -> Result<(PoolRecord, Vec<String>), IamError> {
        let tenant = self.tenant_for(caller, b.tenant_id.as_deref())?;
        if !valid_token(&b.name) {
            return Err(IamError::invalid(format!(
                "`name` `{}` must be a token (letters, digits, - _ @ . +; 1 to 128)",
                b.name
            )));
        }
        optional_text("displayName", b.display_name.as_deref(), 255)?;
        optional_text("description", b.description.as_deref(), 4096)?;
        let pk = entity_krn(&tenant, "pool", &[], &b.name)?;
        self.authorize(caller, "iam:pool:create", &pk)?;
        let members = self.resource_ids(caller, &b.resource_ids)?;
        if members.iter().any(|m| m.tenant() != tenant) {
            return Err(IamError::invalid(
                "`resourceIDs` names a resource of another tenant",
            ));
        }
        let members: Vec<String> = members.iter().map(|m| m.as_str().to_string()).collect();
        let now = now_ms();
        let rec = PoolRecord {
            tenant: tenant.clone(),
            krn: pk.as_str().to_string(),
            name: b.name.clone(),
            display_name: b.display_name.clone(),
            description: b.description.clone(),
            version: 1,
            created_ms: now,
            updated_ms: now,
        };
        let out = self.db.insert_pool(&rec, &members).map_err(|e| {
            let named: Vec<(&str, &str)> =
                members.iter().map(|m| ("resource", m.as_str())).collect();
            self.reference_error(
                &tenant,
                e,
                "`resourceIDs` names a resource that does not exist",
                &named,
                |other| storage(other, "pool", pk.as_str()),
            )
        })?;
        self.committed(&tenant);
        let members = self.db.pool_members(&tenant, &out.krn)?;
        Ok((out, members))
    }

    pub fn get_pool(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(PoolRecord, Vec<String>), IamError> {
        let k = path_id(id, "pool", caller)?;
        self.authorize(caller, "iam:pool:read", &k)?;
        let p = self
            .db
            .get_pool(k.tenant(), k.as_str())
            .map_err(|e| storage(e, "pool", k.as_str()))?;
        let members = self.db.pool_members(k.tenant(), k.as_str())?;
        Ok((p, members))
    }

    pub fn list_pools(
        &self,
        caller: &Caller,
        m: &HashMap<String, String>,
    ) -> Result<(Vec<PoolWithMembers>, u64, Page), IamError> {
        let tenant = self.tenant_for(caller, q(m, "tenantID"))?;
        let all = collection(&tenant, "pool")?;
        self.authorize(caller, "iam:pool:read", &all)?;
        let page = self.page(q(m, "page"), q(m, "pageSize"))?;
        let resource = match q(m, "resourceKRN").or(q(m, "resourceIRN")) {
            None => None,
            Some(r) => Some(krn(r)?.as_str().to_string()),
        };
        let exact = krn_filter(m)?;
        let (items, count) = self.db.list_pools(
            &tenant,
            q(m, "name"),
            resource.as_deref(),
            exact.as_deref(),
            page,
        )?;
        let mut out = Vec::with_capacity(items.len());
        for p in items {
            let members = self.db.pool_members(&tenant, &p.krn)?;
            out.push((p, members));
        }
        Ok((out, count, page))
    }

    pub fn update_pool(
        &self,
        caller: &Caller,
        id: &str,
        b: PoolUpdate,
        if_match: Option<i64>,
    ) -> Result<(PoolRecord, Vec<String>), IamError> {
        let k = path_id(id, "pool", caller)?;
        self.authorize(caller, "iam:pool:update", &k)?;
        if b.has_read_only() {
            let cur = self
                .db
                .get_pool(k.tenant(), k.as_str())
                .map_err(|e| storage(e, "pool", k.as_str()))?;
            let members = self.db.pool_members(k.tenant(), k.as_str())?;
            b.check_read_only(&view_json(&PoolView::new(&cur, &members)))?;
        }
        if let Some(Some(d)) = &b.display_name {
            optional_text("displayName", Some(d), 255)?;
        }
        if let Some(Some(d)) = &b.description {
            optional_text("description", Some(d), 4096)?;
        }
        let out = self
            .db
            .update_pool(
                k.tenant(),
                k.as_str(),
                b.display_name,
                b.description,
                version_of(b.version, if_match)?,
                now_ms(),
            )
            .map_err(|e| storage(e, "pool", k.as_str()))?;
        self.committed(k.tenant());
        let members = self.db.pool_members(k.tenant(), k.as_str())?;
        Ok((out, members))
    }

    pub fn delete_pool(&self, caller: &Caller, id: &str) -> Result<(), IamError> {
        let k = path_id(id, "pool", caller)?;
        self.authorize(caller, "iam:pool:delete", &k)?;
        self.db
            .delete_pool(k.tenant(), k.as_str())
            .map_err(|e| storage(e, "pool", k.as_str()))?;
        self.committed(k.tenant());
        Ok(())
    }

    pub fn set_pool_members(
        &self,
        caller: &Caller,
        id: &str,
        resource_ids: &[String],
        add: bool,
    ) -> Result<(), IamError> {
        let k = path_id(id, "pool", caller)?;
        self.authorize(caller, "iam:pool:update", &k)?;
        let members = self.resource_ids(caller, resource_ids)?;
        if members.is_empty() {
            return Err(IamError::invalid(
                "`resourceIDs` must name at least one resource",
            ));
        }
        if members.iter().any(|m| m.tenant() != k.tenant()) {
            return Err(IamError::invalid(
                "`resourceIDs` names a resource of another tenant",
            ));
        }
        let members: Vec<String> = members.iter().map(|m| m.as_str().to_string()).collect();
        let r = if add {
            self.db.add_pool_members(k.tenant(), k.as_str(), &members)
        } else {
            self.db
                .remove_pool_members(k.tenant(), k.as_str(), &members)
        };
        r.map_err(|e| {
            let mut named = vec![("pool", k.as_str())];
            named.extend(members.iter().map(|m| ("resource", m.as_str())));
            self.write_error(k.tenant(), e, &named)
        })?;
        self.committed_with(
            k.tenant(),
            &Delta {
                resources: members.clone(),
                ..Delta::default()
            },
        );
        Ok(())
    }
}

/// A path id that names a concrete resource (any service).
pub fn resource_id(id: &str, caller: &Caller) -> Result<Krn, IamError> {
    let k = Krn::from_id(id)
        .map_err(|e| IamError::NotFound(format!("no resource with id `{id}`: {e}")))?;
    if k.is_wildcard() || (k.tenant() != caller.tenant && !caller.is_system()) {
        return Err(IamError::NotFound(format!("no resource with id `{id}`")));
    }
    Ok(k)
}
