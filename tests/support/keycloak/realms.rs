//! The admin API's dispatch, realms and clients.

use super::*;

pub(super) fn admin(st: &mut State, req: &Request, parts: &[String]) -> Response {
    let m = req.method.as_str();
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    match p.as_slice() {
        [] => match m {
            "GET" => {
                let mut names: Vec<&String> = st.realms.keys().collect();
                names.sort();
                let list: Vec<Value> = names
                    .into_iter()
                    .map(|n| realm_rep(&st.realms[n]))
                    .collect();
                Response::json(200, &list)
            }
            "POST" => create_realm(st, req),
            _ => not_allowed(),
        },
        [realm, rest @ ..] => {
            let realm = realm.to_string();
            if !st.realms.contains_key(&realm) {
                return realm_not_found();
            }
            match rest {
                [] => realm_item(st, req, &realm),
                ["clients", rest @ ..] => clients(st, req, &realm, rest),
                ["roles", rest @ ..] => roles(st, req, &realm, rest),
                ["roles-by-id", id] if m == "GET" => {
                    let r = &st.realms[&realm];
                    match r.roles.iter().find(|x| x.id == *id) {
                        Some(role) => Response::json(200, &role.representation(&r.id)),
                        None => error(404, "Could not find role with id"),
                    }
                }
                ["identity-provider", "instances", rest @ ..] => idps(st, req, &realm, rest),
                ["components", rest @ ..] => components(st, req, &realm, rest),
                ["users", "profile"] => match m {
                    "GET" => Response::json(200, &st.realms[&realm].profile),
                    "PUT" => match body_object(req) {
                        Ok(rep) => {
                            let profile = Value::Object(rep);
                            if let Some(r) = st.realms.get_mut(&realm) {
                                r.profile = profile.clone();
                            }
                            Response::json(200, &profile)
                        }
                        Err(r) => r,
                    },
                    _ => not_allowed(),
                },
                ["users", rest @ ..] => users(st, req, &realm, rest),
                _ => not_found(),
            }
        }
    }
}

pub(super) fn realm_rep(r: &Realm) -> Value {
    let mut m = r.rep.clone();
    m.insert("id".into(), json!(r.id));
    m.insert("realm".into(), json!(r.name));
    m.entry("enabled").or_insert(json!(false));
    m.insert("accessTokenLifespan".into(), json!(r.token_lifespan));
    Value::Object(m)
}

pub(super) fn create_realm(st: &mut State, req: &Request) -> Response {
    let mut rep = match body_object(req) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(r) = check_realm(&rep) {
        return r;
    }
    let name = match str_field(&rep, "realm") {
        Some(n) if !n.trim().is_empty() => n.to_string(),
        _ => return error_message(400, "Realm name cannot be empty"),
    };
    if st.realms.contains_key(&name) {
        return error_message(409, "Conflict detected. See logs for details");
    }
    let mut realm = st.new_realm(&name);
    if let Some(id) = str_field(&rep, "id") {
        realm.id = id.to_string();
    }
    if let Some(l) = rep.get("accessTokenLifespan").and_then(Value::as_u64) {
        realm.token_lifespan = l;
    }
    for k in ["id", "realm", "accessTokenLifespan"] {
        rep.remove(k);
    }
    realm.rep = rep;
    st.realms.insert(name.clone(), realm);
    created(&format!("{}/admin/realms/{name}", st.base))
}

pub(super) fn realm_item(st: &mut State, req: &Request, realm: &str) -> Response {
    match req.method.as_str() {
        "GET" => Response::json(200, &realm_rep(&st.realms[realm])),
        "PUT" => {
            let mut rep = match body_object(req) {
                Ok(m) => m,
                Err(r) => return r,
            };
            if let Err(r) = check_realm(&rep) {
                return r;
            }
            let new_name = str_field(&rep, "realm").map(String::from);
            if let Some(n) = &new_name
                && n != realm
                && st.realms.contains_key(n)
            {
                return error_message(409, "Realm with same name exists");
            }
            let mut r = st.realms.remove(realm).unwrap();
            if let Some(l) = rep.get("accessTokenLifespan").and_then(Value::as_u64) {
                r.token_lifespan = l;
            }
            for k in ["id", "realm", "accessTokenLifespan"] {
                rep.remove(k);
            }
            for (k, v) in rep {
                r.rep.insert(k, v);
            }
            let name = match new_name {
                Some(n) if !n.is_empty() => n,
                _ => realm.to_string(),
            };
            r.name = name.clone();
            st.realms.insert(name, r);
            no_content()
        }
        "DELETE" => {
            st.realms.remove(realm);
            no_content()
        }
        _ => not_allowed(),
    }
}

