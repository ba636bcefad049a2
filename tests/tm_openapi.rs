#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! docs/openapi/tenant-manager.json against the code: the document parses, names exactly the
//! Tenant Manager router's routes with their path parameters, every `$ref` resolves, every
//! operation has a unique id and a success; the running binary serves it as compiled in.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use kaa::http::openapi::TM_OPENAPI;
use kaa::http::tm_api::router;
use serde_json::Value;

const TM: &str = env!("CARGO_BIN_EXE_tenant-manager");
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    serde_json::from_str(TM_OPENAPI).expect("docs/openapi/tenant-manager.json is JSON")
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (key, op) in item.as_object().expect("path item") {
            if METHODS.contains(&key.as_str()) {
                out.push((key.to_ascii_uppercase(), path.clone(), op));
            }
        }
    }
    out
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn document_names_exactly_the_routes_with_their_path_parameters() {
    let d = doc();
    assert!(d["openapi"].as_str().unwrap().starts_with("3."));
    let routes: BTreeSet<(String, String)> = router()
        .routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented: BTreeSet<(String, String)> =
        operations(&d).into_iter().map(|(m, p, _)| (m, p)).collect();
    let missing: Vec<_> = routes.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(missing.is_empty(), "routed but not documented: {missing:?}");
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    for (method, path, op) in operations(&d) {
        let wanted: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| {
                        assert_eq!(p["required"], true, "{method} {path}");
                        p["name"].as_str().unwrap()
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(declared, wanted, "{method} {path}");
    }
}

#[test]
fn every_ref_resolves_and_every_operation_has_an_id_and_a_success() {
    let d = doc();
    let mut all = Vec::new();
    refs(&d, &mut all);
    for r in &all {
        let target = r.strip_prefix('#').and_then(|p| d.pointer(p));
        assert!(target.is_some(), "unresolved {r}");
    }
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&d) {
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "{method} {path}: no operationId");
        assert!(
            ids.insert(id.to_string()),
            "{method} {path}: duplicate id {id}"
        );
        let ok = op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with('2'));
        assert!(ok, "{method} {path}: no success response");
    }
}

#[test]
fn the_service_serves_the_document_as_compiled_in() {
    let dir = support::TempDir::new();
    let svc = support::proc::start(TM, &dir.0, &[("SERVER_PORT", "0")]).unwrap();
    let r = support::proc::request(
        svc.addr,
        "GET",
        "/api/v1/openapi.json",
        &[],
        b"",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), doc());
    assert!(svc.terminate(Duration::from_secs(10)).success());
}
