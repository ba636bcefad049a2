//! The Tenant Manager's `/api/v1` surface in Kaa's v1 style: snake_case JSON, lists as
//! `{"count", "results"}` with `offset`/`limit` (default 50, `0` = all), errors as
//! `{"error", "details"}` (written by `http::error` in the Tenant Manager's style).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::auth::Authenticator;
use super::error::ApiError;
use super::message::{Request, Response};
use super::ops::{HasOps, Ops, ops_routes};
use super::realm_auth::{RealmAuths, token_issuer};
use super::router::{Params, Router};
use crate::clients::uma::UmaClient;
use crate::clock::rfc3339_ms;
use crate::config::Config;
use crate::storage::{
    Change, KeycloakServerRecord, KeycloakServerStore, StorageError, TenantRecord,
};
use crate::tenants::catalog::{KINDS, Kind};
use crate::tenants::err::{TmError, storage};
use crate::tenants::service::Tm;
use crate::tenants::service::paging;
use crate::tenants::users::changed_fields;
use crate::tenants::worker::Signal;

type R = Result<Response, ApiError>;

/// Everything a Tenant Manager handler can reach.
pub struct TenantCtx {
    pub ops: Arc<Ops>,
    pub config: Arc<Config>,
    pub tm: Arc<Tm>,
    /// Wakes the workers and the outbox publisher after a write.
    pub signal: Arc<Signal>,
    /// Token and scope checks (security on): tokens of the system realm, scopes of
    /// `kaa-system` decided by Keycloak.
    pub auth: Option<TmAuth>,
}

pub struct TmAuth {
    pub tokens: Authenticator,
    pub scopes: UmaClient,
    /// The system realm's issuer (`security.issuer.public-url`).
    pub issuer: String,
    /// Tenant realms' tokens, accepted by `GET /audit` only (a tenant's administrator).
    pub realms: RealmAuths,
}

impl HasOps for TenantCtx {
    fn ops(&self) -> &Ops {
        &self.ops
    }
}

/// The caller must hold `scope` on `kaa-system` (security on); every endpoint but the public
/// config and the operational routes calls this first. The writes that follow are audited as
/// this caller's (`anonymous` with security off).
fn guard(c: &TenantCtx, req: &Request, scope: &str) -> Result<(), ApiError> {
    let system = &c.tm.settings.system_tenant;
    let Some(auth) = &c.auth else {
        crate::storage::audit::identify(None, None, system);
        return Ok(());
    };
    let token = crate::http::auth::Authenticator::bearer(req)?;
    let identity = auth.tokens.verify(token)?;
    identify(system, &identity);
    match auth.scopes.allowed(token, scope) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::forbidden(format!(
            "scope `{scope}` on `kaa-system` is required"
        ))),
        Err(e) => {
            log::warn!("auth: {e}");
            Err(ApiError::unavailable(
                "cannot decide scopes right now: Keycloak is unavailable",
            ))
        }
    }
}

/// Who the audit trail names for the rest of the request: the principal KRN of the token's user
/// in its tenant (`krn:iam:<tenant>::user/<preferred_username>`), else its subject.
fn identify(tenant: &str, identity: &crate::iam::caller::Identity) {
    let principal = identity
        .username
        .as_deref()
        .filter(|u| !u.is_empty())
        .map(|u| format!("krn:iam:{tenant}::user/{u}"));
    crate::storage::audit::identify(principal, Some(identity.subject.clone()), tenant);
}

fn query(req: &Request) -> HashMap<String, String> {
    req.query_map()
}

fn json_body(req: &Request) -> Result<Value, ApiError> {
    let v: Value = super::json::body(req)?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(v)
}