pub(super) fn clients(st: &mut State, req: &Request, realm: &str, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    match rest {
        [] => match m {
            "GET" => {
                let q = query(req);
                let r = &st.realms[realm];
                let search = q.get("search").is_some_and(|s| s == "true");
                let list: Vec<Value> = r
                    .clients
                    .iter()
                    .filter(|c| match q.get("clientId") {
                        None => true,
                        Some(want) if search => contains_ci(&c.client_id, want),
                        Some(want) => &c.client_id == want,
                    })
                    .map(Client::representation)
                    .collect();
                Response::json(200, &page(list, &q, 100))
            }
            "POST" => create_client(st, req, realm),
            _ => not_allowed(),
        },
        [id, rest @ ..] => {
            let Some(ci) = st.realms[realm].clients.iter().position(|c| c.id == *id) else {
                return error(404, "Could not find client");
            };
            match rest {
                [] => match m {
                    "GET" => Response::json(200, &st.realms[realm].clients[ci].representation()),
                    "PUT" => update_client(st, req, realm, ci),
                    "DELETE" => {
                        let r = st.realms.get_mut(realm).unwrap();
                        let c = r.clients.remove(ci);
                        if let Some(sa) = c.service_account {
                            r.users.retain(|u| u.id != sa);
                        }
                        no_content()
                    }
                    _ => not_allowed(),
                },
                ["client-secret"] => {
                    let seq = st.uuid();
                    let c = &mut st.realms.get_mut(realm).unwrap().clients[ci];
                    if c.public {
                        return error_message(400, "Client is public");
                    }
                    if m == "POST" {
                        c.secret = Some(format!("secret-{seq}"));
                    } else if m != "GET" {
                        return not_allowed();
                    }
                    Response::json(
                        200,
                        &json!({"type": "secret", "value": c.secret.clone().unwrap_or_default()}),
                    )
                }
                ["service-account-user"] if m == "GET" => {
                    let r = &st.realms[realm];
                    match r.clients[ci]
                        .service_account
                        .as_ref()
                        .and_then(|id| r.users.iter().find(|u| &u.id == id))
                    {
                        Some(u) => Response::json(200, &u.representation()),
                        None => error_message(400, "Service account not enabled for the client"),
                    }
                }
                ["authz", "resource-server", rest @ ..] => authz(st, req, realm, ci, rest),
                ["roles"] if m == "GET" => {
                    let r = &st.realms[realm];
                    let list: Vec<Value> = r
                        .client_roles
                        .iter()
                        .filter(|(c, _)| c == id)
                        .map(|(c, role)| client_role_rep(role, c))
                        .collect();
                    Response::json(200, &list)
                }
                ["roles", name] if m == "GET" => {
                    let r = &st.realms[realm];
                    match r
                        .client_roles
                        .iter()
                        .find(|(c, x)| c == id && x.name == *name)
                    {
                        Some((c, role)) => Response::json(200, &client_role_rep(role, c)),
                        None => error(404, "Could not find role"),
                    }
                }
                _ => not_found(),
            }
        }
    }
}

pub(super) fn client_role_rep(role: &Role, client: &str) -> Value {
    let mut v = role.representation(client);
    v["clientRole"] = json!(true);
    v
}

pub(super) fn create_client(st: &mut State, req: &Request, realm: &str) -> Response {
    let mut rep = match body_object(req) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(r) = check_client(&rep) {
        return r;
    }
    let client_id = match str_field(&rep, "clientId") {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => return error_message(400, "Client id is missing"),
    };
    if st.realms[realm]
        .clients
        .iter()
        .any(|c| c.client_id == client_id)
    {
        return error_message(409, &format!("Client {client_id} already exists"));
    }
    let public = rep
        .get("publicClient")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let authz = rep
        .get("authorizationServicesEnabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if public && authz {
        return error_message(
            400,
            "Authorization services cannot be enabled for a public client",
        );
    }
    let id = match str_field(&rep, "id") {
        Some(i) => i.to_string(),
        None => st.uuid(),
    };
    let secret = if public {
        None
    } else {
        Some(
            str_field(&rep, "secret")
                .map(String::from)
                .unwrap_or_else(|| format!("secret-{}", st.uuid())),
        )
    };
    let sa_enabled = authz
        || rep
            .get("serviceAccountsEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    for k in [
        "id",
        "clientId",
        "secret",
        "publicClient",
        "authorizationServicesEnabled",
        "authorizationSettings",
    ] {
        rep.remove(k);
    }
    rep.entry("enabled").or_insert(json!(true));
    rep.entry("protocol").or_insert(json!("openid-connect"));
    rep.insert("serviceAccountsEnabled".into(), json!(sa_enabled));
    let service_account = if sa_enabled && !public {
        let uid = st.uuid();
        let user = User {
            id: uid.clone(),
            username: format!("service-account-{}", client_id.to_lowercase()),
            email: None,
            rep: Map::new(),
            enabled: true,
            password: None,
            roles: Vec::new(),
            required_actions: Vec::new(),
            emails: Vec::new(),
            service_account_client: Some(id.clone()),
            client_roles: Vec::new(),
            created: now(),
        };
        st.realms.get_mut(realm).unwrap().users.push(user);
        Some(uid)
    } else {
        None
    };
    let resource_server = authz.then(|| default_resource_server(st, &id, &client_id));
    st.realms.get_mut(realm).unwrap().clients.push(Client {
        id: id.clone(),
        client_id,
        rep,
        secret,
        public,
        service_account,
        helper_sa: false,
        authz: resource_server,
    });
    created(&format!("{}/admin/realms/{realm}/clients/{id}", st.base))
}

