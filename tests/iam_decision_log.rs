//! The decision log and replay over HTTP, on SQLite and (with `IAM_TEST_POSTGRES_URL`)
//! PostgreSQL: each mode keeps the decisions it says (off none, denies the denies, all each,
//! sampled at rates 0 and 1 none and each), a line names the request, tenant, principal, action,
//! resource, outcome and the deciding statements with their policy's version; a full buffer in
//! front of a blocked destination drops lines and counts them without holding up a decision;
//! replay decides logged decisions again under today's policies and says what changed and why;
//! bad replay input is a 400, and replaying needs the rights `/evaluate` needs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kaa::config::StorageSettings;
use serde_json::{Value, json};
use support::proc::{Resp, call_json, call_json_with, request};
use support::{expect, raw_id};

const T: &str = "tdlog";

fn krn(kind: &str, name: &str) -> String {
    format!("krn:iam:{T}::{kind}/{name}")
}

fn thing(name: &str) -> String {
    format!("krn:svc:{T}::thing/{name}")
}

fn body(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// IAM with `decision-log` settings (YAML lines under it, indented by four).
fn start(storage: &StorageSettings, settings: &str) -> support::service::Running {
    support::service::start_iam(storage, &format!("iam:\n  decision-log:\n{settings}"))
}

/// The policy `readers` (allow read, deny delete on every thing) attached to bob, once.
fn seed(a: SocketAddr) {
    let r = call_json(
        a,
        "POST",
        "/api/v1/policies",
        Some(&json!({"name": "readers", "tenantID": T, "statements": [
            {"effect": "allow", "actions": ["svc:thing:read"], "resources": [format!("krn:svc:{T}::thing/*")]},
            {"effect": "deny", "actions": ["svc:thing:delete"], "resources": [format!("krn:svc:{T}::thing/*")]}]})),
    );
    if r.status == 409 {
        return;
    }
    expect(&r, 201);
    expect(
        &call_json(
            a,
            "POST",
            "/api/v1/users",
            Some(
                &json!({"username": "bob", "tenantID": T, "password": "bob-password-1",
                "confirmPassword": "bob-password-1", "policyIDs": [raw_id(&krn("policy", "readers"))]}),
            ),
        ),
        201,
    );
}

/// One `/evaluate` of bob, with a request id of our own; the status it answered.
fn decide(a: SocketAddr, action: &str, resource: &str, request_id: &str) -> u16 {
    let b = json!({"principal": krn("user", "bob"), "action": action, "resources": [resource]});
    call_json_with(
        a,
        "POST",
        "/api/v1/evaluate",
        None,
        &[("X-Request-Id", request_id)],
        Some(&b),
        support::proc::CALL_TIMEOUT,
    )
    .unwrap()
    .status
}

fn lines_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Make a denied decision with the request id `marker` and wait until its line is in the file:
/// every line handed to the log before it is written by then (one writer, in order).
fn flushed(a: SocketAddr, path: &Path, marker: &str) -> Vec<Value> {
    assert_eq!(decide(a, "svc:thing:delete", &thing("marker"), marker), 403);
    support::wait_until(&format!("the line of `{marker}` is written"), || {
        lines_of(path).iter().any(|l| l["requestID"] == marker)
    });
    lines_of(path)
        .into_iter()
        .filter(|l| l["requestID"] != marker)
        .collect()
}

fn counter(a: SocketAddr, name: &str) -> i64 {
    support::metric(a, name).unwrap_or(0)
}

/// bob's three kinds of decision, each once: allow, explicit deny, implicit deny.
fn three(a: SocketAddr, tag: &str) {
    assert_eq!(
        decide(a, "svc:thing:read", &thing("a"), &format!("{tag}-allow")),
        200
    );
    assert_eq!(
        decide(a, "svc:thing:delete", &thing("a"), &format!("{tag}-deny")),
        403
    );
    assert_eq!(
        decide(
            a,
            "svc:thing:write",
            &thing("a"),
            &format!("{tag}-implicit")
        ),
        403
    );
}

fn ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["requestID"].as_str().unwrap().to_string())
        .collect()
}

