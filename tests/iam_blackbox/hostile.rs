//! Malformed and hostile requests: each answers its 4xx with a message and changes nothing.

use super::*;

pub(super) struct Hostile<'a> {
    pub(super) addr: SocketAddr,
    pub(super) w: &'a World,
    /// Full snapshot at the start (every path `watch` may name is in it).
    pub(super) before: Value,
    /// Paths besides the lists that the next cases could change.
    pub(super) watch: Vec<String>,
    pub(super) cases: usize,
    pub(super) failures: Vec<String>,
}

impl Hostile<'_> {
    pub(super) fn raw(
        &mut self,
        name: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        status: u16,
    ) {
        self.cases += 1;
        let r = send(self.addr, method, path, headers, body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let mut problems = Vec::new();
        if r.status != status {
            problems.push(format!("status {} want {status}", r.status));
        }
        let message = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(String::from));
        match message {
            Some(m) if !m.is_empty() => {}
            _ => problems.push("no JSON `message`".into()),
        }
        // The lists, and what the case aims at (members, attachments), as at the start.
        let mut paths = list_paths();
        paths.extend(self.watch.iter().cloned());
        let after = view(self.addr, &paths);
        let before: serde_json::Map<String, Value> = paths
            .iter()
            .map(|p| (p.clone(), self.before[p.as_str()].clone()))
            .collect();
        let before = Value::Object(before);
        if after != before {
            problems.push(format!("state changed:\n{}", diff(&before, &after)));
            self.before = snapshot(self.addr, self.w);
        }
        if !problems.is_empty() {
            self.failures.push(format!(
                "[{name}] {method} {path} {shown}\n  -> {} {}\n  {}",
                r.status,
                String::from_utf8_lossy(&r.body[..r.body.len().min(400)]),
                problems.join("; ")
            ));
        }
    }

    pub(super) fn json(&mut self, name: &str, method: &str, path: &str, body: &Value, status: u16) {
        self.raw(
            name,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
            status,
        );
    }

    pub(super) fn text(&mut self, name: &str, method: &str, path: &str, body: &str, status: u16) {
        self.raw(
            name,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
            status,
        );
    }
}

