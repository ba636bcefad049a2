//! IAM's `/api/v1` surface: each handler reads the request, calls one domain operation and
//! renders `{"data": ...}`; errors go through the one mapping in `http::error`.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::auth::Authenticator;
use super::error::ApiError;
use super::json::body;
use super::message::{Request, Response};
use super::ops::{HasOps, Ops, ops_routes};
use super::router::{Params, Router};
use crate::config::Config;
use crate::iam::audit::{AuditView, PolicyVersionView};
use crate::iam::evaluate::Decided;
use crate::iam::model::*;
use crate::iam::service::{listed, path_id};
use crate::iam::{Caller, Iam};
use crate::policy::{Krn, Outcome};
use crate::storage::PolicyRecord;

type R = Result<Response, ApiError>;

/// Everything an IAM handler can reach.
pub struct IamCtx {
    pub ops: Arc<Ops>,
    pub config: Arc<Config>,
    pub iam: Arc<Iam>,
    /// Token checks; `None` when security is off.
    pub auth: Option<Authenticator>,
}

impl HasOps for IamCtx {
    fn ops(&self) -> &Ops {
        &self.ops
    }
}

/// The caller of a request: from its bearer token, or (security off) the system tenant's
/// administrator.
fn caller(ctx: &IamCtx, req: &Request) -> Result<Caller, ApiError> {
    match &ctx.auth {
        None => {
            let c = Caller::system_admin();
            crate::storage::audit::identify(None, None, &c.tenant);
            Ok(c)
        }
        Some(auth) => {
            let identity = auth.authenticate(req)?;
            let c = ctx.iam.caller_for(&identity)?;
            crate::storage::audit::identify(
                c.principal.as_ref().map(|p| p.as_str().to_string()),
                Some(identity.subject.clone()),
                &c.tenant,
            );
            Ok(c)
        }
    }
}

fn query(req: &Request) -> HashMap<String, String> {
    req.query_map()
}

fn flag(req: &Request, name: &str) -> Result<bool, ApiError> {
    match req.query_param(name).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "`{name}` must be true or false, got `{other}`"
        ))),
    }
}

/// The version a write expects, from `If-Match`.
fn if_match(req: &Request) -> Result<Option<i64>, ApiError> {
    req.if_match().map_err(ApiError::bad_request)
}

fn data(status: u16, v: impl serde::Serialize, version: Option<i64>) -> Response {
    let r = Response::json(status, &json!({ "data": v }));
    match version {
        Some(v) => r.with_header("ETag", &format!("\"{v}\"")),
        None => r,
    }
}

fn created(v: impl serde::Serialize, id: &str, collection: &str, version: i64) -> Response {
    data(201, v, Some(version)).with_header("Location", &format!("/api/v1/{collection}/{id}"))
}

fn no_content() -> Response {
    Response::new(204)
}

fn id(p: &Params) -> &str {
    p.req("id")
}

// ---------------------------------------------------------------- policies

/// Policy views with the pools each is attached to.
fn policy_views(c: &IamCtx, items: &[PolicyRecord]) -> Result<Vec<PolicyView>, ApiError> {
    let mut pools = c.iam.pools_of_policies(items)?;
    Ok(items
        .iter()
        .map(|p| PolicyView::from(p).with_pools(&pools.remove(&p.krn).unwrap_or_default()))
        .collect())
}

/// One policy's view with its pools.
fn policy_view(c: &IamCtx, rec: &PolicyRecord) -> Result<PolicyView, ApiError> {
    let pools = c.iam.policy_pools(&rec.tenant, &rec.krn)?;
    Ok(PolicyView::from(rec).with_pools(&pools))
}

fn create_policy(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let rec = c.iam.create_policy(&who, body(req)?)?;
    let v = policy_view(c, &rec)?;
    let id = v.id.clone();
    Ok(created(v, &urlencode(&id), "policies", rec.version))
}

fn list_policies(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let (items, count, page) = c.iam.list_policies(&who, &query(req))?;
    let views = policy_views(c, &items)?;
    Ok(Response::json(200, &listed(views, count, page)))
}

