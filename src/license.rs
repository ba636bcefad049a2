//! The Kaa platform license: a PKCS#12 file (`KAA_LICENSE_CERT_PATH`) opened with its password
//! (`KAA_LICENSE_CERT_PASSWORD`), its certificate checked for its validity window. Checked at
//! start and daily; the state is shown on `/health` and as a metric.

use std::path::Path;
use std::sync::Once;

use openssl::asn1::Asn1Time;
use openssl::pkcs12::Pkcs12;
use serde::Serialize;

/// What the last check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LicenseState {
    /// `valid`, `missing`, `invalid`, `expired` or `notYetValid`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Whole days until the certificate expires (negative once expired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_to_expiry: Option<i64>,
    /// Why the license is not valid (never contains the password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl LicenseState {
    pub fn is_valid(&self) -> bool {
        self.status == "valid"
    }

    fn bad(status: &'static str, problem: String) -> LicenseState {
        LicenseState {
            status,
            subject: None,
            not_after: None,
            days_to_expiry: None,
            problem: Some(problem),
        }
    }
}

static LEGACY: Once = Once::new();

/// Files exported with `-legacy` (RC2-40) need OpenSSL 3's legacy provider.
fn load_legacy_provider() {
    LEGACY.call_once(|| {
        if let Ok(p) = openssl::provider::Provider::try_load(None, "legacy", true) {
            // Keep the provider loaded for the life of the process.
            std::mem::forget(p);
        }
    });
}

/// Open and check the license file.
pub fn check(path: &Path, password: &str) -> LicenseState {
    check_with_issuer(path, password, None)
}