/// A tenant as lists and reads show it: never its backend client's secret (only the security
/// context carries that).
pub fn tenant_view(t: &TenantRecord) -> Value {
    json!({
        "id": t.id,
        "realm_name": t.realm_name,
        "display_name": t.display_name,
        "client_frontend_id": t.client_frontend_id,
        "client_backend_id": t.client_backend_id,
        "realm_template_version": t.realm_template_version,
        "realm_scopes_version": t.realm_scopes_version,
        "client_backend_version": t.client_backend_version,
        "client_frontend_version": t.client_frontend_version,
        "roles_version": t.roles_version,
        "resources_version": t.resources_version,
        "keycloak_server_id": t.keycloak_server_id,
        "moving_to_keycloak_server_id": t.move_to,
        "opendistro_enabled": t.opendistro_enabled,
        "subscription_type": t.subscription_type,
        "status": t.status,
        "failure_reason": t.failure_reason,
        "version": t.version,
        "created": rfc3339_ms(t.created_ms),
        "updated": rfc3339_ms(t.updated_ms),
    })
}

fn server_view(s: &KeycloakServerRecord) -> Value {
    json!({
        "id": s.id,
        "url": s.url,
        "admin_realm": s.admin_realm,
        "username": s.username,
        "client_id": s.client_id,
        "password_set": s.password.is_some(),
        "client_secret_set": s.client_secret.is_some(),
        "is_default": s.is_default,
        "created": rfc3339_ms(s.created_ms),
        "updated": rfc3339_ms(s.updated_ms),
    })
}

/// A `{count, results}` page of an in-memory list.
fn page_of(items: Vec<Value>, q: &HashMap<String, String>) -> Result<Response, ApiError> {
    let (offset, limit) = paging(q)?;
    let count = items.len();
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let results: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX)))
        .collect();
    Ok(Response::json(
        200,
        &json!({ "count": count, "results": results }),
    ))
}

// ---------------------------------------------------------------- tenants

fn list_tenants(c: &TenantCtx, req: &Request, _: &Params) -> R {
    guard(c, req, "kaa:tenant:read")?;
    let (items, count) = c.tm.list_tenants(&query(req))?;
    let results: Vec<Value> = items.iter().map(tenant_view).collect();
    Ok(Response::json(
        200,
        &json!({ "count": count, "results": results }),
    ))
}

fn create_tenant(c: &TenantCtx, req: &Request, _: &Params) -> R {
    guard(c, req, "kaa:tenant:create")?;
    let t = c.tm.create_tenant(&json_body(req)?)?;
    c.signal.notify();
    Ok(Response::json(202, &tenant_view(&t))
        .with_header("Location", &format!("/api/v1/tenants/{}", t.id)))
}

fn get_tenant(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:read")?;
    Ok(Response::json(
        200,
        &tenant_view(&c.tm.get_tenant(p.req("id"))?),
    ))
}

fn update_tenant(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:update")?;
    let im = req.if_match().map_err(ApiError::bad_request)?;
    let t =
        c.tm.update_tenant(p.req("id"), &json_body(req)?, im)
            .map_err(|e| ApiError::tm(e, im.is_some()))?;
    c.signal.notify();
    let status = if t.status == crate::tenants::service::UPDATING
        || t.status == crate::tenants::service::MOVING
    {
        202
    } else {
        200
    };
    Ok(Response::json(status, &tenant_view(&t)))
}

fn delete_tenant(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:delete")?;
    let t = c.tm.delete_tenant(p.req("id"))?;
    c.signal.notify();
    Ok(Response::json(202, &tenant_view(&t)))
}

fn retry_tenant(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:update")?;
    let t = c.tm.retry_tenant(p.req("id"))?;
    c.signal.notify();
    Ok(Response::json(202, &tenant_view(&t)))
}

fn security_context(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:read")?;
    Ok(Response::json(200, &c.tm.security_context(p.req("id"))?))
}

// ---------------------------------------------------------------- tenant users