fn modes(storage: &StorageSettings, dir: &Path) {
    // off: nothing at all, not even a writer.
    let file = dir.join("off.log");
    {
        let svc = start(
            storage,
            &format!("    mode: \"off\"\n    destination: {}\n", file.display()),
        );
        seed(svc.addr);
        three(svc.addr, "off");
        assert!(!file.exists(), "mode off wrote {:?}", lines_of(&file));
        assert_eq!(counter(svc.addr, "iam_decision_log_lines_total"), 0);
        assert_eq!(counter(svc.addr, "iam_decision_log_dropped_total"), 0);
    }
    // sampled at rate 0: nothing.
    let file = dir.join("rate0.log");
    {
        let svc = start(
            storage,
            &format!(
                "    mode: sampled\n    sample-rate: 0\n    destination: {}\n",
                file.display()
            ),
        );
        three(svc.addr, "rate0");
        assert!(!file.exists(), "rate 0 wrote {:?}", lines_of(&file));
        assert_eq!(counter(svc.addr, "iam_decision_log_lines_total"), 0);
    }
    // denies: the two denies, not the allow.
    let file = dir.join("denies.log");
    {
        let svc = start(
            storage,
            &format!("    mode: denies\n    destination: {}\n", file.display()),
        );
        three(svc.addr, "denies");
        let lines = flushed(svc.addr, &file, "denies-marker");
        assert_eq!(ids(&lines), ["denies-deny", "denies-implicit"]);
        assert_eq!(lines[0]["outcome"], "explicitDeny");
        assert_eq!(lines[1]["outcome"], "implicitDeny");
        assert_eq!(lines[1]["statements"], json!([]));
        assert_eq!(counter(svc.addr, "iam_decision_log_lines_total"), 3);
    }
    // sampled at rate 1 and all: each decision, every form of the evaluate family included.
    for (mode, tag) in [
        ("mode: sampled\n    sample-rate: 1", "rate1"),
        ("mode: all", "all"),
    ] {
        let file = dir.join(format!("{tag}.log"));
        let svc = start(
            storage,
            &format!("    {mode}\n    destination: {}\n", file.display()),
        );
        let a = svc.addr;
        three(a, tag);
        // Two actions by two resources: four decisions.
        let b = json!({"principal": krn("user", "bob"), "actions": ["svc:thing:read", "svc:thing:delete"],
            "resources": [thing("x"), thing("y")]});
        let r = call_json_with(
            a,
            "POST",
            "/api/v1/evaluate/actions?explain=true",
            None,
            &[("X-Request-Id", &format!("{tag}-matrix"))],
            Some(&b),
            support::proc::CALL_TIMEOUT,
        )
        .unwrap();
        expect(&r, 200);
        // Over registered resources.
        let r = call_json(
            a,
            "POST",
            "/api/v1/resources",
            Some(
                &json!({"name": format!("r{tag}"), "tenantID": T, "service": "svc", "resourceType": "thing"}),
            ),
        );
        let registered = expect(&r, 201)["data"]["krn"].as_str().unwrap().to_string();
        let b = json!({"principal": krn("user", "bob"), "action": "svc:thing:read", "resources": [registered]});
        let r = call_json_with(
            a,
            "POST",
            "/api/v1/resources/evaluate",
            None,
            &[("X-Request-Id", &format!("{tag}-registered"))],
            Some(&b),
            support::proc::CALL_TIMEOUT,
        )
        .unwrap();
        expect(&r, 200);
        // A registered-resource evaluation answered 404 decided nothing for its caller: no line.
        let b = json!({"principal": krn("user", "bob"), "action": "svc:thing:read", "resources": [thing("unregistered")]});
        let r = call_json_with(
            a,
            "POST",
            "/api/v1/resources/evaluate",
            None,
            &[("X-Request-Id", &format!("{tag}-404"))],
            Some(&b),
            support::proc::CALL_TIMEOUT,
        )
        .unwrap();
        expect(&r, 404);
        let lines = flushed(a, &file, &format!("{tag}-marker"));
        let got = ids(&lines);
        let matrix = format!("{tag}-matrix");
        assert_eq!(
            got,
            [
                format!("{tag}-allow"),
                format!("{tag}-deny"),
                format!("{tag}-implicit"),
                matrix.clone(),
                matrix.clone(),
                matrix.clone(),
                matrix,
                format!("{tag}-registered"),
            ],
            "{lines:?}"
        );
        let cells: Vec<(String, String, String)> = lines[3..7]
            .iter()
            .map(|l| {
                (
                    l["action"].as_str().unwrap().to_string(),
                    l["resource"].as_str().unwrap().to_string(),
                    l["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            cells,
            [
                ("svc:thing:read".into(), thing("x"), "allow".into()),
                ("svc:thing:read".into(), thing("y"), "allow".into()),
                ("svc:thing:delete".into(), thing("x"), "explicitDeny".into()),
                ("svc:thing:delete".into(), thing("y"), "explicitDeny".into()),
            ]
        );
        assert_eq!(counter(a, "iam_decision_log_dropped_total"), 0);
    }
}

/// A line's fields, and the policy version they name moving with the policy.
fn fields(storage: &StorageSettings, dir: &Path) {
    let file = dir.join("fields.log");
    let svc = start(
        storage,
        &format!("    mode: all\n    destination: {}\n", file.display()),
    );
    let a = svc.addr;
    seed(a);
    let readers = krn("policy", "readers");
    let version = |a| {
        expect(
            &call_json(
                a,
                "GET",
                &format!("/api/v1/policies/{}", support::path_id(&readers)),
                None,
            ),
            200,
        )["data"]["version"]
            .as_i64()
            .unwrap()
    };
    let v1 = version(a);
    assert_eq!(decide(a, "svc:thing:read", &thing("a"), "fields-1"), 200);
    let lines = flushed(a, &file, "fields-m1");
    let l = lines.iter().find(|l| l["requestID"] == "fields-1").unwrap();
    assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
    assert_eq!(l["tenantID"], T);
    assert_eq!(l["principal"], krn("user", "bob"));
    assert_eq!(l["action"], "svc:thing:read");
    assert_eq!(l["resource"], thing("a"));
    assert_eq!(l["outcome"], "allow");
    assert_eq!(
        l["statements"],
        json!([{"policyID": readers, "id": raw_id(&readers), "version": v1, "statement": 0}])
    );
    assert!(l["context"]["kaa:CurrentTime"].is_string(), "{l}");
    assert!(l["replica"].is_string(), "{l}");

    // A new version of the policy: the next decision names it.
    expect(
        &call_json(
            a,
            "PUT",
            &format!("/api/v1/policies/{}", support::path_id(&readers)),
            Some(&json!({"statements": [
                {"effect": "deny", "actions": ["svc:thing:delete"], "resources": [format!("krn:svc:{T}::thing/*")]},
                {"effect": "allow", "actions": ["svc:thing:read"], "resources": [format!("krn:svc:{T}::thing/*")]}]})),
        ),
        200,
    );
    let v2 = version(a);
    assert_eq!(v2, v1 + 1);
    assert_eq!(decide(a, "svc:thing:read", &thing("a"), "fields-2"), 200);
    let lines = flushed(a, &file, "fields-m2");
    let l = lines.iter().find(|l| l["requestID"] == "fields-2").unwrap();
    assert_eq!(
        l["statements"],
        json!([{"policyID": readers, "id": raw_id(&readers), "version": v2, "statement": 1}])
    );
    // A decision by a base policy names it and the version stored for the configuration.
    let b = json!({"principal": "krn:iam:kaa::user/root", "roles": ["krn:iam:kaa::role/tenant-admin"],
        "action": "iam:user:read", "resources": ["krn:iam:kaa::user/x"]});
    let r = call_json_with(
        a,
        "POST",
        "/api/v1/evaluate",
        None,
        &[("X-Request-Id", "fields-base")],
        Some(&b),
        support::proc::CALL_TIMEOUT,
    )
    .unwrap();
    expect(&r, 200);
    let lines = flushed(a, &file, "fields-m3");
    let l = lines
        .iter()
        .find(|l| l["requestID"] == "fields-base")
        .unwrap();
    assert_eq!(l["roles"], json!(["krn:iam:kaa::role/tenant-admin"]));
    let s = &l["statements"][0];
    assert_eq!(s["policyID"], "tenant-admin", "{l}");
    assert_eq!(s["base"], true);
    assert_eq!(s["id"], raw_id("krn:iam:kaa::policy/tenant-admin"));
    let stored = expect(
        &call_json(
            a,
            "GET",
            &format!(
                "/api/v1/policies/{}",
                support::path_id("krn:iam:kaa::policy/tenant-admin")
            ),
            None,
        ),
        200,
    );
    assert_eq!(s["version"], stored["data"]["version"], "{l}");
}

/// A decision allowed, the policy changed, the decision replayed: now denied, with the
/// versions then and now.
fn replay(storage: &StorageSettings, dir: &Path) {
    let file = dir.join("replay.log");
    let svc = start(
        storage,
        &format!("    mode: all\n    destination: {}\n", file.display()),
    );
    let a = svc.addr;
    seed(a);
    let readers = krn("policy", "readers");
    let v1 = expect(
        &call_json(
            a,
            "GET",
            &format!("/api/v1/policies/{}", support::path_id(&readers)),
            None,
        ),
        200,
    )["data"]["version"]
        .as_i64()
        .unwrap();
    let from = kaa::clock::rfc3339_ms(kaa::clock::now_ms() - 1);
    assert_eq!(decide(a, "svc:thing:read", &thing("a"), "replay-read"), 200);
    assert_eq!(
        decide(a, "svc:thing:delete", &thing("a"), "replay-delete"),
        403
    );
    let logged = flushed(a, &file, "replay-m1");
    let read_line = logged
        .iter()
        .find(|l| l["requestID"] == "replay-read")
        .unwrap()
        .clone();

    // The policy changes: reading `a` is denied from now on.
    expect(
        &call_json(
            a,
            "PUT",
            &format!("/api/v1/policies/{}", support::path_id(&readers)),
            Some(&json!({"statements": [
                {"effect": "deny", "actions": ["svc:thing:read", "svc:thing:delete"], "resources": [thing("a")]},
                {"effect": "allow", "actions": ["svc:thing:read"], "resources": [format!("krn:svc:{T}::thing/*")]},
                {"effect": "deny", "actions": ["svc:thing:delete"], "resources": [format!("krn:svc:{T}::thing/*")]}]})),
        ),
        200,
    );
    let v2 = v1 + 1;

    // The line as logged, as the body.
    let r = request(
        a,
        "POST",
        "/api/v1/evaluate/replay",
        &[("Content-Type", "application/x-ndjson")],
        format!("{read_line}\n").as_bytes(),
        support::proc::CALL_TIMEOUT,
    )
    .unwrap();
    let out = expect(&r, 200)["data"].clone();
    assert_eq!(
        (out["replayed"].clone(), out["changed"].clone()),
        (json!(1), json!(1))
    );
    let x = &out["results"][0];
    assert_eq!(x["requestID"], "replay-read");
    assert_eq!(x["changed"], true);
    assert_eq!(x["logged"]["outcome"], "allow");
    let then = read_line["statements"][0]["statement"].as_u64().unwrap();
    assert_eq!(
        x["logged"]["statements"],
        json!([{"policyID": readers, "id": raw_id(&readers), "version": v1, "versionNow": v2, "statement": then}])
    );
    assert_eq!(x["current"]["outcome"], "explicitDeny");
    assert_eq!(
        x["current"]["statements"],
        json!([{"policyID": readers, "id": raw_id(&readers), "version": v2, "statement": 0}])
    );
    let why = x["why"].as_str().unwrap();
    assert_eq!(
        why,
        format!(
            "was allow by statement {then} of {readers} version {v1}; now explicitDeny by statement 0 of {readers} version {v2}"
        )
    );

    // This replica's own file, by time range: both decisions (and the marker), the delete
    // unchanged (denied then and now); `changedOnly` lists the read only.
    let range = json!({"from": from, "tenantID": T, "principal": krn("user", "bob")});
    let out = expect(
        &call_json(a, "POST", "/api/v1/evaluate/replay", Some(&range)),
        200,
    )["data"]
        .clone();
    assert_eq!(out["replayed"], 3, "{out}");
    assert_eq!(out["changed"], 1, "{out}");
    let delete = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["requestID"] == "replay-delete")
        .unwrap();
    assert_eq!(delete["changed"], false);
    assert_eq!(delete["current"]["outcome"], "explicitDeny");
    assert!(delete["why"].as_str().unwrap().starts_with("unchanged: "));
    let out = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/evaluate/replay?changedOnly=true",
            Some(&range),
        ),
        200,
    )["data"]
        .clone();
    assert_eq!(out["replayed"], 3);
    let only: Vec<&Value> = out["results"].as_array().unwrap().iter().collect();
    assert_eq!(only.len(), 1, "{out}");
    assert_eq!(only[0]["requestID"], "replay-read");
    // A range after every decision: nothing.
    let later =
        json!({"from": kaa::clock::rfc3339_ms(kaa::clock::now_ms() + 60_000), "tenantID": T});
    let out = expect(
        &call_json(a, "POST", "/api/v1/evaluate/replay", Some(&later)),
        200,
    );
    assert_eq!(out["data"]["replayed"], 0);
    // As JSON objects in `decisions`: the same answer for the read.
    let out = expect(
        &call_json(
            a,
            "POST",
            "/api/v1/evaluate/replay",
            Some(&json!({"decisions": [read_line]})),
        ),
        200,
    );
    assert_eq!(out["data"]["results"][0]["why"], why);
    // Replaying is no decision: it adds no line (only the next marker's).
    let before = flushed(a, &file, "replay-m2").len();
    expect(
        &call_json(a, "POST", "/api/v1/evaluate/replay", Some(&range)),
        200,
    );
    assert_eq!(flushed(a, &file, "replay-m3").len(), before + 1);

    bad_input(a, &read_line);
}

