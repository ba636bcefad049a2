//! The Keycloak provisioner: a tenant's realm made, brought up to date and removed through the
//! admin API of its Keycloak server, in the order of `spec/tenant-manager.md` §5: realm → realm
//! roles → backend client (its service account gets the realm's user-management roles) →
//! authorization scopes → default resources → role policies and scope
//! permissions → frontend client → identity providers (LDAP and Active Directory as
//! user-federation components).
//!
//! Every step is idempotent, so a task retried after any failure finishes the realm without
//! duplicates: a create answered 409 means the object is there (made by an earlier attempt) and
//! the run carries on, looking the object's id up where a later step needs it; a delete answered
//! 404 is done. The realm itself is the exception: every realm this service makes carries its
//! mark (realm attributes [`MARK_INSTALLATION`] and [`MARK_TENANT`]), and a realm that is there
//! already is adopted, updated or deleted only when it carries this installation's mark for this
//! tenant. Any other realm (`master`, one made by hand or by another installation) is left as it
//! is: creating the tenant fails with the reason, deleting it leaves the realm. No answer, 5xx, 408 and 429 are transient (the task is retried with backoff); any
//! other 4xx is fatal and carries Keycloak's message to the tenant's failure reason.
//!
//! Authorization model: one role policy `<role>-policy` per realm role, and one scope permission
//! `<scope>-permission` per scope that some role grants, naming the policies of all those roles
//! with decision strategy `AFFIRMATIVE` (any of the roles grants the scope). One permission per
//! scope keeps the answer right under the resource server's default `UNANIMOUS` strategy, which
//! would deny a scope that one per-role permission grants and another does not.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use super::provision::{Plan, ProvisionError, Provisioner};
use crate::clients::keycloak::{KeycloakAdmin, KeycloakError, object_id};
use crate::storage::TenantRecord;

/// Name of the role policy of a realm role.
pub fn policy_name(role: &str) -> String {
    format!("{role}-policy")
}

/// Name of the scope permission of an authorization scope.
pub fn permission_name(scope: &str) -> String {
    format!("{scope}-permission")
}