fn get_policy(c: &IamCtx, req: &Request, p: &Params) -> R {
    let rec = c.iam.get_policy(&caller(c, req)?, id(p))?;
    Ok(data(200, policy_view(c, &rec)?, Some(rec.version)))
}

fn replace_policy(c: &IamCtx, req: &Request, p: &Params) -> R {
    let who = caller(c, req)?;
    let im = if_match(req)?;
    let rec = c
        .iam
        .replace_policy(&who, id(p), body(req)?, im)
        .map_err(|e| ApiError::iam(e, im.is_some()))?;
    Ok(data(200, policy_view(c, &rec)?, Some(rec.version)))
}

fn delete_policy(c: &IamCtx, req: &Request, p: &Params) -> R {
    c.iam.delete_policy(&caller(c, req)?, id(p))?;
    Ok(no_content())
}

// ---------------------------------------------------------------- audit and history

fn list_audit(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let (rows, next) = c.iam.list_audit(&who, &query(req))?;
    let views: Vec<AuditView> = rows.iter().map(AuditView::from).collect();
    Ok(Response::json(200, &json!({ "data": views, "next": next })))
}

fn policy_versions(c: &IamCtx, req: &Request, p: &Params) -> R {
    let list = c.iam.policy_versions(&caller(c, req)?, id(p))?;
    let views: Vec<PolicyVersionView> = list.iter().map(PolicyVersionView::from).collect();
    Ok(data(200, views, None))
}

fn policy_version(c: &IamCtx, req: &Request, p: &Params) -> R {
    let v = c.iam.policy_version(&caller(c, req)?, id(p), p.req("n"))?;
    Ok(data(200, PolicyVersionView::from(&v), None))
}

/// The optional body of a restore: the version the policy is expected to have now.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    #[serde(default)]
    version: Option<i64>,
}

fn restore_policy_version(c: &IamCtx, req: &Request, p: &Params) -> R {
    let who = caller(c, req)?;
    let expected = if req.body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        body::<RestoreBody>(req)?.version
    };
    let im = if_match(req)?;
    let expected = crate::iam::service::version_of(expected, im)?;
    let rec = c
        .iam
        .restore_policy_version(&who, id(p), p.req("n"), expected)
        .map_err(|e| ApiError::iam(e, im.is_some()))?;
    Ok(data(200, policy_view(c, &rec)?, Some(rec.version)))
}

fn bulk_delete_policies(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let b: Ids = body(req)?;
    let list = b
        .policy_ids
        .ok_or_else(|| ApiError::bad_request("`policyIDs` is required"))?;
    let krns = c
        .iam
        .policy_ids(&who, &list, req.query_param("tenantID").as_deref())?;
    c.iam.delete_policies(&who, &krns)?;
    Ok(no_content())
}

/// Attach/detach for users, groups and pools.
fn attachment(c: &IamCtx, req: &Request, p: &Params, kind: &str, attach: bool) -> R {
    let who = caller(c, req)?;
    let target = path_id(id(p), kind, &who)?;
    let b: Ids = body(req)?;
    let Some(list) = b.policy_ids else {
        return Err(ApiError::bad_request("`policyIDs` is required"));
    };
    c.iam.set_attachment(&who, &target, &list, attach)?;
    Ok(no_content())
}

fn policies_of(c: &IamCtx, req: &Request, p: &Params, kind: &str) -> R {
    let who = caller(c, req)?;
    let target = path_id(id(p), kind, &who)?;
    let (items, count, page) = c.iam.policies_of(&who, &target, &query(req))?;
    let views = policy_views(c, &items)?;
    Ok(Response::json(200, &listed(views, count, page)))
}

// ---------------------------------------------------------------- users

fn create_user(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let rec = c.iam.create_user(&who, body(req)?)?;
    let v = UserView::from(&rec);
    let id = v.id.clone();
    Ok(created(v, &urlencode(&id), "users", rec.version))
}

