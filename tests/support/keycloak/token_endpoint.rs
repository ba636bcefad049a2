//! The token endpoint (client credentials, password, UMA decisions) and the admin API's
//! authorization of its callers.

use super::*;

/// A UMA decision (`grant_type=urn:ietf:params:oauth:grant-type:uma-ticket`,
/// `response_mode=decision`): does the bearer hold `permission=<resource>[#<scope>]` of the
/// resource server `audience`? Answered as Keycloak 26 answers: 401 `invalid_grant` for a bearer
/// token that does not verify (signature, issuer, `exp`/`nbf` with no tolerance, an access token
/// only), 400 for an unknown resource server, or a resource (or a scope of it) that does not
/// exist, 200 `{"result": true}` or 403 `access_denied` as [`evaluate`] decides.
pub(super) fn uma_decision(st: &State, realm: &str, req: &Request) -> Response {
    let Some(r) = st.realms.get(realm) else {
        return Response::json(404, &json!({"error": "Realm does not exist"}));
    };
    let f = form(&req.body);
    let Some(audience) = f.get("audience") else {
        return error_described(400, "invalid_request", "Missing audience");
    };
    let token = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([format!("{}/realms/{realm}", st.base)])),
        time_tolerance: Some(Duration::from_secs(0)),
        ..VerificationOptions::default()
    };
    let verified = Token::decode_metadata(token).ok().and_then(|m| {
        let kid = m.key_id()?.to_string();
        let (_, key) = r.keys.iter().find(|(k, _)| *k == kid)?;
        key.public_key()
            .verify_token::<KcClaims>(token, Some(options))
            .ok()
    });
    let Some(claims) = verified.filter(|c| c.custom.typ.as_deref() == Some("Bearer")) else {
        return error_described(401, "invalid_grant", "Invalid bearer token");
    };
    let Some(rs) = r
        .clients
        .iter()
        .find(|c| &c.client_id == audience)
        .and_then(|c| c.authz.as_ref())
    else {
        return error_described(
            400,
            "invalid_request",
            &format!("Unknown resource server id: [{audience}]"),
        );
    };
    if f.get("response_mode").map(String::as_str) != Some("decision") {
        return error_described(
            400,
            "invalid_request",
            "the stand-in answers response_mode=decision only",
        );
    }
    let roles: Vec<String> = claims
        .custom
        .realm_access
        .as_ref()
        .and_then(|r| r.get("roles"))
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    // Role policies name roles by id.
    let held: Vec<&str> = r
        .roles
        .iter()
        .filter(|role| roles.contains(&role.name))
        .map(|role| role.id.as_str())
        .collect();
    let permission = f.get("permission").cloned().unwrap_or_default();
    let (resource, scope) = match permission.split_once('#') {
        Some((res, sc)) => (res, Some(sc)),
        None => (permission.as_str(), None),
    };
    let no_resource = || {
        error_described(
            400,
            "invalid_resource",
            &format!("Resource with id [{resource}] does not exist."),
        )
    };
    let Some(res) = rs
        .resources
        .iter()
        .find(|x| x["_id"] == resource)
        .or_else(|| rs.resources.iter().find(|x| x["name"] == resource))
    else {
        return no_resource();
    };
    let res_scopes: Vec<String> = res["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect();
    let granted = match scope {
        Some(name) => {
            let Some(sid) = rs
                .scopes
                .iter()
                .find(|x| x["name"] == name || x["id"] == name)
                .and_then(|x| x["id"].as_str())
                .filter(|id| res_scopes.iter().any(|s| s == id))
            else {
                return no_resource();
            };
            evaluate(rs, &held, res, Some(sid))
        }
        // The resource alone: granted when any of its scopes is (or the resource itself, when it
        // has none).
        None if res_scopes.is_empty() => evaluate(rs, &held, res, None),
        None => res_scopes
            .iter()
            .any(|sid| evaluate(rs, &held, res, Some(sid))),
    };
    if granted {
        Response::json(200, &json!({ "result": true }))
    } else {
        error_described(403, "access_denied", "not_authorized")
    }
}

