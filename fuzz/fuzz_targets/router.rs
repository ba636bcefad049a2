//! Fuzz target: request targets as the routers see them. Input: `<METHOD> <target>`. The IAM and
//! Tenant Manager routers match the path (parameters percent-decoded) and the query string is
//! split and decoded. Nothing may panic.

#![no_main]

use std::sync::OnceLock;

use kaa::http::message::{Request, percent_decode};
use kaa::http::router::{Match, Router};
use kaa::http::iam_api::IamCtx;
use kaa::http::tm_api::TenantCtx;
use libfuzzer_sys::fuzz_target;

fn iam() -> &'static Router<IamCtx> {
    static R: OnceLock<Router<IamCtx>> = OnceLock::new();
    R.get_or_init(kaa::http::iam_api::router)
}

fn tm() -> &'static Router<TenantCtx> {
    static R: OnceLock<Router<TenantCtx>> = OnceLock::new();
    R.get_or_init(kaa::http::tm_api::router)
}

fn check<C>(m: Match<'_, C>) {
    match m {
        Match::Found { pattern, .. } => assert!(pattern.starts_with('/')),
        Match::MethodNotAllowed { allow } => assert!(!allow.is_empty()),
        Match::NotFound => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (method, target) = text.split_once(' ').unwrap_or(("GET", &text));
    let req = Request::new(method, target);
    check(iam().find(&req.method, &req.path));
    check(tm().find(&req.method, &req.path));
    let pairs = req.query_pairs();
    let map = req.query_map();
    assert!(map.len() <= pairs.len());
    if let Some((k, _)) = pairs.first() {
        assert!(req.query_param(k).is_some());
    }
    let _ = percent_decode(target, false);
    let _ = percent_decode(target, true);
});
