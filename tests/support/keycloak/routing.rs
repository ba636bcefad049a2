//! Routing of a request, with the faults and the call log around it.

use super::*;

/// Whether a request is a "Keycloak call" (faults, delay and the call log apply).
pub(super) fn counted(parts: &[String], method: &str) -> bool {
    match parts.first().map(String::as_str) {
        Some("admin") => true,
        Some("realms") => {
            method == "POST" && parts.len() == 5 && parts[2] == "protocol" && parts[4] == "token"
        }
        _ => false,
    }
}

pub(super) fn handle(shared: &Shared, req: Request) -> Response {
    let path = match req.path.strip_prefix(shared.context.as_str()) {
        Some(p) if shared.context.is_empty() || p.is_empty() || p.starts_with('/') => p,
        _ => return not_found(),
    };
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let is_call = counted(&parts, &req.method);
    let mut lose = None;
    if is_call {
        let (delay, fail) = {
            let mut f = shared.faults.lock().unwrap();
            if let Some((m, suffix, status)) = f.lose_on.clone()
                && m == req.method
                && path.ends_with(suffix.as_str())
            {
                f.lose_on = None;
                lose = Some(status);
            }
            let mut fail = f.fail_all;
            if fail.is_none()
                && let Some(head) = f.queue.front_mut()
            {
                if head.skip > 0 {
                    head.skip -= 1;
                } else if let Some(due) = f.queue.pop_front() {
                    if due.lose {
                        lose = Some(due.status);
                    } else {
                        fail = Some(due.status);
                    }
                }
            }
            (f.delay, fail)
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if let Some(status) = fail {
            shared.calls.lock().unwrap().push(Call {
                method: req.method.clone(),
                path: path.to_string(),
                status,
            });
            return fault(status);
        }
    }
    let resp = {
        let mut st = shared.state.lock().unwrap();
        route(&mut st, &shared.fetches, &req, &parts)
    };
    let resp = match lose {
        Some(status) => fault(status),
        None => resp,
    };
    if is_call {
        shared.calls.lock().unwrap().push(Call {
            method: req.method.clone(),
            path: path.to_string(),
            status: resp.status,
        });
    }
    resp
}

pub(super) fn fault(status: u16) -> Response {
    if status >= 500 {
        unknown_error(status)
    } else {
        error_message(status, &format!("injected failure {status}"))
    }
}

pub(super) fn route(
    st: &mut State,
    fetches: &AtomicUsize,
    req: &Request,
    parts: &[String],
) -> Response {
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    match (req.method.as_str(), p.as_slice()) {
        ("GET", ["realms", realm, "protocol", "openid-connect", "certs"]) => {
            if !st.realms.contains_key(*realm) {
                return Response::json(404, &json!({"error": "Realm does not exist"}));
            }
            st.ensure_key(realm);
            fetches.fetch_add(1, Ordering::SeqCst);
            Response::json(200, &jwks(&st.realms[*realm]))
        }
        ("GET", ["realms", realm, ".well-known", "openid-configuration"])
            if st.realms.contains_key(*realm) =>
        {
            let iss = format!("{}/realms/{realm}", st.base);
            Response::json(
                200,
                &json!({
                    "issuer": iss,
                    "jwks_uri": format!("{iss}/protocol/openid-connect/certs"),
                    "token_endpoint": format!("{iss}/protocol/openid-connect/token"),
                }),
            )
        }
        ("POST", ["realms", realm, "protocol", "openid-connect", "token"]) => {
            token_endpoint(st, realm, req)
        }
        (_, ["admin", "realms", ..]) => {
            if let Err(resp) = admin_auth(st, req, &parts[2..]) {
                return resp;
            }
            admin(st, req, &parts[2..])
        }
        _ => Response::json(404, &json!({"error": "not found"})),
    }
}
