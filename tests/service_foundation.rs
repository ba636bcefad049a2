//! The foundation as a user meets it: the `iam` and `tenant-manager` binaries started with
//! environment variables and config files, probed over HTTP, stopped with SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::ToSocketAddrs;
use std::time::Duration;

use support::proc::{self, get, request};

const IAM: &str = env!("CARGO_BIN_EXE_iam");
const TM: &str = env!("CARGO_BIN_EXE_tenant-manager");

#[test]
fn embedded_default_starts_answers_and_stops_cleanly() {
    let dir = support::TempDir::new();
    let svc = proc::start(IAM, &dir.0, &[("SERVER_PORT", "0")]).unwrap();
    let r = get(svc.addr, "/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "UP");
    assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
    assert_eq!(get(svc.addr, "/health/ready").status, 200);
    assert!(
        dir.0.join("data/iam.db").exists(),
        "SQLite file created on first start"
    );

    let r = get(svc.addr, "/no/such/route");
    assert_eq!(r.status, 404);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("/no/such/route")
    );

    let metrics = String::from_utf8(get(svc.addr, "/metrics").body).unwrap();
    assert!(metrics.contains(r#"route="/health""#), "{metrics}");
    assert!(metrics.contains("http_request_duration_seconds_bucket"));
    assert!(metrics.contains(r#"name="http_open_connections""#));

    let log = svc.log_text();
    assert!(log.contains("SQLite at ./data/iam.db"), "{log}");
    // Access lines are written in batches a few milliseconds apart.
    support::wait_until("the access line of /health", || {
        svc.log_text().contains("path=/health status=200")
    });
    let status = svc.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}");
}

#[test]
fn tenant_manager_starts_on_its_own_database() {
    let dir = support::TempDir::new();
    let svc = proc::start(TM, &dir.0, &[("SERVER_PORT", "0")]).unwrap();
    let r = get(svc.addr, "/health");
    assert_eq!(r.json()["service"], "tenant-manager");
    assert!(dir.0.join("data/tenant-manager.db").exists());
    assert!(svc.terminate(Duration::from_secs(10)).success());
}

#[test]
fn a_bad_value_stops_the_start_with_one_line_naming_the_key() {
    let dir = support::TempDir::new();
    let cfg = dir.0.join("service-config.yml");
    std::fs::write(&cfg, "server:\n  workers: lots\n").unwrap();
    let (status, _, err) = proc::run(
        IAM,
        &dir.0,
        &[("APP_CONFIG_PATH", cfg.to_str().unwrap())],
        &[],
    );
    assert_eq!(status.code(), Some(2));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("`server.workers`") && err.contains("`lots`"),
        "{err}"
    );

    let (status, _, err) = proc::run(IAM, &dir.0, &[("KAA_POSTGRESQL_SSL_MODE", "maybe")], &[]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("KAA_POSTGRESQL_SSL_MODE"), "{err}");

    let (status, _, err) = proc::run(
        IAM,
        &dir.0,
        &[("APP_CONFIG_PATH", "/nonexistent/cfg.yml")],
        &[],
    );
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("/nonexistent/cfg.yml"), "{err}");
}

#[test]
fn check_config_accepts_every_shipped_example_and_names_the_first_problem() {
    let dir = support::TempDir::new();
    for (bin, d) in [(IAM, "config/iam"), (TM, "config/tenant-manager")] {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(d);
        for entry in std::fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path();
            let (status, out, err) =
                proc::run(bin, &dir.0, &[], &["check-config", path.to_str().unwrap()]);
            assert!(status.success(), "{}: {out}{err}", path.display());
            assert!(out.contains("config ok"), "{out}");
            assert!(!err.contains("unknown key"), "{}: {err}", path.display());
        }
    }
    let bad = dir.0.join("bad.yml");
    std::fs::write(&bad, "postgresql:\n  host: db\n  port: 99999\n").unwrap();
    let (status, _, err) = proc::run(IAM, &dir.0, &[], &["check-config", bad.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("`postgresql.port`"), "{err}");
}

#[test]
fn check_config_of_each_binary_checks_its_own_section() {
    let dir = support::TempDir::new();
    let check = |bin: &str, yaml: &str, env: &[(&str, &str)]| {
        let path = dir.0.join("section.yml");
        std::fs::write(&path, yaml).unwrap();
        proc::run(bin, &dir.0, env, &["check-config", path.to_str().unwrap()])
    };
    // A bad value or an unknown key in the Tenant Manager's section is refused, naming the key.
    for (yaml, key) in [
        (
            "tenant-manager:\n  tasks:\n    workers: 0\n",
            "`tenant-manager.tasks.workers`",
        ),
        (
            "tenant-manager:\n  keycloak:\n    timeout-ms: soon\n",
            "`tenant-manager.keycloak.timeout-ms`",
        ),
        (
            "tenant-manager:\n  auth:\n    decision-cache-seconds: x\n",
            "`tenant-manager.auth.decision-cache-seconds`",
        ),
        (
            "tenant-manager:\n  taks:\n    workers: 2\n",
            "`tenant-manager.taks.workers`",
        ),
        (
            "tenant-manager:\n  secret-key: not-a-key\n",
            "`tenant-manager.secret-key`",
        ),
    ] {
        let (status, out, err) = check(TM, yaml, &[]);
        assert_eq!(status.code(), Some(2), "{yaml}: {out}{err}");
        assert!(err.contains(key), "{yaml}: {err}");
        assert!(!out.contains("config ok"), "{out}");
    }
    // ... and so is a variable that sets one of its keys, named with the key.
    let (status, _, err) = check(TM, "", &[("KAA_KEYCLOAK_URL", "kc.local")]);
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains("`tenant-manager.keycloak.url`") && err.contains("KAA_KEYCLOAK_URL"),
        "{err}"
    );
    // IAM checks its own section, and leaves the Tenant Manager's to it.
    let (status, _, err) = check(IAM, "iam:\n  audit:\n    retention-days: -1\n", &[]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("`iam.audit.retention-days`"), "{err}");
    let (status, out, err) = check(IAM, "tenant-manager:\n  tasks:\n    workers: 0\n", &[]);
    assert!(status.success(), "{out}{err}");
    assert!(
        err.contains("unknown key `tenant-manager.tasks.workers`"),
        "{err}"
    );
    let (status, out, err) = check(TM, "tenant-manager:\n  tasks:\n    workers: 3\n", &[]);
    assert!(status.success() && out.contains("config ok"), "{out}{err}");
}