/// The Keycloak representation of a catalogue IDP (`alias`, `provider_id`, `enabled`, `config`).
pub fn idp_representation(idp: &Value) -> Value {
    json!({
        "alias": idp.get("alias").cloned().unwrap_or(Value::Null),
        "providerId": idp.get("provider_id").cloned().unwrap_or(Value::Null),
        "enabled": idp.get("enabled").and_then(Value::as_bool).unwrap_or(true),
        "config": idp.get("config").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Config key marking identity providers and components this service made (and may remove).
pub const MANAGED: &str = "kaaManaged";

/// Realm attribute naming the Tenant Manager installation that made the realm.
pub const MARK_INSTALLATION: &str = "kaa.tenant-manager.installation";
/// Realm attribute naming the tenant the realm was made for.
pub const MARK_TENANT: &str = "kaa.tenant-manager.tenant";

/// Who a realm that exists on the server belongs to, as its mark says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealmOwner {
    /// Made by this installation for this tenant.
    This,
    /// Anything else, described for the tenant's failure reason and the log.
    Other(String),
}

/// The owner of the realm `rep` (Keycloak's realm representation) for `tenant` of
/// `installation`.
pub fn realm_owner(rep: &Value, installation: &str, tenant: &str) -> RealmOwner {
    let attr = |k: &str| rep["attributes"][k].as_str().map(str::to_string);
    match (attr(MARK_INSTALLATION), attr(MARK_TENANT)) {
        (Some(i), Some(t)) if i == installation && t == tenant => RealmOwner::This,
        (Some(i), Some(t)) if i == installation => RealmOwner::Other(format!(
            "it was made by this Tenant Manager for another tenant (`{t}`)"
        )),
        (Some(i), _) => RealmOwner::Other(format!(
            "it was made by another Tenant Manager installation (`{i}`)"
        )),
        _ => {
            RealmOwner::Other("it was not made by this Tenant Manager (it carries no mark)".into())
        }
    }
}

/// The realm representation of the plan with this installation's mark for `tenant` among its
/// attributes (a template's own attributes stay).
pub fn marked_realm(plan_realm: &Value, installation: &str, tenant: &str) -> Value {
    let mut rep = plan_realm.clone();
    if !rep.is_object() {
        rep = json!({});
    }
    if !rep["attributes"].is_object() {
        rep["attributes"] = json!({});
    }
    rep["attributes"][MARK_INSTALLATION] = Value::from(installation);
    rep["attributes"][MARK_TENANT] = Value::from(tenant);
    rep
}
/// Keycloak's component type of user-federation providers.
pub const USER_STORAGE: &str = "org.keycloak.storage.UserStorageProvider";

/// Whether a catalogue IDP is a user federation (LDAP, Active Directory) rather than an
/// identity provider.
pub fn is_federation(idp: &Value) -> bool {
    matches!(
        idp.get("provider_id").and_then(Value::as_str),
        Some("ldap" | "active-directory" | "ad")
    )
}

/// The Keycloak component of a federation IDP: `providerId` `ldap` (Active Directory is LDAP
/// with `vendor` `ad`), its config as Keycloak's lists of strings, `enabled` in the config.
pub fn federation_component(idp: &Value) -> Value {
    let mut config = serde_json::Map::new();
    if let Some(m) = idp.get("config").and_then(Value::as_object) {
        for (k, v) in m {
            let list: Vec<Value> = match v {
                Value::Null => continue,
                Value::String(s) => vec![Value::from(s.clone())],
                Value::Array(a) => a
                    .iter()
                    .map(|x| match x {
                        Value::String(s) => Value::from(s.clone()),
                        other => Value::from(other.to_string()),
                    })
                    .collect(),
                other => vec![Value::from(other.to_string())],
            };
            config.insert(k.clone(), Value::Array(list));
        }
    }
    if idp.get("provider_id").and_then(Value::as_str) != Some("ldap") {
        config.entry("vendor").or_insert_with(|| json!(["ad"]));
    }
    let enabled = idp.get("enabled").and_then(Value::as_bool).unwrap_or(true);
    config.insert("enabled".into(), json!([enabled.to_string()]));
    config.insert(MANAGED.into(), json!(["true"]));
    json!({
        "name": idp.get("alias").cloned().unwrap_or(Value::Null),
        "providerId": "ldap",
        "providerType": USER_STORAGE,
        "config": config,
    })
}

/// Scope → the roles that grant it, in plan order of scopes (only scopes some role grants).
/// A representation: the catalogue entry's `template` with `own` over it (the fields the plan
/// decides always win).
fn with_template(template: Option<&Value>, own: Value) -> Value {
    let mut rep = match template {
        Some(Value::Object(t)) => t.clone(),
        _ => serde_json::Map::new(),
    };
    if let Value::Object(own) = own {
        for (k, v) in own {
            rep.insert(k, v);
        }
    }
    Value::Object(rep)
}

/// The attributes of Keycloak's default user profile that tenant users may leave out.
const OPTIONAL_PROFILE_ATTRIBUTES: [&str; 3] = ["email", "firstName", "lastName"];

/// Makes e-mail and names optional in a realm's user profile; whether anything changed.
pub fn relax_user_profile(profile: &mut Value) -> bool {
    let mut changed = false;
    if let Some(attrs) = profile.get_mut("attributes").and_then(Value::as_array_mut) {
        for a in attrs {
            let optional = a
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| OPTIONAL_PROFILE_ATTRIBUTES.contains(&n));
            if let (true, Some(m)) = (optional, a.as_object_mut()) {
                changed |= m.remove("required").is_some();
            }
        }
    }
    changed
}

fn grants(plan: &Plan) -> BTreeMap<usize, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for (i, s) in plan.scopes.iter().enumerate() {
        let roles: Vec<String> = plan
            .roles
            .iter()
            .filter(|r| r.scopes.contains(s))
            .map(|r| r.name.clone())
            .collect();
        if !roles.is_empty() {
            out.insert(i, (s.clone(), roles));
        }
    }
    out
}