fn list_users(c: &IamCtx, req: &Request, _: &Params) -> R {
    let (items, count, page) = c.iam.list_users(&caller(c, req)?, &query(req))?;
    let views: Vec<UserView> = items.iter().map(UserView::from).collect();
    Ok(Response::json(200, &listed(views, count, page)))
}

fn me(c: &IamCtx, req: &Request, krn_only: bool) -> R {
    let who = caller(c, req)?;
    let Some(principal) = &who.principal else {
        return Err(ApiError::not_found(
            "the caller is not an IAM user: security is off, every call acts as the system administrator",
        ));
    };
    if krn_only {
        return Ok(data(200, principal.as_str(), None));
    }
    let rec = c.iam.me(&who)?;
    Ok(data(200, UserView::from(&rec), Some(rec.version)))
}

fn get_user(c: &IamCtx, req: &Request, p: &Params) -> R {
    let rec = c.iam.get_user(&caller(c, req)?, id(p))?;
    Ok(data(200, UserView::from(&rec), Some(rec.version)))
}

fn update_user(c: &IamCtx, req: &Request, p: &Params) -> R {
    let who = caller(c, req)?;
    let im = if_match(req)?;
    let rec = c
        .iam
        .update_user(&who, id(p), body(req)?, im)
        .map_err(|e| ApiError::iam(e, im.is_some()))?;
    Ok(data(200, UserView::from(&rec), Some(rec.version)))
}

fn delete_user(c: &IamCtx, req: &Request, p: &Params) -> R {
    let who = caller(c, req)?;
    let k = path_id(id(p), "user", &who)?;
    c.iam.delete_users(&who, &[k])?;
    Ok(no_content())
}

fn bulk_delete_users(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let b: Ids = body(req)?;
    let list = b
        .user_ids
        .ok_or_else(|| ApiError::bad_request("`userIDs` is required"))?;
    let krns = c
        .iam
        .user_ids(&who, &list, req.query_param("tenantID").as_deref())?;
    c.iam.delete_users(&who, &krns)?;
    Ok(no_content())
}

fn user_groups_add(c: &IamCtx, req: &Request, p: &Params) -> R {
    let who = caller(c, req)?;
    let b: Ids = body(req)?;
    let groups = b
        .group_ids
        .ok_or_else(|| ApiError::bad_request("`groupIDs` is required"))?;
    c.iam.join_groups(&who, id(p), &groups)?;
    Ok(no_content())
}

fn user_groups(c: &IamCtx, req: &Request, p: &Params) -> R {
    let (items, count, page) = c.iam.groups_of_user(&caller(c, req)?, id(p), &query(req))?;
    let views: Vec<GroupView> = items.iter().map(GroupView::from).collect();
    Ok(Response::json(200, &listed(views, count, page)))
}

// ---------------------------------------------------------------- groups

fn create_group(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let rec = c.iam.create_group(&who, body(req)?)?;
    let v = GroupView::from(&rec);
    let id = v.id.clone();
    Ok(created(v, &urlencode(&id), "groups", rec.version))
}

fn list_groups(c: &IamCtx, req: &Request, _: &Params) -> R {
    let (items, count, page) = c.iam.list_groups(&caller(c, req)?, &query(req))?;
    let views: Vec<GroupView> = items.iter().map(GroupView::from).collect();
    Ok(Response::json(200, &listed(views, count, page)))
}

fn get_group(c: &IamCtx, req: &Request, p: &Params) -> R {
    let rec = c.iam.get_group(&caller(c, req)?, id(p))?;
    Ok(data(200, GroupView::from(&rec), Some(rec.version)))
}

fn update_group(c: &IamCtx, req: &Request, p: &Params) -> R {
    let who = caller(c, req)?;
    let im = if_match(req)?;
    let rec = c
        .iam
        .update_group(&who, id(p), body(req)?, im)
        .map_err(|e| ApiError::iam(e, im.is_some()))?;
    Ok(data(200, GroupView::from(&rec), Some(rec.version)))
}

fn delete_group(c: &IamCtx, req: &Request, p: &Params) -> R {
    let who = caller(c, req)?;
    let k = path_id(id(p), "group", &who)?;
    c.iam.delete_groups(&who, &[k])?;
    Ok(no_content())
}

