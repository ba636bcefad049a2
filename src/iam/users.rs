//! Users and groups: the principals of a tenant. Users live under a path (the user directory)
//! that is part of their KRN; groups nest through `parentID` and their KRN path is the chain of
//! ancestor names, so a group's ancestors are read off its KRN.

use std::collections::HashMap;

use super::caller::Caller;
use super::err::{IamError, storage};
use super::model::*;
use super::service::*;
use super::state::Delta;
use crate::clock::now_ms;
use crate::policy::Krn;
use crate::storage::{
    GroupFilter, GroupRecord, GroupStore, Page, UserFilter, UserPatch, UserRecord, UserStore,
};

fn required_actions(v: Option<&Vec<String>>) -> Result<Option<String>, IamError> {
    match v {
        None => Ok(None),
        Some(list) => {
            if let Some(bad) = list.iter().find(|a| {
                a.is_empty()
                    || a.len() > 64
                    || !a.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            }) {
                return Err(IamError::invalid(format!(
                    "`requiredActions` entry `{bad}` must be an upper-case Keycloak action such as VERIFY_EMAIL"
                )));
            }
            Ok(Some(serde_json::Value::from(list.clone()).to_string()))
        }
    }
}

/// The Keycloak fields a patch changes, and the representation that puts them back.
fn keycloak_change(p: &UserPatch, before: &UserRecord) -> (serde_json::Value, serde_json::Value) {
    use serde_json::{Map, Value};
    let (mut change, mut undo) = (Map::new(), Map::new());
    let text = |v: &Option<String>| Value::from(v.clone().unwrap_or_default());
    if let Some(e) = &p.email {
        change.insert("email".into(), text(e));
        undo.insert("email".into(), text(&before.email));
    }
    if let Some(f) = &p.first_name {
        change.insert("firstName".into(), text(f));
        undo.insert("firstName".into(), text(&before.first_name));
    }
    if let Some(l) = &p.last_name {
        change.insert("lastName".into(), text(l));
        undo.insert("lastName".into(), text(&before.last_name));
    }
    if let Some(e) = p.enabled {
        change.insert("enabled".into(), Value::Bool(e));
        undo.insert("enabled".into(), Value::Bool(before.enabled));
    }
    if let Some(r) = &p.required_actions {
        let list =
            |s: &str| serde_json::from_str::<Value>(s).unwrap_or_else(|_| Value::Array(vec![]));
        change.insert("requiredActions".into(), list(r));
        undo.insert("requiredActions".into(), list(&before.required_actions));
    }
    (Value::Object(change), Value::Object(undo))
}