/// The `realm-management` client roles the backend client's service account gets, so that the
/// services holding its credentials (IAM) can create, read, update and delete the realm's users.
pub const USER_MANAGEMENT_ROLES: &[&str] = &["manage-users", "view-users", "query-users"];

/// Creates and updates realms on one Keycloak server.
pub struct KeycloakProvisioner {
    pub server_id: i64,
    kc: Arc<KeycloakAdmin>,
    /// The installation id its realms are marked with.
    installation: String,
}

/// Whether an existing object is brought to the plan (update) or left as it is (create).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Update,
}

impl KeycloakProvisioner {
    pub fn with_client(
        server_id: i64,
        kc: Arc<KeycloakAdmin>,
        installation: &str,
    ) -> KeycloakProvisioner {
        KeycloakProvisioner {
            server_id,
            kc,
            installation: installation.to_string(),
        }
    }

    /// Who the existing realm of tenant `t` belongs to (`None`: there is no such realm).
    fn existing_owner(&self, t: &TenantRecord) -> Result<Option<RealmOwner>, ProvisionError> {
        let realm = t.realm_name.as_str();
        match self.kc.get_realm(realm) {
            Ok(rep) => Ok(Some(realm_owner(&rep, &self.installation, &t.id))),
            Err(KeycloakError::NotFound(_)) => Ok(None),
            Err(e) => Err(self.fail(&format!("read realm `{realm}`"), e)),
        }
    }

    /// The failure of a tenant whose realm name is taken by a realm that is not its own.
    fn not_ours(&self, t: &TenantRecord, why: &str) -> ProvisionError {
        ProvisionError::Fatal(format!(
            "realm `{}` already exists on keycloak server {} (`{}`) and {why}: it is left as it \
             is; give the tenant another realm name, or remove that realm",
            t.realm_name,
            self.server_id,
            self.kc.base_url()
        ))
    }

    pub fn client(&self) -> &KeycloakAdmin {
        &self.kc
    }

    /// The provisioning error of a failed step.
    fn fail(&self, step: &str, e: KeycloakError) -> ProvisionError {
        let m = format!(
            "keycloak server {} (`{}`): {step}: {e}",
            self.server_id,
            self.kc.base_url()
        );
        match e {
            // Expected answers that did not fit this moment (a realm deleted under us, an object
            // whose id lookup raced a delete): the next attempt starts from the realm again.
            KeycloakError::NotFound(_) | KeycloakError::Conflict(_) => ProvisionError::Transient(m),
            e if e.is_transient() => ProvisionError::Transient(m),
            _ => ProvisionError::Fatal(m),
        }
    }