fn bulk_delete_groups(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let b: Ids = body(req)?;
    let list = b
        .group_ids
        .ok_or_else(|| ApiError::bad_request("`groupIDs` is required"))?;
    let krns = c
        .iam
        .group_ids(&who, &list, req.query_param("tenantID").as_deref())?;
    c.iam.delete_groups(&who, &krns)?;
    Ok(no_content())
}

fn members(c: &IamCtx, req: &Request, p: &Params, add: bool) -> R {
    let who = caller(c, req)?;
    let b: Ids = body(req)?;
    let list = b
        .user_ids
        .ok_or_else(|| ApiError::bad_request("`userIDs` is required"))?;
    c.iam.set_members(&who, id(p), &list, add)?;
    Ok(no_content())
}

fn list_members(c: &IamCtx, req: &Request, p: &Params) -> R {
    let (items, count, page) = c.iam.members(&caller(c, req)?, id(p), &query(req))?;
    let views: Vec<UserView> = items.iter().map(UserView::from).collect();
    Ok(Response::json(200, &listed(views, count, page)))
}

// ---------------------------------------------------------------- resources and pools

fn create_resource(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let (rec, policy) = c.iam.create_resource(&who, body(req)?)?;
    let mut v = serde_json::to_value(ResourceView::from(&rec)).unwrap_or(Value::Null);
    if let (Some(p), Value::Object(m)) = (&policy, &mut v) {
        m.insert("policyID".into(), Value::from(id_of(&p.krn)));
    }
    let id = id_of(&rec.krn);
    Ok(created(v, &urlencode(&id), "resources", rec.version))
}

fn list_resources(c: &IamCtx, req: &Request, _: &Params) -> R {
    let (items, count, page) = c.iam.list_resources(&caller(c, req)?, &query(req))?;
    let views: Vec<ResourceView> = items.iter().map(ResourceView::from).collect();
    Ok(Response::json(200, &listed(views, count, page)))
}

fn get_resource(c: &IamCtx, req: &Request, p: &Params) -> R {
    let rec = c.iam.get_resource(&caller(c, req)?, id(p))?;
    Ok(data(200, ResourceView::from(&rec), Some(rec.version)))
}

fn update_resource(c: &IamCtx, req: &Request, p: &Params) -> R {
    let who = caller(c, req)?;
    let im = if_match(req)?;
    let rec = c
        .iam
        .update_resource(&who, id(p), body(req)?, im)
        .map_err(|e| ApiError::iam(e, im.is_some()))?;
    Ok(data(200, ResourceView::from(&rec), Some(rec.version)))
}

fn delete_resource(c: &IamCtx, req: &Request, p: &Params) -> R {
    let who = caller(c, req)?;
    let k = crate::iam::resources::resource_id(id(p), &who)?;
    c.iam.delete_resources(&who, &[k])?;
    Ok(no_content())
}

fn bulk_delete_resources(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let b: Ids = body(req)?;
    let list = b
        .resource_ids
        .ok_or_else(|| ApiError::bad_request("`resourceIDs` is required"))?;
    let krns = c.iam.resource_ids(&who, &list)?;
    c.iam.delete_resources(&who, &krns)?;
    Ok(no_content())
}

fn get_resource_policy(c: &IamCtx, req: &Request, p: &Params) -> R {
    let rec = c.iam.resource_policy(&caller(c, req)?, id(p))?;
    Ok(data(200, PolicyView::from(&rec), Some(rec.version)))
}

fn put_resource_policy(c: &IamCtx, req: &Request, p: &Params) -> R {
    let who = caller(c, req)?;
    let im = if_match(req)?;
    let rec = c
        .iam
        .put_resource_policy(&who, id(p), body(req)?, im)
        .map_err(|e| ApiError::iam(e, im.is_some()))?;
    Ok(data(200, PolicyView::from(&rec), Some(rec.version)))
}

