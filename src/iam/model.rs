//! JSON shapes of the IAM API (camelCase, ids as base64 KRNs, RFC 3339 timestamps) and the
//! request bodies, with unknown fields refused so a typo is a 400 rather than a silent no-op.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::err::IamError;
use crate::clock::rfc3339_ms;
use crate::policy::Krn;
use crate::storage::{GroupRecord, PolicyRecord, PoolRecord, ResourceRecord, UserRecord};

/// Base64 id of a canonical KRN string.
pub fn id_of(krn: &str) -> String {
    Krn::parse(krn).map(|k| k.to_id()).unwrap_or_default()
}

fn json_or(text: &str, default: Value) -> Value {
    serde_json::from_str(text).unwrap_or(default)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub id: String,
    pub krn: String,
    #[serde(rename = "tenantID")]
    pub tenant_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub statements: Value,
    pub origin: String,
    /// The pools the policy is attached to (ids): its statements apply to their members.
    #[serde(rename = "poolIDs")]
    pub pool_ids: Vec<String>,
    pub version: i64,
    #[serde(rename = "resourceID", skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    pub created: String,
    pub updated: String,
}

impl PolicyView {
    /// The view with the pools the policy is attached to (KRNs).
    pub fn with_pools(mut self, pools: &[String]) -> PolicyView {
        self.pool_ids = pools.iter().map(|p| id_of(p)).collect();
        self
    }
}