/// Each bad replay answers 400 (or 415) with a message.
fn bad_input(a: SocketAddr, line: &Value) {
    let post = |ct: &str, body: &[u8]| {
        request(
            a,
            "POST",
            "/api/v1/evaluate/replay",
            &[("Content-Type", ct)],
            body,
            support::proc::CALL_TIMEOUT,
        )
        .unwrap()
    };
    let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut l = line.as_object().unwrap().clone();
        f(&mut l);
        Value::Object(l).to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("{\"time\":".into(), "malformed JSON"),
        (format!("{line}\nnot json"), "line 2: malformed JSON"),
        (
            format!("{line}\n[1]"),
            "line 2: a logged decision must be a JSON object",
        ),
        (
            with(&|l| {
                l.remove("principal");
            }),
            "not a logged decision",
        ),
        (
            with(&|l| {
                l.insert("outcome".into(), json!("maybe"));
            }),
            "not a logged decision",
        ),
        (
            with(&|l| {
                l.insert("extra".into(), json!(1));
            }),
            "not a logged decision",
        ),
        (
            with(&|l| {
                l.insert("tenantID".into(), json!("nosuchtenant"));
                l.insert("principal".into(), json!("krn:iam:nosuchtenant::user/x"));
            }),
            "unknown tenant `nosuchtenant`",
        ),
        (
            with(&|l| {
                l.insert("principal".into(), json!("krn:iam:other::user/x"));
            }),
            "is not of tenant",
        ),
        (
            with(&|l| {
                l.insert("principal".into(), json!("not a krn"));
            }),
            "`principal`",
        ),
        (
            with(&|l| {
                l.insert("action".into(), json!("svc:thing:*"));
            }),
            "wildcard",
        ),
        (
            with(&|l| {
                l.insert("resource".into(), json!("nope"));
            }),
            "decision 1",
        ),
        (format!("{line}\n").repeat(1001), "at most 1000 per replay"),
        (
            "{\"from\": \"yesterday\"}".into(),
            "`from` must be an RFC 3339",
        ),
        (
            "{\"from\": \"2026-12-08\", \"to\": \"2026-12-07\"}".into(),
            "`from` is after `to`",
        ),
        (
            "{\"from\": \"2026-12-07\", \"tenantID\": \"nosuchtenant\"}".into(),
            "unknown tenant",
        ),
        ("{\"since\": 1}".into(), "invalid replay request"),
        ("{}".into(), "nothing to replay"),
    ];
    for (b, message) in cases {
        let r = post("application/x-ndjson", b.as_bytes());
        assert_eq!(r.status, 400, "{}: {}", &b[..b.len().min(200)], body(&r));
        let m = r.json()["message"].as_str().unwrap().to_string() + &r.json()["errors"].to_string();
        assert!(m.contains(message), "{message}: {m}");
    }
    let r = post("text/csv", line.to_string().as_bytes());
    assert_eq!(r.status, 415, "{}", body(&r));
}