fn list_tenant_users(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:tenant-user:read")?;
    let q = query(req);
    let (offset, limit) = paging(&q)?;
    let (t, users, roles) = c.tm.tenant_users(p.req("id"))?;
    let username = q
        .get("username")
        .map(String::as_str)
        .filter(|u| !u.is_empty());
    let (count, list) = users.list(&t.realm_name, &roles, username, offset, limit)?;
    let results: Vec<Value> = list.iter().map(|u| u.view(&t.id)).collect();
    Ok(Response::json(
        200,
        &json!({"count": count, "results": results}),
    ))
}

fn create_tenant_user(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:tenant-user:create")?;
    let body = json_body(req)?;
    let (t, users, roles) = c.tm.tenant_users(p.req("id"))?;
    let input = crate::tenants::users::parse_input(&body, true, &roles)?;
    let u = c.tm.with_event(
        &t.id,
        || users.create(&t.realm_name, &roles, &input),
        |u| user_change(&t.id, "create", u, changed_fields(None, u, &input)),
    )?;
    c.signal.notify();
    Ok(Response::json(201, &u.view(&t.id)).with_header(
        "Location",
        &format!("/api/v1/tenants/{}/users/{}", t.id, u.id),
    ))
}

fn get_tenant_user(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:tenant-user:read")?;
    let (t, users, roles) = c.tm.tenant_users(p.req("id"))?;
    let u = users.get(&t.realm_name, &roles, p.req("user_id"))?;
    Ok(Response::json(200, &u.view(&t.id)))
}

fn update_tenant_user(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:tenant-user:update")?;
    let body = json_body(req)?;
    let (t, users, roles) = c.tm.tenant_users(p.req("id"))?;
    let input = crate::tenants::users::parse_input(&body, false, &roles)?;
    let before = users.get(&t.realm_name, &roles, p.req("user_id"))?;
    let u = c.tm.with_event(
        &t.id,
        || users.update(&t.realm_name, &roles, p.req("user_id"), &input),
        |u| user_change(&t.id, "update", u, changed_fields(Some(&before), u, &input)),
    )?;
    c.signal.notify();
    Ok(Response::json(200, &u.view(&t.id)))
}

fn delete_tenant_user(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:tenant-user:delete")?;
    let (t, users, roles) = c.tm.tenant_users(p.req("id"))?;
    let before = users.get(&t.realm_name, &roles, p.req("user_id"))?;
    c.tm.with_event(
        &t.id,
        || users.delete(&t.realm_name, p.req("user_id")),
        |_| user_change(&t.id, "delete", &before, Vec::new()),
    )?;
    c.signal.notify();
    Ok(Response::new(204))
}

/// The trail's record of a tenant user's change (its username in `detail`; a password only
/// named in `fields`).
fn user_change(
    tenant: &str,
    verb: &str,
    u: &crate::tenants::users::TenantUser,
    fields: Vec<String>,
) -> Change {
    Change::tm(
        tenant,
        &format!("kaa:tenant:tenant-user:{verb}"),
        &format!("tenant-user/{tenant}/{}", u.id),
    )
    .fields(fields)
    .detail(json!({"username": u.username}))
}

// ---------------------------------------------------------------- a tenant's IDPs
// `/tenants/{id}/idps[/{alias}]`: the IDPs of `/idps` (ids `<tenant>/<alias>`) under their tenant.

fn idp_kind() -> Result<&'static Kind, ApiError> {
    crate::tenants::catalog::kind_by_path("idps").ok_or_else(|| {
        log::error!("the IDP catalogue kind is missing");
        ApiError::internal()
    })
}

/// The body with the path's tenant (a different `tenant_id` in the body is refused).
fn idp_body(req: &Request, tenant: &str, alias: Option<&str>) -> Result<Value, ApiError> {
    let mut b = json_body(req)?;
    for (field, want) in [("tenant_id", Some(tenant)), ("alias", alias)] {
        let Some(want) = want else { continue };
        match b.get(field) {
            None | Some(Value::Null) => b[field] = Value::from(want),
            Some(Value::String(s)) if s == want => {}
            Some(_) => {
                let mut e = ApiError::bad_request(format!("`{field}` must be `{want}` here"));
                e.details = Some(Box::new(
                    json!({"field": field, "message": format!("must be `{want}` here")}),
                ));
                return Err(e);
            }
        }
    }
    Ok(b)
}

