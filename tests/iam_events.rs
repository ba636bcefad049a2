//! Tenant Lifecycle Events through a real NATS server (`IAM_TEST_NATS_URL`): `unregistered`
//! removes the tenant's data from IAM, bad messages are ignored, the system tenant stays.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use kaa::clients::nats::NatsClient;
use kaa::clients::tle::{LifecycleEvent, LifecycleKind, subject};
use serde_json::json;
use support::proc::request;

fn post(a: std::net::SocketAddr, path: &str, body: serde_json::Value) -> support::proc::Resp {
    request(
        a,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap()
}

fn get(a: std::net::SocketAddr, path: &str) -> serde_json::Value {
    request(a, "GET", path, &[], b"", Duration::from_secs(5))
        .unwrap()
        .json()
}

#[test]
fn unregistered_tenants_are_removed() {
    let Ok(url) = std::env::var("IAM_TEST_NATS_URL") else {
        return support::skip_because(
            "unregistered_tenants_are_removed",
            "set IAM_TEST_NATS_URL to run it",
        );
    };
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(
        &support::sqlite_settings(&dir),
        &format!("nats:\n  urls: {url}\n"),
    );
    let a = svc.addr;
    let tenant = support::unique("gone").replace('_', "-");
    let keep = format!("{tenant}-keep");
    for t in [&tenant, &keep] {
        let r = post(
            a,
            "/api/v1/policies",
            json!({"name": "p", "tenantID": t, "statements": [
            {"effect": "allow", "actions": ["iam:user:read"], "resources": [format!("krn:iam:{t}::user/*")],
             "principals": [format!("krn:iam:{t}::user/u")]}]}),
        );
        assert_eq!(r.status, 201);
        let r = post(
            a,
            "/api/v1/users",
            json!({"username": "u", "tenantID": t, "password": "password-1", "confirmPassword": "password-1"}),
        );
        assert_eq!(r.status, 201);
    }
    // Published from here on, every event reaches IAM: its subscription is in place.
    support::wait_subscribed(a);
    let handled = || support::metric(a, "iam_tenant_events_total").unwrap_or(0);
    let before = handled();
    let nats = NatsClient::connect(&[url], "", "", Duration::from_secs(3)).unwrap();
    // Garbage first: ignored, the listener keeps going.
    nats.publish(
        &subject("tenant-manager", LifecycleKind::Unregistered),
        b"\xff\xff".to_vec(),
    )
    .unwrap();
    let event = |t: &str| LifecycleEvent {
        correlation_id: "c-1".into(),
        timestamp: kaa::clock::now_ms(),
        timeout: 0,
        tenant_id: t.to_string(),
        originator_replica_id: "tm-0".into(),
    };
    nats.publish(
        &subject("tenant-manager", LifecycleKind::Unregistered),
        event(&tenant).encode(),
    )
    .unwrap();
    nats.publish(
        &subject("tenant-manager", LifecycleKind::Unregistered),
        event("kaa").encode(),
    )
    .unwrap();
    let ask = |t: &str| {
        post(
            a,
            "/api/v1/evaluate",
            json!({"principal": format!("krn:iam:{t}::user/u"),
        "action": "iam:user:read", "resources": [format!("krn:iam:{t}::user/v")]}),
        )
        .status
    };
    // The three messages handled, in order: their effects are in place.
    support::wait_until("IAM handled the three messages", || handled() >= before + 3);
    assert_eq!(
        get(a, &format!("/api/v1/policies?tenantID={tenant}"))["count"],
        0,
        "tenant data not removed"
    );
    assert_eq!(
        get(a, &format!("/api/v1/users?tenantID={tenant}"))["count"],
        0
    );
    assert_eq!(ask(&tenant), 403);
    assert_eq!(
        get(a, &format!("/api/v1/users?tenantID={keep}"))["count"],
        1,
        "other tenants stay"
    );
    assert_eq!(ask(&keep), 200);
    assert_eq!(
        get(a, "/api/v1/policies?type=base")["count"],
        2,
        "the system tenant stays"
    );
    // Redelivery is harmless: handled again, the tenant stays empty and nothing else changes.
    nats.publish(
        &subject("tenant-manager", LifecycleKind::Unregistered),
        event(&tenant).encode(),
    )
    .unwrap();
    support::wait_until("IAM handled the redelivered event", || {
        handled() >= before + 4
    });
    for what in ["policies", "users"] {
        assert_eq!(
            get(a, &format!("/api/v1/{what}?tenantID={tenant}"))["count"],
            0,
            "{what} of the removed tenant"
        );
    }
    assert_eq!(ask(&tenant), 403);
    assert_eq!(
        get(a, &format!("/api/v1/users?tenantID={keep}"))["count"],
        1,
        "other tenants stay"
    );
    assert_eq!(
        get(a, &format!("/api/v1/policies?tenantID={keep}"))["count"],
        1
    );
    assert_eq!(ask(&keep), 200);
    assert_eq!(get(a, "/api/v1/policies?type=base")["count"], 2);
}

/// With NATS reachable, `/health/ready` answers 200 only once both subscriptions are in place:
/// whoever waits for readiness may publish at once.
#[test]
fn readiness_includes_the_nats_subscriptions() {
    let Ok(url) = std::env::var("IAM_TEST_NATS_URL") else {
        return support::skip_because(
            "readiness_includes_the_nats_subscriptions",
            "set IAM_TEST_NATS_URL to run it",
        );
    };
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(
        &support::sqlite_settings(&dir),
        &format!("nats:\n  urls: {url}\n"),
    );
    let mut answers = Vec::new();
    support::wait_until("IAM ready", || {
        let r = support::proc::get(svc.addr, "/health/ready");
        answers.push((r.status, String::from_utf8_lossy(&r.body).into_owned()));
        r.status == 200
    });
    // Read after the first 200: the subscriptions were in place when it was answered.
    assert_eq!(
        support::metric(svc.addr, "iam_nats_subscriptions"),
        Some(2),
        "ready before subscribing"
    );
    for (status, body) in &answers[..answers.len() - 1] {
        assert_eq!(*status, 503, "{body}");
        assert!(body.contains("subscribing to NATS"), "{body}");
    }
}

/// With NATS unreachable at start IAM still becomes ready (after the first try of each
/// listener) and serves, without subscriptions.
#[test]
fn unreachable_nats_does_not_keep_iam_from_ready() {
    // A port nothing listens on: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = support::TempDir::new();
    let svc = support::service::start_iam(
        &support::sqlite_settings(&dir),
        &format!("nats:\n  urls: nats://127.0.0.1:{port}\n"),
    );
    support::wait_until("IAM ready without NATS", || {
        support::proc::get(svc.addr, "/health/ready").status == 200
    });
    assert_eq!(support::metric(svc.addr, "iam_nats_subscriptions"), Some(0));
    let r = post(
        svc.addr,
        "/api/v1/policies",
        json!({"name": "p", "tenantID": "t1", "statements": [
            {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:t1::user/*"]}]}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

const TM: &str = env!("CARGO_BIN_EXE_tenant-manager");

/// An `unregistered` event published while IAM is down reaches nobody (plain NATS); at its next
/// start IAM asks the Tenant Manager about every tenant it holds data for and removes the data of
/// the tenants it does not know. The tenants it knows, and the system tenant, keep theirs.
#[test]
fn a_tenant_unregistered_while_iam_is_down_is_removed_at_start() {
    use support::keycloak::{Keycloak, Mint};
    use support::proc::{self, call_json_as};
    let Ok(url) = std::env::var("IAM_TEST_NATS_URL") else {
        return support::skip_because(
            "a_tenant_unregistered_while_iam_is_down_is_removed_at_start",
            "set IAM_TEST_NATS_URL to run it",
        );
    };
    let kc = Keycloak::start();
    kc.add_client("kaa", "kaa-iam", "iam-secret");
    let tm_dir = support::TempDir::new();
    let cfg = tm_dir.0.join("tm.yml");
    std::fs::write(
        &cfg,
        format!(
            "tenant-manager:\n  keycloak:\n    public-url: http://{}\n",
            kc.addr
        ),
    )
    .unwrap();
    let tm = proc::start(
        TM,
        &tm_dir.0,
        &[
            ("SERVER_PORT", "0"),
            ("APP_CONFIG_PATH", cfg.to_str().unwrap()),
            ("KAA_NATS_URLS", url.as_str()),
        ],
    )
    .unwrap();
    let stamp = support::unique("r").replace('_', "-");
    let gone = format!("gone-{stamp}");
    let keep = format!("keep-{stamp}");
    for t in [&gone, &keep] {
        let r = call_json_as(
            tm.addr,
            "POST",
            "/api/v1/tenants",
            None,
            Some(&json!({ "id": t })),
        );
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        support::wait_until(&format!("{t} AVAILABLE"), || {
            call_json_as(tm.addr, "GET", &format!("/api/v1/tenants/{t}"), None, None).json()["status"]
                == "AVAILABLE"
        });
    }

    let yaml = format!(
        "security:\n  enabled: true\n  client-id: kaa-iam\n  client-secret: iam-secret\n  audiences: [kaa-iam, kaa-frontend]\n  issuer:\n    public-url: {}\n  multitenancy:\n    enabled: true\n    tenant-manager-url: http://{}\nnats:\n  urls: {url}\n",
        kc.issuer("kaa"),
        tm.addr
    );
    let iam_dir = support::TempDir::new();
    let storage = support::sqlite_settings(&iam_dir);
    let root = kc.mint(
        "kaa",
        &Mint::user("root").roles(&["tenant-admin", "platform-admin"]),
    );
    let count = |a: std::net::SocketAddr, what: &str, t: &str| {
        let r = call_json_as(
            a,
            "GET",
            &format!("/api/v1/{what}?tenantID={t}"),
            Some(&root),
            None,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["count"].as_u64().unwrap()
    };
    let decide = |a: std::net::SocketAddr, t: &str| decide_as(a, &root, t);
    {
        // A process of its own, so that "down" means gone: nothing of it can still listen.
        let cfg = iam_dir.0.join("iam.yml");
        std::fs::write(&cfg, &yaml).unwrap();
        let db = iam_dir.0.join("iam.db");
        let iam = proc::start(
            env!("CARGO_BIN_EXE_iam"),
            &iam_dir.0,
            &[
                ("SERVER_PORT", "0"),
                ("APP_CONFIG_PATH", cfg.to_str().unwrap()),
                ("KAA_SQLITE_PATH", db.to_str().unwrap()),
            ],
        )
        .unwrap();
        for t in [&gone, &keep] {
            let r = call_json_as(
                iam.addr,
                "POST",
                "/api/v1/policies",
                Some(&root),
                Some(&json!({"name": "p", "tenantID": t, "statements": [
                {"effect": "allow", "actions": ["iam:user:read"],
                 "resources": [format!("krn:iam:{t}::user/*")],
                 "principals": [format!("krn:iam:{t}::user/u")]}]})),
            );
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
            let r = call_json_as(
                iam.addr,
                "POST",
                "/api/v1/groups",
                Some(&root),
                Some(&json!({"name": "g", "tenantID": t})),
            );
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
            assert_eq!(count(iam.addr, "groups", t), 1);
            assert_eq!(decide(iam.addr, t), 200);
        }
        // IAM stops; its listener lets go of NATS.
    }

    // The tenant is unregistered while IAM is down: its event goes out to nobody of IAM's.
    let nats =
        NatsClient::connect(std::slice::from_ref(&url), "", "", Duration::from_secs(3)).unwrap();
    let mut events = nats
        .subscribe(&subject("*", LifecycleKind::Unregistered))
        .unwrap();
    let r = call_json_as(
        tm.addr,
        "DELETE",
        &format!("/api/v1/tenants/{gone}"),
        None,
        None,
    );
    assert!(r.status / 100 == 2, "{}", String::from_utf8_lossy(&r.body));
    support::wait_until(&format!("the `unregistered` event of {gone}"), || {
        events
            .next_timeout(Duration::from_millis(200))
            .is_some_and(|m| LifecycleEvent::decode(&m.payload).is_ok_and(|e| e.tenant_id == gone))
    });
    let r = call_json_as(
        tm.addr,
        "GET",
        &format!("/api/v1/tenants/{gone}"),
        None,
        None,
    );
    assert_eq!(r.status, 404);
    // Nobody of IAM's heard it: the tenant's data is still in IAM's database.
    {
        use kaa::storage::SnapshotStore;
        let db = kaa::storage::Database::open(&storage).unwrap();
        let held = db.tenants_with_data().unwrap();
        assert!(held.contains(&gone), "removed while IAM was down: {held:?}");
    }

    // IAM starts again: once its reconciliation ran (its subscription asks for one), the
    // tenant's data is gone, the others' stays.
    let iam = support::service::start_iam(&storage, &yaml);
    support::wait_subscribed(iam.addr);
    support::wait_until(&format!("the data of `{gone}` removed"), || {
        count(iam.addr, "groups", &gone) == 0 && count(iam.addr, "policies", &gone) == 0
    });
    assert_eq!(count(iam.addr, "groups", &keep), 1, "other tenants stay");
    assert_eq!(count(iam.addr, "policies", &keep), 1);
    assert_eq!(decide(iam.addr, &keep), 200);
    assert_eq!(decide(iam.addr, &gone), 403);
    let r = call_json_as(
        iam.addr,
        "GET",
        "/api/v1/policies?type=base",
        Some(&root),
        None,
    );
    assert_eq!(r.json()["count"], 2, "the system tenant stays");
}

/// Is user `u` of `t` allowed to read another user of `t` (asked by `root`)?
fn decide_as(a: std::net::SocketAddr, root: &str, t: &str) -> u16 {
    support::proc::call_json_as(
        a,
        "POST",
        "/api/v1/evaluate",
        Some(root),
        Some(&json!({"principal": format!("krn:iam:{t}::user/u"),
            "action": "iam:user:read", "resources": [format!("krn:iam:{t}::user/v")]})),
    )
    .status
}