fn story(storage: &StorageSettings) {
    let dir = support::TempDir::new();
    modes(storage, &dir.0);
    fields(storage, &dir.0);
    replay(storage, &dir.0);
}

#[test]
fn sqlite_decision_log_and_replay() {
    let dir = support::TempDir::new();
    story(&support::sqlite_settings(&dir));
}

#[test]
fn postgres_decision_log_and_replay() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_decision_log_and_replay");
    };
    story(&pg.storage());
}

/// Replay without a log file of its own: a time range is refused, lines in the body are not.
#[test]
fn a_range_needs_a_log_file() {
    let dir = support::TempDir::new();
    let svc = start(&support::sqlite_settings(&dir), "    mode: all\n");
    seed(svc.addr);
    let r = call_json(
        svc.addr,
        "POST",
        "/api/v1/evaluate/replay",
        Some(&json!({"from": "2026-12-07", "tenantID": T})),
    );
    assert_eq!(r.status, 400, "{}", body(&r));
    assert!(body(&r).contains("no decision log file"), "{}", body(&r));
}

/// A destination nobody reads (a FIFO without a reader) and a buffer of one line: decisions
/// are answered at once, the lines that do not fit are dropped and counted; once a reader
/// comes, the buffered lines are written.
#[cfg(unix)]
#[test]
fn a_blocked_destination_drops_and_counts_lines() {
    let dir = support::TempDir::new();
    let fifo: PathBuf = dir.0.join("blocked.fifo");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let svc = start(
        &support::sqlite_settings(&dir),
        &format!(
            "    mode: all\n    buffer-lines: 1\n    destination: {}\n",
            fifo.display()
        ),
    );
    let a = svc.addr;
    seed(a);
    let resources: Vec<String> = (0..10).map(|i| thing(&format!("r{i}"))).collect();
    let b = json!({"principal": krn("user", "bob"), "action": "svc:thing:read", "resources": resources});
    for _ in 0..3 {
        expect(&call_json(a, "POST", "/api/v1/evaluate", Some(&b)), 200);
    }
    let dropped = counter(a, "iam_decision_log_dropped_total");
    assert_eq!(counter(a, "iam_decision_log_lines_total"), 0);
    // At most one line in the buffer and one batch in the blocked writer's hands.
    assert!(dropped >= 28, "dropped {dropped}");
    let held = 30 - dropped;
    // A reader comes: the held lines are written, then nothing more is lost.
    let reader = std::fs::File::open(&fifo).unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(reader));
    for _ in 0..held {
        let l: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(l["outcome"], "allow");
    }
    support::wait_until("the held lines are counted written", || {
        counter(a, "iam_decision_log_lines_total") == held
    });
    assert_eq!(counter(a, "iam_decision_log_dropped_total"), dropped);
}