impl From<&PolicyRecord> for PolicyView {
    fn from(p: &PolicyRecord) -> PolicyView {
        PolicyView {
            id: id_of(&p.krn),
            krn: p.krn.clone(),
            tenant_id: p.tenant.clone(),
            name: p.name.clone(),
            kind: p.kind.clone(),
            description: p.description.clone(),
            statements: json_or(&p.statements, Value::Array(Vec::new())),
            origin: p.origin.clone(),
            pool_ids: Vec::new(),
            version: p.version,
            resource_id: p.resource_krn.as_deref().map(id_of),
            created: rfc3339_ms(p.created_ms),
            updated: rfc3339_ms(p.updated_ms),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub krn: String,
    #[serde(rename = "tenantID")]
    pub tenant_id: String,
    pub username: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    pub enabled: bool,
    #[serde(rename = "authID", skip_serializing_if = "Option::is_none")]
    pub auth_id: Option<String>,
    pub metadata: Value,
    pub required_actions: Value,
    /// The pools the entity is a member of (ids).
    #[serde(rename = "poolIDs")]
    pub pool_ids: Vec<String>,
    pub version: i64,
    pub created: String,
    pub updated: String,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> UserView {
        UserView {
            id: id_of(&u.krn),
            krn: u.krn.clone(),
            tenant_id: u.tenant.clone(),
            username: u.username.clone(),
            path: u.path.clone(),
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            enabled: u.enabled,
            auth_id: u.auth_id.clone(),
            metadata: json_or(&u.metadata, Value::Object(Default::default())),
            required_actions: json_or(&u.required_actions, Value::Array(Vec::new())),
            pool_ids: u.pools.iter().map(|p| id_of(p)).collect(),
            version: u.version,
            created: rfc3339_ms(u.created_ms),
            updated: rfc3339_ms(u.updated_ms),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    pub id: String,
    pub krn: String,
    #[serde(rename = "tenantID")]
    pub tenant_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub path: String,
    #[serde(rename = "parentID", skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    pub metadata: Value,
    /// The pools the entity is a member of (ids).
    #[serde(rename = "poolIDs")]
    pub pool_ids: Vec<String>,
    pub version: i64,
    pub created: String,
    pub updated: String,
}

impl From<&GroupRecord> for GroupView {
    fn from(g: &GroupRecord) -> GroupView {
        GroupView {
            id: id_of(&g.krn),
            krn: g.krn.clone(),
            tenant_id: g.tenant.clone(),
            name: g.name.clone(),
            display_name: g.display_name.clone(),
            path: g.path.clone(),
            parent_id: g.parent_krn.as_deref().map(id_of),
            metadata: json_or(&g.metadata, Value::Object(Default::default())),
            pool_ids: g.pools.iter().map(|p| id_of(p)).collect(),
            version: g.version,
            created: rfc3339_ms(g.created_ms),
            updated: rfc3339_ms(g.updated_ms),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceView {
    pub id: String,
    pub krn: String,
    #[serde(rename = "tenantID")]
    pub tenant_id: String,
    pub service: String,
    pub resource_type: String,
    pub name: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub enabled: bool,
    pub metadata: Value,
    /// The pools the entity is a member of (ids).
    #[serde(rename = "poolIDs")]
    pub pool_ids: Vec<String>,
    pub version: i64,
    pub created: String,
    pub updated: String,
}

impl From<&ResourceRecord> for ResourceView {
    fn from(r: &ResourceRecord) -> ResourceView {
        ResourceView {
            id: id_of(&r.krn),
            krn: r.krn.clone(),
            tenant_id: r.tenant.clone(),
            service: r.service.clone(),
            resource_type: r.resource_type.clone(),
            name: r.name.clone(),
            path: r.path.clone(),
            display_name: r.display_name.clone(),
            description: r.description.clone(),
            enabled: r.enabled,
            metadata: json_or(&r.metadata, Value::Object(Default::default())),
            pool_ids: r.pools.iter().map(|p| id_of(p)).collect(),
            version: r.version,
            created: rfc3339_ms(r.created_ms),
            updated: rfc3339_ms(r.updated_ms),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolView {
    pub id: String,
    pub krn: String,
    #[serde(rename = "tenantID")]
    pub tenant_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "resourceIDs")]
    pub resource_ids: Vec<String>,
    pub version: i64,
    pub created: String,
    pub updated: String,
}

impl PoolView {
    pub fn new(p: &PoolRecord, members: &[String]) -> PoolView {
        PoolView {
            id: id_of(&p.krn),
            krn: p.krn.clone(),
            tenant_id: p.tenant.clone(),
            name: p.name.clone(),
            display_name: p.display_name.clone(),
            description: p.description.clone(),
            resource_ids: members.iter().map(|m| id_of(m)).collect(),
            version: p.version,
            created: rfc3339_ms(p.created_ms),
            updated: rfc3339_ms(p.updated_ms),
        }
    }
}

// ---------------------------------------------------------------- request bodies

/// `POST /policies`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyCreate {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub statements: Value,
    #[serde(rename = "tenantID", default)]
    pub tenant_id: Option<String>,
    /// Accepted for iamcore compatibility (`level: tenant`); only `tenant` is meaningful.
    #[serde(default)]
    pub level: Option<String>,
    /// Pools to attach the policy to.
    #[serde(rename = "poolIDs", default)]
    pub pool_ids: Vec<String>,
}

/// `PUT /policies/{id}` and `PUT /resources/{id}/policy`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyReplace {
    #[serde(default)]
    pub description: Option<String>,
    pub statements: Value,
    #[serde(default)]
    pub version: Option<i64>,
    /// The pools the policy is attached to, all of them (absent: unchanged).
    #[serde(rename = "poolIDs", default)]
    pub pool_ids: Option<Vec<String>>,
    // Read-only fields, as GET returns them: accepted when they match the stored entity.
    #[serde(rename = "id", default)]
    pub ro_id: Option<Value>,
    #[serde(rename = "krn", default)]
    pub ro_krn: Option<Value>,
    #[serde(rename = "tenantID", default)]
    pub ro_tenant_id: Option<Value>,
    #[serde(rename = "created", default)]
    pub ro_created: Option<Value>,
    #[serde(rename = "updated", default)]
    pub ro_updated: Option<Value>,
    #[serde(rename = "name", default)]
    pub ro_name: Option<Value>,
    #[serde(rename = "type", default)]
    pub ro_kind: Option<Value>,
    #[serde(rename = "origin", default)]
    pub ro_origin: Option<Value>,
    #[serde(rename = "resourceID", default)]
    pub ro_resource_id: Option<Value>,
}

/// `POST /users`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserCreate {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub confirm_password: Option<String>,
    /// Default: enabled.
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(rename = "policyIDs", default)]
    pub policy_ids: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub send_verify_email: bool,
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(rename = "tenantID", default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub required_actions: Option<Vec<String>>,
    /// Kaa's switch: the username is the Keycloak user id (a fresh UUID where the tenant has no
    /// Keycloak realm); `email` is then required and `username` must not be sent.
    #[serde(rename = "keycloakIDAsUsername", default)]
    pub keycloak_id_as_username: bool,
    #[serde(rename = "poolIDs", default)]
    pub pool_ids: Vec<String>,
}

/// `PATCH /users/{id}`: only the fields sent change; `null` clears an optional field.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserUpdate {
    #[serde(default, with = "double_option")]
    pub email: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub first_name: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub last_name: Option<Option<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub required_actions: Option<Vec<String>>,
    /// The pools to be a member of, all of them (absent: unchanged).
    #[serde(rename = "poolIDs", default)]
    pub pool_ids: Option<Vec<String>>,
    #[serde(default)]
    pub version: Option<i64>,
    // Read-only fields, as GET returns them: accepted when they match the stored entity.
    #[serde(rename = "id", default)]
    pub ro_id: Option<Value>,
    #[serde(rename = "krn", default)]
    pub ro_krn: Option<Value>,
    #[serde(rename = "tenantID", default)]
    pub ro_tenant_id: Option<Value>,
    #[serde(rename = "created", default)]
    pub ro_created: Option<Value>,
    #[serde(rename = "updated", default)]
    pub ro_updated: Option<Value>,
    #[serde(rename = "username", default)]
    pub ro_username: Option<Value>,
    #[serde(rename = "path", default)]
    pub ro_path: Option<Value>,
    #[serde(rename = "authID", default)]
    pub ro_auth_id: Option<Value>,
}

/// `POST /groups`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupCreate {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(rename = "parentID", default)]
    pub parent_id: Option<String>,
    #[serde(rename = "tenantID", default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(rename = "poolIDs", default)]
    pub pool_ids: Vec<String>,
}

/// `PATCH /groups/{id}`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupUpdate {
    #[serde(default, with = "double_option")]
    pub display_name: Option<Option<String>>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// The pools to be a member of, all of them (absent: unchanged).
    #[serde(rename = "poolIDs", default)]
    pub pool_ids: Option<Vec<String>>,

    #[serde(default)]
    pub version: Option<i64>,
    // Read-only fields, as GET returns them: accepted when they match the stored entity.
    #[serde(rename = "id", default)]
    pub ro_id: Option<Value>,
    #[serde(rename = "krn", default)]
    pub ro_krn: Option<Value>,
    #[serde(rename = "tenantID", default)]
    pub ro_tenant_id: Option<Value>,
    #[serde(rename = "created", default)]
    pub ro_created: Option<Value>,
    #[serde(rename = "updated", default)]
    pub ro_updated: Option<Value>,
    #[serde(rename = "name", default)]
    pub ro_name: Option<Value>,
    #[serde(rename = "path", default)]
    pub ro_path: Option<Value>,
    #[serde(rename = "parentID", default)]
    pub ro_parent_id: Option<Value>,
}

/// `POST /resources`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceCreate {
    /// The owning service (`application` in iamcore).
    #[serde(default, alias = "application")]
    pub service: Option<String>,
    pub resource_type: String,
    pub name: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(rename = "poolIDs", default)]
    pub pool_ids: Vec<String>,
    #[serde(rename = "tenantID", default)]
    pub tenant_id: Option<String>,
}

