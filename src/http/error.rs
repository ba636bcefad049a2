//! THE one mapping from errors to HTTP statuses and bodies, in each service's style: every
//! domain error (`IamError`, `TmError`, `StorageError`, `AuthError`) becomes an [`ApiError`]
//! here, and an [`ErrorStyle`] writes it as IAM's `{"message", "errors"}` or the Tenant
//! Manager's `{"error", "details"}`. Handlers, the router (404, 405), the service gate and the
//! connection layer (400, 408, 413, 417, 501, 503, 500) all answer errors through it, so a
//! service's errors have one shape whatever refused the request. Internal detail (driver
//! messages, hosts) is logged with the request id, never sent.
//!
//! A stale version: `If-Match` naming another version is a failed precondition, 412; a
//! `version` in the body that no longer matches (or a write that lost a race) is a conflict of
//! state, 409 ([`ApiError::stale`]).

use serde_json::json;

use super::auth::AuthError;
use super::message::{Request, Response};
use crate::iam::IamError;
use crate::storage::StorageError;
use crate::tenants::err::TmError;

/// An error a handler returns; becomes the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub errors: Vec<String>,
    /// Extra response headers (`WWW-Authenticate` on 401, `Allow` on 405).
    pub headers: Vec<(String, String)>,
    /// Structured detail (the Tenant Manager's `details`).
    pub details: Option<Box<serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            errors: Vec::new(),
            headers: Vec::new(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    /// 400 with the individual problems listed in `errors`.
    pub fn invalid(message: impl Into<String>, errors: Vec<String>) -> ApiError {
        ApiError {
            errors,
            ..ApiError::new(400, message)
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(401, message)
    }

    pub fn internal() -> ApiError {
        ApiError::new(500, "internal error")
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, message)
    }

    /// The entity is not at the version the request expected: 412 Precondition Failed when the
    /// request said so in `If-Match` (RFC 9110 §13.1.1), else 409 Conflict (a `version` in the
    /// body, or a concurrent write that moved it first).
    pub fn stale(message: impl Into<String>, if_match: bool) -> ApiError {
        ApiError::new(if if_match { 412 } else { 409 }, message)
    }

    /// No route for the request's path.
    pub fn no_route(req: &Request) -> ApiError {
        ApiError::not_found(format!("no route for {} {}", req.method, req.path))
    }

    /// The path exists but not with the request's method.
    pub fn method_not_allowed(req: &Request, allow: &str) -> ApiError {
        ApiError::new(
            405,
            format!(
                "method {} is not allowed here; allowed: {allow}",
                req.method
            ),
        )
        .with_header("Allow", allow)
    }

    pub fn with_header(mut self, name: &str, value: &str) -> ApiError {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A storage error; a stale version is 412 when `if_match` (the request carried
    /// `If-Match`), else 409.
    pub fn storage(e: StorageError, if_match: bool) -> ApiError {
        match e {
            StorageError::NotFound => ApiError::not_found("not found"),
            StorageError::Conflict(_) => ApiError::conflict("conflict with the current state"),
            StorageError::Stale => ApiError::stale(
                "the entity changed since it was read: fetch it again and retry",
                if_match,
            ),
            StorageError::Unavailable(detail) => {
                log::warn!("storage unavailable: {detail}");
                ApiError::unavailable("storage unavailable, retry later")
            }
            StorageError::Internal(detail) | StorageError::Refused(detail) => {
                log::error!("storage error: {detail}");
                ApiError::internal()
            }
        }
    }

    /// An IAM error; see [`ApiError::storage`] for `if_match`.
    pub fn iam(e: IamError, if_match: bool) -> ApiError {
        match e {
            IamError::Invalid(m, errors) => ApiError::invalid(m, errors),
            IamError::NotFound(m) => ApiError::not_found(m),
            IamError::Conflict(m) => ApiError::conflict(m),
            IamError::Forbidden(m) => ApiError::forbidden(m),
            IamError::Stale(m) => ApiError::stale(m, if_match),
            IamError::Unavailable(m) => ApiError::unavailable(m),
            IamError::Internal(detail) => {
                log::error!("iam: {detail}");
                ApiError::internal()
            }
            IamError::Storage(s) => ApiError::storage(s, if_match),
        }
    }

    /// A Tenant Manager error; see [`ApiError::storage`] for `if_match`.
    pub fn tm(e: TmError, if_match: bool) -> ApiError {
        match e {
            TmError::Invalid(m, fields) => {
                let mut err = ApiError::bad_request(m);
                if let Some((field, message)) = fields.first() {
                    err.details = Some(Box::new(json!({ "field": field, "message": message })));
                }
                err
            }
            TmError::NotFound(m) => ApiError::not_found(m),
            TmError::Conflict(m) => ApiError::conflict(m),
            TmError::Forbidden(m) => ApiError::forbidden(m),
            TmError::Stale(m) => ApiError::stale(m, if_match),
            TmError::Unavailable(m) => ApiError::unavailable(m),
            TmError::Internal(detail) => {
                log::error!("tenant manager: {detail}");
                ApiError::internal()
            }
            TmError::Storage(s) => ApiError::storage(s, if_match),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        ApiError::storage(e, false)
    }
}

/// A write whose expected version may come from `If-Match` maps through [`ApiError::iam`].
impl From<IamError> for ApiError {
    fn from(e: IamError) -> ApiError {
        ApiError::iam(e, false)
    }
}

impl From<TmError> for ApiError {
    fn from(e: TmError) -> ApiError {
        ApiError::tm(e, false)
    }
}

/// 401 with the `WWW-Authenticate` challenge of RFC 6750, or 503 when keys are unavailable.
impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        let code = match e {
            AuthError::Unavailable => return ApiError::unavailable(e.to_string()),
            AuthError::Missing => None,
            AuthError::Malformed => Some("invalid_request"),
            AuthError::Invalid(_) => Some("invalid_token"),
        };
        let value = match code {
            None => "Bearer realm=\"kaa\"".to_string(),
            Some(code) => format!("Bearer realm=\"kaa\", error=\"{code}\""),
        };
        ApiError::unauthorized(e.to_string()).with_header("WWW-Authenticate", &value)
    }
}

/// How a service writes its error bodies: IAM's `{"message", "errors"}` or the Tenant Manager's
/// v1 `{"error", "details"}`. Chosen once per service when it is wired (`app`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    /// `{"message": m, "errors": [..]}` (`errors` only when there are some; the Tenant
    /// Manager's structured `details`, when set, as `details`).
    Message,
    /// `{"error": m, "details": d}`: `details` is the structured detail, else `{"errors": [..]}`
    /// when there are individual problems, else absent.
    ErrorDetails,
}

