//! Fuzz target: everything IAM reads from a bearer token before any signature is checked (the
//! Authorization header, the JOSE header, the unverified issuer, the key id), and the issuer's
//! JWKS document. Input: `<header JSON>\n<claims JSON>`, turned into
//! `b64(header).b64(claims).b64(sig)`; the raw input is also tried as a token, as an
//! Authorization header and as a JWKS body. Nothing may panic and nothing may be accepted (no
//! key is known: the issuer's key set lives on a closed port).

#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kaa::clients::oidc::{Jwks, parse_jwks};
use kaa::http::auth::{Authenticator, Issuer};
use kaa::http::message::Request;
use libfuzzer_sys::fuzz_target;

fn auth() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        Authenticator::new(
            vec![Issuer {
                issuer: "http://kc.test/realms/kaa".into(),
                tenant: "kaa".into(),
                // Port 9 (discard) on loopback refuses at once; then the interval holds.
                jwks: Jwks::new(
                    "http://127.0.0.1:9/certs",
                    Duration::from_millis(200),
                    Duration::from_secs(3600),
                ),
            }],
            HashSet::from(["iam".to_string()]),
            Duration::from_secs(30),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (header, claims) = text.split_once('\n').unwrap_or((&text, "{}"));
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(b"signature")
    );
    assert!(auth().verify(&token).is_err());
    assert!(auth().verify(&text).is_err());
    let req = Request::new("GET", "/").with_header("authorization", &text);
    if let Ok(t) = Authenticator::bearer(&req) {
        assert!(auth().verify(t).is_err());
    }
    let _ = parse_jwks(&text);
});