/// `PATCH /resources/{id}`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceUpdate {
    #[serde(default, with = "double_option")]
    pub display_name: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// The pools to be a member of, all of them (absent: unchanged).
    #[serde(rename = "poolIDs", default)]
    pub pool_ids: Option<Vec<String>>,
    #[serde(default)]
    pub version: Option<i64>,
    // Read-only fields, as GET returns them: accepted when they match the stored entity.
    #[serde(rename = "id", default)]
    pub ro_id: Option<Value>,
    #[serde(rename = "krn", default)]
    pub ro_krn: Option<Value>,
    #[serde(rename = "tenantID", default)]
    pub ro_tenant_id: Option<Value>,
    #[serde(rename = "created", default)]
    pub ro_created: Option<Value>,
    #[serde(rename = "updated", default)]
    pub ro_updated: Option<Value>,
    #[serde(rename = "service", default)]
    pub ro_service: Option<Value>,
    #[serde(rename = "resourceType", default)]
    pub ro_resource_type: Option<Value>,
    #[serde(rename = "name", default)]
    pub ro_name: Option<Value>,
    #[serde(rename = "path", default)]
    pub ro_path: Option<Value>,
    #[serde(rename = "policyID", default)]
    pub ro_policy_id: Option<Value>,
}

/// `POST /pools`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolCreate {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(rename = "resourceIDs", default)]
    pub resource_ids: Vec<String>,
    #[serde(rename = "tenantID", default)]
    pub tenant_id: Option<String>,
}

