//! JSON request bodies: one place that turns bad input into clear 400s.

use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::message::Request;

/// Parse the body as `T`. Empty, malformed or mistyped bodies give 400 naming the problem.
pub fn body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    if let Some(ct) = req.header("content-type") {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !(media.is_empty() || media == "application/json" || media.ends_with("+json")) {
            return Err(ApiError::new(
                415,
                format!("unsupported content type `{media}`: send application/json"),
            ));
        }
    }
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty: a JSON object is required",
        ));
    }
    // Serde would map an array onto a struct's fields by position: only objects are bodies.
    // (Parsed straight into `T`, so duplicate keys stay errors.)
    let first = req.body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(&req.body) {
                Err(e) => ApiError::bad_request(format!("malformed JSON: {e}")),
                Ok(_) => ApiError::bad_request("invalid request body: a JSON object is required"),
            },
        );
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "invalid request body",
            _ => "malformed JSON",
        };
        ApiError::bad_request(format!("{what}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct B {
        #[allow(dead_code)]
        n: u32,
    }

    fn req(body: &str) -> Request {
        Request::new("POST", "/").with_body(body)
    }

    #[test]
    fn problems_are_400_with_a_message() {
        let e = body::<B>(&req("{")).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        let e = body::<B>(&req(r#"{"n":"x"}"#)).unwrap_err();
        assert!(
            e.message.starts_with("invalid request body"),
            "{}",
            e.message
        );
        let e = body::<B>(&req("[1]")).unwrap_err();
        assert!(e.message.contains("object"), "{}", e.message);
        let e = body::<B>(&req("  ")).unwrap_err();
        assert!(e.message.contains("empty"));
        let e =
            body::<B>(&req(r#"{"n":1}"#).with_header("content-type", "text/plain")).unwrap_err();
        assert_eq!(e.status, 415);
        assert!(body::<B>(&req(r#"{"n":1}"#)).is_ok());
    }
}