fn create_pool(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let (rec, members) = c.iam.create_pool(&who, body(req)?)?;
    let v = PoolView::new(&rec, &members);
    let id = v.id.clone();
    Ok(created(v, &urlencode(&id), "pools", rec.version))
}

fn list_pools(c: &IamCtx, req: &Request, _: &Params) -> R {
    let (items, count, page) = c.iam.list_pools(&caller(c, req)?, &query(req))?;
    let views: Vec<PoolView> = items.iter().map(|(p, m)| PoolView::new(p, m)).collect();
    Ok(Response::json(200, &listed(views, count, page)))
}

fn get_pool(c: &IamCtx, req: &Request, p: &Params) -> R {
    let (rec, members) = c.iam.get_pool(&caller(c, req)?, id(p))?;
    Ok(data(200, PoolView::new(&rec, &members), Some(rec.version)))
}

fn update_pool(c: &IamCtx, req: &Request, p: &Params) -> R {
    let who = caller(c, req)?;
    let im = if_match(req)?;
    let (rec, members) = c
        .iam
        .update_pool(&who, id(p), body(req)?, im)
        .map_err(|e| ApiError::iam(e, im.is_some()))?;
    Ok(data(200, PoolView::new(&rec, &members), Some(rec.version)))
}

fn delete_pool(c: &IamCtx, req: &Request, p: &Params) -> R {
    c.iam.delete_pool(&caller(c, req)?, id(p))?;
    Ok(no_content())
}

fn pool_members(c: &IamCtx, req: &Request, p: &Params, add: bool) -> R {
    let who = caller(c, req)?;
    let b: Ids = body(req)?;
    let list = b
        .resource_ids
        .ok_or_else(|| ApiError::bad_request("`resourceIDs` is required"))?;
    c.iam.set_pool_members(&who, id(p), &list, add)?;
    Ok(no_content())
}

// ---------------------------------------------------------------- evaluate

fn count_outcomes(c: &IamCtx, d: &Decided) {
    let (mut allow, mut explicit, mut implicit) = (0u64, 0u64, 0u64);
    for row in &d.decisions {
        for x in row {
            match x.outcome {
                Outcome::Allow => allow += 1,
                Outcome::ExplicitDeny => explicit += 1,
                Outcome::ImplicitDeny => implicit += 1,
            }
        }
    }
    let m = &c.ops.metrics;
    for (name, n) in [
        ("allow", allow),
        ("explicitDeny", explicit),
        ("implicitDeny", implicit),
    ] {
        if n > 0 {
            m.observe_decision(name, n);
        }
    }
}

/// Hand the decisions the decision log picked to it (once the request is answered with them).
fn log_decisions(c: &IamCtx, d: &Decided, req: &Request) {
    if let Some(log) = c.iam.decision_log.get() {
        log.emit(d, &req.request_id);
    }
}

fn explained(d: &Decided, ai: usize) -> Vec<Value> {
    d.eval
        .resources
        .iter()
        .zip(&d.decisions[ai])
        .enumerate()
        .map(|(ri, (r, x))| {
            let mut v =
                json!({ "resource": r.as_str(), "outcome": x.outcome, "reasons": x.reasons });
            if let (Some((kind, message)), Value::Object(m)) = (d.disabled_fields(ri), &mut v) {
                m.insert("disabled".into(), Value::from(kind));
                m.insert("message".into(), Value::from(message));
            }
            if !x.checks.is_empty()
                && let Value::Object(m) = &mut v
            {
                m.insert("checked".into(), json!(x.checks));
            }
            v
        })
        .collect()
}

fn evaluate(c: &IamCtx, req: &Request, _: &Params) -> R {
    evaluate_on(c, req, false)
}

/// `POST /resources/evaluate`: `/evaluate` over registered resources only; a resource that is
/// not registered answers 404 naming it (the in-memory `/evaluate` decides on any KRN).
fn evaluate_registered(c: &IamCtx, req: &Request, _: &Params) -> R {
    evaluate_on(c, req, true)
}

