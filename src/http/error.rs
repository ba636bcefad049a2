//! THE one mapping from errors to HTTP statuses and JSON bodies `{"message", "errors"}`.
//! Internal detail (driver messages, hosts) is logged with the request id, never sent.

use serde_json::json;

use super::message::Response;
use crate::storage::StorageError;

/// An error a handler returns; becomes the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub errors: Vec<String>,
    /// Extra response headers (`WWW-Authenticate` on 401).
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
            status: 400,
            message: message.into(),
            errors,
            headers: Vec::new(),
            details: None,
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

    pub fn unavailable() -> ApiError {
        ApiError::new(503, "storage unavailable, retry later")
    }

    pub fn into_response(self) -> Response {
        let mut body = if self.errors.is_empty() {
            json!({ "message": self.message })
        } else {
            json!({ "message": self.message, "errors": self.errors })
        };
        if let (Some(d), serde_json::Value::Object(m)) = (self.details, &mut body) {
            m.insert("details".into(), *d);
        }
        let mut r = Response::json(self.status, &body);
        if self.status == 503 {
            r = r.with_header("Retry-After", "1");
        }
        for (k, v) in &self.headers {
            r = r.with_header(k, v);
        }
        r
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match e {
            StorageError::NotFound => ApiError::not_found("not found"),
            StorageError::Conflict(_) => ApiError::conflict("conflict with the current state"),
            StorageError::Stale => ApiError::new(
                412,
                "the entity changed since it was read: fetch it again and retry",
            ),
            StorageError::Unavailable(detail) => {
                log::warn!("storage unavailable: {detail}");
                ApiError::unavailable()
            }
            StorageError::Internal(detail) | StorageError::Refused(detail) => {
                log::error!("storage error: {detail}");
                ApiError::internal()
            }
        }
    }
}

/// How error bodies are written: IAM's `{"message", "errors"}` or the Tenant Manager's v1
/// `{"error", "details"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    Message,
    ErrorDetails,
}

/// `{"message": m, "errors": [..]}` -> `{"error": m, "details": {"errors": [..]}}`.
pub fn restyle(mut resp: Response) -> Response {
    if let Ok(serde_json::Value::Object(mut m)) = serde_json::from_slice(&resp.body)
        && let Some(msg) = m.remove("message")
    {
        let mut out = serde_json::Map::new();
        out.insert("error".into(), msg);
        if let Some(details) = m.remove("details") {
            out.insert("details".into(), details);
        } else if let Some(errors) = m.remove("errors") {
            out.insert("details".into(), json!({ "errors": errors }));
        }
        resp.body = serde_json::to_vec(&serde_json::Value::Object(out)).unwrap_or_default();
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_kinds_map_to_statuses_without_detail() {
        let cases = [
            (StorageError::NotFound, 404),
            (StorageError::Conflict("uniq pk_x".into()), 409),
            (StorageError::Stale, 412),
            (
                StorageError::Unavailable("host db:5432 refused".into()),
                503,
            ),
            (StorageError::Internal("syntax error at SELECT".into()), 500),
        ];
        for (e, status) in cases {
            let r = ApiError::from(e).into_response();
            assert_eq!(r.status, status);
            let body = String::from_utf8(r.body).unwrap();
            for leak in ["pk_x", "5432", "SELECT"] {
                assert!(!body.contains(leak), "{body}");
            }
        }
    }
}