/// With security on, replaying needs the right `/evaluate` needs to decide for the logged
/// principal (`iam:user:evaluate` on it), unless the principal is the caller.
/// A log rotation that moves the file away (`logrotate`'s default `create`) or deletes it: the
/// lines after it go to a new file at the configured path, none is lost or written to the old
/// one, and no signal is needed.
#[test]
fn a_rotated_log_file_is_followed() {
    let dir = support::TempDir::new();
    let path = dir.0.join("decisions.log");
    let svc = start(
        &support::sqlite_settings(&dir),
        &format!("    mode: all\n    destination: {}\n", path.display()),
    );
    let a = svc.addr;
    seed(a);
    assert_eq!(decide(a, "svc:thing:read", &thing("one"), "before"), 200);
    flushed(a, &path, "m1");
    let moved = dir.0.join("decisions.log.1");
    std::fs::rename(&path, &moved).unwrap();
    assert_eq!(
        decide(a, "svc:thing:read", &thing("two"), "after-move"),
        200
    );
    let new = flushed(a, &path, "m2");
    assert_eq!(ids(&new), ["after-move"], "{new:?}");
    let old = lines_of(&moved);
    let old_ids: Vec<&str> = old.iter().filter_map(|l| l["requestID"].as_str()).collect();
    assert_eq!(
        old_ids,
        ["before", "m1"],
        "the moved file keeps what it had, nothing more"
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        decide(a, "svc:thing:read", &thing("three"), "after-delete"),
        200
    );
    let again = flushed(a, &path, "m3");
    assert_eq!(ids(&again), ["after-delete"], "{again:?}");
    assert_eq!(counter(a, "iam_decision_log_dropped_total"), 0);
}