/// Keycloak's evaluation of one resource (and scope) for a subject holding the realm roles with
/// ids `held`: the permissions that apply (resource permissions naming the resource or its type,
/// scope permissions naming the scope and, if they name resources, this one) each decide by
/// their strategy over their policies; the resource server's strategy (`UNANIMOUS` by default)
/// combines them; with no permission that applies, `ENFORCING` denies and `PERMISSIVE` grants.
pub(super) fn evaluate(
    rs: &ResourceServer,
    held: &[&str],
    res: &Value,
    scope: Option<&str>,
) -> bool {
    let setting = |k: &str, default: &str| {
        rs.settings
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let mode = setting("policyEnforcementMode", "ENFORCING");
    if mode == "DISABLED" {
        return true;
    }
    let res_id = res["_id"].as_str().unwrap_or_default();
    let res_type = res["type"].as_str();
    let applies = |p: &Policy| match p.kind.as_str() {
        "resource" => {
            p.resources.iter().any(|x| x == res_id)
                || (p.resources.is_empty()
                    && p.resource_type.is_some()
                    && p.resource_type.as_deref() == res_type)
        }
        "scope" => {
            scope.is_some_and(|sid| p.scopes.iter().any(|x| x == sid))
                && (p.resources.is_empty() || p.resources.iter().any(|x| x == res_id))
        }
        _ => false,
    };
    let decisions: Vec<bool> = rs
        .policies
        .iter()
        .filter(|p| applies(p))
        .map(|p| policy_grants(rs, held, p, 0))
        .collect();
    if decisions.is_empty() {
        return mode == "PERMISSIVE";
    }
    match setting("decisionStrategy", "UNANIMOUS").as_str() {
        "AFFIRMATIVE" => decisions.iter().any(|d| *d),
        "CONSENSUS" => {
            let yes = decisions.iter().filter(|d| **d).count();
            yes > decisions.len() - yes
        }
        _ => decisions.iter().all(|d| *d),
    }
}

/// Whether a policy (or permission) grants, with its logic applied: a role policy when the
/// subject holds one of its roles and every role marked required; Keycloak's default JS policy
/// always; permissions and aggregates by their decision strategy over the policies they name.
pub(super) fn policy_grants(rs: &ResourceServer, held: &[&str], p: &Policy, depth: usize) -> bool {
    let raw = match p.kind.as_str() {
        "role" => {
            let has = |id: &String| held.contains(&id.as_str());
            p.roles.iter().any(|(id, _)| has(id))
                && p.roles.iter().all(|(id, required)| !required || has(id))
        }
        "js" => p.name == "Default Policy",
        "scope" | "resource" | "aggregate" if depth < 8 => {
            let inner: Vec<bool> = p
                .policies
                .iter()
                .filter_map(|id| rs.policies.iter().find(|x| &x.id == id))
                .map(|x| policy_grants(rs, held, x, depth + 1))
                .collect();
            let yes = inner.iter().filter(|d| **d).count();
            !inner.is_empty()
                && match p.decision_strategy.as_str() {
                    "AFFIRMATIVE" => yes > 0,
                    "CONSENSUS" => yes > inner.len() - yes,
                    _ => yes == inner.len(),
                }
        }
        _ => false,
    };
    // A permission's logic is always positive; a policy's NEGATIVE logic inverts it.
    if p.logic == "NEGATIVE" && !matches!(p.kind.as_str(), "scope" | "resource") {
        !raw
    } else {
        raw
    }
}

/// The `resource_access` of a user: client id -> names of its mapped client roles.
pub(super) fn client_role_claims(r: &Realm, ids: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (client, role) in &r.client_roles {
        if ids.contains(&role.id)
            && let Some(c) = r.clients.iter().find(|c| &c.id == client)
        {
            out.entry(c.client_id.clone())
                .or_default()
                .push(role.name.clone());
        }
    }
    out
}

pub(super) fn token_endpoint(st: &mut State, realm: &str, req: &Request) -> Response {
    if form(&req.body).get("grant_type").map(String::as_str)
        == Some("urn:ietf:params:oauth:grant-type:uma-ticket")
    {
        return uma_decision(st, realm, req);
    }
    let Some(r) = st.realms.get_mut(realm) else {
        return Response::json(404, &json!({"error": "Realm does not exist"}));
    };
    r.token_requests += 1;
    let f = form(&req.body);
    let client_id = f.get("client_id").cloned().unwrap_or_default();
    let invalid_client = || {
        error_described(
            401,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        )
    };
    let client = r.clients.iter().find(|c| c.client_id == client_id);
    // Users of `add_user` log in through any client id, as they always did here.
    let helper_login = f.get("grant_type").map(String::as_str) == Some("password")
        && r.users.iter().any(|u| {
            u.id == format!("sub-{}", u.username) && Some(&u.username) == f.get("username")
        });
    if client.is_none() && !helper_login {
        return invalid_client();
    }
    if client.is_some_and(|c| !c.public && c.secret.as_ref() != f.get("client_secret")) {
        return invalid_client();
    }
    let lifespan = r.token_lifespan as i64;
    let mint = match f.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            let Some(client) = client else {
                return invalid_client();
            };
            if client.public {
                return invalid_client();
            }
            if client.helper_sa {
                Mint {
                    sub: format!("sa-{client_id}"),
                    username: Some(format!("service-account-{client_id}")),
                    azp: Some(client_id.clone()),
                    exp_in: lifespan,
                    ..Mint::user("x")
                }
            } else {
                let Some(sa) = client
                    .service_account
                    .as_ref()
                    .and_then(|id| r.users.iter().find(|u| &u.id == id))
                else {
                    return error_described(
                        401,
                        "unauthorized_client",
                        "Client not enabled to retrieve service account",
                    );
                };
                Mint {
                    sub: sa.id.clone(),
                    username: Some(sa.username.clone()),
                    azp: Some(client_id.clone()),
                    roles: sa.roles.clone(),
                    client_roles: client_role_claims(r, &sa.client_roles),
                    exp_in: lifespan,
                    ..Mint::user("x")
                }
            }
        }
        Some("password") => {
            if client.is_some_and(|c| !c.flag("directAccessGrantsEnabled")) {
                return error_described(
                    400,
                    "unauthorized_client",
                    "Client not allowed for direct access grants",
                );
            }
            let name = f
                .get("username")
                .cloned()
                .unwrap_or_default()
                .to_lowercase();
            let user = r.users.iter().find(|u| {
                u.username == name
                    || u.email.as_deref().map(str::to_lowercase) == Some(name.clone())
            });
            match user {
                Some(u) if u.password.is_some() && u.password.as_ref() == f.get("password") => {
                    if !u.enabled {
                        return error_described(400, "invalid_grant", "Account disabled");
                    }
                    if !u.required_actions.is_empty() {
                        return error_described(
                            400,
                            "invalid_grant",
                            "Account is not fully set up",
                        );
                    }
                    Mint {
                        sub: u.id.clone(),
                        azp: Some(client_id.clone()),
                        roles: u.roles.clone(),
                        client_roles: client_role_claims(r, &u.client_roles),
                        exp_in: lifespan,
                        ..Mint::user(&u.username)
                    }
                }
                _ => {
                    return error_described(401, "invalid_grant", "Invalid user credentials");
                }
            }
        }
        _ => return invalid_client(),
    };
    // Keycloak's shape: every user holds the realm's default roles (the account console's client
    // roles among them); `aud` names the clients of `resource_access` but the requesting one.
    let mut mint = mint;
    for role in [
        format!("default-roles-{realm}"),
        "offline_access".into(),
        "uma_authorization".into(),
    ] {
        if !mint.roles.contains(&role) {
            mint.roles.push(role);
        }
    }
    mint.client_roles.insert(
        "account".into(),
        ACCOUNT_ROLES.iter().map(|r| r.to_string()).collect(),
    );
    let aud: Vec<String> = mint
        .client_roles
        .iter()
        .filter(|(c, roles)| **c != client_id && !roles.is_empty())
        .map(|(c, _)| c.clone())
        .collect();
    mint.aud = (!aud.is_empty()).then_some(aud);
    let openid = f
        .get("scope")
        .is_some_and(|sc| sc.split(' ').any(|x| x == "openid"));
    mint.scope = Some(if openid {
        "openid profile email".into()
    } else {
        "profile email".into()
    });
    let token = sign(st, realm, &mint);
    let mut answer = json!({"access_token": token, "expires_in": lifespan,
        "token_type": "Bearer", "refresh_expires_in": 0, "not-before-policy": 0,
        "scope": mint.scope});
    if openid {
        // The ID token: for the client itself, no roles.
        let id_token = sign(
            st,
            realm,
            &Mint {
                aud: Some(vec![client_id.clone()]),
                typ: Some("ID".into()),
                roles: Vec::new(),
                client_roles: BTreeMap::new(),
                scope: None,
                ..mint.clone()
            },
        );
        answer["id_token"] = json!(id_token);
    }
    st.realms.get_mut(realm).unwrap().issued.push(token);
    Response::json(200, &answer)
}

