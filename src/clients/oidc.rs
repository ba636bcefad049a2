//! The issuer side of token checks: the JSON Web Key Set of a Keycloak realm
//! (`{issuer}/protocol/openid-connect/certs`), fetched with ureq, cached, and refreshed when a
//! token names a key we do not know, at most once per interval.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum JwksError {
    #[error("jwks: cannot fetch `{url}`: {message}")]
    Fetch { url: String, message: String },
    #[error("jwks: `{url}` is not a key set: {message}")]
    Format { url: String, message: String },
}

/// A verification key of one of the algorithms we accept.
#[derive(Clone)]
pub enum VerifyKey {
    Rs256(RS256PublicKey),
    Rs384(RS384PublicKey),
    Rs512(RS512PublicKey),
    Ps256(PS256PublicKey),
    Es256(ES256PublicKey),
}

impl VerifyKey {
    pub fn algorithm(&self) -> &'static str {
        match self {
            VerifyKey::Rs256(_) => "RS256",
            VerifyKey::Rs384(_) => "RS384",
            VerifyKey::Rs512(_) => "RS512",
            VerifyKey::Ps256(_) => "PS256",
            VerifyKey::Es256(_) => "ES256",
        }
    }

    /// Verify signature and standard claims; the key's algorithm must be the token's.
    pub fn verify<C: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        token: &str,
        options: VerificationOptions,
    ) -> Result<JWTClaims<C>, jwt_simple::Error> {
        match self {
            VerifyKey::Rs256(k) => k.verify_token::<C>(token, Some(options)),
            VerifyKey::Rs384(k) => k.verify_token::<C>(token, Some(options)),
            VerifyKey::Rs512(k) => k.verify_token::<C>(token, Some(options)),
            VerifyKey::Ps256(k) => k.verify_token::<C>(token, Some(options)),
            VerifyKey::Es256(k) => k.verify_token::<C>(token, Some(options)),
        }
    }
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

fn b64(s: &Option<String>) -> Option<Vec<u8>> {
    s.as_deref()
        .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
}

/// Keys by kid from a JWKS document; keys we cannot use (encryption keys, other algorithms,
/// malformed ones) are skipped.
pub fn parse_jwks(body: &str) -> Result<HashMap<String, VerifyKey>, String> {
    let set: JwkSet = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for k in set.keys {
        if k.usage.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let Some(kid) = k.kid.clone() else { continue };
        let key = match (k.kty.as_str(), k.alg.as_deref()) {
            ("RSA", alg) => {
                let (Some(n), Some(e)) = (b64(&k.n), b64(&k.e)) else {
                    continue;
                };
                match alg.unwrap_or("RS256") {
                    "RS256" => RS256PublicKey::from_components(&n, &e).map(VerifyKey::Rs256),
                    "RS384" => RS384PublicKey::from_components(&n, &e).map(VerifyKey::Rs384),
                    "RS512" => RS512PublicKey::from_components(&n, &e).map(VerifyKey::Rs512),
                    "PS256" => PS256PublicKey::from_components(&n, &e).map(VerifyKey::Ps256),
                    _ => continue,
                }
            }
            ("EC", None | Some("ES256")) if k.crv.as_deref() == Some("P-256") => {
                let (Some(x), Some(y)) = (b64(&k.x), b64(&k.y)) else {
                    continue;
                };
                let mut point = vec![0x04];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                ES256PublicKey::from_bytes(&point).map(VerifyKey::Es256)
            }
            _ => continue,
        };
        if let Ok(key) = key {
            out.insert(kid, key);
        }
    }
    Ok(out)
}

/// The cached key set of one issuer.
pub struct Jwks {
    url: String,
    agent: ureq::Agent,
    keys: RwLock<HashMap<String, VerifyKey>>,
    last_fetch: Mutex<Option<Instant>>,
    min_interval: Duration,
}

/// What a key lookup found.
pub enum KeyLookup {
    Found(Box<VerifyKey>),
    /// The issuer does not publish this kid (after a refresh, or too soon to refresh).
    Unknown,
}