fn list_tenant_idps(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:idp:read")?;
    let t = c.tm.get_tenant(p.req("id"))?;
    page_of(c.tm.catalog_list(idp_kind()?, Some(&t.id))?, &query(req))
}

fn create_tenant_idp(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:idp:create")?;
    let body = idp_body(req, p.req("id"), None)?;
    let v = c.tm.catalog_create(idp_kind()?, &body)?;
    c.signal.notify();
    Ok(Response::json(201, &v))
}

fn get_tenant_idp(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:idp:read")?;
    let id = format!("{}/{}", p.req("id"), p.req("alias"));
    Ok(Response::json(200, &c.tm.catalog_get(idp_kind()?, &id)?))
}

fn update_tenant_idp(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:idp:update")?;
    let body = idp_body(req, p.req("id"), Some(p.req("alias")))?;
    let id = format!("{}/{}", p.req("id"), p.req("alias"));
    let v = c.tm.catalog_update(idp_kind()?, &id, &body)?;
    c.signal.notify();
    Ok(Response::json(200, &v))
}

fn delete_tenant_idp(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:idp:delete")?;
    let id = format!("{}/{}", p.req("id"), p.req("alias"));
    c.tm.catalog_delete(idp_kind()?, &id)?;
    c.signal.notify();
    Ok(Response::new(204))
}

fn public_config(c: &TenantCtx, _: &Request, p: &Params) -> R {
    Ok(Response::json(200, &c.tm.public_config(p.req("id"))?))
}

fn limits(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:read")?;
    Ok(Response::json(200, &c.tm.limits_view(p.req("id"))?))
}

fn check_limit(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:read")?;
    let body = json_body(req)?;
    Ok(Response::json(200, &c.tm.check_limit(p.req("id"), &body)?))
}

// ---------------------------------------------------------------- Keycloak servers

/// A Keycloak server from a body. `current` is the stored record on PUT: the secrets
/// (`password`, `client_secret`) are never shown, so a secret the body does not name is kept
/// (`null` clears it); `created` and `updated`, as GET shows them, are accepted and ignored.
fn server_body(
    req: &Request,
    id_from_path: Option<i64>,
    current: Option<&KeycloakServerRecord>,
) -> Result<KeycloakServerRecord, ApiError> {
    let b = json_body(req)?;
    const KNOWN: &[&str] = &[
        "id",
        "url",
        "admin_realm",
        "username",
        "password",
        "client_id",
        "client_secret",
        "is_default",
        "password_set",
        "client_secret_set",
        "created",
        "updated",
    ];
    if let Some(k) = b
        .as_object()
        .and_then(|m| m.keys().find(|k| !KNOWN.contains(&k.as_str())))
    {
        return Err(TmError::field(k, "unknown field").into());
    }
    let body_id = match b.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|i| *i >= 1)
                .ok_or_else(|| TmError::field("id", "must be a positive integer"))?,
        ),
    };
    let id = match (id_from_path, body_id) {
        (Some(p), Some(i)) if p != i => {
            return Err(TmError::field("id", format!("differs from the path (`{p}`)")).into());
        }
        (Some(p), _) => p,
        (None, Some(i)) => i,
        (None, None) => {
            return Err(TmError::field("id", "is required (a positive integer)").into());
        }
    };
    let url = match b.get("url") {
        Some(Value::String(u)) => u.trim_end_matches('/').to_string(),
        _ => String::new(),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(TmError::field("url", "must be an http(s) URL").into());
    }
    // A text field: absent or null is None, a string is kept as given, anything else is refused.
    let text = |k: &str| -> Result<Option<Option<String>>, ApiError> {
        match b.get(k) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) if s.len() <= 4096 => Ok(Some(Some(s.clone()))),
            Some(_) => Err(TmError::field(k, "must be a string (at most 4096 bytes)").into()),
        }
    };
    for k in ["password_set", "client_secret_set", "is_default"] {
        if b.get(k).is_some_and(|v| !v.is_null() && !v.is_boolean()) {
            return Err(TmError::field(k, "must be true or false").into());
        }
    }
    for k in ["created", "updated"] {
        if b.get(k).is_some_and(|v| !v.is_null() && !v.is_string()) {
            return Err(TmError::field(k, "must be a string (read-only, ignored)").into());
        }
    }
    let admin_realm = text("admin_realm")?
        .flatten()
        .unwrap_or_else(|| "master".into());
    if admin_realm.is_empty() {
        return Err(TmError::field("admin_realm", "must not be empty").into());
    }
    // Secrets: what the body names, else what is stored.
    let secret = |k: &str, kept: Option<&String>| -> Result<Option<String>, ApiError> {
        Ok(match text(k)? {
            Some(v) => v,
            None => kept.cloned(),
        })
    };
    let now = crate::clock::now_ms();
    Ok(KeycloakServerRecord {
        id,
        url,
        admin_realm,
        username: text("username")?.flatten(),
        password: secret("password", current.and_then(|c| c.password.as_ref()))?,
        client_id: text("client_id")?.flatten(),
        client_secret: secret(
            "client_secret",
            current.and_then(|c| c.client_secret.as_ref()),
        )?,
        is_default: b
            .get("is_default")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        created_ms: current.map_or(now, |c| c.created_ms),
        updated_ms: now,
    })
}