    /// Create, treating 409 as "there already"; returns whether it was created now.
    fn created<T>(
        &self,
        step: impl FnOnce() -> String,
        r: Result<T, KeycloakError>,
    ) -> Result<Option<T>, ProvisionError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(KeycloakError::Conflict(_)) => Ok(None),
            Err(e) => Err(self.fail(&step(), e)),
        }
    }

    /// A client by `clientId`: created, or found (and in update mode brought to `rep`).
    fn ensure_client(
        &self,
        realm: &str,
        rep: &Value,
        mode: Mode,
    ) -> Result<String, ProvisionError> {
        let client_id = rep.get("clientId").and_then(Value::as_str).unwrap_or("");
        let step = || format!("create client `{client_id}` in realm `{realm}`");
        if let Some(uuid) = self.created(step, self.kc.create_client(realm, rep))? {
            return Ok(uuid);
        }
        let uuid = self
            .kc
            .client_uuid(realm, client_id)
            .map_err(|e| self.fail(&format!("find client `{client_id}` in `{realm}`"), e))?;
        if mode == Mode::Update {
            self.kc
                .update_client(realm, &uuid, rep)
                .map_err(|e| self.fail(&format!("update client `{client_id}` in `{realm}`"), e))?;
        }
        Ok(uuid)
    }

    /// An authorization object (resource, policy, permission) by name: created, or in update
    /// mode found and replaced.
    fn ensure_authz(
        &self,
        what: &str,
        name: &str,
        mode: Mode,
        create: impl FnOnce() -> Result<Value, KeycloakError>,
        find: impl FnOnce() -> Result<Option<Value>, KeycloakError>,
        update: impl FnOnce(&str) -> Result<(), KeycloakError>,
    ) -> Result<(), ProvisionError> {
        let step = || format!("create {what} `{name}`");
        if self.created(step, create())?.is_some() || mode == Mode::Create {
            return Ok(());
        }
        let found = find().map_err(|e| self.fail(&format!("find {what} `{name}`"), e))?;
        let Some(id) = found.as_ref().and_then(object_id) else {
            return Err(ProvisionError::Transient(format!(
                "keycloak server {}: {what} `{name}` exists but cannot be found by name",
                self.server_id
            )));
        };
        update(&id).map_err(|e| self.fail(&format!("update {what} `{name}`"), e))
    }

    /// Map the `realm-management` roles of [`USER_MANAGEMENT_ROLES`] to the service account of
    /// the client `uuid` (when the client has one). Mapping a held role again is no error.
    fn grant_user_management(
        &self,
        realm: &str,
        uuid: &str,
        rep: &Value,
    ) -> Result<(), ProvisionError> {
        if rep.get("serviceAccountsEnabled").and_then(Value::as_bool) != Some(true)
            || rep.get("publicClient").and_then(Value::as_bool) == Some(true)
        {
            return Ok(());
        }
        let kc = &*self.kc;
        let step =
            |what: &str| format!("{what} (service account of the backend client of `{realm}`)");
        let sa = kc
            .service_account_user(realm, uuid)
            .map_err(|e| self.fail(&step("read the service-account user"), e))?;
        let Some(sa) = object_id(&sa) else {
            return Err(ProvisionError::Transient(step(
                "the service-account user has no id",
            )));
        };
        let rm = kc
            .client_uuid(realm, "realm-management")
            .map_err(|e| self.fail(&step("find the client `realm-management`"), e))?;
        let roles: Vec<Value> = kc
            .list_client_roles(realm, &rm)
            .map_err(|e| self.fail(&step("list the roles of `realm-management`"), e))?
            .into_iter()
            .filter(|r| {
                r.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| USER_MANAGEMENT_ROLES.contains(&n))
            })
            .map(|r| json!({"id": r.get("id"), "name": r.get("name")}))
            .collect();
        if roles.len() != USER_MANAGEMENT_ROLES.len() {
            return Err(ProvisionError::Fatal(step(&format!(
                "the client `realm-management` lacks some of the roles {USER_MANAGEMENT_ROLES:?}"
            ))));
        }
        kc.add_client_role_mappings(realm, &sa, &rm, &roles)
            .map_err(|e| self.fail(&step("map the user-management roles"), e))
    }

    /// A user-federation component by name and provider: created, or found (and in update
    /// mode replaced). Keycloak does not keep component names unique, so the lookup comes
    /// before the create and a retried create finds what a lost answer made.
    fn ensure_component(&self, realm: &str, rep: &Value, mode: Mode) -> Result<(), ProvisionError> {
        let name = rep["name"].as_str().unwrap_or("");
        let provider = rep["providerId"].as_str().unwrap_or("");
        let found = self
            .kc
            .list_components(realm, USER_STORAGE, Some(name))
            .map_err(|e| self.fail(&format!("find component `{name}` in `{realm}`"), e))?
            .into_iter()
            .find(|c| c["providerId"] == provider);
        match found.as_ref().and_then(object_id) {
            None => self
                .kc
                .create_component(realm, rep)
                .map(|_| ())
                .map_err(|e| self.fail(&format!("create component `{name}` in `{realm}`"), e)),
            Some(id) if mode == Mode::Update => {
                let mut r = rep.clone();
                r["id"] = Value::from(id.clone());
                self.kc
                    .update_component(realm, &id, &r)
                    .map_err(|e| self.fail(&format!("update component `{name}` in `{realm}`"), e))
            }
            Some(_) => Ok(()),
        }
    }

    /// Remove the identity providers and federation components this service made that the
    /// plan no longer names.
    fn prune_idps(
        &self,
        realm: &str,
        aliases: &[String],
        federations: &[String],
    ) -> Result<(), ProvisionError> {
        let kc = &*self.kc;
        let managed = |v: &Value| {
            let m = &v["config"][MANAGED];
            m == "true" || m.get(0).is_some_and(|x| x == "true")
        };
        for idp in kc
            .list_idps(realm)
            .map_err(|e| self.fail(&format!("list identity providers of `{realm}`"), e))?
        {
            let alias = idp["alias"].as_str().unwrap_or("");
            if managed(&idp) && !aliases.iter().any(|a| a == alias) {
                match kc.delete_idp(realm, alias) {
                    Ok(()) | Err(KeycloakError::NotFound(_)) => {}
                    Err(e) => {
                        return Err(self.fail(
                            &format!("remove identity provider `{alias}` from `{realm}`"),
                            e,
                        ));
                    }
                }
            }
        }
        for c in kc
            .list_components(realm, USER_STORAGE, None)
            .map_err(|e| self.fail(&format!("list components of `{realm}`"), e))?
        {
            let name = c["name"].as_str().unwrap_or("");
            if managed(&c) && !federations.iter().any(|f| f == name) {
                let id = object_id(&c).unwrap_or_default();
                match kc.delete_component(realm, &id) {
                    Ok(()) | Err(KeycloakError::NotFound(_)) => {}
                    Err(e) => {
                        return Err(
                            self.fail(&format!("remove component `{name}` from `{realm}`"), e)
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn apply(&self, t: &TenantRecord, plan: &Plan, mode: Mode) -> Result<(), ProvisionError> {
        let kc = &*self.kc;
        let realm = t.realm_name.as_str();

        // 1. The realm, marked as this installation's for this tenant. A realm of that name
        //    that is there already is taken on only when it carries that mark.
        let rep = marked_realm(&plan.realm, &self.installation, &t.id);
        match mode {
            Mode::Create => {
                let made =
                    self.created(|| format!("create realm `{realm}`"), kc.create_realm(&rep))?;
                if made.is_none() {
                    match self.existing_owner(t)? {
                        Some(RealmOwner::This) => {}
                        Some(RealmOwner::Other(why)) => return Err(self.not_ours(t, &why)),
                        // Deleted since the 409: the next attempt makes it.
                        None => {
                            return Err(ProvisionError::Transient(format!(
                                "realm `{realm}` went away while it was being made"
                            )));
                        }
                    }
                }
            }
            Mode::Update => match self.existing_owner(t)? {
                // Gone meanwhile (or never made): make it whole.
                None => return self.apply(t, plan, Mode::Create),
                Some(RealmOwner::Other(why)) => return Err(self.not_ours(t, &why)),
                Some(RealmOwner::This) => match kc.update_realm(realm, &rep) {
                    Ok(()) => {}
                    Err(KeycloakError::NotFound(_)) => return self.apply(t, plan, Mode::Create),
                    Err(e) => return Err(self.fail(&format!("update realm `{realm}`"), e)),
                },
            },
        }

        // 1b. The user profile (Keycloak 24 and later requires e-mail and names of every user by
        // default, and refuses a login until they are given): tenant users are made through the
        // API, often without them, and must be able to log in.
        match kc.user_profile(realm) {
            Ok(Some(mut profile)) => {
                if relax_user_profile(&mut profile) {
                    kc.update_user_profile(realm, &profile).map_err(|e| {
                        self.fail(&format!("update the user profile of `{realm}`"), e)
                    })?;
                }
            }
            Ok(None) => {}
            Err(e) => return Err(self.fail(&format!("read the user profile of `{realm}`"), e)),
        }

        // 2. Realm roles, then their ids (role policies name roles by id).
        for r in &plan.roles {
            let mut rep = with_template(r.template.as_ref(), json!({"name": r.name}));
            if let Some(d) = &r.description {
                rep["description"] = Value::from(d.clone());
            }
            let made = self.created(
                || format!("create role `{}` in `{realm}`", r.name),
                kc.create_role(realm, &rep),
            )?;
            if made.is_none() && mode == Mode::Update {
                kc.update_role(realm, &r.name, &rep)
                    .map_err(|e| self.fail(&format!("update role `{}` in `{realm}`", r.name), e))?;
            }
        }
        let role_ids: HashMap<String, String> = if plan.roles.is_empty() {
            HashMap::new()
        } else {
            kc.list_roles(realm)
                .map_err(|e| self.fail(&format!("list roles of `{realm}`"), e))?
                .iter()
                .filter_map(|r| {
                    Some((
                        r.get("name")?.as_str()?.to_string(),
                        r.get("id")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        };

        // 3. The backend client (confidential, the UMA resource server), whose service account
        //    manages the realm's users for the services (IAM creates its users through it).
        let backend = self.ensure_client(realm, &plan.backend_client, mode)?;
        self.grant_user_management(realm, &backend, &plan.backend_client)?;

        // 4. Authorization scopes.
        for s in &plan.scopes {
            self.created(
                || format!("create authorization scope `{s}` in `{realm}`"),
                kc.create_authz_scope(realm, &backend, &json!({"name": s})),
            )?;
        }

        // 5. Default resources.
        for res in &plan.resources {
            let mut rep = with_template(
                res.template.as_ref(),
                json!({
                    "name": res.name,
                    "ownerManagedAccess": false,
                    "scopes": res.scopes.iter().map(|s| json!({"name": s})).collect::<Vec<_>>(),
                }),
            );
            if !res.resource_type.is_empty() {
                rep["type"] = Value::from(res.resource_type.clone());
            }
            self.ensure_authz(
                "resource",
                &res.name,
                mode,
                || kc.create_resource(realm, &backend, &rep),
                || kc.find_resource(realm, &backend, &res.name),
                |id| {
                    let mut r = rep.clone();
                    r["_id"] = Value::from(id);
                    kc.update_resource(realm, &backend, id, &r)
                },
            )?;
        }

        // 6. Role policies, then one scope permission per granted scope.
        for r in &plan.roles {
            let Some(role_id) = role_ids.get(&r.name) else {
                return Err(ProvisionError::Transient(format!(
                    "keycloak server {}: role `{}` of realm `{realm}` is not listed",
                    self.server_id, r.name
                )));
            };
            let name = policy_name(&r.name);
            let rep = json!({
                "name": name,
                "description": format!("holders of the realm role `{}`", r.name),
                "type": "role",
                "logic": "POSITIVE",
                "decisionStrategy": "UNANIMOUS",
                "roles": [{"id": role_id, "required": false}],
            });
            self.ensure_authz(
                "role policy",
                &name,
                mode,
                || kc.create_role_policy(realm, &backend, &rep),
                || kc.find_policy(realm, &backend, &name),
                |id| {
                    let mut p = rep.clone();
                    p["id"] = Value::from(id);
                    kc.update_role_policy(realm, &backend, id, &p)
                },
            )?;
        }
        for (scope, roles) in grants(plan).values() {
            let name = permission_name(scope);
            let rep = json!({
                "name": name,
                "type": "scope",
                "logic": "POSITIVE",
                "decisionStrategy": "AFFIRMATIVE",
                "scopes": [scope],
                "policies": roles.iter().map(|r| policy_name(r)).collect::<Vec<_>>(),
            });
            self.ensure_authz(
                "scope permission",
                &name,
                mode,
                || kc.create_scope_permission(realm, &backend, &rep),
                || kc.find_policy(realm, &backend, &name),
                |id| {
                    let mut p = rep.clone();
                    p["id"] = Value::from(id);
                    kc.update_scope_permission(realm, &backend, id, &p)
                },
            )?;
        }

        // 7. The frontend client (public, the web UI).
        self.ensure_client(realm, &plan.frontend_client, mode)?;

        // 8. Identity providers: LDAP and Active Directory as user-federation components, the
        //    others as identity providers, each marked as this service's; an update removes the
        //    marked ones the plan no longer names (others, made by hand, stay).
        let (mut aliases, mut federations) = (Vec::new(), Vec::new());
        for idp in &plan.idps {
            if is_federation(idp) {
                let rep = federation_component(idp);
                federations.push(rep["name"].as_str().unwrap_or("").to_string());
                self.ensure_component(realm, &rep, mode)?;
                continue;
            }
            let mut rep = idp_representation(idp);
            if let Some(c) = rep.get_mut("config").and_then(Value::as_object_mut) {
                c.insert(MANAGED.into(), Value::from("true"));
            }
            let alias = rep["alias"].as_str().unwrap_or("").to_string();
            let made = self.created(
                || format!("create identity provider `{alias}` in `{realm}`"),
                kc.create_idp(realm, &rep),
            )?;
            if made.is_none() && mode == Mode::Update {
                kc.update_idp(realm, &alias, &rep).map_err(|e| {
                    self.fail(
                        &format!("update identity provider `{alias}` in `{realm}`"),
                        e,
                    )
                })?;
            }
            aliases.push(alias);
        }
        if mode == Mode::Update {
            self.prune_idps(realm, &aliases, &federations)?;
        }
        Ok(())
    }
}

impl Provisioner for KeycloakProvisioner {
    fn create(&self, t: &TenantRecord, plan: &Plan) -> Result<(), ProvisionError> {
        self.apply(t, plan, Mode::Create)
    }

    fn update(&self, t: &TenantRecord, plan: &Plan) -> Result<(), ProvisionError> {
        self.apply(t, plan, Mode::Update)
    }

    /// Removes the realm only when it carries this installation's mark for the tenant; any
    /// other realm of that name stays (reported in the log), and the tenant goes.
    fn delete(&self, t: &TenantRecord) -> Result<(), ProvisionError> {
        match self.existing_owner(t)? {
            None => return Ok(()),
            Some(RealmOwner::Other(why)) => {
                log::warn!(
                    "tenant `{}` deleted, its realm left in place: realm `{}` on keycloak server \
                     {} (`{}`) is not this tenant's: {why}",
                    t.id,
                    t.realm_name,
                    self.server_id,
                    self.kc.base_url()
                );
                return Ok(());
            }
            Some(RealmOwner::This) => {}
        }
        match self.kc.delete_realm(&t.realm_name) {
            Ok(()) | Err(KeycloakError::NotFound(_)) => Ok(()),
            Err(e) => Err(self.fail(&format!("delete realm `{}`", t.realm_name), e)),
        }
    }

    fn users(&self) -> Arc<dyn super::users::TenantUsers> {
        Arc::new(super::users::KeycloakUsers {
            kc: Arc::clone(&self.kc),
        })
    }

    fn realm_identity(&self, t: &TenantRecord) -> Result<Option<String>, ProvisionError> {
        match self.kc.get_realm(&t.realm_name) {
            Ok(rep) => Ok(Some(
                rep.get("id")
                    .and_then(Value::as_str)
                    .unwrap_or(&t.realm_name)
                    .to_string(),
            )),
            Err(KeycloakError::NotFound(_)) => Ok(None),
            Err(e) => Err(self.fail(&format!("read realm `{}`", t.realm_name), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::provision::PlannedRole;

    #[test]
    fn every_granted_scope_gets_one_permission_naming_all_its_roles() {
        let role = |n: &str, s: &[&str]| PlannedRole {
            name: n.into(),
            description: None,
            scopes: s.iter().map(|x| x.to_string()).collect(),
            template: None,
        };
        let plan = Plan {
            realm: json!({}),
            backend_client: json!({}),
            frontend_client: json!({}),
            scopes: vec!["a:read".into(), "b:read".into(), "c:read".into()],
            roles: vec![
                role("admin", &["a:read", "b:read"]),
                role("reader", &["b:read"]),
            ],
            resources: vec![],
            idps: vec![],
        };
        let g: Vec<_> = grants(&plan).into_values().collect();
        assert_eq!(
            g,
            vec![
                ("a:read".to_string(), vec!["admin".to_string()]),
                (
                    "b:read".to_string(),
                    vec!["admin".to_string(), "reader".to_string()]
                ),
            ]
        );
        assert_eq!(permission_name("a:read"), "a:read-permission");
        assert_eq!(policy_name("admin"), "admin-policy");
    }

    #[test]
    fn templates_fill_in_what_the_plan_does_not_decide() {
        let t = json!({"name": "other", "attributes": {"k": ["v"]}, "composite": false});
        let rep = with_template(Some(&t), json!({"name": "tenant-admin"}));
        assert_eq!(rep["name"], "tenant-admin");
        assert_eq!(rep["attributes"], json!({"k": ["v"]}));
        assert_eq!(
            with_template(None, json!({"name": "x"})),
            json!({"name": "x"})
        );
    }

    #[test]
    fn the_user_profile_keeps_its_attributes_and_drops_only_the_requirements() {
        let mut p = json!({"attributes": [
            {"name": "username", "required": {"roles": ["user"]}},
            {"name": "email", "required": {"roles": ["user"]}, "validations": {"email": {}}},
            {"name": "firstName", "required": {"roles": ["user"]}},
            {"name": "lastName"},
        ]});
        assert!(relax_user_profile(&mut p));
        assert_eq!(p["attributes"][0]["required"], json!({"roles": ["user"]}));
        assert!(p["attributes"][1].get("required").is_none());
        assert_eq!(p["attributes"][1]["validations"], json!({"email": {}}));
        assert!(p["attributes"][2].get("required").is_none());
        assert!(!relax_user_profile(&mut p), "a second pass changes nothing");
    }

    #[test]
    fn only_a_realm_with_this_installations_mark_for_the_tenant_is_ours() {
        let rep = marked_realm(
            &json!({"realm": "acme", "attributes": {"k": "v"}}),
            "inst-1",
            "acme",
        );
        assert_eq!(
            rep["attributes"]["k"], "v",
            "the template's attributes stay"
        );
        assert_eq!(realm_owner(&rep, "inst-1", "acme"), RealmOwner::This);
        let other = |r: &Value, i: &str, t: &str| match realm_owner(r, i, t) {
            RealmOwner::Other(why) => why,
            RealmOwner::This => panic!("{r} is not ours"),
        };
        assert!(other(&rep, "inst-1", "beta").contains("another tenant (`acme`)"));
        assert!(other(&rep, "inst-2", "acme").contains("another Tenant Manager installation"));
        assert!(other(&json!({"realm": "master"}), "inst-1", "master").contains("no mark"));
        assert!(
            other(
                &json!({"attributes": {MARK_TENANT: "acme"}}),
                "inst-1",
                "acme"
            )
            .contains("no mark")
        );
        assert_eq!(
            marked_realm(&Value::Null, "i", "t")["attributes"],
            json!({MARK_INSTALLATION: "i", MARK_TENANT: "t"})
        );
    }

    #[test]
    fn idps_take_keycloak_field_names() {
        let rep = idp_representation(&json!({"tenant_id": "acme", "alias": "google",
            "provider_id": "oidc", "config": {"clientId": "x"}}));
        assert_eq!(
            rep,
            json!({"alias": "google", "providerId": "oidc", "enabled": true,
                   "config": {"clientId": "x"}})
        );
    }
}
