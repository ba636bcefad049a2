//! Authorization services of a client: scopes, resources, policies and permissions.

use super::*;

pub(super) fn scope_rep(s: &Value) -> Value {
    json!({"id": s["id"], "name": s["name"]})
}

/// A scope id from an id or a name.
pub(super) fn resolve_scope(rs: &ResourceServer, key: &str) -> Option<String> {
    rs.scopes
        .iter()
        .find(|s| s["id"] == key)
        .or_else(|| rs.scopes.iter().find(|s| s["name"] == key))
        .map(|s| s["id"].as_str().unwrap().to_string())
}

pub(super) fn resolve_policy(rs: &ResourceServer, key: &str) -> Option<String> {
    rs.policies
        .iter()
        .find(|p| p.id == key)
        .or_else(|| rs.policies.iter().find(|p| p.name == key))
        .map(|p| p.id.clone())
}

pub(super) fn resolve_resource(rs: &ResourceServer, key: &str) -> Option<String> {
    rs.resources
        .iter()
        .find(|r| r["_id"] == key)
        .or_else(|| rs.resources.iter().find(|r| r["name"] == key))
        .map(|r| r["_id"].as_str().unwrap().to_string())
}

pub(super) fn resource_rep(rs: &ResourceServer, r: &Value) -> Value {
    let mut v = r.clone();
    let scopes: Vec<Value> = r["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| rs.scopes.iter().find(|s| s["id"] == *id).map(scope_rep))
        .collect();
    v["scopes"] = json!(scopes);
    v
}

/// A `[{id}|{name}]` or `["id-or-name"]` list of references.
pub(super) fn refs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| match x {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o
                .get("id")
                .or_else(|| o.get("name"))
                .and_then(Value::as_str)
                .map(String::from),
            _ => None,
        })
        .collect()
}

pub(super) fn invalid(description: &str) -> Response {
    error_described(400, "invalid_request", description)
}

