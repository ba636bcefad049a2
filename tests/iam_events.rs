//! Tenant Lifecycle Events through a real NATS server (`IAM_TEST_NATS_URL`): `unregistered`
//! removes the tenant's data from IAM, bad messages are ignored, the system tenant stays.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

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
    let started = Instant::now();
    while get(a, &format!("/api/v1/policies?tenantID={tenant}"))["count"] != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "tenant data not removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
    // Redelivery is harmless.
    nats.publish(
        &subject("tenant-manager", LifecycleKind::Unregistered),
        event(&tenant).encode(),
    )
    .unwrap();
    assert_eq!(ask(&keep), 200);
}