/// Keycloak's defaults for a new resource server: a resource of the client's default type, a
/// JavaScript policy granting every user of the realm, and a permission tying them together.
pub(super) fn default_resource_server(
    st: &mut State,
    client_uuid: &str,
    client_id: &str,
) -> ResourceServer {
    let default_type = format!("urn:{client_id}:resources:default");
    let rid = st.uuid();
    let pid = st.uuid();
    let perm = st.uuid();
    let id = st.uuid();
    ResourceServer {
        id: id.clone(),
        next: 0,
        settings: json!({"id": id, "clientId": client_uuid, "name": client_id,
            "allowRemoteResourceManagement": true, "policyEnforcementMode": "ENFORCING",
            "decisionStrategy": "UNANIMOUS"})
        .as_object()
        .unwrap()
        .clone(),
        scopes: Vec::new(),
        resources: vec![
            json!({"_id": rid, "name": "Default Resource", "type": default_type,
            "uris": ["/*"], "owner": {"id": client_uuid, "name": client_id},
            "ownerManagedAccess": false, "scopes": [], "attributes": {}}),
        ],
        policies: vec![
            Policy {
                id: pid.clone(),
                name: "Default Policy".into(),
                kind: "js".into(),
                description: Some(
                    "A policy that grants access only for users within this realm".into(),
                ),
                logic: "POSITIVE".into(),
                decision_strategy: "AFFIRMATIVE".into(),
                roles: Vec::new(),
                scopes: Vec::new(),
                resources: Vec::new(),
                policies: Vec::new(),
                resource_type: None,
            },
            Policy {
                id: perm,
                name: "Default Permission".into(),
                kind: "resource".into(),
                description: Some("A permission that applies to the default resource type".into()),
                logic: "POSITIVE".into(),
                decision_strategy: "UNANIMOUS".into(),
                roles: Vec::new(),
                scopes: Vec::new(),
                resources: Vec::new(),
                policies: vec![pid],
                resource_type: Some(default_type),
            },
        ],
    }
}

pub(super) fn update_client(st: &mut State, req: &Request, realm: &str, ci: usize) -> Response {
    let mut rep = match body_object(req) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(r) = check_client(&rep) {
        return r;
    }
    if let Some(cid) = str_field(&rep, "clientId") {
        let r = &st.realms[realm];
        if r.clients
            .iter()
            .enumerate()
            .any(|(i, c)| i != ci && c.client_id == cid)
        {
            return error_message(409, &format!("Client {cid} already exists"));
        }
    }
    let wants_authz = rep
        .get("authorizationServicesEnabled")
        .and_then(Value::as_bool);
    let (uuid, cid_now) = {
        let c = &st.realms[realm].clients[ci];
        (c.id.clone(), c.client_id.clone())
    };
    let rs = match wants_authz {
        Some(true) if st.realms[realm].clients[ci].authz.is_none() => {
            Some(default_resource_server(st, &uuid, &cid_now))
        }
        _ => None,
    };
    let c = &mut st.realms.get_mut(realm).unwrap().clients[ci];
    if let Some(cid) = str_field(&rep, "clientId") {
        c.client_id = cid.to_string();
    }
    if let Some(p) = rep.get("publicClient").and_then(Value::as_bool) {
        c.public = p;
        if p {
            c.secret = None;
        }
    }
    if let Some(s) = str_field(&rep, "secret")
        && !c.public
    {
        c.secret = Some(s.to_string());
    }
    match wants_authz {
        Some(false) => c.authz = None,
        Some(true) if c.authz.is_none() => c.authz = rs,
        _ => {}
    }
    for k in [
        "id",
        "clientId",
        "secret",
        "publicClient",
        "authorizationServicesEnabled",
        "authorizationSettings",
    ] {
        rep.remove(k);
    }
    for (k, v) in rep {
        c.rep.insert(k, v);
    }
    no_content()
}
