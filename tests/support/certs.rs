//! PKCS#12 license files made by the tests themselves.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};

/// A self-signed license certificate valid from `from` to `to` days from now, in PKCS#12.
pub fn license_p12(password: &str, from: i64, to: i64) -> Vec<u8> {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "Kaa test license").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    let now = kaa::clock::now_ms() / 1000;
    b.set_not_before(&Asn1Time::from_unix(now + from * 86_400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + to * 86_400).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    Pkcs12::builder()
        .name("license")
        .pkey(&key)
        .cert(&b.build())
        .build2(password)
        .unwrap()
        .to_der()
        .unwrap()
}