#[test]
fn replaying_needs_the_right_to_evaluate() {
    use support::keycloak::{Keycloak, Mint};
    let kc = Keycloak::start();
    let dir = support::TempDir::new();
    let config = format!(
        "security:\n  enabled: true\n  client-id: kaa-iam\n  audiences: [kaa-iam, kaa-frontend]\n  issuer:\n    public-url: {}\niam:\n  decision-log:\n    mode: \"off\"\n",
        kc.issuer("kaa")
    );
    let svc = support::service::start_iam(&support::sqlite_settings(&dir), &config);
    let a = svc.addr;
    let admin = kc.mint("kaa", &Mint::user("admin").roles(&["tenant-admin"]));
    let bob = kc.mint("kaa", &Mint::user("bob"));
    let post = |token: &str, b: &str| {
        request(
            a,
            "POST",
            "/api/v1/evaluate/replay",
            &[
                ("Content-Type", "application/x-ndjson"),
                ("Authorization", &format!("Bearer {token}")),
            ],
            b.as_bytes(),
            support::proc::CALL_TIMEOUT,
        )
        .unwrap()
    };
    // Something stored in the tenant, so that it is known.
    let r = support::proc::call_json_as(
        a,
        "POST",
        "/api/v1/pools",
        Some(&admin),
        Some(&json!({"name": "known"})),
    );
    expect(&r, 201);
    let line = |principal: &str| {
        json!({"time": "2026-12-07T10:00:00.000Z", "tenantID": "kaa", "principal": principal,
            "action": "iam:user:read", "resource": "krn:iam:kaa::user/carol", "outcome": "allow",
            "statements": []})
        .to_string()
    };
    // bob may replay his own decisions, not alice's.
    let r = post(&bob, &line("krn:iam:kaa::user/bob"));
    let out = expect(&r, 200);
    assert_eq!(
        out["data"]["results"][0]["current"]["outcome"],
        "implicitDeny"
    );
    assert_eq!(out["data"]["results"][0]["changed"], true);
    let r = post(&bob, &line("krn:iam:kaa::user/alice"));
    assert_eq!(r.status, 403, "{}", body(&r));
    assert!(body(&r).contains("decision 1"), "{}", body(&r));
    // One forbidden decision refuses the whole replay.
    let both = format!(
        "{}\n{}",
        line("krn:iam:kaa::user/bob"),
        line("krn:iam:kaa::user/alice")
    );
    let r = post(&bob, &both);
    assert_eq!(r.status, 403, "{}", body(&r));
    assert!(body(&r).contains("decision 2"), "{}", body(&r));
    // The administrator may evaluate for anyone of the tenant.
    let r = post(&admin, &line("krn:iam:kaa::user/alice"));
    expect(&r, 200);
    // No token: 401.
    let r = request(
        a,
        "POST",
        "/api/v1/evaluate/replay",
        &[("Content-Type", "application/x-ndjson")],
        line("krn:iam:kaa::user/bob").as_bytes(),
        support::proc::CALL_TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 401);
}

