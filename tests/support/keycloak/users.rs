//! Users: credentials, role mappings, e-mail actions.

use super::*;

pub(super) fn users(st: &mut State, req: &Request, realm: &str, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    match rest {
        [] => match m {
            "GET" => {
                let q = query(req);
                let exact = q.get("exact").is_some_and(|e| e == "true");
                let matches = |have: Option<&str>, want: &String| {
                    let have = have.unwrap_or("");
                    if exact {
                        have.eq_ignore_ascii_case(want)
                    } else {
                        contains_ci(have, want)
                    }
                };
                let list: Vec<Value> = st.realms[realm]
                    .users
                    .iter()
                    .filter(|u| u.service_account_client.is_none())
                    .filter(|u| {
                        q.get("username")
                            .is_none_or(|w| matches(Some(&u.username), w))
                    })
                    .filter(|u| {
                        q.get("email")
                            .is_none_or(|w| matches(u.email.as_deref(), w))
                    })
                    .filter(|u| {
                        q.get("search").is_none_or(|s| {
                            contains_ci(&u.username, s)
                                || u.email.as_deref().is_some_and(|e| contains_ci(e, s))
                        })
                    })
                    .map(User::representation)
                    .collect();
                Response::json(200, &page(list, &q, 100))
            }
            "POST" => create_user(st, req, realm),
            _ => not_allowed(),
        },
        ["count"] if m == "GET" => {
            let q = query(req);
            Response::json(
                200,
                &st.realms[realm]
                    .users
                    .iter()
                    .filter(|u| u.service_account_client.is_none())
                    .filter(|u| {
                        q.get("username")
                            .is_none_or(|w| contains_ci(&u.username, w))
                    })
                    .count(),
            )
        }
        [id, rest @ ..] => {
            let Some(ui) = st.realms[realm].users.iter().position(|u| u.id == *id) else {
                return error(404, "User not found");
            };
            user_item(st, req, realm, ui, rest)
        }
    }
}

pub(super) fn password_of(b: &Map<String, Value>) -> Option<(String, bool)> {
    b.get("credentials")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str).unwrap_or("password") == "password")
        .and_then(|c| {
            Some((
                c.get("value")?.as_str()?.to_string(),
                c.get("temporary").and_then(Value::as_bool).unwrap_or(false),
            ))
        })
}