/// The `account` client roles of Keycloak's default roles, which every user holds.
pub(super) const ACCOUNT_ROLES: &[&str] =
    &["manage-account", "manage-account-links", "view-profile"];

/// The caller of an admin call: a valid token of the master realm with the `admin` role.
/// The caller of an admin call on `parts` (after `/admin/realms`): a token of the master realm
/// with the `admin` role may do anything; a token of the realm the path names may do what its
/// `realm-management` client roles allow, as in Keycloak (users: `view-users` to read,
/// `manage-users` to change; anything else: `view-realm` / `manage-realm`; `realm-admin` all).
pub(super) fn admin_auth(st: &mut State, req: &Request, parts: &[String]) -> Result<(), Response> {
    let unauthorized = || error(401, "HTTP 401 Unauthorized");
    let token = req
        .header("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(unauthorized)?;
    let target = parts.first().map(String::as_str).unwrap_or("master");
    if target == "master" || !st.realms.contains_key(target) || st.revoked.contains(token) {
        return master_admin_auth(st, req);
    }
    // A token of the master realm is checked as before; one of the target realm by its roles.
    st.ensure_key(target);
    let issuer = format!("{}/realms/{target}", st.base);
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([issuer])),
        time_tolerance: Some(Duration::from_secs(0)),
        ..VerificationOptions::default()
    };
    let Some(claims) = st.realms[target].keys.iter().find_map(|(_, k)| {
        k.public_key()
            .verify_token::<KcClaims>(token, Some(options.clone()))
            .ok()
    }) else {
        return master_admin_auth(st, req);
    };
    let roles: Vec<String> = claims
        .custom
        .resource_access
        .as_ref()
        .and_then(|a| a.get("realm-management"))
        .and_then(|c| c.get("roles"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let has = |r: &str| roles.iter().any(|x| x == r || x == "realm-admin");
    let read = req.method == "GET";
    let allowed = match parts.get(1).map(String::as_str) {
        Some("users") if read => has("view-users") || has("manage-users"),
        Some("users") => has("manage-users"),
        _ if read => has("view-realm") || has("manage-realm"),
        _ => has("manage-realm"),
    };
    if allowed {
        Ok(())
    } else {
        Err(error(403, "HTTP 403 Forbidden"))
    }
}

pub(super) fn master_admin_auth(st: &mut State, req: &Request) -> Result<(), Response> {
    let unauthorized = || error(401, "HTTP 401 Unauthorized");
    let token = req
        .header("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(unauthorized)?;
    if st.revoked.contains(token) || !st.realms.contains_key("master") {
        return Err(unauthorized());
    }
    st.ensure_key("master");
    let issuer = format!("{}/realms/master", st.base);
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([issuer])),
        time_tolerance: Some(Duration::from_secs(0)),
        ..VerificationOptions::default()
    };
    let claims = st.realms["master"]
        .keys
        .iter()
        .find_map(|(_, k)| {
            k.public_key()
                .verify_token::<KcClaims>(token, Some(options.clone()))
                .ok()
        })
        .ok_or_else(unauthorized)?;
    let admin = claims
        .custom
        .realm_access
        .as_ref()
        .and_then(|a| a.get("roles"))
        .and_then(Value::as_array)
        .is_some_and(|roles| roles.iter().any(|r| r == "admin"));
    if admin {
        Ok(())
    } else {
        Err(error(403, "HTTP 403 Forbidden"))
    }
}