/// `PATCH /pools/{id}`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolUpdate {
    #[serde(default, with = "double_option")]
    pub display_name: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub version: Option<i64>,
    // Read-only fields, as GET returns them: accepted when they match the stored entity.
    #[serde(rename = "id", default)]
    pub ro_id: Option<Value>,
    #[serde(rename = "krn", default)]
    pub ro_krn: Option<Value>,
    #[serde(rename = "tenantID", default)]
    pub ro_tenant_id: Option<Value>,
    #[serde(rename = "created", default)]
    pub ro_created: Option<Value>,
    #[serde(rename = "updated", default)]
    pub ro_updated: Option<Value>,
    #[serde(rename = "name", default)]
    pub ro_name: Option<Value>,
    #[serde(rename = "resourceIDs", default)]
    pub ro_resource_ids: Option<Value>,
}

/// Lists of ids in attach/detach/member/bulk bodies (`userIDS` is the iamcore SDK's spelling).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Ids {
    #[serde(rename = "policyIDs", default)]
    pub policy_ids: Option<Vec<String>>,
    #[serde(rename = "userIDs", alias = "userIDS", default)]
    pub user_ids: Option<Vec<String>>,
    #[serde(rename = "groupIDs", default)]
    pub group_ids: Option<Vec<String>>,
    #[serde(rename = "resourceIDs", default)]
    pub resource_ids: Option<Vec<String>>,
}

/// Evaluation requests (`/evaluate`, `/evaluate/actions`, `/evaluate/simulate`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvaluateBody {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    #[serde(default, alias = "irns")]
    pub resources: Vec<String>,
    /// The principal's canonical KRN; default: the caller.
    #[serde(default)]
    pub principal: Option<String>,
    /// Extra principals (e.g. roles) to evaluate with, canonical KRNs.
    #[serde(default)]
    pub roles: Vec<String>,
    /// `/evaluate/simulate`: candidate policies to add (documents, with `attachedTo` KRNs).
    #[serde(default)]
    pub add: Vec<Value>,
    /// `/evaluate/simulate`: ids (base64) or KRNs of stored policies to leave out.
    #[serde(default)]
    pub remove: Vec<String>,
    /// `/evaluate/resources`: the type of registered resources to consider.
    #[serde(default)]
    pub resource_type: Option<String>,
    #[serde(default, alias = "application")]
    pub service: Option<String>,
    #[serde(rename = "tenantID", default)]
    pub tenant_id: Option<String>,
    /// The request context that statement conditions read (`kaa:SourceIp`, `kaa:CurrentTime`,
    /// and the caller's own keys).
    #[serde(default)]
    pub context: Option<serde_json::Map<String, Value>>,
}

