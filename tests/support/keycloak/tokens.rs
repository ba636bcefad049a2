//! Signing: tokens as Keycloak 26 shapes them, key sets, form bodies.

use super::*;

pub(super) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(super) fn sign(state: &mut State, realm: &str, m: &Mint) -> String {
    state.ensure_key(realm);
    let jti = state.uuid();
    let r = &state.realms[realm];
    let (kid, key) = r.keys.last().unwrap();
    let custom = KcClaims {
        scope: m.scope.clone(),
        typ: m.typ.clone(),
        preferred_username: m.username.clone(),
        azp: m.azp.clone(),
        realm_access: (!m.roles.is_empty()).then(|| json!({ "roles": m.roles })),
        resource_access: (!m.client_roles.is_empty()).then(|| {
            Value::Object(
                m.client_roles
                    .iter()
                    .map(|(c, roles)| (c.clone(), json!({ "roles": roles })))
                    .collect(),
            )
        }),
    };
    let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(300))
        .with_issuer(
            m.iss
                .clone()
                .unwrap_or_else(|| format!("{}/realms/{realm}", state.base)),
        )
        .with_subject(m.sub.clone())
        .with_jwt_id(jti);
    // One audience is a string, as Keycloak writes it; more are a list.
    match m.aud.as_deref() {
        None | Some([]) => {}
        Some([one]) => claims = claims.with_audience(one.clone()),
        Some(many) => {
            claims = claims.with_audiences(many.iter().cloned().collect::<HashSet<_>>());
        }
    }
    claims.expires_at = if m.no_exp {
        None
    } else {
        Some(Duration::from_secs((now() as i64 + m.exp_in).max(0) as u64))
    };
    claims.issued_at = Some(Duration::from_secs(now()));
    claims.invalid_before = m
        .nbf_in
        .map(|n| Duration::from_secs((now() as i64 + n).max(0) as u64));
    key.clone()
        .with_key_id(m.kid.as_deref().unwrap_or(kid))
        .sign(claims)
        .unwrap()
}

pub(super) fn jwks(r: &Realm) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = r
        .keys
        .iter()
        .map(|(kid, k)| {
            let c = k.public_key().to_components();
            json!({"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig",
                   "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)})
        })
        .collect();
    json!({ "keys": keys })
}

pub(super) fn form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    Request::new("POST", &format!("/?{text}"))
        .query_pairs()
        .into_iter()
        .collect()
}
