//! IAM domain operations: validate input, check the caller's right, write in one transaction,
//! then bring the in-memory decision state up to the committed revision.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::caller::{Caller, SYSTEM_TENANT};
use super::err::{IamError, not_found_message, storage};
use super::model::*;
use super::state::{DecisionState, Delta};
use crate::clock::now_ms;
use crate::config::IamSection;
use crate::policy::{Action, BasePolicy, Krn, PolicyDocument};
use crate::storage::{
    AttachmentStore, Database, GroupStore, NewPolicy, Page, PolicyFilter, PolicyRecord,
    PolicyStore, PoolStore, StorageError, UserStore,
};

/// Most ids in one attach, member or bulk request.
pub const MAX_IDS: usize = 1000;
/// Most (action × resource) pairs in one evaluation request.
pub const MAX_EVALUATIONS: usize = 10_000;

pub struct Iam {
    pub db: Arc<Database>,
    pub state: DecisionState,
    pub max_page_size: u32,
    /// Statement templates of resource-based policies, by resource type.
    pub(crate) templates: HashMap<String, Value>,
    /// Base policies as configured: name and statements (with `${tenant}`).
    base_raw: Vec<(String, Value)>,
    /// Tenants' security contexts (multitenancy on), dropped on a tenant's `updated` event.
    pub tenant_contexts:
        std::sync::OnceLock<Arc<crate::clients::tenant_manager::TenantManagerClient>>,
    /// Keycloak-backed users (security on); unset: users are local.
    pub realm_users: std::sync::OnceLock<Arc<super::realm_users::RealmUsers>>,
    /// Where committed revisions go to be announced to the other replicas (NATS configured).
    pub notices: std::sync::OnceLock<super::notices::Outbox>,
    /// The NATS subscriptions and the lifecycle events handled (`/metrics`).
    pub nats: super::events::NatsState,
    /// Audit rows pruned, and pruning passes completed (`/metrics`).
    pub audit_pruned: std::sync::atomic::AtomicU64,
    pub audit_prune_passes: std::sync::atomic::AtomicU64,
    /// The decision log (`iam.decision-log`), set when the service is wired; unset: nothing is
    /// logged.
    pub decision_log: std::sync::OnceLock<super::decision_log::DecisionLog>,
}

/// The built-in base policies: a realm's `tenant-admin` role may do anything in IAM in its
/// tenant; the system realm's `platform-admin` role may do so in every tenant.
pub fn default_base_policies() -> Value {
    json!([{
        "name": "tenant-admin",
        "description": "Administrators of a tenant's realm manage IAM in that tenant",
        "statements": [{
            "effect": "allow",
            "actions": ["iam:*"],
            "resources": ["krn:iam:${tenant}:*"],
            "principals": ["krn:iam:${tenant}::role/tenant-admin"]
        }]
    }, {
        "name": "platform-admin",
        "description": "Platform administrators of the system tenant manage IAM in every tenant",
        "statements": [{
            "effect": "allow",
            "actions": ["iam:*"],
            "resources": ["krn:iam:*"],
            "principals": ["krn:iam:kaa::role/platform-admin"]
        }]
    }])
}

/// Base policies and resource-policy templates from the `iam` section, validated.
pub type IamSettings = (
    Vec<BasePolicy>,
    Vec<(String, Value)>,
    HashMap<String, Value>,
);

pub fn parse_iam_config(section: &IamSection) -> Result<IamSettings, String> {
    let base_value = match &section.base_policies {
        None => default_base_policies(),
        Some(v) => v.clone(),
    };
    let Value::Array(items) = base_value else {
        return Err("config: `iam.base-policies` must be a list of policy documents".into());
    };
    let mut base = Vec::new();
    let mut raw = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let b = BasePolicy::from_json(item)
            .map_err(|e| format!("config: `iam.base-policies[{i}]`: {e}"))?;
        if raw.iter().any(|(n, _)| n == b.name()) {
            return Err(format!(
                "config: `iam.base-policies[{i}]`: duplicate name `{}`",
                b.name()
            ));
        }
        raw.push((
            b.name().to_string(),
            item.get("statements").cloned().unwrap_or(Value::Null),
        ));
        base.push(b);
    }
    let mut templates = HashMap::new();
    match &section.resource_policy_templates {
        None => {}
        Some(Value::Object(map)) => {
            for (rtype, t) in map {
                let statements = t.get("statements").cloned().unwrap_or(Value::Null);
                let sample = instantiate_template(
                    &statements,
                    "t",
                    "krn:svc:t::x/y",
                    Some("krn:iam:t::user/owner"),
                );
                let doc = json!({"name": "template", "type": "resource", "statements": sample});
                PolicyDocument::from_json(&doc)
                    .map_err(|e| format!("config: `iam.resource-policy-templates.{rtype}`: {e}"))?;
                templates.insert(rtype.clone(), statements);
            }
        }
        Some(_) => {
            return Err(
                "config: `iam.resource-policy-templates` must map resource types to templates"
                    .into(),
            );
        }
    }
    Ok((base, raw, templates))
}

