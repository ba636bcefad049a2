#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! docs/openapi/iam.json against the code: the document parses, names exactly the router's
//! routes, every `$ref` resolves, every operation has an id and a success; the service serves it
//! as it is compiled in; and a walk over every route of a running service checks that each answer
//! has a documented status, the documented headers and a body of the documented schema.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use kaa::http::iam_api::router;
use kaa::http::openapi::IAM_OPENAPI;
use kaa::policy::Krn;
use serde_json::{Value, json};
use support::proc::{Resp, request};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    serde_json::from_str(IAM_OPENAPI).expect("docs/openapi/iam.json is JSON")
}

/// `{name}` segments of a path template, in order.
fn params_of(template: &str) -> Vec<&str> {
    template
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// The object a `$ref` (`#/components/...`) points at.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// `v` itself, or what its `$ref` points at.
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(doc, r).unwrap_or_else(|| panic!("unresolved {r}")),
        None => v,
    }
}

/// Every (method, path, operation) of the document.
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

fn collect_refs(v: &Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push((
                        at.clone(),
                        x.as_str().unwrap_or("<not a string>").to_string(),
                    ));
                } else {
                    collect_refs(x, format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect_refs(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn document_is_openapi_3() {
    let d = doc();
    let version = d["openapi"].as_str().expect("`openapi` is a string");
    assert!(version.starts_with("3."), "openapi {version}");
    assert!(d["info"]["title"].is_string() && d["info"]["version"].is_string());
    assert!(d["paths"].is_object() && d["components"].is_object());
}

#[test]
fn every_route_is_documented_with_its_parameters() {
    let d = doc();
    let mut missing = Vec::new();
    for (method, pattern) in router().routes() {
        let Some(item) = d["paths"].get(pattern) else {
            missing.push(format!("{method} {pattern}: no such path"));
            continue;
        };
        let Some(op) = item.get(method.to_ascii_lowercase()) else {
            missing.push(format!("{method} {pattern}: no such method"));
            continue;
        };
        // Path parameters: declared on the path item or the operation, by the template's names.
        let mut declared = BTreeSet::new();
        for list in [item.get("parameters"), op.get("parameters")]
            .into_iter()
            .flatten()
        {
            for p in list.as_array().expect("parameters is an array") {
                let p = deref(&d, p);
                if p["in"] == "path" {
                    assert_eq!(p["required"], true, "{method} {pattern}: {p}");
                    declared.insert(p["name"].as_str().unwrap_or("").to_string());
                }
            }
        }
        let wanted: BTreeSet<String> = params_of(pattern).into_iter().map(String::from).collect();
        if declared != wanted {
            missing.push(format!(
                "{method} {pattern}: path parameters {declared:?}, template has {wanted:?}"
            ));
        }
        if matches!(method, "PUT" | "PATCH") {
            let has_if_match = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| deref(&d, p)["name"].as_str() == Some("If-Match"))
            });
            // Attach is a PUT without versions: only entity writes take If-Match.
            if !pattern.ends_with("/attach") && !has_if_match {
                missing.push(format!("{method} {pattern}: no If-Match parameter"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn document_has_no_route_the_router_lacks() {
    let d = doc();
    let routes: BTreeSet<(String, String)> = router()
        .routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let extra: Vec<String> = operations(&d)
        .into_iter()
        .filter(|(m, p, _)| !routes.contains(&(m.clone(), p.clone())))
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}

#[test]
fn every_ref_resolves_to_a_component() {
    let d = doc();
    let mut refs = Vec::new();
    collect_refs(&d, String::new(), &mut refs);
    assert!(!refs.is_empty());
    let bad: Vec<String> = refs
        .iter()
        .filter(|(_, r)| !r.starts_with("#/components/") || resolve(&d, r).is_none())
        .map(|(at, r)| format!("{at}: {r}"))
        .collect();
    assert!(bad.is_empty(), "unresolved $ref: {bad:#?}");
}

#[test]
fn every_operation_has_a_unique_id_a_success_and_the_request_id_header() {
    let d = doc();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (method, path, op) in operations(&d) {
        let what = format!("{method} {path}");
        match op["operationId"].as_str() {
            None | Some("") => problems.push(format!("{what}: no operationId")),
            Some(id) => {
                if let Some(other) = ids.insert(id.to_string(), what.clone()) {
                    problems.push(format!("{what}: operationId `{id}` also on {other}"));
                }
            }
        }
        let Some(responses) = op["responses"].as_object() else {
            problems.push(format!("{what}: no responses"));
            continue;
        };
        if !responses.keys().any(|s| s.starts_with('2')) {
            problems.push(format!("{what}: no 2xx response"));
        }
        for (status, r) in responses {
            let r = match r.get("$ref").and_then(Value::as_str) {
                Some(reference) => match resolve(&d, reference) {
                    Some(r) => r,
                    None => {
                        problems.push(format!("{what} {status}: unresolved {reference}"));
                        continue;
                    }
                },
                None => r,
            };
            if r["headers"].get("X-Request-Id").is_none() {
                problems.push(format!("{what} {status}: no X-Request-Id header"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------- a minimal schema checker

/// Check `v` against an OpenAPI 3.0 schema (the subset the document uses: `$ref`, `type`,
/// `nullable`, `enum`, `required`, `properties`, `additionalProperties`, `items`, `minItems`,
/// `maxItems`, `allOf`, `oneOf`, `anyOf`). Problems go to `errs`, prefixed with `at`.
fn conform(d: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let s = deref(d, schema);
    if v.is_null() && s["nullable"] == true {
        return;
    }
    if let Some(all) = s["allOf"].as_array() {
        for sub in all {
            conform(d, sub, v, at, errs);
        }
    }
    let passing = |list: &Vec<Value>| {
        list.iter()
            .filter(|sub| {
                let mut e = Vec::new();
                conform(d, sub, v, at, &mut e);
                e.is_empty()
            })
            .count()
    };
    if let Some(one) = s["oneOf"].as_array() {
        let n = passing(one);
        if n != 1 {
            errs.push(format!("{at}: matches {n} of oneOf, not 1: {v}"));
        }
    }
    if let Some(any) = s["anyOf"].as_array()
        && passing(any) == 0
    {
        errs.push(format!("{at}: matches none of anyOf: {v}"));
    }
    if let Some(t) = s["type"].as_str() {
        let fits = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => false,
        };
        if !fits {
            errs.push(format!("{at}: not of type {t}: {v}"));
            return;
        }
    }
    if let Some(e) = s["enum"].as_array()
        && !e.contains(v)
    {
        errs.push(format!("{at}: {v} is not one of {e:?}"));
    }
    if let Value::Object(m) = v {
        for r in s["required"].as_array().into_iter().flatten() {
            if let Some(k) = r.as_str()
                && !m.contains_key(k)
            {
                errs.push(format!("{at}: required `{k}` missing"));
            }
        }
        let props = s["properties"].as_object();
        for (k, x) in m {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => conform(d, ps, x, &format!("{at}.{k}"), errs),
                None => match &s["additionalProperties"] {
                    Value::Bool(false) => errs.push(format!("{at}: unexpected `{k}`")),
                    extra @ Value::Object(_) => conform(d, extra, x, &format!("{at}.{k}"), errs),
                    _ => {}
                },
            }
        }
    }
    if let Value::Array(a) = v {
        if let Some(min) = s["minItems"].as_u64()
            && (a.len() as u64) < min
        {
            errs.push(format!("{at}: fewer than {min} items"));
        }
        if let Some(max) = s["maxItems"].as_u64()
            && (a.len() as u64) > max
        {
            errs.push(format!("{at}: more than {max} items"));
        }
        if let Some(items) = s.get("items") {
            for (i, x) in a.iter().enumerate() {
                conform(d, items, x, &format!("{at}[{i}]"), errs);
            }
        }
    }
}

#[test]
fn the_schema_checker_sees_mismatches() {
    let d = doc();
    let error = json!({"$ref": "#/components/schemas/Error"});
    let mut e = Vec::new();
    conform(
        &d,
        &error,
        &json!({"message": "m", "errors": ["a"]}),
        "",
        &mut e,
    );
    assert!(e.is_empty(), "{e:?}");
    for bad in [
        json!({"errors": []}),
        json!({"message": 1}),
        json!({"message": "m", "other": 1}),
        json!(["m"]),
    ] {
        let mut e = Vec::new();
        conform(&d, &error, &bad, "", &mut e);
        assert!(!e.is_empty(), "{bad} passed");
    }
}

// ---------------------------------------------------------------- against a running service

const CONFIG: &str = r#"
iam:
  resource-policy-templates:
    endpoint:
      statements:
        - effect: allow
          actions: ["epr:endpoint:*"]
          resources: ["${resource}"]
          principals: ["krn:iam:${tenant}::group/operators"]
"#;

/// Path id of a KRN: base64, percent-encoded as the document says.
fn id(krn: &str) -> String {
    raw_id(krn)
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

fn raw_id(krn: &str) -> String {
    Krn::parse(krn).unwrap().to_id()
}

/// A client that checks every answer against the document and records the routes it reached.
struct Checked {
    addr: SocketAddr,
    doc: Value,
    reached: BTreeSet<(String, String)>,
    problems: Vec<String>,
}

impl Checked {
    /// The documented path template a concrete path matches, most literal segments first (as
    /// the router picks).
    fn template(&self, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut best: Option<(usize, String)> = None;
        for t in self.doc["paths"].as_object().unwrap().keys() {
            let segs: Vec<&str> = t.trim_matches('/').split('/').collect();
            if segs.len() != parts.len() {
                continue;
            }
            let mut lits = 0;
            let fits = segs.iter().zip(&parts).all(|(s, p)| {
                if s.starts_with('{') {
                    true
                } else {
                    lits += 1;
                    s == p
                }
            });
            if fits && best.as_ref().is_none_or(|(b, _)| lits > *b) {
                best = Some((lits, t.clone()));
            }
        }
        best.map(|(_, t)| t)
    }

    fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        status: u16,
    ) -> Resp {
        let r = request(
            self.addr,
            method,
            target,
            headers,
            body,
            Duration::from_secs(10),
        )
        .unwrap();
        let what = format!("{method} {target} -> {}", r.status);
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        self.check(method, target, &r, &what);
        r
    }

    fn call(&mut self, method: &str, target: &str, body: Option<Value>, status: u16) -> Value {
        self.call_h(method, target, body, &[], status)
    }

    fn call_h(
        &mut self,
        method: &str,
        target: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
        status: u16,
    ) -> Value {
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers = vec![("Content-Type", "application/json")];
        headers.extend_from_slice(extra);
        let r = self.send(method, target, &headers, text.as_bytes(), status);
        if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&r.body).unwrap_or(Value::Null)
        }
    }

    fn check(&mut self, method: &str, target: &str, r: &Resp, what: &str) {
        let path = target.split('?').next().unwrap_or("");
        let Some(template) = self.template(path) else {
            self.problems.push(format!("{what}: no documented path"));
            return;
        };
        let d = self.doc.clone();
        let response = match d["paths"][&template].get(method.to_ascii_lowercase()) {
            Some(op) => {
                self.reached.insert((method.to_string(), template.clone()));
                match op["responses"].get(r.status.to_string()) {
                    Some(resp) => deref(&d, resp),
                    None => {
                        self.problems.push(format!("{what}: status not documented"));
                        return;
                    }
                }
            }
            // A documented path with another method: the router's 405.
            None => {
                if r.status != 405 {
                    self.problems
                        .push(format!("{what}: undocumented method not answered 405"));
                }
                &d["components"]["responses"]["MethodNotAllowed"]
            }
        };
        for name in response["headers"]
            .as_object()
            .into_iter()
            .flat_map(|h| h.keys())
        {
            if r.header(name).is_none() {
                self.problems
                    .push(format!("{what}: documented header {name} missing"));
            }
        }
        match response["content"].as_object() {
            None => {
                if !r.body.is_empty() {
                    self.problems
                        .push(format!("{what}: a body where none is documented"));
                }
            }
            Some(content) => {
                let (media, spec) = content.iter().next().unwrap();
                let ct = r.header("content-type").unwrap_or("");
                if !ct.starts_with(media.as_str()) {
                    self.problems
                        .push(format!("{what}: content type `{ct}`, documented {media}"));
                }
                if media == "application/json" {
                    match serde_json::from_slice::<Value>(&r.body) {
                        Ok(v) => {
                            let mut errs = Vec::new();
                            conform(&d, &spec["schema"], &v, "body", &mut errs);
                            self.problems
                                .extend(errs.into_iter().map(|e| format!("{what}: {e}")));
                        }
                        Err(e) => self.problems.push(format!("{what}: not JSON: {e}")),
                    }
                }
            }
        }
    }
}

#[test]
fn the_service_serves_the_document() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), "");
    let r = support::proc::get(svc.addr, "/api/v1/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, IAM_OPENAPI.as_bytes());
    let served: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(served, doc());
}

/// Every route of the router, called on a running service with security off: each answer must
/// be documented (status, headers, body schema).
#[test]
fn every_route_answers_as_documented() {
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), CONFIG);
    let mut c = Checked {
        addr: svc.addr,
        doc: doc(),
        reached: BTreeSet::new(),
        problems: Vec::new(),
    };

    // ---------------- operations and the document
    c.call("GET", "/health", None, 200);
    c.call("GET", "/health/ready", None, 200);
    c.send("GET", "/metrics", &[], b"", 200);
    c.call("GET", "/api/v1/openapi.json", None, 200);
    c.call("POST", "/health", None, 405);

    // ---------------- policies
    let readers = json!({"name": "readers", "tenantID": "t1", "description": "read users",
        "statements": [
            {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:t1::user/*"]},
            {"effect": "deny", "actions": ["iam:user:*"], "resources": ["krn:iam:t1::user/org1/*"]}]});
    c.call("POST", "/api/v1/policies", Some(readers.clone()), 201);
    c.call("POST", "/api/v1/policies", Some(readers), 409);
    c.call(
        "POST",
        "/api/v1/policies",
        Some(json!({"name": "x", "statements": [], "surprise": 1})),
        400,
    );
    c.send(
        "POST",
        "/api/v1/policies",
        &[("Content-Type", "text/plain")],
        b"{}",
        415,
    );
    c.send(
        "POST",
        "/api/v1/policies",
        &[("Content-Type", "application/json")],
        &vec![b' '; (1 << 20) + 1],
        413,
    );
    let temp = json!({"name": "temp", "tenantID": "t1", "statements": [
        {"effect": "allow", "actions": ["epr:endpoint:read"], "resources": ["krn:epr:t1::endpoint/e1"]}]});
    c.call("POST", "/api/v1/policies", Some(temp), 201);
    c.call(
        "GET",
        "/api/v1/policies?tenantID=t1&page=1&pageSize=10&sort=created&sortOrder=desc&name=e&type=identity&origin=api",
        None,
        200,
    );
    c.call("GET", "/api/v1/policies?type=base", None, 200);
    c.call("GET", "/api/v1/policies?page=0", None, 400);
    let temp_id = id("krn:iam:t1::policy/temp");
    c.call("GET", &format!("/api/v1/policies/{temp_id}"), None, 200);
    c.call("GET", "/api/v1/policies/not-base64!", None, 404);
    let new = json!({"description": "d", "statements": [
        {"effect": "allow", "actions": ["epr:endpoint:*"], "resources": ["krn:epr:t1::endpoint/e1"]}]});
    c.call_h(
        "PUT",
        &format!("/api/v1/policies/{temp_id}"),
        Some(new.clone()),
        &[("If-Match", "\"1\"")],
        200,
    );
    c.call_h(
        "PUT",
        &format!("/api/v1/policies/{temp_id}"),
        Some(new),
        &[("If-Match", "\"1\"")],
        412,
    );
    c.call("PATCH", &format!("/api/v1/policies/{temp_id}"), None, 405);
    // ---------------- policy history and the audit trail
    c.call(
        "GET",
        &format!("/api/v1/policies/{temp_id}/versions"),
        None,
        200,
    );
    c.call(
        "GET",
        &format!("/api/v1/policies/{temp_id}/versions/1"),
        None,
        200,
    );
    c.call(
        "GET",
        &format!("/api/v1/policies/{temp_id}/versions/7"),
        None,
        404,
    );
    c.call(
        "GET",
        &format!("/api/v1/policies/{temp_id}/versions/x"),
        None,
        400,
    );
    c.call_h(
        "POST",
        &format!("/api/v1/policies/{temp_id}/versions/1/restore"),
        None,
        &[("If-Match", "\"1\"")],
        412,
    );
    c.call(
        "POST",
        &format!("/api/v1/policies/{temp_id}/versions/1/restore"),
        Some(json!({"version": 2})),
        200,
    );
    c.call(
        "POST",
        &format!("/api/v1/policies/{temp_id}/versions/1/restore"),
        Some(json!({"surprise": 1})),
        400,
    );
    let trail = c.call("GET", "/api/v1/audit?tenantID=t1&pageSize=2", None, 200);
    let next = trail["next"].as_str().unwrap_or("").to_string();
    c.call(
        "GET",
        &format!("/api/v1/audit?tenantID=t1&pageSize=2&next={next}&action=iam:policy:update&entity={temp_id}&principal=anonymous&from=2026-01-01&to=2999-01-01"),
        None,
        200,
    );
    c.call("GET", "/api/v1/audit?from=soon", None, 400);
    let base_id = id("krn:iam:kaa::policy/tenant-admin");
    c.call("DELETE", &format!("/api/v1/policies/{base_id}"), None, 409);

    // ---------------- users
    let alice = json!({"username": "alice", "email": "alice@example.com", "password": "secret-pw-1",
        "confirmPassword": "secret-pw-1", "tenantID": "t1", "firstName": "Alice",
        "metadata": {"k": "v"}});
    c.call("POST", "/api/v1/users", Some(alice), 201);
    let bob = json!({"username": "bob", "path": "/org1", "password": "secret-pw-2",
        "confirmPassword": "secret-pw-2", "tenantID": "t1", "enabled": true,
        "policyIDs": [raw_id("krn:iam:t1::policy/readers")]});
    c.call("POST", "/api/v1/users", Some(bob), 201);
    let carol = json!({"username": "carol", "password": "secret-pw-3",
        "confirmPassword": "secret-pw-3", "tenantID": "t1"});
    c.call("POST", "/api/v1/users", Some(carol), 201);
    c.call(
        "POST",
        "/api/v1/users",
        Some(json!({"username": "x", "password": "aaaaaaaa", "confirmPassword": "bbbbbbbb"})),
        400,
    );
    c.call(
        "GET",
        "/api/v1/users?tenantID=t1&sort=email&sortOrder=asc&username=a&email=example&path=/&firstName=A&lastName=&search=a",
        None,
        200,
    );
    c.call("GET", "/api/v1/users/me", None, 404);
    c.call("GET", "/api/v1/users/me/krn", None, 404);
    c.call("GET", "/api/v1/users/me/irn", None, 404);
    let v = c.call(
        "GET",
        &format!(
            "/api/v1/users?tenantID=t1&krn={}",
            id("krn:iam:t1::user/alice")
        ),
        None,
        200,
    );
    assert_eq!(v["count"], 1, "{v}");
    c.call("GET", "/api/v1/users?krn=krn:iam", None, 400);
    let alice_id = id("krn:iam:t1::user/alice");
    let bob_id = id("krn:iam:t1::user/org1/bob");
    c.call("GET", &format!("/api/v1/users/{alice_id}"), None, 200);
    c.call_h(
        "PATCH",
        &format!("/api/v1/users/{alice_id}"),
        Some(json!({"enabled": true, "lastName": "Liddell", "firstName": null})),
        &[("If-Match", "1")],
        200,
    );
    c.call_h(
        "PATCH",
        &format!("/api/v1/users/{alice_id}"),
        Some(json!({"enabled": false})),
        &[("If-Match", "1")],
        412,
    );
    let readers_ids = json!({"policyIDs": [raw_id("krn:iam:t1::policy/readers")]});
    c.call(
        "PUT",
        &format!("/api/v1/users/{alice_id}/policies/attach"),
        Some(readers_ids.clone()),
        204,
    );
    c.call(
        "GET",
        &format!("/api/v1/users/{alice_id}/policies?page=1&pageSize=5"),
        None,
        200,
    );
    c.call(
        "POST",
        &format!("/api/v1/users/{alice_id}/policies/detach"),
        Some(readers_ids.clone()),
        204,
    );
    c.call(
        "PUT",
        &format!("/api/v1/users/{alice_id}/policies/attach"),
        Some(json!({})),
        400,
    );

    // ---------------- groups
    c.call(
        "POST",
        "/api/v1/groups",
        Some(json!({"name": "dev", "tenantID": "t1", "displayName": "Developers"})),
        201,
    );
    let dev_raw = raw_id("krn:iam:t1::group/dev");
    c.call(
        "POST",
        "/api/v1/groups",
        Some(json!({"name": "java", "tenantID": "t1", "parentID": dev_raw})),
        201,
    );
    c.call(
        "POST",
        "/api/v1/groups",
        Some(json!({"name": "operators", "tenantID": "t1"})),
        201,
    );
    c.call(
        "POST",
        "/api/v1/groups",
        Some(json!({"name": "spare", "tenantID": "t1"})),
        201,
    );
    let dev = id("krn:iam:t1::group/dev");
    let java = id("krn:iam:t1::group/dev/java");
    c.call(
        "GET",
        &format!(
            "/api/v1/groups?tenantID=t1&parentID={dev}&sort=name&sortOrder=desc&name=j&displayName=&path=/dev"
        ),
        None,
        200,
    );
    c.call("GET", "/api/v1/groups?sort=nope", None, 400);
    c.call("GET", &format!("/api/v1/groups/{dev}"), None, 200);
    c.call_h(
        "PATCH",
        &format!("/api/v1/groups/{dev}"),
        Some(json!({"displayName": null, "metadata": {"a": 1}, "version": 1})),
        &[("If-Match", "W/\"1\"")],
        200,
    );
    c.call(
        "PUT",
        &format!("/api/v1/groups/{dev}/policies/attach"),
        Some(readers_ids.clone()),
        204,
    );
    c.call("GET", &format!("/api/v1/groups/{dev}/policies"), None, 200);
    c.call(
        "POST",
        &format!("/api/v1/groups/{dev}/policies/detach"),
        Some(readers_ids.clone()),
        204,
    );
    c.call(
        "POST",
        &format!("/api/v1/groups/{java}/members/add"),
        Some(json!({"userIDs": [raw_id("krn:iam:t1::user/alice")]})),
        204,
    );
    c.call(
        "POST",
        &format!("/api/v1/groups/{java}/members/add"),
        Some(json!({"userIDs": [raw_id("krn:iam:t1::user/nobody")]})),
        404,
    );
    c.call("GET", &format!("/api/v1/groups/{java}/members"), None, 200);
    c.call(
        "POST",
        &format!("/api/v1/groups/{java}/members/remove"),
        Some(json!({"userIDS": [raw_id("krn:iam:t1::user/alice")]})),
        204,
    );
    c.call(
        "POST",
        &format!("/api/v1/users/{bob_id}/groups/add"),
        Some(json!({"groupIDs": [raw_id("krn:iam:t1::group/operators")]})),
        204,
    );
    c.call("GET", &format!("/api/v1/users/{bob_id}/groups"), None, 200);
    c.call("DELETE", &format!("/api/v1/groups/{dev}"), None, 409);

    // ---------------- resources
    let r = c.call(
        "POST",
        "/api/v1/resources",
        Some(
            json!({"service": "epr", "resourceType": "endpoint", "name": "e1",
            "tenantID": "t1", "displayName": "Thermostat", "metadata": {"room": "1"}}),
        ),
        201,
    );
    assert!(r["data"]["policyID"].is_string(), "{r}");
    c.call(
        "POST",
        "/api/v1/resources",
        Some(json!({"application": "epr", "resourceType": "endpoint", "name": "e2", "tenantID": "t1"})),
        201,
    );
    c.call(
        "POST",
        "/api/v1/resources",
        Some(
            json!({"service": "epr", "resourceType": "sensor", "name": "s1",
            "path": "/site1", "tenantID": "t1"}),
        ),
        201,
    );
    c.call(
        "POST",
        "/api/v1/resources",
        Some(json!({"service": "epr", "resourceType": "endpoint", "name": "e1", "tenantID": "t1"})),
        409,
    );
    c.call(
        "GET",
        "/api/v1/resources?tenantID=t1&service=epr&resourceType=endpoint&enabled=true&sort=name&sortOrder=desc&path=/&displayName=",
        None,
        200,
    );
    c.call("GET", "/api/v1/resources?enabled=maybe", None, 400);
    let e1 = id("krn:epr:t1::endpoint/e1");
    let s1 = id("krn:epr:t1::sensor/site1/s1");
    c.call("GET", &format!("/api/v1/resources/{e1}"), None, 200);
    c.call_h(
        "PATCH",
        &format!("/api/v1/resources/{e1}"),
        Some(json!({"description": "hall", "enabled": true})),
        &[("If-Match", "\"1\"")],
        200,
    );
    c.call("GET", &format!("/api/v1/resources/{e1}/policy"), None, 200);
    c.call("GET", &format!("/api/v1/resources/{s1}/policy"), None, 404);
    let rp = json!({"statements": [{"effect": "allow", "actions": ["epr:sensor:read"],
        "resources": ["krn:epr:t1::sensor/site1/s1"], "principals": ["krn:iam:t1::user/alice"]}]});
    c.call(
        "PUT",
        &format!("/api/v1/resources/{s1}/policy"),
        Some(rp.clone()),
        200,
    );
    c.call_h(
        "PUT",
        &format!("/api/v1/resources/{s1}/policy"),
        Some(rp),
        &[("If-Match", "\"1\"")],
        200,
    );

    // ---------------- pools
    let fleet_body = json!({"name": "fleet", "tenantID": "t1", "displayName": "Fleet",
        "resourceIDs": [raw_id("krn:epr:t1::endpoint/e2")]});
    c.call("POST", "/api/v1/pools", Some(fleet_body.clone()), 201);
    c.call("POST", "/api/v1/pools", Some(fleet_body), 409);
    c.call(
        "GET",
        "/api/v1/pools?tenantID=t1&name=fl&resourceKRN=krn:epr:t1::endpoint/e2&page=1&pageSize=3",
        None,
        200,
    );
    c.call("GET", "/api/v1/pools?resourceKRN=nope", None, 400);
    let fleet = id("krn:iam:t1::pool/fleet");
    c.call("GET", &format!("/api/v1/pools/{fleet}"), None, 200);
    c.call_h(
        "PATCH",
        &format!("/api/v1/pools/{fleet}"),
        Some(json!({"description": "all of them", "displayName": null})),
        &[("If-Match", "\"1\"")],
        200,
    );
    let e1_ids = json!({"resourceIDs": [raw_id("krn:epr:t1::endpoint/e1")]});
    c.call(
        "POST",
        &format!("/api/v1/pools/{fleet}/resources/add"),
        Some(e1_ids.clone()),
        204,
    );
    c.call(
        "POST",
        &format!("/api/v1/pools/{fleet}/resources/remove"),
        Some(e1_ids),
        204,
    );
    let pool_policy = json!({"name": "fleet-readers", "tenantID": "t1", "statements": [
        {"effect": "allow", "actions": ["epr:endpoint:read"], "resources": ["krn:epr:t1::endpoint/none"],
         "principals": ["krn:iam:t1::user/alice"]}]});
    c.call("POST", "/api/v1/policies", Some(pool_policy), 201);
    let fleet_readers = json!({"policyIDs": [raw_id("krn:iam:t1::policy/fleet-readers")]});
    c.call(
        "PUT",
        &format!("/api/v1/pools/{fleet}/policies/attach"),
        Some(fleet_readers.clone()),
        204,
    );
    c.call("GET", &format!("/api/v1/pools/{fleet}/policies"), None, 200);

    // ---------------- the evaluate family
    let ask = json!({"principal": "krn:iam:t1::user/org1/bob", "action": "iam:user:read",
        "resources": ["krn:iam:t1::user/alice", "krn:iam:t1::user/org1/x", "krn:iam:t1::group/g"]});
    let all_allowed = json!({"principal": "krn:iam:t1::user/org1/bob", "action": "iam:user:read",
        "resources": ["krn:iam:t1::user/alice"]});
    let v = c.call("POST", "/api/v1/evaluate", Some(all_allowed.clone()), 200);
    assert_eq!(v, json!(["krn:iam:t1::user/alice"]));
    let v = c.call("POST", "/api/v1/evaluate", Some(ask.clone()), 403);
    assert!(v["denied"].is_array(), "{v}");
    c.call(
        "POST",
        "/api/v1/evaluate?filterResources=true",
        Some(ask.clone()),
        200,
    );
    let v = c.call(
        "POST",
        "/api/v1/evaluate?explain=true",
        Some(ask.clone()),
        403,
    );
    assert_eq!(v["allowed"], false, "{v}");
    let v = c.call(
        "POST",
        "/api/v1/evaluate?explain=1",
        Some(all_allowed.clone()),
        200,
    );
    assert_eq!(v["allowed"], true, "{v}");
    let v = c.call(
        "POST",
        "/api/v1/evaluate?filterResources=true&explain=true",
        Some(ask.clone()),
        200,
    );
    assert!(v["data"].is_array() && v["decisions"].is_array(), "{v}");
    c.call(
        "POST",
        "/api/v1/evaluate?explain=maybe",
        Some(ask.clone()),
        400,
    );
    c.call(
        "POST",
        "/api/v1/evaluate",
        Some(json!({"action": "iam:user:read", "resources": ["krn:iam:t1::user/x"]})),
        400,
    );
    // Not registered: the user and group asked about do not exist.
    c.call(
        "POST",
        "/api/v1/resources/evaluate?filterResources=true",
        Some(ask),
        404,
    );
    let v = c.call(
        "POST",
        "/api/v1/resources/evaluate?filterResources=true",
        Some(
            json!({"principal": "krn:iam:t1::user/alice", "action": "epr:endpoint:read",
            "resources": ["krn:epr:t1::endpoint/e2"]}),
        ),
        200,
    );
    assert_eq!(v, json!(["krn:epr:t1::endpoint/e2"]));
    let many = json!({"principal": "krn:iam:t1::user/org1/bob",
        "actions": ["iam:user:read", "iam:user:delete"], "resources": ["krn:iam:t1::user/alice"]});
    let v = c.call("POST", "/api/v1/evaluate/actions", Some(many.clone()), 200);
    assert!(v["iam:user:read"]["allowed"].is_array(), "{v}");
    let v = c.call(
        "POST",
        "/api/v1/evaluate/actions?shape=kaa",
        Some(many.clone()),
        200,
    );
    assert!(v["iam:user:read"].is_array(), "{v}");
    c.call(
        "POST",
        "/api/v1/evaluate/actions?shape=other",
        Some(many.clone()),
        400,
    );
    c.call(
        "POST",
        "/api/v1/resources/evaluate",
        Some(
            json!({"principal": "krn:iam:t1::user/org1/bob", "action": "epr:endpoint:read",
            "resources": ["krn:epr:t1::endpoint/not-registered"]}),
        ),
        404,
    );
    let v = c.call(
        "POST",
        "/api/v1/evaluate/actions?explain=true",
        Some(many),
        200,
    );
    assert!(v["iam:user:delete"]["decisions"].is_array(), "{v}");
    c.call(
        "POST",
        "/api/v1/evaluate/irns/actions",
        Some(json!({"principal": "krn:iam:t1::user/org1/bob",
            "actions": ["iam:user:read"], "irns": ["krn:iam:t1::user/alice"]})),
        200,
    );
    let v = c.call(
        "POST",
        "/api/v1/evaluate/resources?page=1&pageSize=10",
        Some(
            json!({"principal": "krn:iam:t1::user/alice", "action": "epr:endpoint:read",
            "resourceType": "endpoint", "service": "epr", "tenantID": "t1"}),
        ),
        200,
    );
    assert_eq!(v["data"], json!(["krn:epr:t1::endpoint/e2"]), "{v}");
    c.call(
        "POST",
        "/api/v1/evaluate/resources",
        Some(json!({"principal": "krn:iam:t1::user/alice", "action": "epr:endpoint:read"})),
        400,
    );
    let sim = json!({"principal": "krn:iam:t1::user/alice", "actions": ["epr:endpoint:read"],
        "resources": ["krn:epr:t1::endpoint/e2"],
        "add": [{"name": "lockdown", "statements": [{"effect": "deny", "actions": ["epr:*"],
                 "resources": ["krn:epr:t1:*"]}], "attachedTo": ["krn:iam:t1::user/alice"]}],
        "remove": [raw_id("krn:iam:t1::policy/temp")]});
    let v = c.call("POST", "/api/v1/evaluate/simulate", Some(sim), 200);
    assert_eq!(v["data"]["results"][0]["changed"], true, "{v}");
    let logged = json!({"time": "2026-12-07T10:00:00.000Z", "requestID": "r1", "tenantID": "t1",
        "principal": "krn:iam:t1::user/alice", "action": "epr:endpoint:read",
        "resource": "krn:epr:t1::endpoint/e2", "outcome": "explicitDeny",
        "statements": [{"policyID": "krn:iam:t1::policy/gone", "id": raw_id("krn:iam:t1::policy/gone"),
            "version": 1, "statement": 0}]});
    let v = c.call(
        "POST",
        "/api/v1/evaluate/replay",
        Some(json!({ "decisions": [logged] })),
        200,
    );
    assert_eq!(v["data"]["changed"], 1, "{v}");
    assert_eq!(
        v["data"]["results"][0]["logged"]["statements"][0]["versionNow"],
        Value::Null,
        "{v}"
    );
    c.call(
        "POST",
        "/api/v1/evaluate/replay",
        Some(json!({"decisions": [{"time": "x"}]})),
        400,
    );

    // Conditions and variables: the policy as written and read back, an explained decision and
    // a simulation with the request context, each as documented.
    let guarded = json!({"name": "guarded", "tenantID": "t1", "statements": [
        {"effect": "allow", "actions": ["epr:endpoint:update"], "resources": ["krn:epr:t1::endpoint/*"],
         "principals": ["krn:iam:t1::user/alice"],
         "conditions": {"IpAddress": {"kaa:SourceIp": "10.0.0.0/8"}, "StringEqualsIfExists": {"site": ["a", "b"]}}},
        {"effect": "allow", "actions": ["fs:file:read"], "resources": ["krn:fs:t1::folder/${iam:username}/*"],
         "principals": ["krn:iam:t1::user/alice"]}]});
    let v = c.call("POST", "/api/v1/policies", Some(guarded), 201);
    assert!(
        v["data"]["statements"][0]["conditions"]["IpAddress"].is_object(),
        "{v}"
    );
    let ctx =
        json!({"kaa:SourceIp": "10.1.2.3", "kaa:CurrentTime": "2026-12-07T09:00:00Z", "site": "c"});
    let v = c.call(
        "POST",
        "/api/v1/evaluate?explain=true",
        Some(
            json!({"principal": "krn:iam:t1::user/alice", "action": "epr:endpoint:update",
            "resources": ["krn:epr:t1::endpoint/e2"], "context": ctx}),
        ),
        403,
    );
    assert_eq!(v["decisions"][0]["checked"][0]["applied"], false, "{v}");
    let v = c.call(
        "POST",
        "/api/v1/evaluate/simulate",
        Some(json!({"principal": "krn:iam:t1::user/alice", "actions": ["fs:file:read"],
            "resources": ["krn:fs:t1::folder/bob/x"], "context": ctx,
            "add": [{"name": "shared", "attachedTo": ["krn:iam:t1::user/alice"], "statements": [
                {"effect": "allow", "actions": ["fs:file:read"], "resources": ["krn:fs:t1::folder/*"],
                 "conditions": {"Bool": {"kaa:SourceIp": true}}}]}]})),
        200,
    );
    assert!(v["data"]["results"][0]["checked"].is_array(), "{v}");
    c.call(
        "POST",
        "/api/v1/evaluate",
        Some(
            json!({"principal": "krn:iam:t1::user/alice", "action": "epr:endpoint:update",
            "resources": ["krn:epr:t1::endpoint/e2"], "context": {"iam:username": "x"}}),
        ),
        400,
    );
    c.call(
        "DELETE",
        &format!("/api/v1/policies/{}", id("krn:iam:t1::policy/guarded")),
        None,
        204,
    );

    // ---------------- deletes
    c.call(
        "POST",
        &format!("/api/v1/pools/{fleet}/policies/detach"),
        Some(fleet_readers),
        204,
    );
    c.call("DELETE", &format!("/api/v1/pools/{fleet}"), None, 204);
    c.call("DELETE", &format!("/api/v1/pools/{fleet}"), None, 404);
    c.call("DELETE", &format!("/api/v1/resources/{e1}"), None, 204);
    c.call(
        "POST",
        "/api/v1/resources/delete",
        Some(json!({"resourceIDs": [raw_id("krn:epr:t1::endpoint/e2"), raw_id("krn:epr:t1::sensor/site1/s1")]})),
        204,
    );
    c.call(
        "POST",
        "/api/v1/policies/delete?tenantID=t1",
        Some(json!({"policyIDs": [raw_id("krn:iam:t1::policy/temp"), raw_id("krn:iam:t1::policy/ghost")]})),
        404,
    );
    c.call("POST", "/api/v1/policies/delete", Some(json!({})), 400);
    c.call("DELETE", &format!("/api/v1/policies/{temp_id}"), None, 204);
    c.call("DELETE", &format!("/api/v1/policies/{temp_id}"), None, 404);
    c.call("DELETE", &format!("/api/v1/users/{alice_id}"), None, 204);
    c.call(
        "POST",
        "/api/v1/users/delete?tenantID=t1",
        Some(json!({"userIDs": [raw_id("krn:iam:t1::user/carol"), raw_id("krn:iam:t1::user/ghost")]})),
        404,
    );
    c.call(
        "POST",
        "/api/v1/users/delete?tenantID=t1",
        Some(json!({"userIDs": [raw_id("krn:iam:t1::user/carol")]})),
        204,
    );
    c.call("DELETE", &format!("/api/v1/groups/{java}"), None, 204);
    c.call(
        "POST",
        "/api/v1/groups/delete?tenantID=t1",
        Some(json!({"groupIDs": [raw_id("krn:iam:t1::group/dev"), raw_id("krn:iam:t1::group/spare")]})),
        204,
    );
    c.call("DELETE", "/api/v1/users", None, 405);

    let unreached: Vec<String> = router()
        .routes()
        .into_iter()
        .filter(|(m, p)| !c.reached.contains(&(m.to_string(), p.to_string())))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(unreached.is_empty(), "routes not exercised: {unreached:?}");
    assert!(c.problems.is_empty(), "{}", c.problems.join("\n"));
}
