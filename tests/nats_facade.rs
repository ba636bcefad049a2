//! The blocking NATS facade against a real server (`IAM_TEST_NATS_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use kaa::clients::nats::NatsClient;

#[test]
fn publish_and_receive_through_the_facade() {
    let Ok(url) = std::env::var("IAM_TEST_NATS_URL") else {
        return support::skip_because(
            "publish_and_receive_through_the_facade",
            "set IAM_TEST_NATS_URL to run it",
        );
    };
    let client = NatsClient::connect(&[url], "", "", Duration::from_secs(3)).unwrap();
    assert!(client.is_connected());
    let subject = format!("kaa.test.{}.{}", std::process::id(), kaa::clock::now_ms());
    let mut sub = client.subscribe(&subject).unwrap();
    client.publish(&subject, b"hello".to_vec()).unwrap();
    let m = sub
        .next_timeout(Duration::from_secs(3))
        .expect("message arrives");
    assert_eq!(m.subject, subject);
    assert_eq!(m.payload, b"hello");
    assert!(sub.next_timeout(Duration::from_millis(100)).is_none());
}

#[test]
fn unreachable_server_is_an_error_naming_it() {
    let err = NatsClient::connect(
        &["nats://127.0.0.1:1".to_string()],
        "",
        "",
        Duration::from_secs(1),
    )
    .err()
    .expect("nothing listens on port 1");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}