/// Replace `${tenant}`, `${resource}` and `${owner}` in every string of a template. Statements
/// naming `${owner}` lose that principal when the resource has no owner.
pub fn instantiate_template(
    statements: &Value,
    tenant: &str,
    resource: &str,
    owner: Option<&str>,
) -> Value {
    fn walk(v: &Value, tenant: &str, resource: &str, owner: &str) -> Value {
        match v {
            Value::String(s) => Value::String(
                s.replace("${tenant}", tenant)
                    .replace("${resource}", resource)
                    .replace("${owner}", owner),
            ),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| walk(i, tenant, resource, owner))
                    .collect(),
            ),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), walk(v, tenant, resource, owner)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    // Without an owner, a statement that names `${owner}` anywhere is left out whole: keeping
    // it without the owner could grant or deny others what was meant for the owner alone.
    let kept: Vec<Value> = match statements {
        Value::Array(items) => items
            .iter()
            .filter(|st| owner.is_some() || !st.to_string().contains("${owner}"))
            .map(|st| walk(st, tenant, resource, owner.unwrap_or("")))
            .collect(),
        other => return walk(other, tenant, resource, owner.unwrap_or("")),
    };
    Value::Array(kept)
}

/// A token of a KRN (name, username, path segment): `a-z A-Z 0-9 - _ @ . +`, 1..=128 chars.
pub fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'@' | b'.' | b'+'))
}

/// A user directory / resource path: `/` or `/seg/seg`, each segment a token.
pub(crate) fn parse_path(
    field: &str,
    path: Option<&str>,
) -> Result<(String, Vec<String>), IamError> {
    let p = path.unwrap_or("/").trim();
    let p = if p.is_empty() { "/" } else { p };
    if !p.starts_with('/') {
        return Err(IamError::invalid(format!(
            "`{field}` must start with `/`, got `{p}`"
        )));
    }
    let segs: Vec<String> = p
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if let Some(bad) = segs.iter().find(|s| !valid_token(s)) {
        return Err(IamError::invalid(format!(
            "`{field}` segment `{bad}` may only hold letters, digits and - _ @ . +"
        )));
    }
    if segs.len() > 16 {
        return Err(IamError::invalid(format!(
            "`{field}` is deeper than 16 levels"
        )));
    }
    let canonical = if segs.is_empty() {
        "/".to_string()
    } else {
        format!("/{}", segs.join("/"))
    };
    Ok((canonical, segs))
}

pub(crate) fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    e.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e.contains(char::is_whitespace)
        && !domain.contains('@')
}

pub(crate) fn krn(text: &str) -> Result<Krn, IamError> {
    Krn::parse(text).map_err(|e| IamError::invalid(e.to_string()))
}

/// The id that stands for "every entity of a kind" when a list is authorized: statements whose
/// resource pattern covers the whole collection (`…::user/*`, `krn:iam:<t>:*`, `*`) match it,
/// statements naming single entities do not. Entity names cannot start with `.`, so no entity
/// ever has this KRN.
pub(crate) fn collection(tenant: &str, kind: &str) -> Result<Krn, IamError> {
    krn(&format!("krn:iam:{tenant}::{kind}/.list"))
}

pub(crate) fn entity_krn(
    tenant: &str,
    kind: &str,
    path: &[String],
    name: &str,
) -> Result<Krn, IamError> {
    if let Some(bad) = path
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(name))
        .find(|s| s.starts_with('.'))
    {
        return Err(IamError::invalid(format!(
            "names and path segments may not start with `.`: `{bad}`"
        )));
    }
    let mut s = format!("krn:iam:{tenant}::{kind}");
    for seg in path {
        s.push('/');
        s.push_str(seg);
    }
    s.push('/');
    s.push_str(name);
    krn(&s)
}

pub(crate) fn json_text(v: &Value) -> String {
    v.to_string()
}

pub(crate) fn metadata(v: Option<&Value>) -> Result<String, IamError> {
    match v {
        None | Some(Value::Null) => Ok("{}".into()),
        Some(o @ Value::Object(_)) => {
            let text = o.to_string();
            if text.len() > 16 * 1024 {
                return Err(IamError::invalid("`metadata` is larger than 16 KiB"));
            }
            Ok(text)
        }
        Some(_) => Err(IamError::invalid("`metadata` must be a JSON object")),
    }
}