fn server_id(p: &Params) -> Result<i64, ApiError> {
    p.req("id")
        .parse::<i64>()
        .map_err(|_| ApiError::not_found(format!("no Keycloak server `{}`", p.req("id"))))
}

fn list_servers(c: &TenantCtx, req: &Request, _: &Params) -> R {
    guard(c, req, "kaa:tenant:keycloak-server:read")?;
    let items = c.tm.db.list_servers().map_err(TmError::from)?;
    page_of(items.iter().map(server_view).collect(), &query(req))
}

fn create_server(c: &TenantCtx, req: &Request, _: &Params) -> R {
    guard(c, req, "kaa:tenant:keycloak-server:create")?;
    let s = server_body(req, None, None)?;
    let id = s.id.to_string();
    let out =
        c.tm.db
            .insert_server(&s)
            .map_err(|e| storage(e, "keycloak server", &id))?;
    Ok(Response::json(201, &server_view(&out)))
}

fn get_server(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:keycloak-server:read")?;
    let id = server_id(p)?;
    let s =
        c.tm.db
            .get_server(id)
            .map_err(|e| storage(e, "keycloak server", &id.to_string()))?;
    Ok(Response::json(200, &server_view(&s)))
}

fn update_server(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:keycloak-server:update")?;
    let id = server_id(p)?;
    let current =
        c.tm.db
            .get_server(id)
            .map_err(|e| storage(e, "keycloak server", &id.to_string()))?;
    let s = server_body(req, Some(id), Some(&current))?;
    let out = c.tm.update_server(&current, &s)?;
    c.signal.notify();
    Ok(Response::json(200, &server_view(&out)))
}

fn delete_server(c: &TenantCtx, req: &Request, p: &Params) -> R {
    guard(c, req, "kaa:tenant:keycloak-server:delete")?;
    let id = server_id(p)?;
    c.tm.db.delete_server(id).map_err(|e| match e {
        StorageError::Conflict(_) => {
            TmError::Conflict(format!("Keycloak server {id} still hosts tenants"))
        }
        other => storage(other, "keycloak server", &id.to_string()),
    })?;
    Ok(Response::new(204))
}

// ---------------------------------------------------------------- the audit trail