pub(super) fn hostile(addr: SocketAddr, w: &World) -> usize {
    let before = snapshot(addr, w);
    let mut h = Hostile {
        addr,
        w,
        before,
        watch: Vec::new(),
        cases: 0,
        failures: Vec::new(),
    };
    let st = |actions: Value, resources: Value| json!({"name": "h", "tenantID": T, "statements": [{"effect": "allow", "actions": actions, "resources": resources}]});
    let pol = "/api/v1/policies";
    // Policies: wrong types, unknown and missing fields, bad KRNs and actions, bad names.
    h.json(
        "name of the wrong type",
        "POST",
        pol,
        &json!({"name": 5, "tenantID": T, "statements": []}),
        400,
    );
    h.json(
        "statements not a list",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": "allow all"}),
        400,
    );
    h.json(
        "unknown effect",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [{"effect": "maybe", "actions": ["svc:*"], "resources": ["*"]}]}),
        400,
    );
    h.json(
        "unknown top-level field",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [], "owner": "me"}),
        400,
    );
    h.json(
        "unknown statement field",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [{"effect": "allow", "actions": ["svc:*"], "resources": ["*"], "condition": {}}]}),
        400,
    );
    h.json(
        "condition value of the wrong type",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [{"effect": "allow", "actions": ["svc:*"], "resources": ["*"],
                "conditions": {"NumericLessThan": {"kaa:CurrentHour": "noon"}}}]}),
        400,
    );
    h.json(
        "unknown condition operator",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [{"effect": "allow", "actions": ["svc:*"], "resources": ["*"],
                "conditions": {"StringMatches": {"site": "a"}}}]}),
        400,
    );
    h.json(
        "resource variable with an unknown key",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [{"effect": "allow", "actions": ["svc:*"],
                "resources": ["krn:svc:t1::device/${iam:nobody}"]}]}),
        400,
    );
    h.json(
        "missing statements",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T}),
        400,
    );
    h.json(
        "missing name",
        "POST",
        pol,
        &json!({"tenantID": T, "statements": []}),
        400,
    );
    h.json(
        "partial-token KRN wildcard",
        "POST",
        pol,
        &st(json!(["svc:*"]), json!(["krn:svc:t1::device/d*"])),
        400,
    );
    h.json(
        "wildcard inside a KRN path",
        "POST",
        pol,
        &st(json!(["svc:*"]), json!(["krn:svc:t1::device/*/d0"])),
        400,
    );
    h.json(
        "not a KRN",
        "POST",
        pol,
        &st(json!(["svc:*"]), json!(["arn:aws:s3:::bucket"])),
        400,
    );
    h.json(
        "KRN with too many tokens",
        "POST",
        pol,
        &st(json!(["svc:*"]), json!(["krn:svc:t1::device/d0:extra"])),
        400,
    );
    h.json(
        "upper-case action",
        "POST",
        pol,
        &st(json!(["svc:Device:read"]), json!(["*"])),
        400,
    );
    h.json(
        "partial-token action wildcard",
        "POST",
        pol,
        &st(json!(["svc:dev*"]), json!(["*"])),
        400,
    );
    h.json(
        "five-token action",
        "POST",
        pol,
        &st(json!(["a:b:c:d:e"]), json!(["*"])),
        400,
    );
    h.json("no actions", "POST", pol, &st(json!([]), json!(["*"])), 400);
    h.json(
        "identity statement without resources",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": [{"effect": "allow", "actions": ["svc:*"]}]}),
        400,
    );
    h.json(
        "action of the wrong type",
        "POST",
        pol,
        &st(json!([7]), json!(["*"])),
        400,
    );
    for name in [
        "it's",
        "x;DROP TABLE policies;--",
        "100%",
        "a b",
        "a/b",
        "h\u{0}",
    ] {
        h.json(
            &format!("policy name {name:?}"),
            "POST",
            pol,
            &json!({"name": name, "tenantID": T, "statements": []}),
            400,
        );
    }
    h.json(
        "type base",
        "POST",
        pol,
        &json!({"name": "h", "type": "base", "tenantID": T, "statements": []}),
        400,
    );
    h.json(
        "type resource",
        "POST",
        pol,
        &json!({"name": "h", "type": "resource", "tenantID": T, "statements": []}),
        400,
    );
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"effect": "allow", "actions": ["svc:*"], "resources": [format!("krn:svc:t1::doc/x{i}")]}))
        .collect();
    h.json(
        "1001 statements",
        "POST",
        pol,
        &json!({"name": "h", "tenantID": T, "statements": many}),
        400,
    );
    let resources: Vec<String> = (0..1001).map(|i| format!("krn:svc:t1::doc/x{i}")).collect();
    h.json(
        "1001 resources in a statement",
        "POST",
        pol,
        &st(json!(["svc:*"]), json!(resources)),
        400,
    );
    // Bodies that are not what they claim.
    h.text(
        "duplicate key",
        "POST",
        pol,
        r#"{"name": "h1", "name": "h2", "tenantID": "t1", "statements": []}"#,
        400,
    );
    let deep = format!(
        r#"{{"name": "h", "tenantID": "t1", "statements": {}{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    h.text("nesting 5000 deep", "POST", pol, &deep, 400);
    h.raw(
        "not UTF-8",
        "POST",
        pol,
        &[("Content-Type", "application/json")],
        b"{\"name\": \"h\xff\xfe\", \"tenantID\": \"t1\", \"statements\": []}",
        400,
    );
    h.text("null body", "POST", pol, "null", 400);
    h.text("array body", "POST", pol, "[]", 400);
    h.text("empty body", "POST", pol, "", 400);
    h.text(
        "truncated JSON",
        "POST",
        pol,
        r#"{"name": "h", "statements": ["#,
        400,
    );
    h.raw(
        "text/plain",
        "POST",
        pol,
        &[("Content-Type", "text/plain")],
        json!({"name": "h", "tenantID": T, "statements": []})
            .to_string()
            .as_bytes(),
        415,
    );
    h.raw(
        "form-encoded",
        "POST",
        "/api/v1/groups",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=h&tenantID=t1",
        415,
    );
    for t in ["t1;drop", "../kaa", "t*", "t1'--", "t 1"] {
        h.json(
            &format!("tenantID {t:?} in a body"),
            "POST",
            "/api/v1/groups",
            &json!({"name": "h", "tenantID": t}),
            400,
        );
    }
    for t in ["t%2A", "t1%27--", "t1%3BDROP", "%2E%2E%2Fkaa"] {
        h.json(
            &format!("tenantID {t} in a query"),
            "GET",
            &format!("/api/v1/users?tenantID={t}"),
            &Value::Null,
            400,
        );
    }
    // Users and groups.
    let pw = "pass-word-x";
    h.json(
        "username with a quote",
        "POST",
        "/api/v1/users",
        &json!({"username": "bob\"", "password": pw, "confirmPassword": pw, "tenantID": T}),
        400,
    );
    h.json(
        "username with a semicolon",
        "POST",
        "/api/v1/users",
        &json!({"username": "bob;--", "password": pw, "confirmPassword": pw, "tenantID": T}),
        400,
    );
    h.json(
        "missing password",
        "POST",
        "/api/v1/users",
        &json!({"username": "h", "tenantID": T}),
        400,
    );
    h.json(
        "enabled is a string",
        "POST",
        "/api/v1/users",
        &json!({"username": "h", "password": pw, "confirmPassword": pw, "tenantID": T, "enabled": "yes"}),
        400,
    );
    h.json(
        "path without a leading slash",
        "POST",
        "/api/v1/users",
        &json!({"username": "h", "password": pw, "confirmPassword": pw, "tenantID": T, "path": "org1"}),
        400,
    );
    h.json(
        "path with a wildcard",
        "POST",
        "/api/v1/users",
        &json!({"username": "h", "password": pw, "confirmPassword": pw, "tenantID": T, "path": "/org1/*"}),
        400,
    );
    h.json(
        "user in an unknown group",
        "POST",
        "/api/v1/users",
        &json!({"username": "h", "password": pw, "confirmPassword": pw, "tenantID": T,
                "groups": [raw_id("krn:iam:t1::group/nope")]}),
        400,
    );
    let long_email = format!("{}@example.com", "a".repeat(243));
    assert_eq!(long_email.len(), 255);
    for email in [
        "a@b",
        "a b@example.com",
        "a@@example.com",
        "@example.com",
        "x@.com",
        "x@example.",
        long_email.as_str(),
    ] {
        h.json(
            &format!("e-mail {email:.40}"),
            "PATCH",
            &format!("/api/v1/users/{}", id(&w.users[0])),
            &json!({ "email": email }),
            400,
        );
    }
    for (name, password, confirm) in [
        ("password of 7 characters", "1234567", "1234567"),
        ("confirmPassword differs", "pass-word-1", "pass-word-2"),
        (
            "password of 257 characters",
            &"p".repeat(257),
            &"p".repeat(257),
        ),
    ] {
        h.json(
            name,
            "POST",
            "/api/v1/users",
            &json!({"username": "h", "password": password, "confirmPassword": confirm, "tenantID": T}),
            400,
        );
    }
    h.json(
        "group name with a quote",
        "POST",
        "/api/v1/groups",
        &json!({"name": "g\"1", "tenantID": T}),
        400,
    );
    h.json(
        "parentID names a user",
        "POST",
        "/api/v1/groups",
        &json!({"name": "h", "tenantID": T, "parentID": raw_id(&w.users[0])}),
        400,
    );
    h.json(
        "parentID is not base64",
        "POST",
        "/api/v1/groups",
        &json!({"name": "h", "tenantID": T, "parentID": "not base64!"}),
        400,
    );
    h.json(
        "parentID of a missing group",
        "POST",
        "/api/v1/groups",
        &json!({"name": "h", "tenantID": T, "parentID": raw_id("krn:iam:t1::group/nope")}),
        400,
    );
    h.json(
        "delete a group that has subgroups",
        "DELETE",
        &format!("/api/v1/groups/{}", id(&w.groups[0])),
        &Value::Null,
        409,
    );
    // Ids of the wrong type, not base64, tricks with escapes.
    let u0 = id(&w.users[0]);
    let g0 = id(&w.groups[0]);
    let p0 = id(&w.policies[0]);
    let get = |h: &mut Hostile, name: &str, method: &str, path: String, status: u16| {
        h.raw(name, method, &path, &[], b"", status);
    };
    get(
        &mut h,
        "user path, group id",
        "GET",
        format!("/api/v1/users/{g0}"),
        404,
    );
    get(
        &mut h,
        "group path, policy id",
        "GET",
        format!("/api/v1/groups/{p0}"),
        404,
    );
    get(
        &mut h,
        "delete policy with a user id",
        "DELETE",
        format!("/api/v1/policies/{u0}"),
        404,
    );
    get(
        &mut h,
        "delete user with a group id",
        "DELETE",
        format!("/api/v1/users/{g0}"),
        404,
    );
    get(
        &mut h,
        "pool path, resource id",
        "GET",
        format!("/api/v1/pools/{}", id(&w.resources[0])),
        404,
    );
    get(
        &mut h,
        "not base64",
        "GET",
        "/api/v1/policies/not-base64!!".into(),
        404,
    );
    get(
        &mut h,
        "wildcard id",
        "GET",
        format!("/api/v1/users/{}", id("krn:iam:t1::user/*")),
        404,
    );
    get(
        &mut h,
        "delete a wildcard resource id",
        "DELETE",
        format!("/api/v1/resources/{}", id("krn:svc:t1::device/*")),
        404,
    );
    get(
        &mut h,
        "truncated escape",
        "GET",
        format!("/api/v1/users/{}%2", &u0[..u0.len() - 3]),
        404,
    );
    get(
        &mut h,
        "NUL escape",
        "GET",
        format!("/api/v1/users/{u0}%00"),
        404,
    );
    get(
        &mut h,
        "escaped slash inside the id",
        "GET",
        format!("/api/v1/users/{}%2F{}", &u0[..8], &u0[8..]),
        404,
    );
    get(
        &mut h,
        "dot-dot segment",
        "GET",
        "/api/v1/users/..%2F..%2Fpolicies".into(),
        404,
    );
    get(
        &mut h,
        "id of a KRN with a trailing space",
        "GET",
        format!(
            "/api/v1/users/{}",
            base64_std(format!("{} ", w.users[0]).as_bytes())
        ),
        404,
    );
    get(
        &mut h,
        "id of an upper-case prefix KRN",
        "GET",
        format!(
            "/api/v1/users/{}",
            base64_std(w.users[0].replacen("krn", "KRN", 1).as_bytes())
        ),
        404,
    );
    get(
        &mut h,
        "user of another tenant",
        "GET",
        format!("/api/v1/users/{}", id("krn:iam:t2::user/u0")),
        404,
    );
    // Attachments and members: bad ids, unknown ids (all or nothing), wrong shapes.
    let attach = format!("/api/v1/users/{u0}/policies/attach");
    h.watch = vec![
        format!("/api/v1/users/{u0}/policies?pageSize=50"),
        format!("/api/v1/groups/{}/members?pageSize=50", id(&w.groups[5])),
    ];
    h.json(
        "attach a user id as policy",
        "PUT",
        &attach,
        &json!({"policyIDs": [raw_id(&w.users[1])]}),
        400,
    );
    h.json(
        "attach a non-base64 policy id",
        "PUT",
        &attach,
        &json!({"policyIDs": ["%%%"]}),
        400,
    );
    let free = w
        .policies
        .iter()
        .find(|p| !w.model.policies[*p].attached.contains(&w.users[0]))
        .unwrap();
    h.json(
        "attach a good and an unknown policy",
        "PUT",
        &attach,
        &json!({"policyIDs": [raw_id(free), raw_id("krn:iam:t1::policy/ghost")]}),
        404,
    );
    h.json(
        "attach a resource-based policy",
        "PUT",
        &attach,
        &json!({"policyIDs": [raw_id(w.resource_policies.values().next().unwrap())]}),
        409,
    );
    h.json("attach without policyIDs", "PUT", &attach, &json!({}), 400);
    h.json(
        "policyIDs is a string",
        "PUT",
        &attach,
        &json!({"policyIDs": raw_id(free)}),
        400,
    );
    let ids: Vec<String> = (0..1001)
        .map(|i| raw_id(&format!("krn:iam:t1::policy/x{i}")))
        .collect();
    h.json(
        "attach 1001 policies",
        "PUT",
        &attach,
        &json!({ "policyIDs": ids }),
        400,
    );
    let outsider = w
        .users
        .iter()
        .find(|u| {
            !w.model
                .groups_of
                .get(*u)
                .is_some_and(|s| s.contains(&w.groups[5]))
        })
        .unwrap();
    h.json(
        "add a good and an unknown member",
        "POST",
        &format!("/api/v1/groups/{}/members/add", id(&w.groups[5])),
        &json!({"userIDs": [raw_id(outsider), raw_id("krn:iam:t1::user/ghost")]}),
        404,
    );
    h.json(
        "delete a good and an unknown user",
        "POST",
        &format!("/api/v1/users/delete?tenantID={T}"),
        &json!({"userIDs": [raw_id(&w.users[3]), raw_id("krn:iam:t1::user/ghost")]}),
        404,
    );
    let ids: Vec<String> = (0..1001)
        .map(|i| raw_id(&format!("krn:iam:t1::user/x{i}")))
        .collect();
    h.json(
        "bulk delete 1001 users",
        "POST",
        &format!("/api/v1/users/delete?tenantID={T}"),
        &json!({ "userIDs": ids }),
        400,
    );
    h.json(
        "pool with an unknown resource",
        "POST",
        "/api/v1/pools",
        &json!({"name": "h", "tenantID": T, "resourceIDs": [raw_id("krn:svc:t1::doc/ghost")]}),
        400,
    );
    h.json(
        "resource of service *",
        "POST",
        "/api/v1/resources",
        &json!({"service": "*", "resourceType": "doc", "name": "h", "tenantID": T}),
        400,
    );
    h.json(
        "resource name with %",
        "POST",
        "/api/v1/resources",
        &json!({"service": "svc", "resourceType": "doc", "name": "50%", "tenantID": T}),
        400,
    );
    // Evaluation.
    let ev = "/api/v1/evaluate";
    let me = &w.users[0];
    h.json(
        "wildcard action",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:*", "resources": [w.resources[0]]}),
        400,
    );
    h.json(
        "blanket action",
        "POST",
        ev,
        &json!({"principal": me, "action": "*", "resources": [w.resources[0]]}),
        400,
    );
    h.json(
        "wildcard resource",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "resources": ["krn:svc:t1::device/*"]}),
        400,
    );
    h.json(
        "wildcard principal",
        "POST",
        ev,
        &json!({"principal": "krn:iam:t1::user/*", "action": "svc:device:read", "resources": [w.resources[0]]}),
        400,
    );
    h.json(
        "resources is a string",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "resources": w.resources[0]}),
        400,
    );
    h.json(
        "no resources",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "resources": []}),
        400,
    );
    h.json(
        "both action and actions",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "actions": ["svc:device:read"], "resources": [w.resources[0]]}),
        400,
    );
    h.json(
        "unknown field in evaluate",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "resources": [w.resources[0]], "environment": {}}),
        400,
    );
    h.json(
        "reserved key in an evaluate context",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "resources": [w.resources[0]],
                "context": {"iam:username": "root"}}),
        400,
    );
    h.json(
        "source address that is no address",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:device:read", "resources": [w.resources[0]],
                "context": {"kaa:SourceIp": "10.0.0.300"}}),
        400,
    );
    h.json(
        "wildcard role",
        "POST",
        "/api/v1/evaluate",
        &json!({"principal": w.users[0], "roles": ["krn:iam:t1::role/*"], "action": "svc:device:read", "resources": [w.resources[0]]}),
        400,
    );
    h.json(
        "empty actions list",
        "POST",
        "/api/v1/evaluate/actions",
        &json!({"principal": me, "actions": [], "resources": [w.resources[0]]}),
        400,
    );
    h.json(
        "explain=maybe",
        "POST",
        "/api/v1/evaluate?explain=maybe",
        &json!({"principal": me, "action": "svc:device:read", "resources": [w.resources[0]]}),
        400,
    );
    let huge: Vec<String> = (0..10_001)
        .map(|i| format!("krn:svc:t1::doc/x{i}"))
        .collect();
    h.json(
        "10001 resources",
        "POST",
        ev,
        &json!({"principal": me, "action": "svc:doc:read", "resources": huge}),
        400,
    );
    // Paging parameters.
    for q in [
        "page=0",
        "page=-1",
        "pageSize=0",
        "pageSize=-5",
        "page=99999999999999999999",
        "pageSize=abc",
        "page=1.5",
        "sort=password",
        "sort=username%3BDROP%20TABLE%20users",
        "sortOrder=sideways",
    ] {
        h.raw(
            &format!("query {q}"),
            "GET",
            &format!("/api/v1/users?tenantID={T}&{q}"),
            &[],
            b"",
            400,
        );
    }
    h.raw(
        "huge page on groups",
        "GET",
        &format!("/api/v1/groups?tenantID={T}&page=4294967296"),
        &[],
        b"",
        400,
    );
    // Versions and resource policies.
    let p0_path = format!("/api/v1/policies/{p0}");
    let same = json!({"statements": w.model.policies[&w.policies[0]].statements.iter().map(|s| s.to_json(false)).collect::<Vec<_>>()});
    h.raw(
        "If-Match not a version",
        "PUT",
        &p0_path,
        &[("Content-Type", "application/json"), ("If-Match", "abc")],
        same.to_string().as_bytes(),
        400,
    );
    let mut disagree = same.clone();
    disagree["version"] = json!(1);
    h.raw(
        "version and If-Match disagree",
        "PUT",
        &p0_path,
        &[("Content-Type", "application/json"), ("If-Match", "\"2\"")],
        disagree.to_string().as_bytes(),
        400,
    );
    let k2 = &w.resources[8];
    h.json(
        "resource policy naming another resource",
        "PUT",
        &format!("/api/v1/resources/{}/policy", id(k2)),
        &json!({"statements": [{"effect": "allow", "actions": ["svc:doc:read"],
            "resources": [w.resources[9]], "principals": [w.users[0]]}]}),
        400,
    );
    h.json(
        "resource policy without principals",
        "PUT",
        &format!("/api/v1/resources/{}/policy", id(k2)),
        &json!({"statements": [{"effect": "allow", "actions": ["svc:doc:read"]}]}),
        400,
    );
    h.json(
        "resource policy of a missing resource",
        "PUT",
        &format!("/api/v1/resources/{}/policy", id("krn:svc:t1::doc/ghost")),
        &json!({"statements": [{"effect": "allow", "actions": ["svc:doc:read"], "principals": [w.users[0]]}]}),
        404,
    );
    let base = id("krn:iam:kaa::policy/tenant-admin");
    h.json(
        "replace a base policy",
        "PUT",
        &format!("/api/v1/policies/{base}"),
        &json!({"statements": []}),
        409,
    );
    h.raw(
        "delete a base policy",
        "DELETE",
        &format!("/api/v1/policies/{base}"),
        &[],
        b"",
        409,
    );
    h.raw(
        "delete a resource-based policy directly",
        "DELETE",
        &format!(
            "/api/v1/policies/{}",
            id(w.resource_policies.values().next().unwrap())
        ),
        &[],
        b"",
        409,
    );
    h.watch.clear();
    let end = snapshot(addr, w);
    if end != h.before {
        h.failures.push(format!(
            "after all hostile requests: state changed:\n{}",
            diff(&h.before, &end)
        ));
    }
    if !h.failures.is_empty() {
        let mut msg = format!(
            "{} of {} hostile requests were not refused cleanly:\n",
            h.failures.len(),
            h.cases
        );
        for f in &h.failures {
            let _ = writeln!(msg, "- {f}");
        }
        panic!("{msg}");
    }
    h.cases
}

/// Standard base64 with padding, for ids of texts that are not KRNs.
pub(super) fn base64_std(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}