pub(crate) fn optional_text(field: &str, v: Option<&str>, max: usize) -> Result<(), IamError> {
    match v {
        Some(s) if s.chars().count() > max => Err(IamError::invalid(format!(
            "`{field}` is longer than {max} characters"
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn hash_password(pw: &str) -> Result<String, IamError> {
    crate::password::hash(pw).map_err(IamError::Internal)
}

/// Parse one id list, deduplicated, each of the expected entity type and tenant.
pub(crate) fn ids(
    list: &[String],
    field: &str,
    kind: &str,
    tenant: &str,
) -> Result<Vec<String>, IamError> {
    if list.len() > MAX_IDS {
        return Err(IamError::invalid(format!(
            "`{field}` holds more than {MAX_IDS} ids"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    for (i, id) in list.iter().enumerate() {
        match Krn::from_id(id) {
            Ok(k) if k.is_wildcard() || k.resource_type() != kind || k.service() != "iam" => {
                errors.push(format!("{field}[{i}]: `{id}` is not a {kind} id"))
            }
            Ok(k) if k.tenant() != tenant => {
                errors.push(format!("{field}[{i}]: `{id}` belongs to another tenant"))
            }
            Ok(k) => {
                if !out.iter().any(|o| o == k.as_str()) {
                    out.push(k.as_str().to_string());
                }
            }
            Err(e) => errors.push(format!("{field}[{i}]: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(IamError::Invalid(format!("invalid `{field}`"), errors))
    }
}

/// Parse the KRN of a resource id in a path (any service), checking the caller's tenant.
fn any_id(id: &str, caller: &Caller) -> Result<Krn, IamError> {
    let k = Krn::from_id(id)
        .map_err(|e| IamError::NotFound(format!("no entity with id `{id}`: {e}")))?;
    if k.is_wildcard() {
        return Err(IamError::NotFound(format!(
            "`{id}` names a wildcard, not an entity"
        )));
    }
    if k.tenant() != caller.tenant && !caller.is_system() {
        return Err(IamError::NotFound(format!("no entity with id `{id}`")));
    }
    Ok(k)
}

/// Parse a path id that must name an IAM entity of `kind`.
pub fn path_id(id: &str, kind: &str, caller: &Caller) -> Result<Krn, IamError> {
    let k = any_id(id, caller)?;
    if k.service() != "iam" || k.resource_type() != kind {
        return Err(IamError::NotFound(format!("`{id}` is not a {kind} id")));
    }
    Ok(k)
}

/// A query parameter as `&str`.
pub(crate) fn q<'a>(m: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    m.get(k).map(String::as_str)
}

/// The `krn` (or iamcore's `irn`) list filter: the exact KRN of one entity, as the KRN itself or
/// its base64 id (the iamcore Go SDK sends the id, the Java SDK the name). A value that is
/// neither, or a pattern, is a 400.
pub(crate) fn krn_filter(m: &HashMap<String, String>) -> Result<Option<String>, IamError> {
    let (field, text) = match (q(m, "krn"), q(m, "irn")) {
        (None, None) => return Ok(None),
        (Some(a), Some(b)) if a != b => {
            return Err(IamError::invalid(
                "`krn` and `irn` name the same filter: send one of them",
            ));
        }
        (Some(a), _) => ("krn", a),
        (None, Some(b)) => ("irn", b),
    };
    let parsed = if text.starts_with("krn:") {
        Krn::parse(text)
    } else {
        Krn::from_id(text)
    };
    match parsed {
        Ok(k) if k.is_wildcard() => Err(IamError::invalid(format!(
            "`{field}` `{text}` is a pattern: the filter takes the exact KRN of one entity"
        ))),
        Ok(k) => Ok(Some(k.as_str().to_string())),
        Err(e) => Err(IamError::invalid(format!(
            "`{field}` `{text}` is neither a KRN nor an entity id: {e}"
        ))),
    }
}

/// A page request, clamped to the server's maximum page size.
pub fn page(page: Option<&str>, size: Option<&str>, max: u32) -> Result<Page, IamError> {
    let num = |field: &str, v: Option<&str>, default: u32| -> Result<u32, IamError> {
        match v {
            None | Some("") => Ok(default),
            Some(s) => match s.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(IamError::invalid(format!(
                    "`{field}` must be a whole number of at least 1, got `{s}`"
                ))),
            },
        }
    };
    let p = num("page", page, 1)?;
    let s = num("pageSize", size, max.min(100))?.min(max);
    if u64::from(p) * u64::from(s) > i64::MAX as u64 {
        return Err(IamError::invalid("`page` is too large"));
    }
    Ok(Page { page: p, size: s })
}

/// A list as the API returns it.
pub fn listed<T: serde::Serialize>(items: Vec<T>, count: u64, page: Page) -> Value {
    json!({ "data": items, "count": count, "page": page.page, "pageSize": page.size })
}

impl Iam {
    /// Build from configuration (`iam.base-policies`, `iam.resource-policy-templates`).
    pub fn new(
        db: Arc<Database>,
        iam_config: &IamSection,
        max_page_size: u32,
    ) -> Result<Iam, String> {
        let (base, base_raw, templates) = parse_iam_config(iam_config)?;
        let state = DecisionState::new(base);
        state.observe(&db);
        Ok(Iam {
            db,
            state,
            max_page_size,
            templates,
            base_raw,
            tenant_contexts: std::sync::OnceLock::new(),
            realm_users: std::sync::OnceLock::new(),
            notices: std::sync::OnceLock::new(),
            nats: super::events::NatsState::default(),
            audit_pruned: Default::default(),
            audit_prune_passes: Default::default(),
            decision_log: std::sync::OnceLock::new(),
        })
    }

    pub fn page(&self, p: Option<&str>, s: Option<&str>) -> Result<Page, IamError> {
        page(p, s, self.max_page_size)
    }

    /// After a committed write: bring the tenant's decision state to the new revision.
    pub(crate) fn committed(&self, tenant: &str) {
        self.committed_with(tenant, &Delta::reload());
    }

    /// After a committed write: update the index by `delta` (or reload the tenant).
    pub(crate) fn committed_with(&self, tenant: &str, delta: &Delta) {
        let revision = self.db.take_committed_revision(tenant);
        if let Err(e) = self.state.committed(&self.db, tenant, revision, delta) {
            log::warn!(
                "index: update of tenant `{tenant}` after a write failed: {e}; the refresher retries"
            );
        }
        if let Some(n) = self.notices.get() {
            n.announce(
                tenant,
                revision.unwrap_or_else(|| self.state.revision(tenant)),
            );
        }
    }

    /// Does the entity of `kind` (`user`, `group`, `pool`, `policy`, else a resource) exist?
    pub(crate) fn exists(&self, tenant: &str, kind: &str, krn: &str) -> Result<bool, IamError> {
        use crate::storage::ResourceStore;
        let read = match kind {
            "user" => self.db.get_user(tenant, krn).map(|_| ()),
            "group" => self.db.get_group(tenant, krn).map(|_| ()),
            "pool" => self.db.get_pool(tenant, krn).map(|_| ()),
            "policy" => self.db.get_policy(tenant, krn).map(|_| ()),
            _ => self.db.get_resource(tenant, krn).map(|_| ()),
        };
        match read {
            Ok(()) => Ok(true),
            Err(StorageError::NotFound) => Ok(false),
            Err(e) => Err(IamError::Storage(e)),
        }
    }

    /// Each entity of `named` (kind, KRN) that does not exist, by kind, KRN and id.
    fn absent(&self, tenant: &str, named: &[(&str, &str)]) -> Result<Vec<String>, IamError> {
        let mut gone = Vec::new();
        for (kind, krn) in named {
            if !self.exists(tenant, kind, krn)? {
                gone.push(not_found_message(kind, krn));
            }
        }
        Ok(gone)
    }

    /// Map the error of a write over `named` (kind, KRN) that the store refused and rolled
    /// back: `NotFound` becomes a 404 naming every entity that does not exist.
    pub(crate) fn write_error(
        &self,
        tenant: &str,
        e: StorageError,
        named: &[(&str, &str)],
    ) -> IamError {
        if !matches!(e, StorageError::NotFound) {
            return IamError::Storage(e);
        }
        match self.absent(tenant, named) {
            Err(e) => e,
            Ok(gone) if gone.is_empty() => IamError::NotFound(
                "an entity the request names was removed while it was written: nothing changed"
                    .into(),
            ),
            Ok(gone) => IamError::NotFound(gone.join("; ")),
        }
    }

    /// Map the error of a create whose body refers to `named` (kind, KRN): a reference to
    /// something that does not exist is a 400 naming each; `other` maps the rest.
    /// The pools `policy` is attached to.
    pub fn policy_pools(&self, tenant: &str, policy: &str) -> Result<Vec<String>, IamError> {
        Ok(self
            .db
            .pools_of_policies(tenant, &[policy.to_string()])?
            .remove(policy)
            .unwrap_or_default())
    }

    /// Per policy of a page: the pools it is attached to.
    pub fn pools_of_policies(
        &self,
        policies: &[PolicyRecord],
    ) -> Result<HashMap<String, Vec<String>>, IamError> {
        let Some(first) = policies.first() else {
            return Ok(HashMap::new());
        };
        let krns: Vec<String> = policies.iter().map(|p| p.krn.clone()).collect();
        Ok(self.db.pools_of_policies(&first.tenant, &krns)?)
    }

    /// Attaching a policy to a pool, or detaching it, as `PUT /pools/{id}/policies/attach` would
    /// be authorized: for each pool gained or lost, on the pool and on the policy.
    fn authorize_policy_pools(
        &self,
        caller: &Caller,
        policy: &Krn,
        before: &[String],
        after: &[String],
    ) -> Result<(), IamError> {
        let gained = after.iter().filter(|p| !before.contains(p));
        let lost = before.iter().filter(|p| !after.contains(p));
        for (pool, verb) in gained
            .map(|p| (p, "attach"))
            .chain(lost.map(|p| (p, "detach")))
        {
            let action = format!("iam:policy:pool:{verb}");
            self.authorize(caller, &action, &krn(pool)?)?;
            self.authorize(caller, &action, policy)?;
        }
        Ok(())
    }

    /// The pools an update of the user or group `k` asks for (`None`: unchanged), parsed, with
    /// the change authorized.
    pub(crate) fn pools_change(
        &self,
        caller: &Caller,
        k: &Krn,
        list: Option<&[String]>,
    ) -> Result<Option<Vec<String>>, IamError> {
        let Some(list) = list else {
            return Ok(None);
        };
        let after = ids(list, "poolIDs", "pool", k.tenant())?;
        let before = self.db.pools_of_principal(k.tenant(), k.as_str())?;
        self.authorize_pool_change(caller, &before, &after)?;
        Ok(Some(after))
    }

    /// Joining or leaving a pool changes the pool: `iam:pool:update` on each pool gained or lost.
    pub(crate) fn authorize_pool_change(
        &self,
        caller: &Caller,
        before: &[String],
        after: &[String],
    ) -> Result<(), IamError> {
        let gained = after.iter().filter(|p| !before.contains(p));
        let lost = before.iter().filter(|p| !after.contains(p));
        for pool in gained.chain(lost) {
            self.authorize(caller, "iam:pool:update", &krn(pool)?)?;
        }
        Ok(())
    }

    /// A write that names `pools` failed: a 400 naming the pools that do not exist, else `other`.
    pub(crate) fn pool_error(
        &self,
        tenant: &str,
        e: StorageError,
        pools: &[String],
        other: impl FnOnce(StorageError) -> IamError,
    ) -> IamError {
        if !matches!(e, StorageError::NotFound) || pools.is_empty() {
            return other(e);
        }
        let named: Vec<(&str, &str)> = pools.iter().map(|p| ("pool", p.as_str())).collect();
        match self.absent(tenant, &named) {
            Err(x) => x,
            Ok(gone) if gone.is_empty() => other(e),
            Ok(gone) => IamError::Invalid(
                "`poolIDs` names a pool that does not exist".to_string(),
                gone,
            ),
        }
    }

    pub(crate) fn reference_error(
        &self,
        tenant: &str,
        e: StorageError,
        message: &str,
        named: &[(&str, &str)],
        other: impl FnOnce(StorageError) -> IamError,
    ) -> IamError {
        if !matches!(e, StorageError::NotFound) {
            return other(e);
        }
        match self.absent(tenant, named) {
            Err(e) => e,
            Ok(gone) => IamError::Invalid(message.to_string(), gone),
        }
    }

    /// The caller a verified token describes: the IAM user whose `authID` is the token's
    /// subject, else `user/<preferred_username>`; its realm roles as `role/<name>` principals.
    pub fn caller_for(&self, id: &super::caller::Identity) -> Result<Caller, IamError> {
        use crate::storage::UserStore;
        let tenant = id.tenant.clone();
        let principal = match self.db.find_user_by_auth_id(&tenant, &id.subject) {
            Ok(u) => Krn::parse(&u.krn).ok(),
            Err(StorageError::NotFound) => id
                .username
                .as_deref()
                .filter(|u| valid_token(u))
                .and_then(|u| Krn::parse(&format!("krn:iam:{tenant}::user/{u}")).ok()),
            Err(e) => return Err(IamError::Storage(e)),
        };
        let roles = id
            .roles
            .iter()
            .filter(|r| valid_token(r))
            .filter_map(|r| Krn::parse(&format!("krn:iam:{tenant}::role/{r}")).ok())
            .collect();
        Ok(Caller {
            tenant,
            principal,
            roles,
            unrestricted: false,
        })
    }

    /// The tenant a call acts in: the caller's, or (system tenant only) the one it names.
    pub fn tenant_for(&self, caller: &Caller, requested: Option<&str>) -> Result<String, IamError> {
        match requested.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(caller.tenant.clone()),
            Some(t) if !valid_token(t) => Err(IamError::invalid(format!(
                "`tenantID` `{t}` may only hold letters, digits and - _ @ . +"
            ))),
            Some(t) if t == caller.tenant || caller.is_system() => Ok(t.to_string()),
            Some(t) => Err(IamError::Forbidden(format!(
                "only the system tenant may act in tenant `{t}`"
            ))),
        }
    }

    /// The caller's right to `action` on `target`, decided by our own engine.
    pub fn authorize(&self, caller: &Caller, action: &str, target: &Krn) -> Result<(), IamError> {
        if caller.unrestricted {
            return Ok(());
        }
        let Some(principal) = &caller.principal else {
            return Err(IamError::Forbidden(format!(
                "`{action}` on `{target}` is not allowed"
            )));
        };
        let a = Action::parse(action).map_err(|e| IamError::invalid(e.to_string()))?;
        let set = self
            .state
            .principal_set(&caller.tenant, principal, &caller.roles);
        if let Some(why) = self.state.disabled_principal(&caller.tenant, &set) {
            return Err(IamError::Forbidden(format!(
                "`{action}` on `{target}` is not allowed: {}",
                why.message()
            )));
        }
        if self.state.allows(&caller.tenant, &set, &a, target) {
            Ok(())
        } else {
            Err(IamError::Forbidden(format!(
                "`{action}` on `{target}` is not allowed"
            )))
        }
    }

    /// Every KRN a non-system caller writes must name its own tenant (no wildcard tenant).
    fn check_tenant_scope(
        &self,
        caller: &Caller,
        tenant: &str,
        doc: &PolicyDocument,
    ) -> Result<(), IamError> {
        if caller.is_system() && caller.unrestricted {
            return Ok(());
        }
        let mut errors = Vec::new();
        for (i, st) in doc.statements.iter().enumerate() {
            for k in st.resources.iter().chain(st.principals.iter()) {
                if k.service() == "*" || k.tenant() != tenant {
                    errors.push(format!(
                        "statement {i}: `{k}` must name tenant `{tenant}` (no wildcard tenant)"
                    ));
                }
            }
        }
        if errors.is_empty() || caller.is_system() {
            Ok(())
        } else {
            Err(IamError::Invalid(
                "statements reach outside the tenant".into(),
                errors,
            ))
        }
    }

    /// Naming principals in statements is attaching: the same right an attach call needs.
    fn check_principals(
        &self,
        caller: &Caller,
        doc: &PolicyDocument,
        policy: &Krn,
    ) -> Result<(), IamError> {
        if caller.unrestricted {
            return Ok(());
        }
        for st in &doc.statements {
            for p in &st.principals {
                let action = if p.resource_type() == "group" {
                    "iam:policy:group:attach"
                } else {
                    "iam:policy:user:attach"
                };
                self.authorize(caller, action, p)?;
            }
        }
        let _ = policy;
        Ok(())
    }

    // ------------------------------------------------------------ policies

    fn parse_document(
        &self,
        name: &str,
        kind: &str,
        description: Option<&str>,
        statements: &Value,
    ) -> Result<PolicyDocument, IamError> {
        let doc = json!({ "name": name, "type": kind, "description": description, "statements": statements });
        let doc = PolicyDocument::from_json(&doc).map_err(|e| IamError::invalid(e.to_string()))?;
        require_statements(&doc)?;
        Ok(doc)
    }

    pub fn create_policy(
        &self,
        caller: &Caller,
        body: PolicyCreate,
    ) -> Result<PolicyRecord, IamError> {
        let tenant = self.tenant_for(caller, body.tenant_id.as_deref())?;
        let kind = body.kind.as_deref().unwrap_or("identity");
        if kind != "identity" {
            return Err(IamError::invalid(match kind {
                "base" => "base policies come from the service configuration and cannot be created through the API".to_string(),
                "resource" => "resource-based policies belong to a resource: use PUT /resources/{id}/policy".to_string(),
                other => format!("`type` must be `identity`, got `{other}`"),
            }));
        }
        if let Some(level) = body.level.as_deref().filter(|l| *l != "tenant") {
            return Err(IamError::invalid(format!(
                "`level` must be `tenant`, got `{level}`"
            )));
        }
        let doc = self.parse_document(
            &body.name,
            kind,
            body.description.as_deref(),
            &body.statements,
        )?;
        let policy_krn = entity_krn(&tenant, "policy", &[], &doc.name)?;
        self.authorize(caller, "iam:policy:create", &policy_krn)?;
        self.check_tenant_scope(caller, &tenant, &doc)?;
        self.check_principals(caller, &doc, &policy_krn)?;
        let pools = ids(&body.pool_ids, "poolIDs", "pool", &tenant)?;
        self.authorize_policy_pools(caller, &policy_krn, &[], &pools)?;
        let rec = self
            .db
            .insert_policy(&NewPolicy {
                tenant: tenant.clone(),
                krn: policy_krn.as_str().to_string(),
                name: doc.name.clone(),
                kind: kind.to_string(),
                description: doc.description.clone(),
                statements: json_text(&doc.to_json()["statements"]),
                origin: "api".into(),
                now_ms: now_ms(),
                resource_krn: None,
                pools: pools.clone(),
            })
            .map_err(|e| {
                self.pool_error(&tenant, e, &pools, |e| storage(e, "policy", &doc.name))
            })?;
        // A new policy has no attachments but its pools (they go with a deleted one).
        self.committed_with(
            &tenant,
            &Delta {
                records: vec![(rec.clone(), Some(pools))],
                ..Delta::default()
            },
        );
        Ok(rec)
    }

    pub fn get_policy(&self, caller: &Caller, id: &str) -> Result<PolicyRecord, IamError> {
        let k = path_id(id, "policy", caller)?;
        self.authorize(caller, "iam:policy:read", &k)?;
        self.db
            .get_policy(k.tenant(), k.as_str())
            .map_err(|e| storage(e, "policy", k.as_str()))
    }

    pub fn list_policies(
        &self,
        caller: &Caller,
        q: &HashMap<String, String>,
    ) -> Result<(Vec<PolicyRecord>, u64, Page), IamError> {
        let tenant = self.tenant_for(caller, q.get("tenantID").map(String::as_str))?;
        let all = collection(&tenant, "policy")?;
        self.authorize(caller, "iam:policy:read", &all)?;
        let page = self.page(
            q.get("page").map(String::as_str),
            q.get("pageSize").map(String::as_str),
        )?;
        let filter = PolicyFilter {
            tenant,
            krn: krn_filter(q)?,
            name_contains: q.get("name").cloned(),
            kind: q.get("type").cloned(),
            origin: q.get("origin").cloned(),
            sort: match q.get("sort").map(String::as_str) {
                None | Some("name") => crate::storage::PolicySort::Name,
                Some("created") => crate::storage::PolicySort::Created,
                Some("updated") => crate::storage::PolicySort::Updated,
                Some(other) => {
                    return Err(IamError::invalid(format!(
                        "`sort` must be one of name, created, updated, got `{other}`"
                    )));
                }
            },
            order: sort_order(q.get("sortOrder").map(String::as_str))?,
        };
        let (items, count) = self.db.list_policies(&filter, page)?;
        Ok((items, count, page))
    }

    pub fn replace_policy(
        &self,
        caller: &Caller,
        id: &str,
        body: PolicyReplace,
        if_match: Option<i64>,
    ) -> Result<PolicyRecord, IamError> {
        let k = path_id(id, "policy", caller)?;
        self.authorize(caller, "iam:policy:update", &k)?;
        let current = self
            .db
            .get_policy(k.tenant(), k.as_str())
            .map_err(|e| storage(e, "policy", k.as_str()))?;
        if current.origin == "config" || current.kind == "base" {
            return Err(IamError::Conflict(format!(
                "policy `{}` comes from the service configuration and is read-only",
                current.name
            )));
        }
        if current.kind == "resource" {
            return Err(IamError::Conflict(format!(
                "policy `{}` is a resource-based policy: change it with PUT /resources/{{id}}/policy",
                current.name
            )));
        }
        body.check_read_only(&view_json(&PolicyView::from(&current)))?;
        let doc = self.parse_document(
            &current.name,
            &current.kind,
            body.description.as_deref(),
            &body.statements,
        )?;
        self.check_tenant_scope(caller, k.tenant(), &doc)?;
        self.check_principals(caller, &doc, &k)?;
        let pools = match &body.pool_ids {
            Some(list) => {
                let after = ids(list, "poolIDs", "pool", k.tenant())?;
                let before = self.policy_pools(k.tenant(), k.as_str())?;
                self.authorize_policy_pools(caller, &k, &before, &after)?;
                Some(after)
            }
            None => None,
        };
        let expected = version_of(body.version, if_match)?;
        let rec = self
            .db
            .replace_policy(
                k.tenant(),
                k.as_str(),
                expected,
                doc.description.as_deref(),
                &json_text(&doc.to_json()["statements"]),
                pools.as_deref(),
                now_ms(),
            )
            .map_err(|e| {
                self.pool_error(k.tenant(), e, pools.as_deref().unwrap_or(&[]), |e| {
                    storage(e, "policy", &current.name)
                })
            })?;
        self.committed_with(
            k.tenant(),
            &Delta {
                records: vec![(rec.clone(), None)],
                ..Delta::default()
            },
        );
        Ok(rec)
    }

    pub fn delete_policy(&self, caller: &Caller, id: &str) -> Result<(), IamError> {
        let k = path_id(id, "policy", caller)?;
        self.delete_policies(caller, &[k])
    }

    /// Delete all of `krns` or none: every one must exist (404 naming each that does not) and
    /// be an API policy (409 for a base or resource-based one).
    pub fn delete_policies(&self, caller: &Caller, krns: &[Krn]) -> Result<(), IamError> {
        let Some(first) = krns.first() else {
            return Err(IamError::invalid("name at least one policy"));
        };
        let tenant = first.tenant().to_string();
        for k in krns {
            self.authorize(caller, "iam:policy:delete", k)?;
        }
        let list: Vec<String> = krns.iter().map(|k| k.as_str().to_string()).collect();
        let named: Vec<(&str, &str)> = list.iter().map(|k| ("policy", k.as_str())).collect();
        let gone = self.absent(&tenant, &named)?;
        if !gone.is_empty() {
            return Err(IamError::NotFound(gone.join("; ")));
        }
        for k in &list {
            let current = self
                .db
                .get_policy(&tenant, k)
                .map_err(|e| self.write_error(&tenant, e, &named))?;
            if current.origin == "config" || current.kind == "base" {
                return Err(IamError::Conflict(format!(
                    "policy `{}` comes from the service configuration and is read-only",
                    current.name
                )));
            }
            if current.kind == "resource" {
                return Err(IamError::Conflict(format!(
                    "policy `{}` belongs to a resource and goes with it",
                    current.name
                )));
            }
        }
        self.db
            .delete_policies(&tenant, &list)
            .map_err(|e| self.write_error(&tenant, e, &named))?;
        self.committed_with(
            &tenant,
            &Delta {
                deleted: list.clone(),
                ..Delta::default()
            },
        );
        Ok(())
    }

    /// Parse `{"policyIDs": [...]}` of a bulk delete in the caller's tenant.
    pub fn policy_ids(
        &self,
        caller: &Caller,
        list: &[String],
        tenant: Option<&str>,
    ) -> Result<Vec<Krn>, IamError> {
        let tenant = self.tenant_for(caller, tenant)?;
        ids(list, "policyIDs", "policy", &tenant)?
            .iter()
            .map(|s| krn(s))
            .collect()
    }

    /// Attach or detach policies to a user, group or pool (`target`).
    pub fn set_attachment(
        &self,
        caller: &Caller,
        target: &Krn,
        policy_ids: &[String],
        attach: bool,
    ) -> Result<(), IamError> {
        let tenant = target.tenant().to_string();
        let policies = ids(policy_ids, "policyIDs", "policy", &tenant)?;
        if policies.is_empty() {
            return Err(IamError::invalid(
                "`policyIDs` must name at least one policy",
            ));
        }
        let kind = target.resource_type();
        let verb = if attach { "attach" } else { "detach" };
        self.authorize(caller, &format!("iam:policy:{kind}:{verb}"), target)?;
        if !self.exists(&tenant, kind, target.as_str())? {
            return Err(IamError::NotFound(not_found_message(kind, target.as_str())));
        }
        for p in &policies {
            let pk = krn(p)?;
            let rec = self
                .db
                .get_policy(&tenant, p)
                .map_err(|e| storage(e, "policy", p))?;
            if rec.kind != "identity" {
                return Err(IamError::Conflict(format!(
                    "policy `{}` is a {} policy and cannot be attached",
                    rec.name, rec.kind
                )));
            }
            self.authorize(caller, &format!("iam:policy:{kind}:{verb}"), &pk)?;
        }
        let r = if attach {
            self.db.attach(&tenant, target.as_str(), &policies)
        } else {
            self.db.detach(&tenant, target.as_str(), &policies)
        };
        r.map_err(|e| {
            let mut named = vec![(kind, target.as_str())];
            named.extend(policies.iter().map(|p| ("policy", p.as_str())));
            self.write_error(&tenant, e, &named)
        })?;
        self.committed_with(&tenant, &Delta::policies(policies.clone()));
        Ok(())
    }

    pub fn policies_of(
        &self,
        caller: &Caller,
        target: &Krn,
        q: &HashMap<String, String>,
    ) -> Result<(Vec<PolicyRecord>, u64, Page), IamError> {
        self.authorize(
            caller,
            &format!("iam:{}:read", target.resource_type()),
            target,
        )?;
        // A user, group or pool that does not exist has no list: 404, as its own GET answers.
        let (tenant, krn, kind) = (target.tenant(), target.as_str(), target.resource_type());
        match kind {
            "user" => self.db.get_user(tenant, krn).map(|_| ()),
            "group" => self.db.get_group(tenant, krn).map(|_| ()),
            "pool" => self.db.get_pool(tenant, krn).map(|_| ()),
            _ => Ok(()),
        }
        .map_err(|e| storage(e, kind, krn))?;
        let page = self.page(
            q.get("page").map(String::as_str),
            q.get("pageSize").map(String::as_str),
        )?;
        let (items, count) = self.db.policies_of(tenant, krn, page)?;
        Ok((items, count, page))
    }

    /// Write the configured base policies into the system tenant (listed, read-only): each one
    /// absent is inserted, each one whose statements differ is replaced, each one no longer
    /// configured is deleted; one that already matches is not written. Run under the start-up
    /// lock ([`crate::storage::Database::startup_lock`]), so replicas starting together write a
    /// change once and the others find it written; a replica of an earlier release, which
    /// writes without the lock, may still race it, so an insert that finds the row there
    /// compares it instead, and a delete that finds it gone is done.
    pub fn sync_base_policies(&self) -> Result<(), IamError> {
        let now = now_ms();
        let (existing, _) = self.db.list_policies(
            &PolicyFilter {
                tenant: SYSTEM_TENANT.into(),
                origin: Some("config".into()),
                ..Default::default()
            },
            Page {
                page: 1,
                size: 100_000,
            },
        )?;
        let same = |p: &PolicyRecord, statements: &Value| {
            serde_json::from_str::<Value>(&p.statements).ok().as_ref() == Some(statements)
        };
        let replace = |p: &PolicyRecord, statements: &Value| {
            self.db.replace_policy(
                SYSTEM_TENANT,
                &p.krn,
                None,
                p.description.as_deref(),
                &statements.to_string(),
                None,
                now,
            )
        };
        for (name, statements) in &self.base_raw {
            let k = entity_krn(SYSTEM_TENANT, "policy", &[], name)?;
            match existing.iter().find(|p| p.krn == k.as_str()) {
                Some(p) if same(p, statements) => {}
                Some(p) => {
                    replace(p, statements)?;
                    log::info!("base policies: `{name}` updated from the configuration");
                }
                None => {
                    let inserted = self.db.insert_policy(&NewPolicy {
                        tenant: SYSTEM_TENANT.into(),
                        krn: k.as_str().to_string(),
                        name: name.clone(),
                        kind: "base".into(),
                        description: Some("base policy from the service configuration".into()),
                        statements: statements.to_string(),
                        origin: "config".into(),
                        now_ms: now,
                        resource_krn: None,
                        pools: Vec::new(),
                    });
                    match inserted {
                        Ok(_) => {}
                        Err(StorageError::Conflict(_)) => {
                            let p = self.db.get_policy(SYSTEM_TENANT, k.as_str())?;
                            if !same(&p, statements) {
                                replace(&p, statements)?;
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        for p in existing
            .iter()
            .filter(|p| !self.base_raw.iter().any(|(n, _)| *n == p.name))
        {
            match self.db.delete_policy(SYSTEM_TENANT, &p.krn) {
                Ok(()) | Err(StorageError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // The versions the decision log names: those of the rows holding this configuration.
        let (stored, _) = self.db.list_policies(
            &PolicyFilter {
                tenant: SYSTEM_TENANT.into(),
                origin: Some("config".into()),
                ..Default::default()
            },
            Page {
                page: 1,
                size: 100_000,
            },
        )?;
        let versions = self
            .base_raw
            .iter()
            .filter_map(|(name, statements)| {
                stored
                    .iter()
                    .find(|p| p.name == *name && same(p, statements))
                    .map(|p| (name.clone(), p.version))
            })
            .collect();
        self.state.set_base_versions(versions);
        Ok(())
    }
}

/// A stored policy says something: a document without statements is refused (it would
/// decide nothing, and usually means a client lost its statements on the way).
pub(crate) fn require_statements(doc: &PolicyDocument) -> Result<(), IamError> {
    if doc.statements.is_empty() {
        return Err(IamError::invalid(
            "`statements` must hold at least one statement",
        ));
    }
    Ok(())
}

/// An entity as GET returns it, to compare read-only fields against.
pub(crate) fn view_json(view: &impl serde::Serialize) -> Value {
    serde_json::to_value(view).unwrap_or(Value::Null)
}

pub(crate) fn sort_order(v: Option<&str>) -> Result<crate::storage::SortOrder, IamError> {
    match v {
        None | Some("asc") | Some("ASC") => Ok(crate::storage::SortOrder::Asc),
        Some("desc") | Some("DESC") => Ok(crate::storage::SortOrder::Desc),
        Some(other) => Err(IamError::invalid(format!(
            "`sortOrder` must be `asc` or `desc`, got `{other}`"
        ))),
    }
}

/// The version a write expects: the body's `version` and `If-Match` must agree when both given.
pub fn version_of(body: Option<i64>, if_match: Option<i64>) -> Result<Option<i64>, IamError> {
    match (body, if_match) {
        (Some(a), Some(b)) if a != b => Err(IamError::invalid(format!(
            "`version` {a} and If-Match {b} disagree"
        ))),
        (a, b) => Ok(a.or(b)),
    }
}