/// Whose trail the caller may read: every tenant's (`None`: security off, or a system realm
/// caller with `kaa:tenant:audit:read` on `kaa-system`), or only its own tenant's (a token of
/// the tenant's realm with `tenant:audit:read` on its `tenant-system`).
fn audit_reader(c: &TenantCtx, req: &Request) -> Result<Option<String>, ApiError> {
    use crate::tenants::audit::{SYSTEM_SCOPE, TENANT_SCOPE};
    let Some(auth) = &c.auth else {
        guard(c, req, SYSTEM_SCOPE)?;
        return Ok(None);
    };
    let token = crate::http::auth::Authenticator::bearer(req)?;
    let issuer = token_issuer(token);
    let realm = issuer
        .as_deref()
        .filter(|i| *i != auth.issuer)
        .and_then(|i| i.trim_end_matches('/').rsplit_once("/realms/"))
        .map(|(_, r)| r.to_string());
    let Some(realm) = realm else {
        // The system realm's token (or none the realms know): the scope on `kaa-system`.
        guard(c, req, SYSTEM_SCOPE)?;
        return Ok(None);
    };
    let refused = || {
        ApiError::from(crate::http::auth::AuthError::Invalid(
            "the token's issuer is not accepted here".into(),
        ))
    };
    let t = c.tm.tenant_of_realm(&realm)?.ok_or_else(refused)?;
    if t.id == c.tm.settings.system_tenant {
        return Err(refused());
    }
    let realm_auth = auth.realms.of(&c.tm, &t)?;
    if issuer.as_deref() != Some(realm_auth.issuer.as_str()) {
        return Err(refused());
    }
    let identity = realm_auth.tokens.verify(token)?;
    identify(&t.id, &identity);
    match realm_auth.scopes.allowed(token, TENANT_SCOPE) {
        Ok(true) => Ok(Some(t.id)),
        Ok(false) => Err(ApiError::forbidden(format!(
            "scope `{TENANT_SCOPE}` on `tenant-system` of realm `{}` is required",
            t.realm_name
        ))),
        Err(e) => {
            log::warn!("auth: {e}");
            Err(ApiError::unavailable(
                "cannot decide scopes right now: Keycloak is unavailable",
            ))
        }
    }
}

/// `GET /audit`: `{"results": [...], "next": cursor or null}`, newest first.
fn list_audit(c: &TenantCtx, req: &Request, _: &Params) -> R {
    let own = audit_reader(c, req)?;
    let q = query(req);
    let asked = q
        .get("tenant_id")
        .map(String::as_str)
        .filter(|t| !t.is_empty());
    let tenant = match (own, asked) {
        (Some(own), Some(asked)) if asked != own => {
            return Err(ApiError::forbidden(format!(
                "the administrator of tenant `{own}` reads only its own tenant's trail, not \
                 `{asked}`'s"
            )));
        }
        (Some(own), _) => Some(own),
        (None, asked) => asked.map(str::to_string),
    };
    let max_page = c.config.server.max_page_size.max(1);
    let (results, next) = c.tm.list_audit(tenant, &q, max_page)?;
    Ok(Response::json(
        200,
        &json!({ "results": results, "next": next }),
    ))
}

// ---------------------------------------------------------------- catalogue

fn catalog_routes(r: &mut Router<TenantCtx>) {
    for kind in KINDS {
        let k: &'static Kind = kind;
        let collection: &'static str = Box::leak(format!("/api/v1/{}", k.path).into_boxed_str());
        let item: &'static str = Box::leak(format!("/api/v1/{}/{{id}}", k.path).into_boxed_str());
        let scope = |op: &str| format!("kaa:tenant:{}:{op}", k.kind);
        let (read, create, update, delete) = (
            scope("read"),
            scope("create"),
            scope("update"),
            scope("delete"),
        );
        let read_all = read.clone();
        r.route("GET", collection, move |c: &TenantCtx, req, _| {
            guard(c, req, &read_all)?;
            let q = query(req);
            page_of(
                c.tm.catalog_list(k, q.get("tenant_id").map(String::as_str))?,
                &q,
            )
        });
        r.route("POST", collection, move |c: &TenantCtx, req, _| {
            guard(c, req, &create)?;
            let v = c.tm.catalog_create(k, &json_body(req)?)?;
            c.signal.notify();
            Ok(Response::json(201, &v))
        });
        let read_one = read.clone();
        r.route("GET", item, move |c: &TenantCtx, req, p| {
            guard(c, req, &read_one)?;
            Ok(Response::json(200, &c.tm.catalog_get(k, p.req("id"))?))
        });
        r.route("PUT", item, move |c: &TenantCtx, req, p| {
            guard(c, req, &update)?;
            let v = c.tm.catalog_update(k, p.req("id"), &json_body(req)?)?;
            c.signal.notify();
            Ok(Response::json(200, &v))
        });
        r.route("DELETE", item, move |c: &TenantCtx, req, p| {
            guard(c, req, &delete)?;
            c.tm.catalog_delete(k, p.req("id"))?;
            c.signal.notify();
            Ok(Response::new(204))
        });
    }
}

