//! The stand-in's state and what the server threads share: realms, faults, the call log.

use super::*;

pub(super) struct State {
    pub(super) base: String,
    pub(super) realms: HashMap<String, Realm>,
    pub(super) revoked: HashSet<String>,
    pub(super) seq: u64,
    pub(super) seed: u64,
}

impl State {
    pub(super) fn uuid(&mut self) -> String {
        self.seq += 1;
        let a = self.seed ^ self.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            a & 0xfff,
            self.seq & 0xfff,
            self.seq
        )
    }

    pub(super) fn new_realm(&mut self, name: &str) -> Realm {
        let mut r = Realm {
            id: self.uuid(),
            name: name.to_string(),
            rep: Map::new(),
            keys: Vec::new(),
            token_lifespan: 300,
            clients: Vec::new(),
            roles: Vec::new(),
            idps: Vec::new(),
            users: Vec::new(),
            client_roles: Vec::new(),
            components: Vec::new(),
            issued: Vec::new(),
            token_requests: 0,
            profile: default_user_profile(),
        };
        for role in [
            "offline_access".to_string(),
            "uma_authorization".to_string(),
            format!("default-roles-{name}"),
        ] {
            let id = self.uuid();
            r.roles.push(Role {
                id,
                name: role,
                description: None,
                attributes: json!({}),
            });
        }
        for (client_id, public, direct) in BUILTIN_CLIENTS {
            let id = self.uuid();
            let mut rep = Map::new();
            rep.insert("enabled".into(), json!(true));
            rep.insert("protocol".into(), json!("openid-connect"));
            rep.insert("directAccessGrantsEnabled".into(), json!(direct));
            rep.insert("redirectUris".into(), json!([]));
            let secret = (!public).then(|| format!("secret-{id}"));
            if *client_id == "realm-management" {
                for name in REALM_MANAGEMENT_ROLES {
                    let role_id = self.uuid();
                    r.client_roles.push((
                        id.clone(),
                        Role {
                            id: role_id,
                            name: name.to_string(),
                            description: None,
                            attributes: json!({}),
                        },
                    ));
                }
            }
            r.clients.push(Client {
                id,
                client_id: client_id.to_string(),
                rep,
                secret,
                public: *public,
                service_account: None,
                helper_sa: false,
                authz: None,
            });
        }
        r
    }

    pub(super) fn ensure_key(&mut self, realm: &str) {
        let r = self.realms.get_mut(realm).unwrap();
        if r.keys.is_empty() {
            r.keys.push((
                format!("{realm}-key-1"),
                RS256KeyPair::generate(2048).unwrap(),
            ));
        }
    }
}

/// A one-shot fault: after `skip` more calls, one call answers `status` (before doing anything,
/// or after doing its work when `lose`).
pub(super) struct Scheduled {
    pub(super) skip: usize,
    pub(super) status: u16,
    pub(super) lose: bool,
}

#[derive(Default)]
pub(super) struct Faults {
    pub(super) queue: std::collections::VecDeque<Scheduled>,
    pub(super) fail_all: Option<u16>,
    pub(super) delay: StdDuration,
    /// The next call with this method whose path ends so does the work and answers `status`.
    pub(super) lose_on: Option<(String, String, u16)>,
}

/// One admin or token call as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub status: u16,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) faults: Mutex<Faults>,
    pub(super) calls: Mutex<Vec<Call>>,
    pub(super) fetches: Arc<AtomicUsize>,
    pub(super) context: String,
}
