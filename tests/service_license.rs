//! The license at start: a wrong password, a corrupt, missing or expired file is one clear line
//! and exit 1 when the license is required, a warning when it is not; a valid one shows on
//! `/health` and as metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::proc::{self, get};

const IAM: &str = env!("CARGO_BIN_EXE_iam");

#[test]
fn bad_licenses_stop_a_required_start_and_warn_otherwise() {
    let dir = support::TempDir::new();
    let good = dir.0.join("good.p12");
    std::fs::write(&good, support::certs::license_p12("s3cret", -1, 30)).unwrap();
    let expired = dir.0.join("expired.p12");
    std::fs::write(&expired, support::certs::license_p12("s3cret", -30, -2)).unwrap();
    let corrupt = dir.0.join("corrupt.p12");
    std::fs::write(&corrupt, b"this is no PKCS#12 file").unwrap();
    let missing = dir.0.join("missing.p12");
    let cases = [
        (&good, "wrong", "wrong license password"),
        (&corrupt, "s3cret", "not a readable PKCS#12 file"),
        (&missing, "s3cret", "no license file"),
        (&expired, "s3cret", "expired"),
    ];
    for (path, password, reason) in cases {
        let p = path.to_str().unwrap();
        let env = [
            ("SERVER_PORT", "0"),
            ("KAA_LICENSE_CERT_PATH", p),
            ("KAA_LICENSE_CERT_PASSWORD", password),
            ("KAA_LICENSE_REQUIRED", "true"),
        ];
        let (status, _, err) = proc::run(IAM, &dir.0, &env, &[]);
        assert_eq!(status.code(), Some(1), "{reason}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(
            errors[0].contains("license:") && errors[0].contains(reason),
            "{err}"
        );
        assert!(
            !err.contains(password) || password == "wrong",
            "the password never shows: {err}"
        );

        let env = [
            ("SERVER_PORT", "0"),
            ("KAA_LICENSE_CERT_PATH", p),
            ("KAA_LICENSE_CERT_PASSWORD", password),
            ("KAA_LICENSE_REQUIRED", "false"),
        ];
        let svc = proc::start(IAM, &dir.0, &env).unwrap();
        let log = svc.log_text();
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(reason)),
            "{log}"
        );
        assert_eq!(
            get(svc.addr, "/health").json()["license"]["status"],
            if reason == "expired" {
                "expired"
            } else if reason == "no license file" {
                "missing"
            } else {
                "invalid"
            }
        );
        assert!(svc.terminate(Duration::from_secs(10)).success());
    }

    let env = [
        ("SERVER_PORT", "0"),
        ("KAA_LICENSE_CERT_PATH", good.to_str().unwrap()),
        ("KAA_LICENSE_CERT_PASSWORD", "s3cret"),
        ("KAA_LICENSE_REQUIRED", "true"),
    ];
    let svc = proc::start(IAM, &dir.0, &env).unwrap();
    let h = get(svc.addr, "/health").json();
    assert_eq!(h["license"]["status"], "valid");
    assert!(h["license"]["daysToExpiry"].as_i64().unwrap() >= 29);
    let metrics = String::from_utf8(get(svc.addr, "/metrics").body).unwrap();
    assert!(
        metrics.contains(r#"service_gauge{name="license_valid",service="iam"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"name="license_days_to_expiry""#));
    assert!(svc.terminate(Duration::from_secs(10)).success());
}