pub(super) fn authz(
    st: &mut State,
    req: &Request,
    realm: &str,
    ci: usize,
    rest: &[&str],
) -> Response {
    let m = req.method.as_str();
    let q = query(req);
    let r = st.realms.get_mut(realm).unwrap();
    let client = &mut r.clients[ci];
    let client_uuid = client.id.clone();
    let client_name = client.client_id.clone();
    let role_ids: Vec<(String, String)> = r
        .roles
        .iter()
        .map(|x| (x.id.clone(), x.name.clone()))
        .collect();
    let Some(rs) = r.clients[ci].authz.as_mut() else {
        return error_described(
            404,
            "invalid_request",
            "Authorization services are not enabled for this client",
        );
    };
    match (m, rest) {
        ("GET", []) => Response::json(200, &Value::Object(rs.settings.clone())),
        ("PUT", []) => match body_object(req) {
            Ok(b) => {
                for (k, v) in b {
                    if !matches!(k.as_str(), "resources" | "policies" | "scopes" | "id") {
                        rs.settings.insert(k, v);
                    }
                }
                no_content()
            }
            Err(e) => e,
        },

        // scopes
        ("GET", ["scope"]) => {
            let list: Vec<Value> = rs
                .scopes
                .iter()
                .filter(|s| {
                    q.get("name")
                        .is_none_or(|n| contains_ci(s["name"].as_str().unwrap(), n))
                })
                .filter(|s| q.get("scopeId").is_none_or(|i| s["id"] == **i))
                .cloned()
                .collect();
            Response::json(200, &page(list, &q, 100))
        }
        ("GET", ["scope", "search"]) => match q.get("name") {
            None => Response::new(400),
            Some(n) => match rs.scopes.iter().find(|s| s["name"] == **n) {
                Some(s) => Response::json(200, s),
                None => Response::new(204),
            },
        },
        ("POST", ["scope"]) => {
            let b = match body_object(req) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let Some(name) = str_field(&b, "name").filter(|n| !n.is_empty()) else {
                return invalid("Scope name is required");
            };
            if rs.scopes.iter().any(|s| s["name"] == name) {
                return invalid_conflict(&format!("Scope with name [{name}] already exists"));
            }
            let mut s = Value::Object(b.clone());
            s["id"] = json!(rs.fresh_id());
            rs.scopes.push(s.clone());
            Response::json(201, &s)
        }
        (_, ["scope", id]) => {
            let Some(i) = rs.scopes.iter().position(|s| s["id"] == *id) else {
                return Response::new(404);
            };
            match m {
                "GET" => Response::json(200, &rs.scopes[i]),
                "PUT" => match body_object(req) {
                    Ok(b) => {
                        let mut s = Value::Object(b);
                        s["id"] = json!(id);
                        rs.scopes[i] = s;
                        no_content()
                    }
                    Err(e) => e,
                },
                "DELETE" => {
                    if rs
                        .resources
                        .iter()
                        .any(|r| r["scopes"].as_array().unwrap().iter().any(|x| x == id))
                    {
                        return error_message(
                            400,
                            "Scopes can not be removed while associated with resources.",
                        );
                    }
                    rs.scopes.remove(i);
                    let sid = id.to_string();
                    rs.policies.retain_mut(|p| {
                        if p.scopes.contains(&sid) {
                            if p.scopes.len() == 1 {
                                return false;
                            }
                            p.scopes.retain(|x| *x != sid);
                        }
                        true
                    });
                    no_content()
                }
                _ => not_allowed(),
            }
        }

        // resources
        ("GET", ["resource"]) => {
            let exact = q.get("exactName").is_some_and(|e| e == "true");
            let list: Vec<Value> = rs
                .resources
                .iter()
                .filter(|r| {
                    q.get("name").is_none_or(|n| {
                        let name = r["name"].as_str().unwrap();
                        if exact {
                            name == n
                        } else {
                            contains_ci(name, n)
                        }
                    })
                })
                .filter(|r| q.get("type").is_none_or(|t| r["type"] == **t))
                .map(|r| resource_rep(rs, r))
                .collect();
            Response::json(200, &page(list, &q, 100))
        }
        ("GET", ["resource", "search"]) => match q.get("name") {
            None => Response::new(400),
            Some(n) => match rs.resources.iter().find(|r| r["name"] == **n) {
                Some(r) => Response::json(200, &resource_rep(rs, r)),
                None => Response::new(204),
            },
        },
        ("POST", ["resource"]) => {
            let b = match body_object(req) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let Some(name) = str_field(&b, "name").filter(|n| !n.is_empty()) else {
                return invalid("Resource name is required");
            };
            if rs.resources.iter().any(|r| r["name"] == name) {
                return invalid_conflict(&format!("Resource with name [{name}] already exists."));
            }
            let scope_ids = resource_scopes(rs, b.get("scopes"));
            let mut r = Value::Object(b.clone());
            let m = r.as_object_mut().unwrap();
            m.remove("id");
            m.insert("_id".into(), json!(rs.fresh_id()));
            m.insert("scopes".into(), json!(scope_ids));
            m.entry("owner")
                .or_insert(json!({"id": client_uuid, "name": client_name}));
            m.entry("ownerManagedAccess").or_insert(json!(false));
            m.entry("uris").or_insert(json!([]));
            rs.resources.push(r.clone());
            Response::json(201, &resource_rep(rs, &r))
        }
        (_, ["resource", id]) => {
            let Some(i) = rs.resources.iter().position(|r| r["_id"] == *id) else {
                return error_described(404, "not_found", "Could not find resource");
            };
            match m {
                "GET" => Response::json(200, &resource_rep(rs, &rs.resources[i])),
                "PUT" => {
                    let b = match body_object(req) {
                        Ok(b) => b,
                        Err(e) => return e,
                    };
                    let scope_ids = resource_scopes(rs, b.get("scopes"));
                    let cur = rs.resources[i].as_object_mut().unwrap();
                    for (k, v) in b {
                        if k != "_id" && k != "id" && k != "scopes" {
                            cur.insert(k, v);
                        }
                    }
                    cur.insert("scopes".into(), json!(scope_ids));
                    no_content()
                }
                "DELETE" => {
                    rs.resources.remove(i);
                    let rid = id.to_string();
                    for p in &mut rs.policies {
                        p.resources.retain(|x| *x != rid);
                    }
                    no_content()
                }
                _ => not_allowed(),
            }
        }

        // policies and permissions (one namespace)
        ("GET", [kind @ ("policy" | "permission")]) => {
            let only_permissions = match (*kind, q.get("permission").map(String::as_str)) {
                ("permission", _) | (_, Some("true")) => Some(true),
                (_, Some("false")) => Some(false),
                _ => None,
            };
            let list: Vec<Value> = rs
                .policies
                .iter()
                .filter(|p| only_permissions.is_none_or(|want| p.is_permission() == want))
                .filter(|p| q.get("name").is_none_or(|n| contains_ci(&p.name, n)))
                .filter(|p| q.get("type").is_none_or(|t| p.kind == *t))
                .filter(|p| q.get("policyId").is_none_or(|i| p.id == *i))
                .map(Policy::brief)
                .collect();
            Response::json(200, &page(list, &q, 100))
        }
        ("GET", ["policy" | "permission", "search"]) => match q.get("name") {
            None => Response::new(400),
            Some(n) => match rs.policies.iter().find(|p| p.name == *n) {
                Some(p) => Response::json(200, &p.brief()),
                None => Response::new(204),
            },
        },
        ("POST", ["policy", kind]) | ("POST", ["permission", kind]) => {
            let is_permission = rest[0] == "permission";
            let known = if is_permission {
                ["scope", "resource"].contains(kind)
            } else {
                ["role", "js", "user", "group", "client", "time", "aggregate"].contains(kind)
            };
            if !known {
                return not_found();
            }
            let b = match body_object(req) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let Some(name) = str_field(&b, "name").filter(|n| !n.is_empty()) else {
                return invalid("Policy name is required");
            };
            if rs.policies.iter().any(|p| p.name == name) {
                return error_described(
                    409,
                    &format!("Policy with name [{name}] already exists"),
                    "Conflicting policy",
                );
            }
            let id = rs.fresh_id();
            match policy_from(rs, &role_ids, kind, &b, id) {
                Ok(p) => {
                    let v = p.typed();
                    rs.policies.push(p);
                    Response::json(201, &v)
                }
                Err(e) => e,
            }
        }
        (_, ["policy" | "permission", kind, id])
            if ["role", "scope", "resource", "js"].contains(kind) =>
        {
            let Some(i) = rs
                .policies
                .iter()
                .position(|p| p.id == *id && p.kind == *kind)
            else {
                return Response::new(404);
            };
            match m {
                "GET" => Response::json(200, &rs.policies[i].typed()),
                "PUT" => {
                    let b = match body_object(req) {
                        Ok(b) => b,
                        Err(e) => return e,
                    };
                    if let Some(n) = str_field(&b, "name")
                        && rs.policies.iter().any(|p| p.name == n && p.id != *id)
                    {
                        return error_described(
                            409,
                            &format!("Policy with name [{n}] already exists"),
                            "Conflicting policy",
                        );
                    }
                    match policy_from(rs, &role_ids, kind, &b, id.to_string()) {
                        Ok(p) => {
                            rs.policies[i] = p;
                            Response::new(201)
                        }
                        Err(e) => e,
                    }
                }
                _ => not_allowed(),
            }
        }
        (_, ["policy" | "permission", id]) => {
            let Some(i) = rs.policies.iter().position(|p| p.id == *id) else {
                return Response::new(404);
            };
            match m {
                "GET" => Response::json(200, &rs.policies[i].brief()),
                "DELETE" => {
                    let pid = rs.policies.remove(i).id;
                    for p in &mut rs.policies {
                        p.policies.retain(|x| *x != pid);
                    }
                    no_content()
                }
                _ => not_allowed(),
            }
        }
        _ => not_found(),
    }
}