/// Open and check the license file; with `trusted_issuer` (a PEM certificate) the license
/// certificate must be signed by that issuer's key.
pub fn check_with_issuer(
    path: &Path,
    password: &str,
    trusted_issuer: Option<&Path>,
) -> LicenseState {
    let der = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return LicenseState::bad("missing", format!("no license file at {}", path.display()));
        }
        Err(e) => {
            return LicenseState::bad(
                "invalid",
                format!(
                    "cannot read {}: {}",
                    path.display(),
                    e.to_string().to_lowercase()
                ),
            );
        }
    };
    load_legacy_provider();
    let parsed = Pkcs12::from_der(&der).and_then(|p| p.parse2(password));
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            let msg = e.to_string();
            let problem = if msg.contains("mac verify failure") {
                "wrong license password (mac verify failure)".to_string()
            } else {
                format!(
                    "not a readable PKCS#12 file: {}",
                    msg.lines().next().unwrap_or("")
                )
            };
            return LicenseState::bad("invalid", problem);
        }
    };
    let Some(cert) = parsed.cert else {
        return LicenseState::bad("invalid", "the PKCS#12 file holds no certificate".into());
    };
    let subject = cert
        .subject_name()
        .entries()
        .filter_map(|e| e.data().to_string().ok())
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(issuer_path) = trusted_issuer {
        let trusted = std::fs::read(issuer_path)
            .map_err(|e| format!("cannot read trusted issuer {}: {e}", issuer_path.display()))
            .and_then(|pem| {
                openssl::x509::X509::from_pem(&pem).map_err(|e| {
                    format!(
                        "trusted issuer {} is not a PEM certificate: {e}",
                        issuer_path.display()
                    )
                })
            });
        let signed = trusted.and_then(|ca| {
            let key = ca.public_key().map_err(|e| e.to_string())?;
            Ok(cert.verify(&key).unwrap_or(false)
                && cert.issuer_name().to_der().ok() == ca.subject_name().to_der().ok())
        });
        match signed {
            Ok(true) => {}
            Ok(false) => {
                return LicenseState::bad(
                    "invalid",
                    "the license certificate is not signed by the trusted issuer".into(),
                );
            }
            Err(e) => return LicenseState::bad("invalid", e),
        }
    }
    let not_after = cert.not_after().to_string();
    let now = match Asn1Time::days_from_now(0) {
        Ok(t) => t,
        Err(e) => return LicenseState::bad("invalid", format!("clock: {e}")),
    };
    let days_to_expiry = now.diff(cert.not_after()).ok().map(|d| i64::from(d.days));
    let status = if cert.not_before() > now {
        "notYetValid"
    } else if cert.not_after() < now {
        "expired"
    } else {
        "valid"
    };
    LicenseState {
        status,
        subject: Some(subject),
        not_after: Some(not_after.clone()),
        days_to_expiry,
        problem: match status {
            "expired" => Some(format!("the license expired on {not_after}")),
            "notYetValid" => Some(format!("the license is valid from {}", cert.not_before())),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509, X509NameBuilder};

    /// A PKCS#12 with a self-signed certificate valid from `from` to `to` days from now.
    pub fn make_p12(password: &str, from: i64, to: i64) -> Vec<u8> {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "Kaa test license").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        let day = |d: i64| Asn1Time::from_unix(crate::clock::now_ms() / 1000 + d * 86_400).unwrap();
        b.set_not_before(&day(from)).unwrap();
        b.set_not_after(&day(to)).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        Pkcs12::builder()
            .name("license")
            .pkey(&key)
            .cert(&cert)
            .build2(password)
            .unwrap()
            .to_der()
            .unwrap()
    }

    #[test]
    fn states_of_a_license_file() {
        let dir = std::env::temp_dir().join(format!("kaa-license-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("license.p12");
        assert_eq!(check(&p, "x").status, "missing");

        std::fs::write(&p, make_p12("pw", -1, 30)).unwrap();
        let s = check(&p, "pw");
        assert!(s.is_valid(), "{s:?}");
        assert_eq!(s.subject.as_deref(), Some("Kaa test license"));
        let s = check(&p, "wrong");
        assert_eq!(s.status, "invalid");
        assert!(s.problem.unwrap().contains("wrong license password"));

        std::fs::write(&p, make_p12("pw", -30, -1)).unwrap();
        assert_eq!(check(&p, "pw").status, "expired");
        std::fs::write(&p, make_p12("pw", 2, 30)).unwrap();
        assert_eq!(check(&p, "pw").status, "notYetValid");
        std::fs::write(&p, b"not a p12").unwrap();
        assert_eq!(check(&p, "pw").status, "invalid");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_trusted_issuer_must_have_signed_the_license() {
        let dir = std::env::temp_dir().join(format!("kaa-license-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("license.p12");
        let der = make_p12("pw", -1, 400);
        std::fs::write(&p, &der).unwrap();
        let s = check(&p, "pw");
        assert!((398..=400).contains(&s.days_to_expiry.unwrap()), "{s:?}");
        // The license is self-signed: its own certificate is the issuer that signed it.
        let own = Pkcs12::from_der(&der)
            .unwrap()
            .parse2("pw")
            .unwrap()
            .cert
            .unwrap();
        let own_pem = dir.join("own.pem");
        std::fs::write(&own_pem, own.to_pem().unwrap()).unwrap();
        assert!(check_with_issuer(&p, "pw", Some(&own_pem)).is_valid());
        let other = Pkcs12::from_der(&make_p12("pw", -1, 400))
            .unwrap()
            .parse2("pw")
            .unwrap()
            .cert
            .unwrap();
        let other_pem = dir.join("other.pem");
        std::fs::write(&other_pem, other.to_pem().unwrap()).unwrap();
        let s = check_with_issuer(&p, "pw", Some(&other_pem));
        assert_eq!(s.status, "invalid");
        assert!(s.problem.unwrap().contains("trusted issuer"));
        let s = check_with_issuer(&p, "pw", Some(&dir.join("missing.pem")));
        assert_eq!(s.status, "invalid");
        std::fs::remove_dir_all(&dir).ok();
    }
}
