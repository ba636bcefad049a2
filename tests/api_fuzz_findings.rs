#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! What the API fuzzing (scripts/api-fuzz.sh, schemathesis) found, held as tests.
//!
//! * ST301 "deleted resource still available": the policies of a deleted group or pool (or a
//!   user that never existed) were listed as an empty 200 page; they answer 404 like the
//!   entity's own GET.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use support::proc::call_json;

fn id(krn: &str) -> String {
    STANDARD
        .encode(krn)
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

#[test]
fn the_policies_of_a_missing_user_group_or_pool_are_404() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), "");
    let a = svc.addr;
    for (kind, body) in [
        ("groups", json!({"name": "g0", "tenantID": "t1"})),
        ("pools", json!({"name": "p0", "tenantID": "t1"})),
    ] {
        let r = call_json(a, "POST", &format!("/api/v1/{kind}"), Some(&body));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let krn = format!("krn:iam:t1::{}/{}0", &kind[..kind.len() - 1], &kind[..1]);
        let path = format!("/api/v1/{kind}/{}/policies", id(&krn));
        assert_eq!(call_json(a, "GET", &path, None).status, 200, "{path}");
        let r = call_json(a, "DELETE", &format!("/api/v1/{kind}/{}", id(&krn)), None);
        assert_eq!(r.status, 204);
        let r = call_json(a, "GET", &path, None);
        assert_eq!(
            r.status,
            404,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let path = format!("/api/v1/users/{}/policies", id("krn:iam:t1::user/nobody"));
    assert_eq!(call_json(a, "GET", &path, None).status, 404);
}