fn evaluate_on(c: &IamCtx, req: &Request, registered: bool) -> R {
    let who = caller(c, req)?;
    let filter = flag(req, "filterResources")?;
    let explain = flag(req, "explain")?;
    let b: EvaluateBody = body(req)?;
    let d = if explain {
        c.iam.evaluate(&who, &b, false)?
    } else {
        c.iam.evaluate_outcomes(&who, &b, false)?
    };
    if registered {
        let gone = c.iam.unregistered(&d.eval.resources)?;
        if !gone.is_empty() {
            return Err(ApiError::not_found(format!(
                "not registered: {}",
                gone.join("; ")
            )));
        }
    }
    count_outcomes(c, &d);
    log_decisions(c, &d, req);
    let row = &d.decisions[0];
    let allowed: Vec<&str> = d
        .eval
        .resources
        .iter()
        .zip(row)
        .filter(|(_, x)| x.is_allowed())
        .map(|(r, _)| r.as_str())
        .collect();
    if filter {
        return Ok(if explain {
            Response::json(
                200,
                &json!({ "data": allowed, "decisions": explained(&d, 0) }),
            )
        } else {
            Response::json(200, &allowed)
        });
    }
    let all = allowed.len() == row.len();
    let status = if all { 200 } else { 403 };
    if explain {
        return Ok(Response::json(
            status,
            &json!({
                "allowed": all,
                "action": d.eval.actions[0].as_str(),
                "principals": d.eval.principals.iter().map(Krn::as_str).collect::<Vec<_>>(),
                "decisions": explained(&d, 0),
            }),
        ));
    }
    if all {
        let echo: Vec<&str> = d.eval.resources.iter().map(Krn::as_str).collect();
        return Ok(Response::json(200, &echo));
    }
    let denied: Vec<&str> = d
        .eval
        .resources
        .iter()
        .zip(row)
        .filter(|(_, x)| !x.is_allowed())
        .map(|(r, _)| r.as_str())
        .collect();
    // A disabled principal or resource is said, once each.
    let mut why: Vec<String> = Vec::new();
    for m in d.disabled.iter().flatten().map(|x| x.message()) {
        if !why.contains(&m) {
            why.push(m);
        }
    }
    let mut message = format!(
        "`{}` is denied on {} of {} resources",
        d.eval.actions[0].as_str(),
        denied.len(),
        row.len()
    );
    if !why.is_empty() {
        message.push_str(": ");
        message.push_str(&why.join(", "));
    }
    Ok(Response::json(
        403,
        &json!({ "message": message, "denied": denied }),
    ))
}

/// The answer shape of `/evaluate/actions` a client asks for with `?shape=`: `design` (the
/// default: per action `{"allowed", "denied"}`) or `kaa` (per action the list of allowed
/// resources, what the Kaa web UI's `evaluateActions` reads).
fn actions_shape(req: &Request) -> Result<bool, ApiError> {
    match req.query_param("shape").as_deref() {
        None | Some("design") => Ok(false),
        Some("kaa") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "`shape` must be `design` or `kaa`, got `{other}`"
        ))),
    }
}

fn evaluate_actions(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let explain = flag(req, "explain")?;
    let kaa = actions_shape(req)?;
    if kaa && explain {
        return Err(ApiError::bad_request(
            "`explain` has no place in `shape=kaa` (a list of allowed resources per action): use the default shape",
        ));
    }
    let b: EvaluateBody = body(req)?;
    let d = if explain {
        c.iam.evaluate(&who, &b, true)?
    } else {
        c.iam.evaluate_outcomes(&who, &b, true)?
    };
    count_outcomes(c, &d);
    log_decisions(c, &d, req);
    let mut out = serde_json::Map::new();
    for (ai, a) in d.eval.actions.iter().enumerate() {
        let (mut allowed, mut denied) = (Vec::new(), Vec::new());
        for (r, x) in d.eval.resources.iter().zip(&d.decisions[ai]) {
            if x.is_allowed() {
                allowed.push(r.as_str());
            } else {
                denied.push(r.as_str());
            }
        }
        if kaa {
            out.insert(a.as_str().to_string(), json!(allowed));
            continue;
        }
        let mut entry = json!({ "allowed": allowed, "denied": denied });
        if explain && let Value::Object(m) = &mut entry {
            m.insert("decisions".into(), Value::from(explained(&d, ai)));
        }
        out.insert(a.as_str().to_string(), entry);
    }
    Ok(Response::json(200, &Value::Object(out)))
}

