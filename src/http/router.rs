//! A router by method and path pattern (`/api/v1/users/{id}/policies`). Path parameters are
//! matched on the raw path and then percent-decoded, so ids holding `/` travel as `%2F`.
//! Unknown paths answer 404 JSON, known paths with another method 405 JSON with `Allow`.

use super::error::ApiError;
use super::message::{Request, Response, percent_decode};

/// Decoded path parameters by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A parameter that the route pattern guarantees; an empty string otherwise.
    pub fn req(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

pub type HandlerFn<C> =
    Box<dyn Fn(&C, &Request, &Params) -> Result<Response, ApiError> + Send + Sync>;

enum Seg {
    Lit(&'static str),
    Param(&'static str),
}

struct Route<C> {
    method: &'static str,
    pattern: &'static str,
    segs: Vec<Seg>,
    handler: HandlerFn<C>,
    /// Only reads memory: may run on the connection's I/O thread.
    inline: bool,
    /// Literal segments: the more, the more specific.
    lits: usize,
}

/// What the router found for a request.
pub enum Match<'r, C> {
    Found {
        pattern: &'static str,
        handler: &'r HandlerFn<C>,
        params: Params,
        /// The route was marked [`Router::inline`].
        inline: bool,
    },
    MethodNotAllowed {
        allow: Vec<&'static str>,
    },
    NotFound,
}

pub struct Router<C> {
    routes: Vec<Route<C>>,
    /// Route indexes by segment count, in registration order: a path is only compared with
    /// the patterns of its length.
    by_len: Vec<Vec<usize>>,
}

impl<C> Default for Router<C> {
    fn default() -> Self {
        Router {
            routes: Vec::new(),
            by_len: Vec::new(),
        }
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.trim_matches('/').split('/').filter(|s| !s.is_empty())
}

/// The segments of a request path, or `None` when the path is not one a route can name: it must
/// start with `/` and hold no empty segment (`//health`, `/a//b`), so that a rule of a proxy in
/// front that names `/health` cannot be passed by writing the path differently. One trailing
/// `/` is allowed.
fn request_segments(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(parts)
}

impl<C> Router<C> {
    pub fn new() -> Router<C> {
        Router::default()
    }

    /// Add a route; `pattern` segments in braces are parameters.
    pub fn route(
        &mut self,
        method: &'static str,
        pattern: &'static str,
        handler: impl Fn(&C, &Request, &Params) -> Result<Response, ApiError> + Send + Sync + 'static,
    ) -> &mut Self {
        let segs = split(pattern)
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Seg::Param(name),
                    None => Seg::Lit(s),
                },
            )
            .collect::<Vec<_>>();
        let lits = segs.iter().filter(|s| matches!(s, Seg::Lit(_))).count();
        let len = segs.len();
        if self.by_len.len() <= len {
            self.by_len.resize_with(len + 1, Vec::new);
        }
        self.by_len[len].push(self.routes.len());
        self.routes.push(Route {
            method,
            pattern,
            segs,
            handler: Box::new(handler),
            inline: false,
            lits,
        });
        self
    }

    /// Marks the route added last as one that only reads memory (no storage, no other service),
    /// so that the server may run it without a hand-off to a blocking thread.
    pub fn inline(&mut self) -> &mut Self {
        if let Some(r) = self.routes.last_mut() {
            r.inline = true;
        }
        self
    }

    /// Whether the route that `method` and `path` reach was marked [`Router::inline`].
    pub fn is_inline(&self, method: &str, path: &str) -> bool {
        matches!(self.find(method, path), Match::Found { inline: true, .. })
    }

    /// Every (method, pattern) pair, in registration order.
    pub fn routes(&self) -> Vec<(&'static str, &'static str)> {
        self.routes.iter().map(|r| (r.method, r.pattern)).collect()
    }

    /// Whether the literal segments of `route` equal the path's (the lengths are equal).
    fn matches(route: &Route<C>, parts: &[&str]) -> bool {
        route.segs.iter().zip(parts).all(|(seg, part)| match seg {
            Seg::Lit(l) => l == part,
            Seg::Param(_) => true,
        })
    }

    fn params(route: &Route<C>, parts: &[&str]) -> Params {
        Params(
            route
                .segs
                .iter()
                .zip(parts)
                .filter_map(|(seg, part)| match seg {
                    Seg::Param(name) => Some((*name, percent_decode(part, false))),
                    Seg::Lit(_) => None,
                })
                .collect(),
        )
    }

    pub fn find(&self, method: &str, path: &str) -> Match<'_, C> {
        let Some(parts) = request_segments(path) else {
            return Match::NotFound;
        };
        let method = if method == "HEAD" { "GET" } else { method };
        let Some(candidates) = self.by_len.get(parts.len()) else {
            return Match::NotFound;
        };
        let matching = || {
            candidates
                .iter()
                .map(|&i| &self.routes[i])
                .filter(|r| Router::matches(r, &parts))
        };
        // The most specific matching path wins (more literal segments beat parameters:
        // `/users/me` over `/users/{id}`), whatever the registration order; a method that path
        // lacks is 405 even if a less specific pattern has it.
        let Some(best) = matching().map(|r| r.lits).max() else {
            return Match::NotFound;
        };
        let mut allow = Vec::new();
        for r in matching().filter(|r| r.lits == best) {
            if r.method == method {
                return Match::Found {
                    pattern: r.pattern,
                    handler: &r.handler,
                    params: Router::params(r, &parts),
                    inline: r.inline,
                };
            }
            if !allow.contains(&r.method) {
                allow.push(r.method);
            }
        }
        Match::MethodNotAllowed { allow }
    }

    /// Route and run; returns the response (or the error, for the caller to write in its
    /// service's style) and the route pattern (for metrics labels).
    pub fn dispatch(&self, ctx: &C, req: &Request) -> (Result<Response, ApiError>, &'static str) {
        match self.find(&req.method, &req.path) {
            Match::Found {
                pattern,
                handler,
                params,
                ..
            } => {
                // The writes the handler makes are audited as this request's.
                let _who = crate::storage::audit::scope(
                    &req.request_id,
                    req.remote.map(|r| r.to_string()),
                );
                (handler(ctx, req, &params), pattern)
            }
            Match::MethodNotAllowed { allow } => {
                let mut allow = allow;
                if allow.contains(&"GET") {
                    allow.push("HEAD");
                }
                (
                    Err(ApiError::method_not_allowed(req, &allow.join(", "))),
                    "method_not_allowed",
                )
            }
            Match::NotFound => (Err(ApiError::no_route(req)), "not_found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::ErrorStyle;

    /// Route and run, errors written in IAM's style.
    fn dispatch(r: &Router<()>, req: &Request) -> (Response, &'static str) {
        let (resp, pattern) = r.dispatch(&(), req);
        (
            resp.unwrap_or_else(|e| ErrorStyle::Message.render(e)),
            pattern,
        )
    }

    fn router() -> Router<()> {
        let mut r = Router::new();
        r.route("GET", "/api/v1/users/{id}", |_, _, p| {
            Ok(Response::text(200, "text/plain", p.req("id").to_string()))
        });
        r.route("DELETE", "/api/v1/users/{id}", |_, _, _| {
            Ok(Response::new(204))
        });
        r.route("GET", "/api/v1/users/me", |_, _, _| {
            Ok(Response::text(200, "text/plain", "me"))
        });
        r.route("GET", "/fail", |_, _, _| Err(ApiError::conflict("nope")));
        r
    }

    #[test]
    fn params_are_decoded_and_literals_beat_parameters() {
        let r = router();
        let (resp, pattern) = dispatch(&r, &Request::new("GET", "/api/v1/users/a%2Fb%3D"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"a/b=");
        assert_eq!(pattern, "/api/v1/users/{id}");
        let (resp, _) = dispatch(&r, &Request::new("GET", "/api/v1/users/x/"));
        assert_eq!(resp.body, b"x");
        let (resp, pattern) = dispatch(&r, &Request::new("GET", "/api/v1/users/me"));
        assert_eq!(resp.body, b"me");
        assert_eq!(pattern, "/api/v1/users/me");
    }

    #[test]
    fn unknown_path_is_404_json_and_wrong_method_405_with_allow() {
        let r = router();
        let (resp, _) = dispatch(&r, &Request::new("GET", "/nope"));
        assert_eq!(resp.status, 404);
        // Empty segments name no route: a proxy rule on a path cannot be passed by rewriting it.
        for odd in [
            "//api/v1/users/me",
            "/api//v1/users/me",
            "/api/v1/users//me",
            "api/v1/users/me",
            "/api/v1/users/me//",
        ] {
            let (resp, _) = dispatch(&r, &Request::new("GET", odd));
            assert_eq!(resp.status, 404, "{odd}");
        }
        assert!(String::from_utf8_lossy(&resp.body).contains("\"message\""));
        let (resp, _) = dispatch(&r, &Request::new("PUT", "/api/v1/users/x"));
        assert_eq!(resp.status, 405);
        assert_eq!(resp.header("allow"), Some("GET, DELETE, HEAD"));
        let (resp, _) = dispatch(&r, &Request::new("HEAD", "/api/v1/users/x"));
        assert_eq!(resp.status, 200);
        // A literal path with another method is 405, not a parameter route's 404.
        let (resp, _) = dispatch(&r, &Request::new("DELETE", "/api/v1/users/me"));
        assert_eq!(resp.status, 405);
        assert_eq!(resp.header("allow"), Some("GET, HEAD"));
    }

    #[test]
    fn handler_errors_become_json() {
        let (resp, _) = dispatch(&router(), &Request::new("GET", "/fail"));
        assert_eq!(resp.status, 409);
        assert_eq!(resp.body, br#"{"message":"nope"}"#);
    }
}