/// The Tenant Manager router.
pub fn router() -> Router<TenantCtx> {
    let mut r = Router::new();
    ops_routes(&mut r);
    r.route("GET", "/api/v1/openapi.json", |_: &TenantCtx, _, _| {
        Ok(Response::text(
            200,
            "application/json",
            super::openapi::TM_OPENAPI.as_bytes().to_vec(),
        ))
    });
    r.route("GET", "/api/v1/tenants", list_tenants);
    r.route("POST", "/api/v1/tenants", create_tenant);
    r.route("GET", "/api/v1/tenants/{id}", get_tenant);
    r.route("PUT", "/api/v1/tenants/{id}", update_tenant);
    r.route("PATCH", "/api/v1/tenants/{id}", update_tenant);
    r.route("DELETE", "/api/v1/tenants/{id}", delete_tenant);
    r.route("POST", "/api/v1/tenants/{id}/retry", retry_tenant);
    r.route(
        "GET",
        "/api/v1/tenants/{id}/security-context",
        security_context,
    );
    r.route("GET", "/api/v1/tenants/{id}/public-config", public_config);
    r.route("GET", "/api/v1/tenants/{id}/limits", limits);
    r.route("POST", "/api/v1/tenants/{id}/limits/check", check_limit);
    r.route("GET", "/api/v1/tenants/{id}/idps", list_tenant_idps);
    r.route("POST", "/api/v1/tenants/{id}/idps", create_tenant_idp);
    r.route("GET", "/api/v1/tenants/{id}/idps/{alias}", get_tenant_idp);
    r.route(
        "PUT",
        "/api/v1/tenants/{id}/idps/{alias}",
        update_tenant_idp,
    );
    r.route(
        "DELETE",
        "/api/v1/tenants/{id}/idps/{alias}",
        delete_tenant_idp,
    );
    r.route("GET", "/api/v1/tenants/{id}/users", list_tenant_users);
    r.route("POST", "/api/v1/tenants/{id}/users", create_tenant_user);
    r.route(
        "GET",
        "/api/v1/tenants/{id}/users/{user_id}",
        get_tenant_user,
    );
    r.route(
        "PUT",
        "/api/v1/tenants/{id}/users/{user_id}",
        update_tenant_user,
    );
    r.route(
        "PATCH",
        "/api/v1/tenants/{id}/users/{user_id}",
        update_tenant_user,
    );
    r.route(
        "DELETE",
        "/api/v1/tenants/{id}/users/{user_id}",
        delete_tenant_user,
    );
    r.route("GET", "/api/v1/audit", list_audit);
    r.route("GET", "/api/v1/keycloak-servers", list_servers);
    r.route("POST", "/api/v1/keycloak-servers", create_server);
    r.route("GET", "/api/v1/keycloak-servers/{id}", get_server);
    r.route("PUT", "/api/v1/keycloak-servers/{id}", update_server);
    r.route("DELETE", "/api/v1/keycloak-servers/{id}", delete_server);
    catalog_routes(&mut r);
    r
}