fn evaluate_resources(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let b: EvaluateBody = body(req)?;
    let (items, count, page, disabled) = c.iam.allowed_registered(&who, &b, &query(req))?;
    let krns: Vec<&str> = items.iter().map(Krn::as_str).collect();
    let mut out = listed(krns, count, page);
    if let (Some(d), Value::Object(m)) = (disabled, &mut out) {
        m.insert("message".into(), Value::from(d.message()));
    }
    Ok(Response::json(200, &out))
}

fn evaluate_simulate(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let b: EvaluateBody = body(req)?;
    Ok(Response::json(
        200,
        &json!({ "data": c.iam.simulate(&who, &b)? }),
    ))
}

/// `POST /evaluate/replay`: logged decisions (JSON lines as logged, or a JSON object with
/// `decisions` and/or a time range of this replica's log file) decided again now.
fn evaluate_replay(c: &IamCtx, req: &Request, _: &Params) -> R {
    let who = caller(c, req)?;
    let changed_only = flag(req, "changedOnly")?;
    if let Some(ct) = req.header("content-type") {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let accepted = media.is_empty()
            || media == "application/json"
            || media.ends_with("+json")
            || media == "application/x-ndjson"
            || media == "application/jsonl"
            || media == "text/plain";
        if !accepted {
            return Err(ApiError::new(
                415,
                format!(
                    "unsupported content type `{media}`: send application/x-ndjson (logged                      lines) or application/json"
                ),
            ));
        }
    }
    Ok(Response::json(
        200,
        &json!({ "data": c.iam.replay(&who, &req.body, changed_only)? }),
    ))
}

fn openapi(_: &IamCtx, _: &Request, _: &Params) -> R {
    Ok(Response::text(
        200,
        "application/json",
        super::openapi::IAM_OPENAPI.as_bytes().to_vec(),
    ))
}