#[test]
fn unknown_kaa_variables_are_warned_about_in_the_log() {
    let dir = support::TempDir::new();
    let svc = proc::start(
        IAM,
        &dir.0,
        &[("SERVER_PORT", "0"), ("KAA_POSTGRES_HOST", "typo")],
    )
    .unwrap();
    assert!(
        svc.log_text()
            .contains("unknown environment variable KAA_POSTGRES_HOST")
    );
    assert!(svc.terminate(Duration::from_secs(10)).success());
}

#[test]
fn postgres_selected_by_env_and_a_bad_database_is_one_clear_line() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_selected_by_env_and_a_bad_database_is_one_clear_line");
    };
    let dir = support::TempDir::new();
    let port = pg.settings.port.to_string();
    let env = |db: &'static str| {
        vec![
            ("SERVER_PORT", "0".to_string()),
            ("KAA_POSTGRESQL_HOST", pg.settings.host.clone()),
            ("KAA_POSTGRESQL_PORT", port.clone()),
            ("KAA_POSTGRESQL_USERNAME", pg.settings.username.clone()),
            (
                "KAA_POSTGRESQL_PASSWORD",
                pg.settings.password.expose().to_string(),
            ),
            (
                "KAA_POSTGRESQL_DATABASE",
                if db.is_empty() {
                    pg.name.clone()
                } else {
                    db.to_string()
                },
            ),
        ]
    };
    let good = env("");
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let svc = proc::start(IAM, &dir.0, &good).unwrap();
    assert!(
        svc.log_text().contains(&format!("database `{}`", pg.name)),
        "{}",
        svc.log_text()
    );
    assert_eq!(get(svc.addr, "/health/ready").status, 200);
    assert!(
        !dir.0.join("data").exists(),
        "no SQLite file when PostgreSQL is configured"
    );
    assert!(svc.terminate(Duration::from_secs(10)).success());

    let bad = env("kaa_missing_db");
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, err) = proc::run(IAM, &dir.0, &bad, &[]);
    assert_eq!(status.code(), Some(1));
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains(&pg.settings.host) && lines[0].contains("kaa_missing_db"),
        "{err}"
    );
}

#[test]
fn postgres_outage_turns_ready_503_and_recovers_without_restart() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_outage_turns_ready_503_and_recovers_without_restart");
    };
    let upstream = (pg.settings.host.as_str(), pg.settings.port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = support::proxy::Proxy::start(upstream);
    let dir = support::TempDir::new();
    let cfg = dir.0.join("c.yml");
    std::fs::write(&cfg, "postgresql:\n  connect-timeout: 1\n").unwrap();
    let port = proxy.addr.port().to_string();
    let svc = proc::start(
        IAM,
        &dir.0,
        &[
            ("APP_CONFIG_PATH", cfg.to_str().unwrap()),
            ("SERVER_PORT", "0"),
            ("KAA_POSTGRESQL_HOST", "127.0.0.1"),
            ("KAA_POSTGRESQL_PORT", &port),
            ("KAA_POSTGRESQL_USERNAME", &pg.settings.username),
            ("KAA_POSTGRESQL_PASSWORD", pg.settings.password.expose()),
            ("KAA_POSTGRESQL_DATABASE", &pg.name),
        ],
    )
    .unwrap();
    assert_eq!(get(svc.addr, "/health/ready").status, 200);

    proxy.set_down();
    // Readiness reflects the last storage check (every second), answered from memory.
    let mut last = None;
    support::wait_until("readiness noticing the outage", || {
        let r = request(
            svc.addr,
            "GET",
            "/health/ready",
            &[],
            b"",
            support::LIVENESS,
        )
        .unwrap();
        let down = r.status != 200;
        last = Some(r);
        down
    });
    let r = last.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.json()["message"].as_str().unwrap().contains("storage"));
    assert_eq!(get(svc.addr, "/health").status, 200, "liveness stays up");

    proxy.set_up();
    support::wait_until("ready again after the outage", || {
        get(svc.addr, "/health/ready").status == 200
    });
    assert!(svc.terminate(Duration::from_secs(10)).success());
}