pub(super) fn create_user(st: &mut State, req: &Request, realm: &str) -> Response {
    let mut b = match body_object(req) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if let Err(e) = check_types(
        &b,
        &["enabled", "emailVerified"],
        &[],
        &["username", "email", "firstName", "lastName"],
        &["credentials", "requiredActions", "groups", "realmRoles"],
    ) {
        return e;
    }
    let email_as_username = st.realms[realm]
        .rep
        .get("registrationEmailAsUsername")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let email = str_field(&b, "email")
        .filter(|e| !e.is_empty())
        .map(str::to_lowercase);
    let username = match str_field(&b, "username").filter(|u| !u.is_empty()) {
        Some(u) => u.to_lowercase(),
        None if email_as_username && email.is_some() => email.clone().unwrap_or_default(),
        None => return error_message(400, "User name is missing"),
    };
    let r = &st.realms[realm];
    if r.users.iter().any(|u| u.username == username) {
        return error_message(409, "User exists with same username");
    }
    let dup_emails = r
        .rep
        .get("duplicateEmailsAllowed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(e) = &email
        && !dup_emails
        && r.users.iter().any(|u| u.email.as_ref() == Some(e))
    {
        return error_message(409, "User exists with same email");
    }
    let password = password_of(&b);
    let mut required: Vec<String> = b
        .get("requiredActions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    if password.as_ref().is_some_and(|(_, t)| *t)
        && !required.iter().any(|a| a == "UPDATE_PASSWORD")
    {
        required.push("UPDATE_PASSWORD".into());
    }
    let enabled = b.get("enabled").and_then(Value::as_bool).unwrap_or(false);
    let id = st.uuid();
    for k in [
        "id",
        "username",
        "email",
        "enabled",
        "credentials",
        "requiredActions",
    ] {
        b.remove(k);
    }
    b.entry("emailVerified").or_insert(json!(false));
    st.realms.get_mut(realm).unwrap().users.push(User {
        id: id.clone(),
        username,
        email,
        rep: b,
        enabled,
        password: password.map(|(p, _)| p),
        roles: Vec::new(),
        required_actions: required,
        emails: Vec::new(),
        service_account_client: None,
        client_roles: Vec::new(),
        created: now(),
    });
    created(&format!("{}/admin/realms/{realm}/users/{id}", st.base))
}

pub(super) fn user_item(
    st: &mut State,
    req: &Request,
    realm: &str,
    ui: usize,
    rest: &[&str],
) -> Response {
    let m = req.method.as_str();
    let q = query(req);
    let r = st.realms.get_mut(realm).unwrap();
    match rest {
        [] => match m {
            "GET" => Response::json(200, &r.users[ui].representation()),
            "PUT" => {
                let mut b = match body_object(req) {
                    Ok(b) => b,
                    Err(e) => return e,
                };
                if let Some(u) = str_field(&b, "username").map(str::to_lowercase)
                    && r.users
                        .iter()
                        .enumerate()
                        .any(|(i, x)| i != ui && x.username == u)
                {
                    return error_message(409, "User exists with same username");
                }
                let dup_emails = r
                    .rep
                    .get("duplicateEmailsAllowed")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if let Some(e) = str_field(&b, "email").map(str::to_lowercase)
                    && !dup_emails
                    && r.users
                        .iter()
                        .enumerate()
                        .any(|(i, x)| i != ui && x.email.as_ref() == Some(&e))
                {
                    return error_message(409, "User exists with same email");
                }
                let u = &mut r.users[ui];
                if let Some(n) = str_field(&b, "username") {
                    u.username = n.to_lowercase();
                }
                if b.contains_key("email") {
                    u.email = str_field(&b, "email")
                        .filter(|e| !e.is_empty())
                        .map(str::to_lowercase);
                }
                if let Some(e) = b.get("enabled").and_then(Value::as_bool) {
                    u.enabled = e;
                }
                if let Some(a) = b.get("requiredActions").and_then(Value::as_array) {
                    u.required_actions = a
                        .iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect();
                }
                if let Some((p, t)) = password_of(&b) {
                    u.password = Some(p);
                    if t && !u.required_actions.iter().any(|a| a == "UPDATE_PASSWORD") {
                        u.required_actions.push("UPDATE_PASSWORD".into());
                    }
                }
                for k in [
                    "id",
                    "username",
                    "email",
                    "enabled",
                    "credentials",
                    "requiredActions",
                ] {
                    b.remove(k);
                }
                for (k, v) in b {
                    u.rep.insert(k, v);
                }
                no_content()
            }
            "DELETE" => {
                r.users.remove(ui);
                no_content()
            }
            _ => not_allowed(),
        },
        ["reset-password"] if m == "PUT" => {
            let b = match body_object(req) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let Some(value) = str_field(&b, "value").filter(|v| !v.is_empty()) else {
                return error_message(400, "Empty password");
            };
            let temporary = b.get("temporary").and_then(Value::as_bool).unwrap_or(false);
            let u = &mut r.users[ui];
            u.password = Some(value.to_string());
            u.required_actions.retain(|a| a != "UPDATE_PASSWORD");
            if temporary {
                u.required_actions.push("UPDATE_PASSWORD".into());
            }
            no_content()
        }
        [action @ ("execute-actions-email" | "send-verify-email")] if m == "PUT" => {
            let actions: Vec<String> = if *action == "send-verify-email" {
                vec!["VERIFY_EMAIL".into()]
            } else {
                match body_json(req) {
                    Ok(Value::Array(a)) if a.iter().all(Value::is_string) => {
                        a.iter().map(|x| x.as_str().unwrap().to_string()).collect()
                    }
                    _ => return unknown_error(400),
                }
            };
            let u = &r.users[ui];
            if u.email.is_none() {
                return error_message(400, "User email missing");
            }
            if !u.enabled {
                return error_message(400, "User is disabled");
            }
            let client_id = q.get("client_id").cloned();
            let redirect = q.get("redirect_uri").cloned();
            if let Some(uri) = &redirect {
                let Some(cid) = &client_id else {
                    return error_message(400, "Client id missing");
                };
                let Some(c) = r.clients.iter().find(|c| &c.client_id == cid) else {
                    return error_message(400, "Client doesn't exist");
                };
                if !c
                    .rep
                    .get("enabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(true)
                {
                    return error_message(400, "Client is not enabled");
                }
                if !redirect_allowed(c, uri) {
                    return error_message(400, "Invalid redirect uri.");
                }
            }
            let u = &mut r.users[ui];
            for a in &actions {
                if !u.required_actions.contains(a) {
                    u.required_actions.push(a.clone());
                }
            }
            u.emails
                .push(json!({"actions": actions, "client_id": client_id,
                "redirect_uri": redirect, "lifespan": q.get("lifespan")}));
            no_content()
        }
        ["role-mappings"] if m == "GET" => {
            let list: Vec<Value> = r.users[ui]
                .roles
                .iter()
                .filter_map(|n| r.roles.iter().find(|x| x.name == *n))
                .map(|x| x.representation(&r.id))
                .collect();
            Response::json(200, &json!({ "realmMappings": list }))
        }
        ["role-mappings", "clients", client] => {
            let client = client.to_string();
            if !r.clients.iter().any(|c| c.id == client) {
                return error(404, "Client not found");
            }
            match m {
                "GET" => {
                    let list: Vec<Value> = r
                        .client_roles
                        .iter()
                        .filter(|(c, x)| *c == client && r.users[ui].client_roles.contains(&x.id))
                        .map(|(c, x)| client_role_rep(x, c))
                        .collect();
                    Response::json(200, &list)
                }
                "POST" | "DELETE" => {
                    let list = match body_json(req) {
                        Ok(Value::Array(a)) => a,
                        _ => return unknown_error(400),
                    };
                    let mut ids = Vec::new();
                    for rep in &list {
                        let name = rep.get("name").and_then(Value::as_str);
                        let id = rep.get("id").and_then(Value::as_str);
                        let found = r
                            .client_roles
                            .iter()
                            .filter(|(c, _)| *c == client)
                            .map(|(_, x)| x)
                            .find(|x| Some(x.name.as_str()) == name || Some(x.id.as_str()) == id)
                            .filter(|x| id.is_none_or(|i| x.id == i));
                        match found {
                            Some(x) => ids.push(x.id.clone()),
                            None => return error(404, "Role not found"),
                        }
                    }
                    let u = &mut r.users[ui];
                    for id in ids {
                        if m == "POST" {
                            if !u.client_roles.contains(&id) {
                                u.client_roles.push(id);
                            }
                        } else {
                            u.client_roles.retain(|x| *x != id);
                        }
                    }
                    no_content()
                }
                _ => not_allowed(),
            }
        }
        ["role-mappings", "realm"] => match m {
            "GET" => {
                let list: Vec<Value> = r.users[ui]
                    .roles
                    .iter()
                    .filter_map(|n| r.roles.iter().find(|x| x.name == *n))
                    .map(|x| x.representation(&r.id))
                    .collect();
                Response::json(200, &list)
            }
            "POST" | "DELETE" => {
                let list = match body_json(req) {
                    Ok(Value::Array(a)) => a,
                    _ => return unknown_error(400),
                };
                let mut names = Vec::new();
                for rep in &list {
                    let name = rep.get("name").and_then(Value::as_str);
                    let id = rep.get("id").and_then(Value::as_str);
                    // Keycloak finds the role by name and wants the id to agree.
                    let found = name
                        .and_then(|n| r.roles.iter().find(|x| x.name == n))
                        .or_else(|| id.and_then(|i| r.roles.iter().find(|x| x.id == i)))
                        .filter(|x| id.is_none_or(|i| x.id == i));
                    match found {
                        Some(x) => names.push(x.name.clone()),
                        None => return error(404, "Role not found"),
                    }
                }
                let u = &mut r.users[ui];
                for n in names {
                    if m == "POST" {
                        if !u.roles.contains(&n) {
                            u.roles.push(n);
                        }
                    } else {
                        u.roles.retain(|x| *x != n);
                    }
                }
                no_content()
            }
            _ => not_allowed(),
        },
        _ => not_found(),
    }
}