/// Base64 ids may hold `/`, `+` and `=`: escape them for a path.
fn urlencode(s: &str) -> String {
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

/// The IAM router: operational routes and the `/api/v1` surface.
pub fn router() -> Router<IamCtx> {
    let mut r = Router::new();
    ops_routes(&mut r);
    r.route("GET", "/api/v1/openapi.json", openapi);

    r.route("POST", "/api/v1/policies", create_policy);
    r.route("GET", "/api/v1/policies", list_policies);
    r.route("POST", "/api/v1/policies/delete", bulk_delete_policies);
    r.route("GET", "/api/v1/policies/{id}", get_policy);
    r.route("PUT", "/api/v1/policies/{id}", replace_policy);
    r.route("DELETE", "/api/v1/policies/{id}", delete_policy);
    r.route("GET", "/api/v1/policies/{id}/versions", policy_versions);
    r.route("GET", "/api/v1/policies/{id}/versions/{n}", policy_version);
    r.route(
        "POST",
        "/api/v1/policies/{id}/versions/{n}/restore",
        restore_policy_version,
    );
    r.route("GET", "/api/v1/audit", list_audit);

    r.route("POST", "/api/v1/users", create_user);
    r.route("GET", "/api/v1/users", list_users);
    r.route("GET", "/api/v1/users/me", |c, q, _| me(c, q, false));
    r.route("GET", "/api/v1/users/me/krn", |c, q, _| me(c, q, true));
    // Kaa's downstream services and the iamcore SDKs ask for the caller's name under `irn`.
    r.route("GET", "/api/v1/users/me/irn", |c, q, _| me(c, q, true));
    r.route("POST", "/api/v1/users/delete", bulk_delete_users);
    r.route("GET", "/api/v1/users/{id}", get_user);
    r.route("PATCH", "/api/v1/users/{id}", update_user);
    r.route("DELETE", "/api/v1/users/{id}", delete_user);
    r.route("PUT", "/api/v1/users/{id}/policies/attach", |c, q, p| {
        attachment(c, q, p, "user", true)
    });
    r.route("POST", "/api/v1/users/{id}/policies/detach", |c, q, p| {
        attachment(c, q, p, "user", false)
    });
    r.route("GET", "/api/v1/users/{id}/policies", |c, q, p| {
        policies_of(c, q, p, "user")
    });
    r.route("POST", "/api/v1/users/{id}/groups/add", user_groups_add);
    r.route("GET", "/api/v1/users/{id}/groups", user_groups);

    r.route("POST", "/api/v1/groups", create_group);
    r.route("GET", "/api/v1/groups", list_groups);
    r.route("POST", "/api/v1/groups/delete", bulk_delete_groups);
    r.route("GET", "/api/v1/groups/{id}", get_group);
    r.route("PATCH", "/api/v1/groups/{id}", update_group);
    r.route("DELETE", "/api/v1/groups/{id}", delete_group);
    r.route("PUT", "/api/v1/groups/{id}/policies/attach", |c, q, p| {
        attachment(c, q, p, "group", true)
    });
    r.route("POST", "/api/v1/groups/{id}/policies/detach", |c, q, p| {
        attachment(c, q, p, "group", false)
    });
    r.route("GET", "/api/v1/groups/{id}/policies", |c, q, p| {
        policies_of(c, q, p, "group")
    });
    r.route("POST", "/api/v1/groups/{id}/members/add", |c, q, p| {
        members(c, q, p, true)
    });
    r.route("POST", "/api/v1/groups/{id}/members/remove", |c, q, p| {
        members(c, q, p, false)
    });
    r.route("GET", "/api/v1/groups/{id}/members", list_members);

    r.route("POST", "/api/v1/resources", create_resource);
    r.route("GET", "/api/v1/resources", list_resources);
    r.route("POST", "/api/v1/resources/delete", bulk_delete_resources);
    r.route("POST", "/api/v1/resources/evaluate", evaluate_registered);
    r.route("GET", "/api/v1/resources/{id}", get_resource);
    r.route("PATCH", "/api/v1/resources/{id}", update_resource);
    r.route("DELETE", "/api/v1/resources/{id}", delete_resource);
    r.route("GET", "/api/v1/resources/{id}/policy", get_resource_policy);
    r.route("PUT", "/api/v1/resources/{id}/policy", put_resource_policy);

    r.route("POST", "/api/v1/pools", create_pool);
    r.route("GET", "/api/v1/pools", list_pools);
    r.route("GET", "/api/v1/pools/{id}", get_pool);
    r.route("PATCH", "/api/v1/pools/{id}", update_pool);
    r.route("DELETE", "/api/v1/pools/{id}", delete_pool);
    r.route("POST", "/api/v1/pools/{id}/resources/add", |c, q, p| {
        pool_members(c, q, p, true)
    });
    r.route("POST", "/api/v1/pools/{id}/resources/remove", |c, q, p| {
        pool_members(c, q, p, false)
    });
    r.route("PUT", "/api/v1/pools/{id}/policies/attach", |c, q, p| {
        attachment(c, q, p, "pool", true)
    });
    r.route("POST", "/api/v1/pools/{id}/policies/detach", |c, q, p| {
        attachment(c, q, p, "pool", false)
    });
    r.route("GET", "/api/v1/pools/{id}/policies", |c, q, p| {
        policies_of(c, q, p, "pool")
    });

    // Decisions from the in-memory index: no storage, so they may run on the I/O threads.
    r.route("POST", "/api/v1/evaluate", evaluate).inline();
    r.route("POST", "/api/v1/evaluate/actions", evaluate_actions)
        .inline();
    r.route("POST", "/api/v1/evaluate/irns/actions", evaluate_actions)
        .inline();
    r.route("POST", "/api/v1/evaluate/resources", evaluate_resources);
    r.route("POST", "/api/v1/evaluate/simulate", evaluate_simulate);
    r.route("POST", "/api/v1/evaluate/replay", evaluate_replay);
    r
}
