//! Realm and client roles.

use super::*;

pub(super) fn roles(st: &mut State, req: &Request, realm: &str, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    match rest {
        [] => match m {
            "GET" => {
                let q = query(req);
                let r = &st.realms[realm];
                let list: Vec<Value> = r
                    .roles
                    .iter()
                    .filter(|x| q.get("search").is_none_or(|s| contains_ci(&x.name, s)))
                    .map(|x| x.representation(&r.id))
                    .collect();
                Response::json(200, &page(list, &q, -1))
            }
            "POST" => {
                let b = match body_object(req) {
                    Ok(b) => b,
                    Err(e) => return e,
                };
                let Some(name) = str_field(&b, "name").filter(|n| !n.is_empty()) else {
                    return error_message(400, "Role name is missing");
                };
                let name = name.to_string();
                if st.realms[realm].roles.iter().any(|x| x.name == name) {
                    return error_message(409, &format!("Role with name {name} already exists"));
                }
                let id = st.uuid();
                st.realms.get_mut(realm).unwrap().roles.push(Role {
                    id,
                    name: name.clone(),
                    description: str_field(&b, "description").map(String::from),
                    attributes: b.get("attributes").cloned().unwrap_or(json!({})),
                });
                created(&format!(
                    "{}/admin/realms/{realm}/roles/{}",
                    st.base,
                    kaa::clients::keycloak::encode(&name)
                ))
            }
            _ => not_allowed(),
        },
        [name] => {
            let r = st.realms.get_mut(realm).unwrap();
            let Some(i) = r.roles.iter().position(|x| x.name == *name) else {
                return error(404, "Could not find role");
            };
            match m {
                "GET" => Response::json(200, &r.roles[i].representation(&r.id)),
                "PUT" => {
                    let b = match body_object(req) {
                        Ok(b) => b,
                        Err(e) => return e,
                    };
                    if let Some(n) = str_field(&b, "name")
                        && n != *name
                        && r.roles.iter().any(|x| x.name == n)
                    {
                        return error_message(409, &format!("Role with name {n} already exists"));
                    }
                    let old = r.roles[i].name.clone();
                    let role = &mut r.roles[i];
                    if let Some(n) = str_field(&b, "name") {
                        role.name = n.to_string();
                    }
                    if b.contains_key("description") {
                        role.description = str_field(&b, "description").map(String::from);
                    }
                    if let Some(a) = b.get("attributes") {
                        role.attributes = a.clone();
                    }
                    let new = role.name.clone();
                    for u in &mut r.users {
                        for x in &mut u.roles {
                            if *x == old {
                                x.clone_from(&new);
                            }
                        }
                    }
                    no_content()
                }
                "DELETE" => {
                    let role = r.roles.remove(i);
                    for u in &mut r.users {
                        u.roles.retain(|x| *x != role.name);
                    }
                    // Role policies lose the role; one left without roles goes, and the
                    // permissions that named it forget it.
                    for rs in r.clients.iter_mut().filter_map(|c| c.authz.as_mut()) {
                        let mut gone = Vec::new();
                        rs.policies.retain_mut(|p| {
                            if p.kind != "role" {
                                return true;
                            }
                            p.roles.retain(|(id, _)| *id != role.id);
                            if p.roles.is_empty() {
                                gone.push(p.id.clone());
                                return false;
                            }
                            true
                        });
                        for p in &mut rs.policies {
                            p.policies.retain(|x| !gone.contains(x));
                        }
                    }
                    no_content()
                }
                _ => not_allowed(),
            }
        }
        _ => not_found(),
    }
}
