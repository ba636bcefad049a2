//! The issuer side of token checks: the JSON Web Key Set of a Keycloak realm
//! (`{issuer}/protocol/openid-connect/certs`), fetched with ureq, cached, and refetched when it
//! is older than its maximum age or a token names a key we do not know (at most once per
//! interval): one fetch at a time, on a thread of its own, never holding up a request whose
//! key is known.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Clone, Error)]
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

/// Most requests with an unknown key that wait at once for a key-set fetch; others are
/// answered at once. Only a key rotated a moment ago makes a genuine token's key unknown, and
/// the fetch that finds it takes milliseconds: a waiter or two covers it, while a burst of forged
/// tokens never holds more than this many handler slots.
const MAX_WAITERS: usize = 2;

/// How long a request with an unknown key waits for the fetch that may bring it.
const UNKNOWN_KEY_WAIT: Duration = Duration::from_secs(1);

/// The keys of the last fetch that succeeded.
struct KeySet {
    keys: HashMap<String, VerifyKey>,
    fetched: Option<Instant>,
}

/// The one fetch in flight, and who waits for it.
#[derive(Default)]
struct Flight {
    running: bool,
    /// When the last fetch started: fetches for unknown keys are `min_interval` apart.
    started: Option<Instant>,
    /// Fetches finished so far: a waiter wakes when this moves.
    finished: u64,
    /// Why the last fetch failed (none: it succeeded).
    failed: Option<JwksError>,
    waiting: usize,
}

/// What the fetching thread and the requests share.
struct Shared {
    set: RwLock<KeySet>,
    flight: Mutex<Flight>,
    done: Condvar,
}

/// The cached key set of one issuer. Requests read it without waiting; one fetch at a time
/// runs on a thread of its own, started by a request that finds the set older than `max_age`
/// (that request goes on with the cached set) or that names a key the set lacks (that request
/// waits for the fetch, at most [`UNKNOWN_KEY_WAIT`], and only [`MAX_WAITERS`] at once).
pub struct Jwks {
    url: String,
    agent: ureq::Agent,
    shared: Arc<Shared>,
    min_interval: Duration,
    max_age: Duration,
}

/// What a key lookup found.
pub enum KeyLookup {
    Found(Box<VerifyKey>),
    /// The issuer does not publish this kid (after a refresh, or too soon to refresh, or while
    /// the refresh takes longer than a request may wait).
    Unknown,
}

/// The key set is refetched when it is older than this, by default (`security.jwks-max-age`).
pub const DEFAULT_MAX_AGE: Duration = crate::config::DEFAULT_JWKS_MAX_AGE;

impl Jwks {
    /// `certs_url` is the JWKS address; unknown kids refetch at most once per `min_interval`;
    /// the set is refetched after [`DEFAULT_MAX_AGE`] (see [`Jwks::with_max_age`]).
    pub fn new(certs_url: &str, timeout: Duration, min_interval: Duration) -> Jwks {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Jwks {
            url: certs_url.to_string(),
            agent,
            shared: Arc::new(Shared {
                set: RwLock::new(KeySet {
                    keys: HashMap::new(),
                    fetched: None,
                }),
                flight: Mutex::new(Flight::default()),
                done: Condvar::new(),
            }),
            min_interval,
            max_age: DEFAULT_MAX_AGE,
        }
    }

    /// Refetch the key set once it is older than `max_age`, so that a key the issuer withdrew
    /// is refused within about that time (`security.jwks-max-age`).
    pub fn with_max_age(mut self, max_age: Duration) -> Jwks {
        self.max_age = max_age;
        self
    }

    /// The JWKS address of a Keycloak realm issuer URL.
    pub fn certs_url(issuer: &str) -> String {
        format!(
            "{}/protocol/openid-connect/certs",
            issuer.trim_end_matches('/')
        )
    }

