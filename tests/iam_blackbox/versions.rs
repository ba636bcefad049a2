//! Duplicates, stale versions and snapshots proving a refused request changed nothing.

use super::*;

/// Everything a client can see of the tenant, to prove a request changed nothing.
pub(super) fn snapshot(addr: SocketAddr, w: &World) -> Value {
    let mut paths = list_paths();
    for g in &w.groups {
        paths.push(format!("/api/v1/groups/{}/members?pageSize=50", id(g)));
    }
    for u in w.users.iter().take(2) {
        for sub in ["policies", "groups"] {
            paths.push(format!("/api/v1/users/{}/{sub}?pageSize=50", id(u)));
        }
    }
    for p in &w.pools {
        paths.push(format!("/api/v1/pools/{}/policies?pageSize=50", id(p)));
    }
    view(addr, &paths)
}

/// The tenant's lists (every entity with its version) and the base policies.
pub(super) fn list_paths() -> Vec<String> {
    let mut paths: Vec<String> = ["users", "groups", "policies", "resources", "pools"]
        .iter()
        .map(|l| format!("/api/v1/{l}?tenantID={T}&pageSize=50"))
        .collect();
    paths.push("/api/v1/policies?type=base".into());
    paths
}

/// The `data` of each path, by path; lists must fit one page.
pub(super) fn view(addr: SocketAddr, paths: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    for path in paths {
        let v = expect(&call(addr, "GET", path, None), 200, path);
        assert!(
            v["count"].as_u64().unwrap_or(0) <= 50,
            "{path}: the snapshot would be partial"
        );
        out.insert(path.clone(), v["data"].clone());
    }
    Value::Object(out)
}

/// Where two snapshots differ (first few keys), for a readable failure.
pub(super) fn diff(a: &Value, b: &Value) -> String {
    let mut out = Vec::new();
    if let (Some(x), Some(y)) = (a.as_object(), b.as_object()) {
        for (k, v) in x {
            if y.get(k) != Some(v) {
                out.push(format!(
                    "{k}: before {} / after {}",
                    v,
                    y.get(k).unwrap_or(&Value::Null)
                ));
            }
        }
    }
    out.join("\n")
}

