//! HTTP as an outside client speaks it: calls, expected statuses, ids of KRNs.

use super::*;

/// This story's timeout, longer than `CALL_TIMEOUT`.
pub(super) const TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    request(addr, method, path, headers, body, TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `call_json` with this story's [`TIMEOUT`].
pub(super) fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Resp {
    call_json_with(addr, method, path, None, &[], body, TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub(super) fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Assert the status and return the JSON body (Null when empty).
pub(super) fn expect(r: &Resp, status: u16, what: &str) -> Value {
    assert_eq!(r.status, status, "{what}: body {}", text(r));
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

/// Standard base64 id of a KRN, as the API answers it.
pub(super) fn raw_id(krn: &str) -> String {
    Krn::parse(krn)
        .unwrap_or_else(|e| panic!("test bug: `{krn}` is not a KRN: {e}"))
        .to_id()
}

/// The id of a KRN for a path: `=` (and `/`, `+`, never produced by KRN text) percent-encoded.
pub(super) fn id(krn: &str) -> String {
    raw_id(krn)
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

pub(super) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("not a string: {x}"))
                .to_string()
        })
        .collect()
}