/// The read-only fields an update body may carry back as GET returned them (`id`, `krn`,
/// `tenantID`, `created`, `updated`, names and paths, ...).
pub trait ReadOnly {
    /// (JSON name, the value sent, if any).
    fn read_only(&self) -> Vec<(&'static str, Option<&Value>)>;

    /// Whether the body carries any of them.
    fn has_read_only(&self) -> bool {
        self.read_only().iter().any(|(_, v)| v.is_some())
    }

    /// Every read-only field sent must equal the stored entity's (`stored`: its JSON as GET
    /// returns it; a field GET leaves out counts as `null`). `updated` is the write's to set
    /// and is not compared.
    fn check_read_only(&self, stored: &Value) -> Result<(), IamError> {
        let mut errors = Vec::new();
        let mut fields = Vec::new();
        for (name, sent) in self.read_only() {
            let Some(sent) = sent else { continue };
            if name == "updated" {
                continue;
            }
            let cur = stored.get(name).unwrap_or(&Value::Null);
            if sent != cur {
                fields.push(format!("`{name}`"));
                errors.push(format!(
                    "`{name}` is read-only: it is {cur} and cannot change to {sent}"
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(IamError::Invalid(
                format!("read-only fields cannot change: {}", fields.join(", ")),
                errors,
            ))
        }
    }
}

impl ReadOnly for PolicyReplace {
    fn read_only(&self) -> Vec<(&'static str, Option<&Value>)> {
        vec![
            ("id", self.ro_id.as_ref()),
            ("krn", self.ro_krn.as_ref()),
            ("tenantID", self.ro_tenant_id.as_ref()),
            ("created", self.ro_created.as_ref()),
            ("updated", self.ro_updated.as_ref()),
            ("name", self.ro_name.as_ref()),
            ("type", self.ro_kind.as_ref()),
            ("origin", self.ro_origin.as_ref()),
            ("resourceID", self.ro_resource_id.as_ref()),
        ]
    }
}

impl ReadOnly for UserUpdate {
    fn read_only(&self) -> Vec<(&'static str, Option<&Value>)> {
        vec![
            ("id", self.ro_id.as_ref()),
            ("krn", self.ro_krn.as_ref()),
            ("tenantID", self.ro_tenant_id.as_ref()),
            ("created", self.ro_created.as_ref()),
            ("updated", self.ro_updated.as_ref()),
            ("username", self.ro_username.as_ref()),
            ("path", self.ro_path.as_ref()),
            ("authID", self.ro_auth_id.as_ref()),
        ]
    }
}

impl ReadOnly for GroupUpdate {
    fn read_only(&self) -> Vec<(&'static str, Option<&Value>)> {
        vec![
            ("id", self.ro_id.as_ref()),
            ("krn", self.ro_krn.as_ref()),
            ("tenantID", self.ro_tenant_id.as_ref()),
            ("created", self.ro_created.as_ref()),
            ("updated", self.ro_updated.as_ref()),
            ("name", self.ro_name.as_ref()),
            ("path", self.ro_path.as_ref()),
            ("parentID", self.ro_parent_id.as_ref()),
        ]
    }
}

impl ReadOnly for ResourceUpdate {
    fn read_only(&self) -> Vec<(&'static str, Option<&Value>)> {
        vec![
            ("id", self.ro_id.as_ref()),
            ("krn", self.ro_krn.as_ref()),
            ("tenantID", self.ro_tenant_id.as_ref()),
            ("created", self.ro_created.as_ref()),
            ("updated", self.ro_updated.as_ref()),
            ("service", self.ro_service.as_ref()),
            ("resourceType", self.ro_resource_type.as_ref()),
            ("name", self.ro_name.as_ref()),
            ("path", self.ro_path.as_ref()),
            ("policyID", self.ro_policy_id.as_ref()),
        ]
    }
}

impl ReadOnly for PoolUpdate {
    fn read_only(&self) -> Vec<(&'static str, Option<&Value>)> {
        vec![
            ("id", self.ro_id.as_ref()),
            ("krn", self.ro_krn.as_ref()),
            ("tenantID", self.ro_tenant_id.as_ref()),
            ("created", self.ro_created.as_ref()),
            ("updated", self.ro_updated.as_ref()),
            ("name", self.ro_name.as_ref()),
            ("resourceIDs", self.ro_resource_ids.as_ref()),
        ]
    }
}

/// `Option<Option<T>>` that tells an absent field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}