pub(super) fn conflicts_and_versions(addr: SocketAddr, w: &World) {
    let before = snapshot(addr, w);
    // Duplicate creates: 409, nothing changes.
    let dups = [
        (
            "/api/v1/users",
            json!({"username": "u0", "password": "pass-word-0", "confirmPassword": "pass-word-0", "tenantID": T}),
        ),
        (
            "/api/v1/groups",
            json!({"name": "g1", "tenantID": T, "parentID": raw_id(&w.groups[0])}),
        ),
        ("/api/v1/groups", json!({"name": "g0", "tenantID": T})),
        (
            "/api/v1/policies",
            json!({"name": "p3", "tenantID": T, "statements": [{"effect": "allow", "actions": ["other:inert:never"], "resources": ["krn:other:t1::inert/none"]}]}),
        ),
        (
            "/api/v1/resources",
            json!({"service": "svc", "resourceType": "device", "name": "d0", "tenantID": T,
                   "path": w.resources[0].split("::device").nth(1).unwrap().rsplit_once('/').unwrap().0}),
        ),
        ("/api/v1/pools", json!({"name": "pool0", "tenantID": T})),
    ];
    for (path, body) in &dups {
        let r = call(addr, "POST", path, Some(body));
        let v = expect(&r, 409, &format!("duplicate {path} {body}"));
        assert!(v["message"].is_string(), "{v}");
    }
    let after = snapshot(addr, w);
    assert!(
        before == after,
        "duplicate creates changed something:\n{}",
        diff(&before, &after)
    );

    // Stale versions: a good write with the current version, then the same version again: 412
    // under `If-Match`, 409 in the body's `version`, and the entity keeps the first write.
    let p0 = &w.policies[0];
    let g = expect(
        &call(addr, "GET", &format!("/api/v1/policies/{}", id(p0)), None),
        200,
        "get p0",
    );
    let v0 = g["data"]["version"].as_i64().unwrap();
    let stmts = g["data"]["statements"].clone();
    let etag = format!("\"{v0}\"");
    let r = call_json_with(
        addr,
        "PUT",
        &format!("/api/v1/policies/{}", id(p0)),
        None,
        &[("If-Match", &etag)],
        Some(&json!({"description": "first writer", "statements": stmts})),
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(expect(&r, 200, "put p0")["data"]["version"], v0 + 1);
    assert_eq!(r.header("etag"), Some(format!("\"{}\"", v0 + 1).as_str()));
    for (body, headers, status) in [
        (
            json!({"description": "stale writer", "statements": [{"effect": "allow", "actions": ["other:inert:never"], "resources": ["krn:other:t1::inert/none"]}]}),
            vec![("If-Match", etag.as_str())],
            412,
        ),
        (
            json!({"description": "stale writer", "statements": [{"effect": "allow", "actions": ["other:inert:never"], "resources": ["krn:other:t1::inert/none"]}], "version": v0}),
            vec![],
            409,
        ),
    ] {
        let r = call_json_with(
            addr,
            "PUT",
            &format!("/api/v1/policies/{}", id(p0)),
            None,
            &headers,
            Some(&body),
            TIMEOUT,
        )
        .unwrap();
        let v = expect(&r, status, "stale put p0");
        assert!(v["message"].is_string());
    }
    let g = expect(
        &call(addr, "GET", &format!("/api/v1/policies/{}", id(p0)), None),
        200,
        "get p0",
    );
    assert_eq!(g["data"]["version"], v0 + 1);
    assert_eq!(g["data"]["description"], "first writer");
    assert_eq!(g["data"]["statements"], stmts);

    // PATCH of users, groups, resources, pools and PUT of a resource policy.
    let k0 = &w.resources[6];
    let cases: Vec<(String, &str, Value, &str)> = vec![
        (
            format!("/api/v1/users/{}", id(&w.users[1])),
            "PATCH",
            json!({"firstName": "Ann"}),
            "firstName",
        ),
        (
            format!("/api/v1/groups/{}", id(&w.groups[3])),
            "PATCH",
            json!({"displayName": "Renamed"}),
            "displayName",
        ),
        (
            format!("/api/v1/resources/{}", id(&w.resources[2])),
            "PATCH",
            json!({"displayName": "Thermostat"}),
            "displayName",
        ),
        (
            format!("/api/v1/pools/{}", id(&w.pools[0])),
            "PATCH",
            json!({"description": "fleet"}),
            "description",
        ),
        (
            format!("/api/v1/resources/{}/policy", id(k0)),
            "PUT",
            json!({"description": "same statements", "statements": w.model.policies[&w.resource_policies[k0]]
                .statements.iter().map(|s| s.to_json(false)).collect::<Vec<_>>()}),
            "description",
        ),
    ];
    for (path, method, body, field) in cases {
        let g = expect(&call(addr, "GET", &path, None), 200, &path);
        let v = g["data"]["version"].as_i64().unwrap();
        let etag = format!("\"{v}\"");
        let r = call_json_with(
            addr,
            method,
            &path,
            None,
            &[("If-Match", &etag)],
            Some(&body),
            TIMEOUT,
        )
        .unwrap();
        let d = expect(&r, 200, &format!("{method} {path}"));
        assert_eq!(d["data"]["version"], v + 1, "{path}");
        assert_eq!(d["data"][field], body[field], "{path}");
        let mut stale = body.clone();
        stale[field] = json!("stale");
        for headers in [
            vec![("If-Match", etag.as_str())],
            vec![("If-Match", "W/\"1\"")],
        ] {
            let r =
                call_json_with(addr, method, &path, None, &headers, Some(&stale), TIMEOUT).unwrap();
            let e = expect(&r, 412, &format!("stale {method} {path} {headers:?}"));
            assert!(e["message"].is_string());
        }
        let mut in_body = stale.clone();
        in_body["version"] = json!(v);
        let r = call(addr, method, &path, Some(&in_body));
        expect(&r, 409, &format!("stale {method} {path} with `version`"));
        let g = expect(&call(addr, "GET", &path, None), 200, &path);
        assert_eq!(g["data"]["version"], v + 1, "{path}");
        assert_eq!(g["data"][field], body[field], "{path}");
        assert_eq!(
            call(addr, "GET", &path, None).header("etag"),
            Some(format!("\"{}\"", v + 1).as_str())
        );
    }

    // A common valid address that Kaa 1.4's documented pattern would refuse (DECISIONS.md).
    let u2 = format!("/api/v1/users/{}", id(&w.users[2]));
    let v = expect(
        &call(
            addr,
            "PATCH",
            &u2,
            Some(&json!({"email": "first.last+tag@example.co.uk"})),
        ),
        200,
        "e-mail with + and a two-level domain",
    );
    assert_eq!(v["data"]["email"], "first.last+tag@example.co.uk");

    // Ids: the base64 id travels percent-encoded, raw (`=` is fine in a path), unpadded (the
    // URL-safe form), with lowercase escapes, escaped char by char; bodies take the same forms.
    let p = w.policies.iter().find(|p| p.ends_with("/pad")).unwrap();
    let std = raw_id(p);
    let unpadded = std.trim_end_matches('=').to_string();
    assert!(std.ends_with('='), "pick a policy whose id is padded: {p}");
    let each: String = std.bytes().map(|b| format!("%{b:02X}")).collect();
    for variant in [
        id(p),
        std.clone(),
        unpadded.clone(),
        std.replace('=', "%3d"),
        each,
    ] {
        let path = format!("/api/v1/policies/{variant}");
        let v = expect(&call(addr, "GET", &path, None), 200, &path);
        assert_eq!(v["data"]["krn"], p.as_str(), "{path}");
    }
    let u = &w.users[0];
    let unattached = w
        .policies
        .iter()
        .find(|x| !w.model.policies[*x].attached.contains(u))
        .unwrap();
    let un_id = raw_id(unattached).trim_end_matches('=').to_string();
    expect(
        &call(
            addr,
            "PUT",
            &format!(
                "/api/v1/users/{}/policies/attach",
                raw_id(u).trim_end_matches('=')
            ),
            Some(&json!({"policyIDs": [un_id]})),
        ),
        204,
        "attach with unpadded ids",
    );
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/users/{}/policies?pageSize=50", id(u)),
            None,
        ),
        200,
        "policies of u0",
    );
    assert!(krns_of(&v).contains(unattached));
    expect(
        &call(
            addr,
            "POST",
            &format!("/api/v1/users/{}/policies/detach", id(u)),
            Some(&json!({"policyIDs": [raw_id(unattached)]})),
        ),
        204,
        "detach",
    );
    // The writes above changed versions and fields only: the same entities are listed, and
    // members and attachments are as at the start (attach + detach left no trace).
    let after = snapshot(addr, w);
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x["krn"].as_str().unwrap().to_string())
            .collect()
    };
    for (path, was) in before.as_object().unwrap() {
        assert_eq!(keys(was), keys(&after[path.as_str()]), "{path}");
    }
}