pub(super) fn invalid_conflict(description: &str) -> Response {
    error_described(409, "invalid_request", description)
}

/// Scope ids of a resource: by id or name; unknown names are made (as Keycloak does).
pub(super) fn resource_scopes(rs: &mut ResourceServer, scopes: Option<&Value>) -> Vec<String> {
    let mut ids = Vec::new();
    for key in refs(scopes) {
        let id = match resolve_scope(rs, &key) {
            Some(id) => id,
            None => {
                let id = rs.fresh_id();
                rs.scopes.push(json!({"id": id, "name": key}));
                id
            }
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

pub(super) fn policy_from(
    rs: &ResourceServer,
    roles: &[(String, String)],
    kind: &str,
    b: &Map<String, Value>,
    id: String,
) -> Result<Policy, Response> {
    let name = str_field(b, "name").unwrap_or_default().to_string();
    let logic = str_field(b, "logic").unwrap_or("POSITIVE").to_string();
    if !["POSITIVE", "NEGATIVE"].contains(&logic.as_str()) {
        return Err(invalid(&format!("Invalid logic [{logic}]")));
    }
    let decision = str_field(b, "decisionStrategy")
        .unwrap_or("UNANIMOUS")
        .to_string();
    if !["UNANIMOUS", "AFFIRMATIVE", "CONSENSUS"].contains(&decision.as_str()) {
        return Err(invalid(&format!("Invalid decision strategy [{decision}]")));
    }
    let mut p = Policy {
        id,
        name: name.clone(),
        kind: kind.to_string(),
        description: str_field(b, "description").map(String::from),
        logic,
        decision_strategy: decision,
        roles: Vec::new(),
        scopes: Vec::new(),
        resources: Vec::new(),
        policies: Vec::new(),
        resource_type: str_field(b, "resourceType").map(String::from),
    };
    if kind == "role" {
        for def in b
            .get("roles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = def.get("id").and_then(Value::as_str).unwrap_or_default();
            // Keycloak looks a role definition up by name first, then by id.
            let Some((rid, _)) = roles
                .iter()
                .find(|(_, n)| n == key)
                .or_else(|| roles.iter().find(|(i, _)| i == key))
            else {
                return Err(invalid(&format!(
                    "Error while updating policy [{name}]. Role [{key}] could not be found."
                )));
            };
            let required = def
                .get("required")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            p.roles.push((rid.clone(), required));
        }
        if p.roles.is_empty() {
            return Err(invalid("You must provide at least one role"));
        }
    }
    for key in refs(b.get("scopes")) {
        match resolve_scope(rs, &key) {
            Some(id) => p.scopes.push(id),
            None => {
                return Err(invalid(&format!(
                    "Scope with id or name [{key}] does not exist"
                )));
            }
        }
    }
    for key in refs(b.get("resources")) {
        match resolve_resource(rs, &key) {
            Some(id) => p.resources.push(id),
            None => {
                return Err(invalid(&format!(
                    "Resource with id or name [{key}] does not exist"
                )));
            }
        }
    }
    for key in refs(b.get("policies")) {
        match resolve_policy(rs, &key) {
            Some(id) => p.policies.push(id),
            None => {
                return Err(invalid(&format!(
                    "Policy with id or name [{key}] does not exist"
                )));
            }
        }
    }
    if kind == "scope" && p.scopes.is_empty() && p.resources.is_empty() {
        return Err(invalid("A scope permission needs scopes or resources"));
    }
    Ok(p)
}