impl Jwks {
    /// `certs_url` is the JWKS address; unknown kids refetch at most once per `min_interval`.
    pub fn new(certs_url: &str, timeout: Duration, min_interval: Duration) -> Jwks {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Jwks {
            url: certs_url.to_string(),
            agent,
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
            min_interval,
        }
    }

    /// The JWKS address of a Keycloak realm issuer URL.
    pub fn certs_url(issuer: &str) -> String {
        format!(
            "{}/protocol/openid-connect/certs",
            issuer.trim_end_matches('/')
        )
    }

    fn fetch(&self) -> Result<HashMap<String, VerifyKey>, JwksError> {
        let fetch_err = |m: String| JwksError::Fetch {
            url: self.url.clone(),
            message: m,
        };
        let mut resp = self
            .agent
            .get(&self.url)
            .call()
            .map_err(|e| fetch_err(e.to_string()))?;
        if resp.status() != 200 {
            return Err(fetch_err(format!("status {}", resp.status())));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| fetch_err(e.to_string()))?;
        parse_jwks(&body).map_err(|m| JwksError::Format {
            url: self.url.clone(),
            message: m,
        })
    }

    /// The key of `kid`, refetching the set when it is unknown and the last fetch is older than
    /// the interval. Fetch failures are errors only when nothing usable is cached.
    pub fn key(&self, kid: &str) -> Result<KeyLookup, JwksError> {
        if let Some(k) = self.keys.read().ok().and_then(|m| m.get(kid).cloned()) {
            return Ok(KeyLookup::Found(Box::new(k)));
        }
        let mut last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
        // Another thread may have refreshed while we waited for the lock.
        if let Some(k) = self.keys.read().ok().and_then(|m| m.get(kid).cloned()) {
            return Ok(KeyLookup::Found(Box::new(k)));
        }
        if last.is_some_and(|t| t.elapsed() < self.min_interval) {
            return Ok(KeyLookup::Unknown);
        }
        *last = Some(Instant::now());
        let fresh = self.fetch()?;
        let found = fresh.get(kid).cloned();
        if let Ok(mut keys) = self.keys.write() {
            *keys = fresh;
        }
        Ok(found.map_or(KeyLookup::Unknown, |k| KeyLookup::Found(Box::new(k))))
    }
}

/// The issuer a Keycloak realm announces in its discovery document
/// (`{realm_url}/.well-known/openid-configuration`): what its tokens carry as `iss`, which
/// depends on the server's hostname settings rather than on the address we reach it at.
pub fn announced_issuer(realm_url: &str, timeout: Duration) -> Result<String, String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent();
    let url = format!(
        "{}/.well-known/openid-configuration",
        realm_url.trim_end_matches('/')
    );
    let mut resp = agent.get(&url).call().map_err(|e| format!("{url}: {e}"))?;
    if resp.status() != 200 {
        return Err(format!("{url}: status {}", resp.status()));
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    let doc: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{url}: not JSON: {e}"))?;
    doc.get("issuer")
        .and_then(serde_json::Value::as_str)
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("{url}: no issuer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_and_ec_keys_are_read_and_others_skipped() {
        let rsa = RS256KeyPair::generate(2048).unwrap();
        let c = rsa.public_key().to_components();
        let ec = ES256KeyPair::generate();
        let point = ec.public_key().public_key().to_bytes_uncompressed();
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig",
             "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)},
            {"kty": "EC", "kid": "e1", "crv": "P-256",
             "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])},
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "bad", "n": "!!", "e": "AQAB"}
        ]});
        let keys = parse_jwks(&body.to_string()).unwrap();
        let mut kids: Vec<&String> = keys.keys().collect();
        kids.sort();
        assert_eq!(kids, ["e1", "r1"]);
        assert_eq!(keys["r1"].algorithm(), "RS256");
        assert_eq!(keys["e1"].algorithm(), "ES256");
        assert!(parse_jwks("{}").is_err());
    }
}
