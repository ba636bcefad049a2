//! Answers as Keycloak gives them, and the checks of representations Keycloak's JSON binding makes.

use super::*;

pub(super) fn error_message(status: u16, message: &str) -> Response {
    Response::json(status, &json!({ "errorMessage": message }))
}

pub(super) fn error(status: u16, error: &str) -> Response {
    Response::json(status, &json!({ "error": error }))
}

pub(super) fn error_described(status: u16, error: &str, description: &str) -> Response {
    Response::json(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

pub(super) fn unknown_error(status: u16) -> Response {
    error_described(
        status,
        "unknown_error",
        "For more on this error consult the server log.",
    )
}

pub(super) fn no_content() -> Response {
    Response::new(204)
}

pub(super) fn created(location: &str) -> Response {
    Response::new(201).with_header("Location", location)
}

pub(super) fn realm_not_found() -> Response {
    error(404, "Realm not found.")
}

pub(super) fn not_found() -> Response {
    error(404, "HTTP 404 Not Found")
}

pub(super) fn not_allowed() -> Response {
    error(405, "HTTP 405 Method Not Allowed")
}

pub(super) fn body_json(req: &Request) -> Result<Value, Response> {
    serde_json::from_slice(&req.body).map_err(|_| unknown_error(400))
}

pub(super) fn body_object(req: &Request) -> Result<Map<String, Value>, Response> {
    match body_json(req)? {
        Value::Object(m) => Ok(m),
        _ => Err(unknown_error(400)),
    }
}

pub(super) fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

/// Fields of a representation whose JSON type Keycloak's binding insists on.
pub(super) fn check_types(
    m: &Map<String, Value>,
    bools: &[&str],
    ints: &[&str],
    strings: &[&str],
    lists: &[&str],
) -> Result<(), Response> {
    let bad = |k: &str, v: &Value| {
        Err(error_message(
            400,
            &format!("Invalid value `{v}` for field `{k}`"),
        ))
    };
    for (k, v) in m {
        if v.is_null() {
            continue;
        }
        let ok = if bools.contains(&k.as_str()) {
            v.is_boolean()
        } else if ints.contains(&k.as_str()) {
            v.is_i64()
        } else if strings.contains(&k.as_str()) {
            v.is_string()
        } else if lists.contains(&k.as_str()) {
            v.is_array()
        } else {
            true
        };
        if !ok {
            return bad(k, v);
        }
    }
    Ok(())
}

pub(super) const REALM_BOOLS: &[&str] = &[
    "enabled",
    "registrationAllowed",
    "registrationEmailAsUsername",
    "rememberMe",
    "verifyEmail",
    "loginWithEmailAllowed",
    "duplicateEmailsAllowed",
    "resetPasswordAllowed",
    "editUsernameAllowed",
    "bruteForceProtected",
    "permanentLockout",
    "userManagedAccessAllowed",
    "internationalizationEnabled",
    "eventsEnabled",
    "adminEventsEnabled",
];
pub(super) const REALM_INTS: &[&str] = &[
    "accessTokenLifespan",
    "accessTokenLifespanForImplicitFlow",
    "ssoSessionIdleTimeout",
    "ssoSessionMaxLifespan",
    "offlineSessionIdleTimeout",
    "accessCodeLifespan",
    "accessCodeLifespanUserAction",
    "accessCodeLifespanLogin",
    "actionTokenGeneratedByAdminLifespan",
    "actionTokenGeneratedByUserLifespan",
    "failureFactor",
    "maxFailureWaitSeconds",
    "minimumQuickLoginWaitSeconds",
    "waitIncrementSeconds",
    "quickLoginCheckMilliSeconds",
    "maxDeltaTimeSeconds",
    "notBefore",
];
pub(super) const REALM_STRINGS: &[&str] = &[
    "realm",
    "displayName",
    "displayNameHtml",
    "sslRequired",
    "loginTheme",
    "accountTheme",
    "adminTheme",
    "emailTheme",
    "defaultLocale",
    "passwordPolicy",
];

pub(super) fn check_realm(m: &Map<String, Value>) -> Result<(), Response> {
    check_types(
        m,
        REALM_BOOLS,
        REALM_INTS,
        REALM_STRINGS,
        &["supportedLocales", "users", "clients"],
    )?;
    if let Some(s) = str_field(m, "sslRequired")
        && !["all", "external", "none"].contains(&s.to_ascii_lowercase().as_str())
    {
        return Err(error_message(
            400,
            &format!("Invalid value `{s}` for field `sslRequired`"),
        ));
    }
    Ok(())
}

pub(super) const CLIENT_BOOLS: &[&str] = &[
    "enabled",
    "publicClient",
    "bearerOnly",
    "consentRequired",
    "standardFlowEnabled",
    "implicitFlowEnabled",
    "directAccessGrantsEnabled",
    "serviceAccountsEnabled",
    "authorizationServicesEnabled",
    "frontchannelLogout",
    "fullScopeAllowed",
    "surrogateAuthRequired",
    "alwaysDisplayInConsole",
];
pub(super) const CLIENT_STRINGS: &[&str] = &[
    "clientId",
    "name",
    "description",
    "rootUrl",
    "adminUrl",
    "baseUrl",
    "secret",
    "protocol",
    "clientAuthenticatorType",
];
pub(super) const CLIENT_LISTS: &[&str] = &[
    "redirectUris",
    "webOrigins",
    "defaultClientScopes",
    "optionalClientScopes",
];

pub(super) fn check_client(m: &Map<String, Value>) -> Result<(), Response> {
    check_types(
        m,
        CLIENT_BOOLS,
        &["notBefore", "nodeReRegistrationTimeout"],
        CLIENT_STRINGS,
        CLIENT_LISTS,
    )?;
    if let Some(p) = str_field(m, "protocol")
        && p != "openid-connect"
        && p != "saml"
    {
        return Err(error_message(400, &format!("Invalid protocol `{p}`")));
    }
    Ok(())
}

/// Whether a redirect URI is allowed by a client's `redirectUris` (`*` ends a prefix pattern).
pub(super) fn redirect_allowed(client: &Client, uri: &str) -> bool {
    client
        .rep
        .get("redirectUris")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|p| match p.strip_suffix('*') {
            Some(prefix) => uri.starts_with(prefix),
            None => p == uri,
        })
}

pub(super) fn query(req: &Request) -> HashMap<String, String> {
    req.query_pairs().into_iter().collect()
}

/// `first`/`max` of a list query (`default_max` when absent; `-1` = all).
pub(super) fn page<T: Clone>(
    items: Vec<T>,
    q: &HashMap<String, String>,
    default_max: i64,
) -> Vec<T> {
    let first = q
        .get("first")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let max = q
        .get("max")
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(default_max);
    let it = items.into_iter().skip(first);
    if max < 0 {
        it.collect()
    } else {
        it.take(max as usize).collect()
    }
}

pub(super) fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(&needle.to_lowercase())
}