    fn fetch(agent: &ureq::Agent, url: &str) -> Result<HashMap<String, VerifyKey>, JwksError> {
        let fetch_err = |m: String| JwksError::Fetch {
            url: url.to_string(),
            message: m,
        };
        let mut resp = agent
            .get(url)
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
            url: url.to_string(),
            message: m,
        })
    }

    fn flight(&self) -> std::sync::MutexGuard<'_, Flight> {
        self.shared.flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start the fetch on a thread of its own (the caller holds the flight). On success the
    /// set is replaced whole: a key the issuer no longer publishes is gone; on failure the
    /// cached keys stay.
    fn start_fetch(&self, flight: &mut Flight) {
        flight.running = true;
        flight.started = Some(Instant::now());
        let (agent, url, shared) = (
            self.agent.clone(),
            self.url.clone(),
            Arc::clone(&self.shared),
        );
        let spawned = std::thread::Builder::new()
            .name("jwks-fetch".into())
            .spawn(move || {
                let result = Jwks::fetch(&agent, &url);
                let failed = match result {
                    Ok(keys) => {
                        let mut set = shared.set.write().unwrap_or_else(|p| p.into_inner());
                        *set = KeySet {
                            keys,
                            fetched: Some(Instant::now()),
                        };
                        None
                    }
                    Err(e) => {
                        log::warn!("auth: {e} (the cached keys stay in use)");
                        Some(e)
                    }
                };
                let mut f = shared.flight.lock().unwrap_or_else(|p| p.into_inner());
                f.running = false;
                f.failed = failed;
                f.finished += 1;
                shared.done.notify_all();
            });
        if let Err(e) = spawned {
            flight.running = false;
            flight.failed = Some(JwksError::Fetch {
                url: self.url.clone(),
                message: format!("cannot start the fetch: {e}"),
            });
        }
    }

    fn cached(&self, kid: &str) -> (Option<VerifyKey>, bool, bool) {
        let set = self.shared.set.read().unwrap_or_else(|p| p.into_inner());
        let fresh = set.fetched.is_some_and(|t| t.elapsed() < self.max_age);
        (set.keys.get(kid).cloned(), fresh, set.fetched.is_some())
    }

    /// The key of `kid`. A known key answers at once (and a set older than `max_age` is
    /// refetched meanwhile). An unknown one waits for a fetch of the set, started now unless the
    /// last one started less than `min_interval` ago; see [`Jwks`] for the bounds. An error
    /// only when no key set was ever fetched and the issuer cannot be reached.
    pub fn key(&self, kid: &str) -> Result<KeyLookup, JwksError> {
        let (key, fresh, _) = self.cached(kid);
        if let Some(k) = key {
            if !fresh {
                let mut f = self.flight();
                let due = !f.running
                    && f.started
                        .is_none_or(|t| t.elapsed() >= self.min_interval.min(self.max_age));
                if due && !self.cached(kid).1 {
                    self.start_fetch(&mut f);
                }
            }
            return Ok(KeyLookup::Found(Box::new(k)));
        }
        let mut f = self.flight();
        // A fetch may have finished since the look-up above.
        let (key, _, have_set) = self.cached(kid);
        if let Some(k) = key {
            return Ok(KeyLookup::Found(Box::new(k)));
        }
        let no_answer = || JwksError::Fetch {
            url: self.url.clone(),
            message: format!("no answer within {} ms", UNKNOWN_KEY_WAIT.as_millis()),
        };
        if !f.running {
            if f.started.is_some_and(|t| t.elapsed() < self.min_interval) {
                // Fetched a moment ago: the issuer does not publish this key.
                return match (have_set, &f.failed) {
                    (true, _) => Ok(KeyLookup::Unknown),
                    (false, Some(e)) => Err(e.clone()),
                    (false, None) => Err(no_answer()),
                };
            }
            self.start_fetch(&mut f);
        }
        if f.waiting >= MAX_WAITERS {
            // Enough requests wait for this fetch already: this one does not hold a slot.
            return if have_set {
                Ok(KeyLookup::Unknown)
            } else {
                Err(no_answer())
            };
        }
        f.waiting += 1;
        let round = f.finished;
        let deadline = Instant::now() + UNKNOWN_KEY_WAIT;
        while f.finished == round && f.running {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            f = self
                .shared
                .done
                .wait_timeout(f, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        f.waiting -= 1;
        let (key, _, have_set) = self.cached(kid);
        if let Some(k) = key {
            return Ok(KeyLookup::Found(Box::new(k)));
        }
        if f.finished == round && f.running {
            // The issuer is slow: refused now, the fetch goes on for the requests after.
            return if have_set {
                Ok(KeyLookup::Unknown)
            } else {
                Err(no_answer())
            };
        }
        // The fetch ended: it did not bring the key, or it failed (then nobody can tell).
        match &f.failed {
            Some(e) => Err(e.clone()),
            None => Ok(KeyLookup::Unknown),
        }
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
