//! Request and response values passed between the connection layer and handlers.

use std::net::SocketAddr;

/// One parsed HTTP request, body fully read (bounded by the server's body limit).
#[derive(Debug, Clone)]
pub struct Request {
    /// Upper-case method token as sent (`GET`, `POST`, ...).
    pub method: String,
    /// Path without the query string, percent-encoding untouched.
    pub path: String,
    /// Raw query string without the leading `?` (empty when absent).
    pub query: String,
    /// Header names lower-cased, values as sent (lossy UTF-8).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub remote: Option<SocketAddr>,
    /// Request id assigned by the server (or taken from a valid `x-request-id` header).
    pub request_id: String,
}

impl Request {
    /// A request built in memory (tests, internal calls).
    pub fn new(method: &str, target: &str) -> Request {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.to_string(), String::new()),
        };
        Request {
            method: method.to_ascii_uppercase(),
            path,
            query,
            headers: Vec::new(),
            body: Vec::new(),
            remote: None,
            request_id: String::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Decoded query parameters in order (`+` is a space, percent-escapes decoded, bad escapes kept).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (percent_decode(k, true), percent_decode(v, true)),
                None => (percent_decode(p, true), String::new()),
            })
            .collect()
    }

    /// Query parameters by name, the first value of each.
    pub fn query_map(&self) -> std::collections::HashMap<String, String> {
        let mut m = std::collections::HashMap::new();
        for (k, v) in self.query_pairs() {
            m.entry(k).or_insert(v);
        }
        m
    }

    /// The version a write expects, from `If-Match: "3"` (or `W/"3"`, or `3`); `*` and no header
    /// expect none. `Err` holds the message for a value that is not a version.
    pub fn if_match(&self) -> Result<Option<i64>, String> {
        match self.header("if-match") {
            None => Ok(None),
            Some(v) if v.trim() == "*" => Ok(None),
            Some(v) => {
                let t = v.trim().trim_start_matches("W/").trim_matches('"');
                t.parse::<i64>().map(Some).map_err(|_| {
                    format!("If-Match must hold the entity version as sent in ETag, got `{v}`")
                })
            }
        }
    }

    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Percent-decode `s` (and `+` as space when `plus_space`); invalid escapes are kept literally and
/// invalid UTF-8 is replaced.
pub fn percent_decode(s: &str, plus_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A response: status, extra headers, body. `Content-Length`, `Connection`, `Date` and
/// `X-Request-Id` are written by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A JSON response from a serializable value.
    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        }
    }

    pub fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode_escapes_and_plus() {
        let r = Request::new("get", "/x?a=1&b=hello+world&c=%2Fp%3D&d");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/x");
        assert_eq!(r.query_param("b").as_deref(), Some("hello world"));
        assert_eq!(r.query_param("c").as_deref(), Some("/p="));
        assert_eq!(r.query_param("d").as_deref(), Some(""));
        assert_eq!(r.query_param("z"), None);
    }

    #[test]
    fn bad_escapes_are_kept() {
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("a%41", false), "aA");
        assert_eq!(percent_decode("a+b", false), "a+b");
    }
}
