//! Identity providers and user-federation components.

use super::*;

pub(super) const IDP_PROVIDERS: &[&str] = &[
    "oidc",
    "keycloak-oidc",
    "saml",
    "google",
    "github",
    "gitlab",
    "facebook",
    "microsoft",
    "linkedin-openid-connect",
    "twitter",
    "bitbucket",
    "openshift-v4",
    "paypal",
    "stackoverflow",
    "instagram",
];

pub(super) fn idps(st: &mut State, req: &Request, realm: &str, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    let uuid = st.uuid();
    let base = st.base.clone();
    let r = st.realms.get_mut(realm).unwrap();
    match rest {
        [] => match m {
            "GET" => Response::json(200, &r.idps),
            "POST" => {
                let mut b = match body_object(req) {
                    Ok(b) => b,
                    Err(e) => return e,
                };
                let Some(alias) = str_field(&b, "alias").filter(|a| !a.is_empty()) else {
                    return error_message(400, "Identity Provider alias is missing");
                };
                let alias = alias.to_string();
                match str_field(&b, "providerId") {
                    Some(p) if IDP_PROVIDERS.contains(&p) => {}
                    other => {
                        return error_message(
                            400,
                            &format!("Invalid identity provider id [{}]", other.unwrap_or("")),
                        );
                    }
                }
                if r.idps.iter().any(|i| i["alias"] == alias.as_str()) {
                    return error_message(
                        409,
                        &format!("Identity Provider {alias} already exists"),
                    );
                }
                b.insert("internalId".into(), json!(uuid));
                b.entry("enabled").or_insert(json!(false));
                b.entry("config").or_insert(json!({}));
                r.idps.push(Value::Object(b));
                created(&format!(
                    "{base}/admin/realms/{realm}/identity-provider/instances/{alias}"
                ))
            }
            _ => not_allowed(),
        },
        [alias] => {
            let Some(i) = r.idps.iter().position(|x| x["alias"] == *alias) else {
                return error(404, "Could not find identity provider");
            };
            match m {
                "GET" => Response::json(200, &r.idps[i]),
                "PUT" => match body_object(req) {
                    Ok(b) => {
                        let cur = r.idps[i].as_object_mut().unwrap();
                        for (k, v) in b {
                            if k != "internalId" {
                                cur.insert(k, v);
                            }
                        }
                        no_content()
                    }
                    Err(e) => e,
                },
                "DELETE" => {
                    r.idps.remove(i);
                    no_content()
                }
                _ => not_allowed(),
            }
        }
        _ => not_found(),
    }
}

/// Component types and the providers the stand-in knows of each.
pub(super) const COMPONENT_PROVIDERS: &[(&str, &[&str])] = &[(
    "org.keycloak.storage.UserStorageProvider",
    &["ldap", "kerberos"],
)];

/// Keycloak's component config: every value a list of strings.
pub(super) fn check_component(b: &Map<String, Value>) -> Result<(), Response> {
    if str_field(b, "name").is_none_or(str::is_empty) {
        return Err(error_message(400, "Component name is missing"));
    }
    let ty = str_field(b, "providerType").unwrap_or("");
    let provider = str_field(b, "providerId").unwrap_or("");
    let known = COMPONENT_PROVIDERS
        .iter()
        .any(|(t, ps)| *t == ty && ps.contains(&provider));
    if !known {
        return Err(error_message(
            400,
            &format!("Invalid provider [{provider}] of type [{ty}]"),
        ));
    }
    if let Some(c) = b.get("config") {
        let ok = c.as_object().is_some_and(|m| {
            m.values()
                .all(|v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
        });
        if !ok {
            return Err(unknown_error(400));
        }
    }
    if provider == "ldap" {
        let has = |k: &str| {
            b.get("config")
                .and_then(|c| c.get(k))
                .and_then(|v| v.get(0))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        if !has("connectionUrl") {
            return Err(error_message(400, "ldapErrorMissingConnectionUrl"));
        }
        if !has("usersDn") {
            return Err(error_message(400, "ldapErrorMissingUsersDn"));
        }
    }
    Ok(())
}

pub(super) fn components(st: &mut State, req: &Request, realm: &str, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    let uuid = st.uuid();
    let base = st.base.clone();
    let r = st.realms.get_mut(realm).unwrap();
    let realm_id = r.id.clone();
    match rest {
        [] => match m {
            "GET" => {
                let q = query(req);
                let list: Vec<Value> = r
                    .components
                    .iter()
                    .filter(|c| {
                        q.get("type")
                            .is_none_or(|t| c["providerType"] == t.as_str())
                    })
                    .filter(|c| q.get("name").is_none_or(|n| c["name"] == n.as_str()))
                    .filter(|c| q.get("parent").is_none_or(|p| c["parentId"] == p.as_str()))
                    .cloned()
                    .collect();
                Response::json(200, &list)
            }
            // Names are not unique: a second POST makes a second component, as in Keycloak.
            "POST" => {
                let mut b = match body_object(req) {
                    Ok(b) => b,
                    Err(e) => return e,
                };
                if let Err(e) = check_component(&b) {
                    return e;
                }
                b.insert("id".into(), json!(uuid));
                b.entry("parentId").or_insert(json!(realm_id));
                b.entry("config").or_insert(json!({}));
                r.components.push(Value::Object(b));
                created(&format!("{base}/admin/realms/{realm}/components/{uuid}"))
            }
            _ => not_allowed(),
        },
        [id] => {
            let Some(i) = r.components.iter().position(|c| c["id"] == *id) else {
                return error(404, "Could not find component");
            };
            match m {
                "GET" => Response::json(200, &r.components[i]),
                "PUT" => {
                    let mut b = match body_object(req) {
                        Ok(b) => b,
                        Err(e) => return e,
                    };
                    if let Err(e) = check_component(&b) {
                        return e;
                    }
                    b.insert("id".into(), json!(id));
                    b.entry("parentId").or_insert(json!(realm_id));
                    r.components[i] = Value::Object(b);
                    no_content()
                }
                "DELETE" => {
                    r.components.remove(i);
                    no_content()
                }
                _ => not_allowed(),
            }
        }
        _ => not_found(),
    }
}