impl ErrorStyle {
    /// The response for `e`: its status, its headers, its body in this style; a 503 says
    /// `Retry-After: 1` unless `e` says otherwise.
    pub fn render(self, e: ApiError) -> Response {
        let mut body = serde_json::Map::new();
        match self {
            ErrorStyle::Message => {
                body.insert("message".into(), e.message.into());
                if !e.errors.is_empty() {
                    body.insert("errors".into(), json!(e.errors));
                }
                if let Some(d) = e.details {
                    body.insert("details".into(), *d);
                }
            }
            ErrorStyle::ErrorDetails => {
                body.insert("error".into(), e.message.into());
                if let Some(d) = e.details {
                    body.insert("details".into(), *d);
                } else if !e.errors.is_empty() {
                    body.insert("details".into(), json!({ "errors": e.errors }));
                }
            }
        }
        let mut r = Response::json(e.status, &serde_json::Value::Object(body));
        let retry_given = e
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("retry-after"));
        if e.status == 503 && !retry_given {
            r = r.with_header("Retry-After", "1");
        }
        for (k, v) in &e.headers {
            r = r.with_header(k, v);
        }
        r
    }

    /// An error answered with a status and a message only (the connection layer's, the gate's).
    pub fn refuse(self, status: u16, message: &str) -> Response {
        self.render(ApiError::new(status, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &Response) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn storage_kinds_map_to_statuses_without_detail() {
        let cases = || {
            [
                (StorageError::NotFound, 404),
                (StorageError::Conflict("uniq pk_x".into()), 409),
                (StorageError::Stale, 409),
                (
                    StorageError::Unavailable("host db:5432 refused".into()),
                    503,
                ),
                (StorageError::Internal("syntax error at SELECT".into()), 500),
            ]
        };
        for style in [ErrorStyle::Message, ErrorStyle::ErrorDetails] {
            for (e, status) in cases() {
                let r = style.render(ApiError::from(e));
                assert_eq!(r.status, status);
                let body = String::from_utf8(r.body).unwrap();
                for leak in ["pk_x", "5432", "SELECT"] {
                    assert!(!body.contains(leak), "{body}");
                }
            }
        }
    }

    #[test]
    fn a_stale_version_is_412_only_under_if_match() {
        assert_eq!(ApiError::storage(StorageError::Stale, true).status, 412);
        assert_eq!(ApiError::storage(StorageError::Stale, false).status, 409);
        assert_eq!(ApiError::iam(IamError::Stale("x".into()), true).status, 412);
        assert_eq!(
            ApiError::iam(IamError::Stale("x".into()), false).status,
            409
        );
        assert_eq!(ApiError::from(TmError::Stale("x".into())).status, 409);
    }

    #[test]
    fn domain_internal_failures_are_500_without_detail() {
        for e in [
            ApiError::from(IamError::Internal("argon2: bad params".into())),
            ApiError::from(TmError::Internal("getrandom: bad params".into())),
        ] {
            let r = ErrorStyle::Message.render(e);
            assert_eq!(r.status, 500);
            assert_eq!(body(&r), json!({"message": "internal error"}));
        }
    }

    #[test]
    fn each_style_writes_its_shape() {
        let e = ApiError::invalid("bad input", vec!["`a`: missing".into()]);
        assert_eq!(
            body(&ErrorStyle::Message.render(e.clone())),
            json!({"message": "bad input", "errors": ["`a`: missing"]})
        );
        assert_eq!(
            body(&ErrorStyle::ErrorDetails.render(e)),
            json!({"error": "bad input", "details": {"errors": ["`a`: missing"]}})
        );
        let mut e = ApiError::bad_request("`a`: missing");
        e.details = Some(Box::new(json!({"field": "a", "message": "missing"})));
        assert_eq!(
            body(&ErrorStyle::ErrorDetails.render(e)),
            json!({"error": "`a`: missing", "details": {"field": "a", "message": "missing"}})
        );
        assert_eq!(
            body(&ErrorStyle::ErrorDetails.refuse(413, "request body too large")),
            json!({"error": "request body too large"})
        );
        assert_eq!(
            body(&ErrorStyle::Message.refuse(413, "request body too large")),
            json!({"message": "request body too large"})
        );
    }

    #[test]
    fn a_503_says_when_to_retry_once() {
        let r = ErrorStyle::Message.refuse(503, "busy");
        assert_eq!(r.header("retry-after"), Some("1"));
        let r = ErrorStyle::ErrorDetails
            .render(ApiError::unavailable("starting").with_header("Retry-After", "5"));
        let given: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
            .collect();
        assert_eq!(given, [&("Retry-After".to_string(), "5".to_string())]);
    }

    #[test]
    fn auth_failures_challenge_or_ask_to_retry() {
        let r = ErrorStyle::Message.render(AuthError::Invalid("x".into()).into());
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"kaa\", error=\"invalid_token\"")
        );
        assert_eq!(
            ErrorStyle::Message
                .render(AuthError::Unavailable.into())
                .status,
            503
        );
    }
}