/// A random (version 4) UUID, as Keycloak makes its user ids.
fn random_uuid() -> Result<String, IamError> {
    let mut b = [0u8; 16];
    openssl::rand::rand_bytes(&mut b)
        .map_err(|e| IamError::Internal(format!("no random bytes for a user id: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

impl Iam {
    // ------------------------------------------------------------ users

    pub fn create_user(&self, caller: &Caller, b: UserCreate) -> Result<UserRecord, IamError> {
        let tenant = self.tenant_for(caller, b.tenant_id.as_deref())?;
        let mut errors = Vec::new();
        let by_id = b.keycloak_id_as_username;
        let mut username = b.username.clone().unwrap_or_default();
        if by_id {
            if !username.is_empty() {
                errors.push(format!(
                    "`username` `{username}` cannot be sent with `keycloakIDAsUsername`: the username is the Keycloak user id"
                ));
            }
            if b.email.as_deref().is_none_or(str::is_empty) {
                errors.push("`email` is required when `keycloakIDAsUsername` is true".into());
            }
            // Where the tenant has a realm, Keycloak's id replaces it below.
            username = random_uuid()?;
        } else if username.is_empty() {
            errors.push("`username` is required".to_string());
        } else if !valid_token(&username) {
            errors.push(format!(
                "`username` `{username}` may only hold letters, digits and - _ @ . + (at most 128)"
            ));
        }
        if let Some(e) = &b.email
            && !valid_email(e)
        {
            errors.push(format!("`email` `{e}` is not an e-mail address"));
        }
        match (&b.password, &b.confirm_password) {
            (None, _) => errors.push("`password` is required".into()),
            (Some(p), _) if p.chars().count() < 8 => {
                errors.push("`password` must have at least 8 characters".into())
            }
            (Some(p), _) if p.chars().count() > 256 => {
                errors.push("`password` must have at most 256 characters".into())
            }
            (Some(p), Some(c)) if p != c => {
                errors.push("`confirmPassword` does not match `password`".into())
            }
            (Some(_), None) => errors.push("`confirmPassword` is required".into()),
            _ => {}
        }
        for (field, v) in [("firstName", &b.first_name), ("lastName", &b.last_name)] {
            if v.as_deref().is_some_and(|s| s.chars().count() > 255) {
                errors.push(format!("`{field}` is longer than 255 characters"));
            }
        }
        if b.send_verify_email && b.email.is_none() {
            errors.push("`sendVerifyEmail` needs an `email`".into());
        }
        if let Some(u) = &b.redirect_uri
            && (!(u.starts_with("http://") || u.starts_with("https://"))
                || u.len() > 2048
                || u.chars().any(char::is_whitespace))
        {
            errors.push(format!("`redirectUri` `{u}` must be an http(s) URL"));
        }
        if !errors.is_empty() {
            return Err(IamError::Invalid("invalid user".into(), errors));
        }
        let (path, segs) = parse_path("path", b.path.as_deref())?;
        let mut user_krn = entity_krn(&tenant, "user", &segs, &username)?;
        self.authorize(caller, "iam:user:create", &user_krn)?;
        let groups = ids(&b.groups, "groups", "group", &tenant)?;
        let policies = ids(&b.policy_ids, "policyIDs", "policy", &tenant)?;
        let pools = ids(&b.pool_ids, "poolIDs", "pool", &tenant)?;
        self.authorize_pool_change(caller, &[], &pools)?;
        for g in &groups {
            self.authorize(
                caller,
                "iam:group:user:add",
                &Krn::parse(g).map_err(|e| IamError::invalid(e.to_string()))?,
            )?;
        }
        for p in &policies {
            self.authorize(
                caller,
                "iam:policy:user:attach",
                &Krn::parse(p).map_err(|e| IamError::invalid(e.to_string()))?,
            )?;
        }
        let mut actions = b.required_actions.clone().unwrap_or_default();
        if b.send_verify_email && !actions.iter().any(|a| a == "VERIFY_EMAIL") {
            actions.push("VERIFY_EMAIL".into());
        }
        let required = required_actions(Some(&actions))?.unwrap_or_else(|| "[]".into());
        let password = b.password.as_deref().unwrap_or("");
        let enabled = b.enabled.unwrap_or(true);
        // Keycloak first: its user exists before IAM's refers to it, and goes again if IAM's
        // cannot be stored.
        let realm = match self.realm_users.get() {
            Some(r) => r.realm(&tenant)?,
            None => None,
        };
        // With `keycloakIDAsUsername` Keycloak's username is the e-mail (the login name the
        // user knows) and IAM's is Keycloak's id.
        let kc_username = match (by_id, b.email.as_deref()) {
            (true, Some(e)) => e.to_lowercase(),
            _ => username.clone(),
        };
        let auth_id = match &realm {
            Some(r) => Some(r.create(&super::realm_users::NewRealmUser {
                username: &kc_username,
                email: b.email.as_deref(),
                first_name: b.first_name.as_deref(),
                last_name: b.last_name.as_deref(),
                enabled,
                password,
                required_actions: actions.clone(),
                verify_email_redirect: b.redirect_uri.as_deref(),
                send_verify_email: b.send_verify_email,
            })?),
            None => None,
        };
        if let (true, Some(r), Some(id)) = (by_id, &realm, &auth_id) {
            let named = entity_krn(&tenant, "user", &segs, id)
                .and_then(|k| self.authorize(caller, "iam:user:create", &k).map(|()| k));
            match named {
                Ok(k) => {
                    user_krn = k;
                    username = id.clone();
                }
                Err(e) => {
                    r.remove_quietly(id);
                    return Err(e);
                }
            }
        }
        let password_hash = match auth_id {
            // Keycloak keeps the credential.
            Some(_) => None,
            None => Some(hash_password(password)?),
        };
        let now = now_ms();
        let rec = UserRecord {
            tenant: tenant.clone(),
            krn: user_krn.as_str().to_string(),
            username: username.clone(),
            path,
            email: b.email.clone(),
            first_name: b.first_name.clone(),
            last_name: b.last_name.clone(),
            enabled,
            auth_id: auth_id.clone(),
            password_hash,
            metadata: metadata(b.metadata.as_ref())?,
            required_actions: required,
            version: 1,
            created_ms: now,
            updated_ms: now,
            pools: pools.clone(),
        };
        let out = self
            .db
            .insert_user(&rec, &groups, &policies)
            .inspect_err(|_| {
                if let (Some(r), Some(id)) = (&realm, &auth_id) {
                    r.remove_quietly(id);
                }
            })
            .map_err(|e| {
                let mut named: Vec<(&str, &str)> =
                    groups.iter().map(|g| ("group", g.as_str())).collect();
                named.extend(policies.iter().map(|p| ("policy", p.as_str())));
                named.extend(pools.iter().map(|p| ("pool", p.as_str())));
                self.reference_error(
                    &tenant,
                    e,
                    "a group in `groups`, a policy in `policyIDs` or a pool in `poolIDs` does not exist",
                    &named,
                    |other| match other {
                        crate::storage::StorageError::Conflict(_) => IamError::Conflict(format!(
                            "a user with username `{username}`{} already exists",
                            b.email
                                .as_deref()
                                .map(|e| format!(" or e-mail `{e}`"))
                                .unwrap_or_default()
                        )),
                        other => IamError::Storage(other),
                    },
                )
            })?;
        self.committed_with(
            &tenant,
            &Delta {
                users: vec![out.krn.clone()],
                policies: policies.clone(),
                user_states: vec![(out.krn.clone(), out.enabled)],
                user_metadata: vec![(out.krn.clone(), out.metadata.clone())],
                ..Delta::default()
            },
        );
        Ok(out)
    }

    /// The Keycloak realm and user id behind an IAM user, with its record (None: a local user,
    /// or users are not Keycloak's).
    fn realm_user_of(
        &self,
        tenant: &str,
        krn: &str,
    ) -> Result<Option<(super::realm_users::TenantRealm, String, UserRecord)>, IamError> {
        let Some(users) = self.realm_users.get() else {
            return Ok(None);
        };
        let rec = self
            .db
            .get_user(tenant, krn)
            .map_err(|e| storage(e, "user", krn))?;
        let Some(id) = rec.auth_id.clone() else {
            return Ok(None);
        };
        Ok(users.realm(tenant)?.map(|r| (r, id, rec)))
    }

    /// The caller's own user record: every authenticated caller may read itself.
    pub fn me(&self, caller: &Caller) -> Result<UserRecord, IamError> {
        let Some(p) = &caller.principal else {
            return Err(IamError::NotFound("the caller is not an IAM user".into()));
        };
        self.db.get_user(p.tenant(), p.as_str()).map_err(|e| match e {
            crate::storage::StorageError::NotFound => IamError::NotFound(format!(
                "`{p}` has no IAM user record (a Keycloak user or service account not registered in IAM)"
            )),
            other => IamError::Storage(other),
        })
    }

    pub fn get_user(&self, caller: &Caller, id: &str) -> Result<UserRecord, IamError> {
        let k = path_id(id, "user", caller)?;
        self.authorize(caller, "iam:user:read", &k)?;
        self.db
            .get_user(k.tenant(), k.as_str())
            .map_err(|e| storage(e, "user", k.as_str()))
    }

    pub fn list_users(
        &self,
        caller: &Caller,
        m: &HashMap<String, String>,
    ) -> Result<(Vec<UserRecord>, u64, Page), IamError> {
        let tenant = self.tenant_for(caller, q(m, "tenantID"))?;
        let all = collection(&tenant, "user")?;
        self.authorize(caller, "iam:user:read", &all)?;
        let page = self.page(q(m, "page"), q(m, "pageSize"))?;
        let sort = q(m, "sort").unwrap_or("username");
        if !["username", "email", "created", "updated", "path"].contains(&sort) {
            return Err(IamError::invalid(format!(
                "`sort` must be one of username, email, path, created, updated, got `{sort}`"
            )));
        }
        let filter = UserFilter {
            tenant,
            krn: krn_filter(m)?,
            username: m.get("username").cloned(),
            email: m.get("email").cloned(),
            path_prefix: m.get("path").cloned(),
            first_name: m.get("firstName").cloned(),
            last_name: m.get("lastName").cloned(),
            search: m.get("search").cloned(),
            sort: sort.to_string(),
            order: sort_order(q(m, "sortOrder"))?,
        };
        let (items, count) = self.db.list_users(&filter, page)?;
        Ok((items, count, page))
    }

    pub fn update_user(
        &self,
        caller: &Caller,
        id: &str,
        b: UserUpdate,
        if_match: Option<i64>,
    ) -> Result<UserRecord, IamError> {
        let k = path_id(id, "user", caller)?;
        self.authorize(caller, "iam:user:update", &k)?;
        if b.has_read_only() {
            let cur = self
                .db
                .get_user(k.tenant(), k.as_str())
                .map_err(|e| storage(e, "user", k.as_str()))?;
            b.check_read_only(&view_json(&UserView::from(&cur)))?;
        }
        if let Some(Some(e)) = &b.email
            && !valid_email(e)
        {
            return Err(IamError::invalid(format!(
                "`email` `{e}` is not an e-mail address"
            )));
        }
        let patch = UserPatch {
            email: b.email.clone(),
            first_name: b.first_name.clone(),
            last_name: b.last_name.clone(),
            enabled: b.enabled,
            auth_id: None,
            metadata: match &b.metadata {
                Some(v) => Some(metadata(Some(v))?),
                None => None,
            },
            required_actions: required_actions(b.required_actions.as_ref())?,
            pools: self.pools_change(caller, &k, b.pool_ids.as_deref())?,
        };
        let expected = version_of(b.version, if_match)?;
        // A Keycloak user gets the change first; if IAM's record cannot take it, Keycloak's is
        // put back as it was.
        let kc = self.realm_user_of(k.tenant(), k.as_str())?;
        let undo = match &kc {
            Some((realm, id, before)) => {
                if let Some(v) = expected
                    && v != before.version
                {
                    return Err(storage(
                        crate::storage::StorageError::Stale,
                        "user",
                        k.as_str(),
                    ));
                }
                let (change, undo) = keycloak_change(&patch, before);
                if change.as_object().is_some_and(|m| !m.is_empty()) {
                    realm.update(id, &change)?;
                    Some(undo)
                } else {
                    None
                }
            }
            None => None,
        };
        let out = self
            .db
            .update_user(k.tenant(), k.as_str(), &patch, expected, now_ms())
            .map_err(|e| {
                if let (Some((realm, id, _)), Some(undo)) = (&kc, &undo)
                    && let Err(u) = realm.update(id, undo)
                {
                    log::warn!("keycloak: user `{id}` keeps a change IAM refused: {u}");
                }
                let pools = patch.pools.as_deref().unwrap_or(&[]);
                self.pool_error(k.tenant(), e, pools, |e| match e {
                    crate::storage::StorageError::Conflict(_) => {
                        IamError::Conflict("another user has this e-mail".into())
                    }
                    other => storage(other, "user", k.as_str()),
                })
            })?;
        // Its enabled state and its pools matter to decisions.
        self.committed_with(
            k.tenant(),
            &Delta {
                user_states: vec![(out.krn.clone(), out.enabled)],
                user_metadata: vec![(out.krn.clone(), out.metadata.clone())],
                users: if patch.pools.is_some() {
                    vec![out.krn.clone()]
                } else {
                    Vec::new()
                },
                ..Delta::default()
            },
        );
        Ok(out)
    }

    /// Delete users (all or none).
    pub fn delete_users(&self, caller: &Caller, krns: &[Krn]) -> Result<(), IamError> {
        let Some(first) = krns.first() else {
            return Err(IamError::invalid("name at least one user"));
        };
        let tenant = first.tenant().to_string();
        for k in krns {
            self.authorize(caller, "iam:user:delete", k)?;
        }
        let list: Vec<String> = krns.iter().map(|k| k.as_str().to_string()).collect();
        // Keycloak's users go first (one gone already counts as deleted), so that no login is
        // left whose IAM user is gone; a failure leaves every IAM user in place for a retry.
        if self.realm_users.get().is_some() {
            let mut found = Vec::new();
            for k in &list {
                match self.realm_user_of(&tenant, k) {
                    Ok(Some(x)) => found.push(x),
                    Ok(None) => {}
                    Err(IamError::NotFound(_)) => {
                        return Err(IamError::NotFound(format!("user `{k}` not found")));
                    }
                    Err(e) => return Err(e),
                }
            }
            for (realm, id, _) in &found {
                realm.delete(id)?;
            }
        }
        self.db.delete_users(&tenant, &list).map_err(|e| {
            let named: Vec<(&str, &str)> = list.iter().map(|k| ("user", k.as_str())).collect();
            self.write_error(&tenant, e, &named)
        })?;
        self.committed(&tenant);
        Ok(())
    }

    /// Parse `{"userIDs": [...]}` of a bulk delete in the caller's tenant.
    pub fn user_ids(
        &self,
        caller: &Caller,
        list: &[String],
        tenant: Option<&str>,
    ) -> Result<Vec<Krn>, IamError> {
        let tenant = self.tenant_for(caller, tenant)?;
        ids(list, "userIDs", "user", &tenant)?
            .iter()
            .map(|s| Krn::parse(s).map_err(|e| IamError::invalid(e.to_string())))
            .collect()
    }

    // ------------------------------------------------------------ groups

    pub fn create_group(&self, caller: &Caller, b: GroupCreate) -> Result<GroupRecord, IamError> {
        let tenant = self.tenant_for(caller, b.tenant_id.as_deref())?;
        if !valid_token(&b.name) {
            return Err(IamError::invalid(format!(
                "`name` `{}` may only hold letters, digits and - _ @ . + (1 to 128)",
                b.name
            )));
        }
        if b.display_name
            .as_deref()
            .is_some_and(|d| d.chars().count() > 255)
        {
            return Err(IamError::invalid(
                "`displayName` is longer than 255 characters",
            ));
        }
        let (parent, segs) = match &b.parent_id {
            None => (None, Vec::new()),
            Some(pid) => {
                let pk = path_id(pid, "group", caller).map_err(|_| {
                    IamError::invalid(format!("`parentID` `{pid}` is not a group id"))
                })?;
                if pk.tenant() != tenant {
                    return Err(IamError::invalid(
                        "`parentID` names a group of another tenant",
                    ));
                }
                let mut segs: Vec<String> = pk.path().iter().map(|s| s.to_string()).collect();
                segs.push(pk.id().to_string());
                if segs.len() >= 16 {
                    return Err(IamError::invalid("groups nest at most 16 levels deep"));
                }
                (Some(pk), segs)
            }
        };
        let gk = entity_krn(&tenant, "group", &segs, &b.name)?;
        self.authorize(caller, "iam:group:create", &gk)?;
        let pools = ids(&b.pool_ids, "poolIDs", "pool", &tenant)?;
        self.authorize_pool_change(caller, &[], &pools)?;
        let now = now_ms();
        let path = if segs.is_empty() {
            "/".to_string()
        } else {
            format!("/{}", segs.join("/"))
        };
        let rec = GroupRecord {
            tenant: tenant.clone(),
            krn: gk.as_str().to_string(),
            name: b.name.clone(),
            display_name: b.display_name.clone(),
            parent_krn: parent.map(|p| p.as_str().to_string()),
            path,
            metadata: metadata(b.metadata.as_ref())?,
            version: 1,
            created_ms: now,
            updated_ms: now,
            pools: pools.clone(),
        };
        let out = self.db.insert_group(&rec).map_err(|e| {
            let parent = rec.parent_krn.as_deref().unwrap_or("");
            let mut named = vec![("group", parent)];
            named.extend(pools.iter().map(|p| ("pool", p.as_str())));
            self.reference_error(
                &tenant,
                e,
                "`parentID` names a group, or `poolIDs` a pool, that does not exist",
                &named,
                |other| storage(other, "group", gk.as_str()),
            )
        })?;
        self.committed(&tenant);
        Ok(out)
    }

    pub fn get_group(&self, caller: &Caller, id: &str) -> Result<GroupRecord, IamError> {
        let k = path_id(id, "group", caller)?;
        self.authorize(caller, "iam:group:read", &k)?;
        self.db
            .get_group(k.tenant(), k.as_str())
            .map_err(|e| storage(e, "group", k.as_str()))
    }

    pub fn list_groups(
        &self,
        caller: &Caller,
        m: &HashMap<String, String>,
    ) -> Result<(Vec<GroupRecord>, u64, Page), IamError> {
        let tenant = self.tenant_for(caller, q(m, "tenantID"))?;
        let all = collection(&tenant, "group")?;
        self.authorize(caller, "iam:group:read", &all)?;
        let page = self.page(q(m, "page"), q(m, "pageSize"))?;
        let sort = q(m, "sort").unwrap_or("path");
        if !["name", "path", "created", "updated"].contains(&sort) {
            return Err(IamError::invalid(format!(
                "`sort` must be one of name, path, created, updated, got `{sort}`"
            )));
        }
        let parent = match q(m, "parentID") {
            None => None,
            Some("") | Some("none") => Some(None),
            Some(pid) => Some(Some(
                path_id(pid, "group", caller)
                    .map_err(|_| {
                        IamError::invalid(format!("`parentID` `{pid}` is not a group id"))
                    })?
                    .as_str()
                    .to_string(),
            )),
        };
        let filter = GroupFilter {
            tenant,
            krn: krn_filter(m)?,
            name: m.get("name").cloned(),
            display_name: m.get("displayName").cloned(),
            path_prefix: m.get("path").cloned(),
            parent,
            sort: sort.to_string(),
            order: sort_order(q(m, "sortOrder"))?,
        };
        let (items, count) = self.db.list_groups(&filter, page)?;
        Ok((items, count, page))
    }

    pub fn update_group(
        &self,
        caller: &Caller,
        id: &str,
        b: GroupUpdate,
        if_match: Option<i64>,
    ) -> Result<GroupRecord, IamError> {
        let k = path_id(id, "group", caller)?;
        self.authorize(caller, "iam:group:update", &k)?;
        if b.has_read_only() {
            let cur = self
                .db
                .get_group(k.tenant(), k.as_str())
                .map_err(|e| storage(e, "group", k.as_str()))?;
            b.check_read_only(&view_json(&GroupView::from(&cur)))?;
        }
        let metadata = match &b.metadata {
            Some(v) => Some(metadata(Some(v))?),
            None => None,
        };
        let expected = version_of(b.version, if_match)?;
        let pools = self.pools_change(caller, &k, b.pool_ids.as_deref())?;
        let out = self
            .db
            .update_group(
                k.tenant(),
                k.as_str(),
                b.display_name,
                metadata,
                pools.clone(),
                expected,
                now_ms(),
            )
            .map_err(|e| {
                self.pool_error(k.tenant(), e, pools.as_deref().unwrap_or(&[]), |e| {
                    storage(e, "group", k.as_str())
                })
            })?;
        self.committed(k.tenant());
        Ok(out)
    }

    /// Delete groups (all or none); a group with subgroups is refused with 409.
    pub fn delete_groups(&self, caller: &Caller, krns: &[Krn]) -> Result<(), IamError> {
        let Some(first) = krns.first() else {
            return Err(IamError::invalid("name at least one group"));
        };
        let tenant = first.tenant().to_string();
        for k in krns {
            self.authorize(caller, "iam:group:delete", k)?;
        }
        let list: Vec<String> = krns.iter().map(|k| k.as_str().to_string()).collect();
        self.db.delete_groups(&tenant, &list).map_err(|e| match e {
            crate::storage::StorageError::Conflict(_) => IamError::Conflict(
                "a group that still has subgroups cannot be deleted: delete or move its subgroups first"
                    .into(),
            ),
            other => {
                let named: Vec<(&str, &str)> =
                    list.iter().map(|k| ("group", k.as_str())).collect();
                self.write_error(&tenant, other, &named)
            }
        })?;
        self.committed(&tenant);
        Ok(())
    }

    pub fn group_ids(
        &self,
        caller: &Caller,
        list: &[String],
        tenant: Option<&str>,
    ) -> Result<Vec<Krn>, IamError> {
        let tenant = self.tenant_for(caller, tenant)?;
        ids(list, "groupIDs", "group", &tenant)?
            .iter()
            .map(|s| Krn::parse(s).map_err(|e| IamError::invalid(e.to_string())))
            .collect()
    }

    pub fn set_members(
        &self,
        caller: &Caller,
        group_id: &str,
        user_ids: &[String],
        add: bool,
    ) -> Result<(), IamError> {
        let g = path_id(group_id, "group", caller)?;
        let users = ids(user_ids, "userIDs", "user", g.tenant())?;
        if users.is_empty() {
            return Err(IamError::invalid("`userIDs` must name at least one user"));
        }
        let action = if add {
            "iam:group:user:add"
        } else {
            "iam:group:user:remove"
        };
        self.authorize(caller, action, &g)?;
        let r = if add {
            self.db.add_members(g.tenant(), g.as_str(), &users)
        } else {
            self.db.remove_members(g.tenant(), g.as_str(), &users)
        };
        r.map_err(|e| {
            let mut named = vec![("group", g.as_str())];
            named.extend(users.iter().map(|u| ("user", u.as_str())));
            self.write_error(g.tenant(), e, &named)
        })?;
        self.committed_with(
            g.tenant(),
            &Delta {
                users: users.clone(),
                ..Delta::default()
            },
        );
        Ok(())
    }

    /// `POST /users/{id}/groups/add`: the user joins every named group, or none.
    pub fn join_groups(
        &self,
        caller: &Caller,
        user_id: &str,
        group_ids: &[String],
    ) -> Result<(), IamError> {
        let u = path_id(user_id, "user", caller)?;
        let groups = ids(group_ids, "groupIDs", "group", u.tenant())?;
        if groups.is_empty() {
            return Err(IamError::invalid("`groupIDs` must name at least one group"));
        }
        for g in &groups {
            let gk = Krn::parse(g).map_err(|e| IamError::invalid(e.to_string()))?;
            self.authorize(caller, "iam:group:user:add", &gk)?;
        }
        self.db
            .join_groups(u.tenant(), u.as_str(), &groups)
            .map_err(|e| {
                let mut named = vec![("user", u.as_str())];
                named.extend(groups.iter().map(|g| ("group", g.as_str())));
                self.write_error(u.tenant(), e, &named)
            })?;
        self.committed_with(
            u.tenant(),
            &Delta {
                users: vec![u.as_str().to_string()],
                ..Delta::default()
            },
        );
        Ok(())
    }

    pub fn members(
        &self,
        caller: &Caller,
        group_id: &str,
        m: &HashMap<String, String>,
    ) -> Result<(Vec<UserRecord>, u64, Page), IamError> {
        let g = path_id(group_id, "group", caller)?;
        self.authorize(caller, "iam:group:read", &g)?;
        let page = self.page(q(m, "page"), q(m, "pageSize"))?;
        let (items, count) = self
            .db
            .list_members(g.tenant(), g.as_str(), page)
            .map_err(|e| storage(e, "group", g.as_str()))?;
        Ok((items, count, page))
    }

    pub fn groups_of_user(
        &self,
        caller: &Caller,
        user_id: &str,
        m: &HashMap<String, String>,
    ) -> Result<(Vec<GroupRecord>, u64, Page), IamError> {
        let u = path_id(user_id, "user", caller)?;
        self.authorize(caller, "iam:user:read", &u)?;
        let page = self.page(q(m, "page"), q(m, "pageSize"))?;
        let (items, count) = self
            .db
            .groups_of_user(u.tenant(), u.as_str(), page)
            .map_err(|e| storage(e, "user", u.as_str()))?;
        Ok((items, count, page))
    }
}