/// `iam check-config` refuses a bad decision-log setting, naming it.
#[test]
fn check_config_refuses_bad_decision_log_settings() {
    const IAM: &str = env!("CARGO_BIN_EXE_iam");
    let dir = support::TempDir::new();
    for (yaml, env, key) in [
        (
            "iam:\n  decision-log:\n    mode: sometimes\n",
            vec![],
            "`iam.decision-log.mode`",
        ),
        (
            "",
            vec![("KAA_IAM_DECISION_LOG_SAMPLE_RATE", "1.5")],
            "`iam.decision-log.sample-rate`",
        ),
        (
            "",
            vec![("KAA_IAM_DECISION_LOG_DESTINATION", "/nonexistent-dir/d.log")],
            "`iam.decision-log.destination`",
        ),
    ] {
        let file = dir.0.join("c.yml");
        std::fs::write(&file, yaml).unwrap();
        let (status, _, err) =
            support::proc::run(IAM, &dir.0, &env, &["check-config", file.to_str().unwrap()]);
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains(key), "{err}");
    }
    let file = dir.0.join("ok.yml");
    std::fs::write(
        &file,
        format!(
            "iam:\n  decision-log:\n    mode: denies\n    destination: {}\n",
            dir.0.join("d.log").display()
        ),
    )
    .unwrap();
    let (status, out, err) =
        support::proc::run(IAM, &dir.0, &[], &["check-config", file.to_str().unwrap()]);
    assert!(status.success(), "{out}{err}");
}
