//! The catalogue: templates, scopes, roles, default resources, their versions and mappings,
//! package types, subscriptions and IDPs. Each kind is described once (path, scope name, id,
//! fields, references); one generic set of operations serves them all. Versions a tenant uses
//! cannot be deleted; mappings must name existing entries.

use serde_json::{Map, Value};

use super::err::{TmError, storage};
use super::service::{TEMPLATE_VERSIONS, Tm, valid_tenant_id};
use crate::clock::now_ms;
use crate::storage::{
    CatalogRecord, CatalogStore, EntryEffect, EntryWrite, NewTask, StorageError, TenantFilter,
    TenantStore,
};

/// How the id of an entry is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRule {
    /// A positive integer field `version`.
    Version,
    /// A string field `name`.
    Name,
    /// `a:b` from two fields.
    Pair(&'static str, &'static str),
    /// `<tenant_id>/<field>` for per-tenant entries.
    Tenant(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub enum FieldType {
    Str,
    Int,
    Bool,
    Object,
}

#[derive(Debug)]
pub struct Kind {
    /// Catalogue kind (also the scope noun: `kaa:tenant:<kind>:read`).
    pub kind: &'static str,
    /// Collection path under `/api/v1`.
    pub path: &'static str,
    pub id: IdRule,
    /// (field, type, required)
    pub fields: &'static [(&'static str, FieldType, bool)],
    /// (field, kind it names)
    pub refs: &'static [(&'static str, &'static str)],
}

use FieldType::*;

pub const KINDS: &[Kind] = &[
    Kind {
        kind: "realm-template",
        path: "realm-templates",
        id: IdRule::Version,
        fields: &[
            ("version", Int, true),
            ("template", Object, true),
            ("description", Str, false),
        ],
        refs: &[],
    },
    Kind {
        kind: "realm-backend-client-template",
        path: "realm-backend-client-templates",
        id: IdRule::Version,
        fields: &[
            ("version", Int, true),
            ("template", Object, true),
            ("description", Str, false),
        ],
        refs: &[],
    },
    Kind {
        kind: "realm-frontend-client-template",
        path: "realm-frontend-client-templates",
        id: IdRule::Version,
        fields: &[
            ("version", Int, true),
            ("template", Object, true),
            ("description", Str, false),
        ],
        refs: &[],
    },
    Kind {
        kind: "scope",
        path: "scopes",
        id: IdRule::Name,
        fields: &[("name", Str, true), ("description", Str, false)],
        refs: &[],
    },
    Kind {
        kind: "scope-version",
        path: "scope-versions",
        id: IdRule::Version,
        fields: &[("version", Int, true), ("description", Str, false)],
        refs: &[],
    },
    Kind {
        kind: "scope-version-mapping",
        path: "scope-version-mappings",
        id: IdRule::Pair("version", "scope_id"),
        fields: &[("version", Int, true), ("scope_id", Str, true)],
        refs: &[("version", "scope-version"), ("scope_id", "scope")],
    },
    Kind {
        kind: "role",
        path: "roles",
        id: IdRule::Name,
        fields: &[
            ("name", Str, true),
            ("description", Str, false),
            ("template", Object, false),
        ],
        refs: &[],
    },
    Kind {
        kind: "role-version",
        path: "role-versions",
        id: IdRule::Version,
        fields: &[("version", Int, true), ("description", Str, false)],
        refs: &[],
    },
    Kind {
        kind: "role-scope-mapping",
        path: "role-scope-mappings",
        id: IdRule::Pair("role_id", "scope_id"),
        fields: &[("role_id", Str, true), ("scope_id", Str, true)],
        refs: &[("role_id", "role"), ("scope_id", "scope")],
    },
    Kind {
        kind: "role-version-mapping",
        path: "role-version-mappings",
        id: IdRule::Pair("version", "role_id"),
        fields: &[("version", Int, true), ("role_id", Str, true)],
        refs: &[("version", "role-version"), ("role_id", "role")],
    },
    Kind {
        kind: "default-resource",
        path: "default-resources",
        id: IdRule::Name,
        fields: &[
            ("name", Str, true),
            ("type", Str, true),
            ("description", Str, false),
            ("template", Object, false),
        ],
        refs: &[],
    },
    Kind {
        kind: "default-resource-version",
        path: "default-resource-versions",
        id: IdRule::Version,
        fields: &[("version", Int, true), ("description", Str, false)],
        refs: &[],
    },
    Kind {
        kind: "default-resource-scope-mapping",
        path: "default-resource-scope-mappings",
        id: IdRule::Pair("resource_id", "scope_id"),
        fields: &[("resource_id", Str, true), ("scope_id", Str, true)],
        refs: &[("resource_id", "default-resource"), ("scope_id", "scope")],
    },
    Kind {
        kind: "default-resource-version-mapping",
        path: "default-resource-version-mappings",
        id: IdRule::Pair("version", "resource_id"),
        fields: &[("version", Int, true), ("resource_id", Str, true)],
        refs: &[
            ("version", "default-resource-version"),
            ("resource_id", "default-resource"),
        ],
    },
    Kind {
        kind: "package-type",
        path: "package-types",
        id: IdRule::Name,
        fields: &[
            ("name", Str, true),
            ("description", Str, false),
            ("limits", Object, false),
        ],
        refs: &[],
    },
    Kind {
        kind: "tenant-subscription",
        path: "tenant-subscriptions",
        id: IdRule::Tenant("package_type_id"),
        fields: &[
            ("tenant_id", Str, true),
            ("package_type_id", Str, true),
            ("subscription_type", Str, false),
            ("start_date", Str, false),
            ("end_date", Str, false),
        ],
        refs: &[("package_type_id", "package-type")],
    },
    Kind {
        kind: "idp",
        path: "idps",
        id: IdRule::Tenant("alias"),
        fields: &[
            ("tenant_id", Str, true),
            ("alias", Str, true),
            ("provider_id", Str, true),
            ("config", Object, false),
            ("enabled", Bool, false),
        ],
        refs: &[],
    },
];

pub fn kind_by_path(path: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.path == path)
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_i64().map(|n| n.to_string()),
        _ => None,
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

impl Kind {
    /// Validate a body and give its id.
    fn check(&self, body: &Value) -> Result<(String, Map<String, Value>), TmError> {
        let Value::Object(m) = body else {
            return Err(TmError::invalid("the body must be a JSON object"));
        };
        if let Some(k) = m
            .keys()
            .find(|k| !self.fields.iter().any(|(f, _, _)| f == k))
        {
            return Err(TmError::field(k, "unknown field"));
        }
        for (f, ty, required) in self.fields {
            match (m.get(*f), ty) {
                (None | Some(Value::Null), _) if *required => {
                    return Err(TmError::field(f, "is required"));
                }
                (None | Some(Value::Null), _) => {}
                (Some(Value::String(s)), Str) if s.len() <= 4096 => {}
                (Some(Value::Number(n)), Int) if n.as_i64().is_some_and(|n| n >= 1) => {}
                (Some(Value::Bool(_)), Bool) => {}
                (Some(Value::Object(o)), Object)
                    if Value::Object(o.clone()).to_string().len() <= 256 * 1024 => {}
                (Some(_), t) => {
                    let what = match t {
                        Str => "a string (at most 4096 bytes)",
                        Int => "a positive integer",
                        Bool => "true or false",
                        Object => "a JSON object (at most 256 KiB)",
                    };
                    return Err(TmError::field(f, format!("must be {what}")));
                }
            }
        }
        let get = |f: &str| m.get(f).and_then(id_text).unwrap_or_default();
        let id = match self.id {
            IdRule::Version => get("version"),
            IdRule::Name => {
                let n = get("name");
                if !valid_name(&n) {
                    return Err(TmError::field(
                        "name",
                        "must be letters, digits and - _ . : @ (1 to 128)",
                    ));
                }
                n
            }
            IdRule::Pair(a, b) => format!("{}:{}", get(a), get(b)),
            IdRule::Tenant(f) => {
                let t = get("tenant_id");
                if !valid_tenant_id(&t) {
                    return Err(TmError::field("tenant_id", "must name a tenant"));
                }
                let v = get(f);
                if !valid_name(&v) {
                    return Err(TmError::field(
                        f,
                        "must be letters, digits and - _ . : @ (1 to 128)",
                    ));
                }
                format!("{t}/{v}")
            }
        };
        if self.kind == "tenant-subscription" {
            super::limits::check_subscription(m)?;
        }
        Ok((id, m.clone()))
    }
}

impl Tm {
    fn check_refs(&self, kind: &Kind, m: &Map<String, Value>) -> Result<(), TmError> {
        for (field, target) in kind.refs {
            if let Some(v) = m.get(*field).and_then(id_text)
                && self.db.get_entry(target, &v).is_err()
            {
                return Err(TmError::field(field, format!("there is no {target} `{v}`")));
            }
        }
        if matches!(kind.id, IdRule::Tenant(_))
            && let Some(t) = m.get("tenant_id").and_then(id_text)
        {
            self.db
                .get_tenant(&t)
                .map_err(|e| storage(e, "tenant", &t))?;
        }
        Ok(())
    }

    pub fn catalog_list(&self, kind: &Kind, tenant: Option<&str>) -> Result<Vec<Value>, TmError> {
        Ok(self
            .db
            .list_entries(kind.kind)?
            .iter()
            .filter(|e| tenant.is_none_or(|t| e.id.starts_with(&format!("{t}/"))))
            .filter_map(|e| view(e).ok())
            .collect())
    }

    pub fn catalog_get(&self, kind: &Kind, id: &str) -> Result<Value, TmError> {
        let e = self
            .db
            .get_entry(kind.kind, id)
            .map_err(|e| storage(e, kind.kind, id))?;
        view(&e)
    }

    pub fn catalog_create(&self, kind: &Kind, body: &Value) -> Result<Value, TmError> {
        let (id, m) = kind.check(body)?;
        self.check_refs(kind, &m)?;
        let now = now_ms();
        let e = self.write(
            kind,
            &id,
            EntryWrite::Insert(&CatalogRecord {
                kind: kind.kind.into(),
                id: id.clone(),
                body: Value::Object(m).to_string(),
                created_ms: now,
                updated_ms: now,
            }),
        )?;
        view(&e)
    }

    /// A catalogue write with what it does to tenants, in one transaction: an IDP brings an
    /// `AVAILABLE` tenant through `UPDATING` (its realm follows; the `updated` event comes
    /// when the realm is done), a subscription sends its tenant's `updated` event, a package
    /// type's change that of every tenant subscribed to it. The entry as written.
    fn write(&self, kind: &Kind, id: &str, w: EntryWrite) -> Result<CatalogRecord, TmError> {
        let task: NewTask = self.task(super::service::TASK_UPDATE);
        let tenant = id.split_once('/').map(|(t, _)| t);
        let effect = match (kind.kind, tenant, w) {
            ("idp", Some(tenant), _) => EntryEffect::Resync {
                tenant,
                task: &task,
            },
            ("tenant-subscription", Some(tenant), EntryWrite::Delete { .. }) => {
                EntryEffect::Unsubscribe(tenant)
            }
            (
                "tenant-subscription",
                Some(tenant),
                EntryWrite::Insert(e) | EntryWrite::Update(e),
            ) => {
                let body = serde_json::from_str(&e.body).unwrap_or_default();
                let s = super::limits::Subscription::from_body(id, &body);
                let now = now_ms();
                EntryEffect::Subscribe {
                    tenant,
                    id,
                    phase: s.phase(now),
                    next_ms: s.next_change(now),
                }
            }
            ("package-type", _, EntryWrite::Update(_) | EntryWrite::Delete { .. }) => {
                EntryEffect::NotifySubscribers(id)
            }
            _ => EntryEffect::None,
        };
        let events = |t: &str| self.updated_event(t);
        let written = self
            .db
            .write_entry(w, effect, &events)
            .map_err(|e| match e {
                // A tenant's second subscription: the message names the first.
                StorageError::Conflict(m) if m.starts_with("tenant `") => TmError::Conflict(m),
                other => storage(other, kind.kind, id),
            })?;
        match (written, w) {
            (Some(e), _) => Ok(e),
            (None, EntryWrite::Delete { kind, id }) => Ok(CatalogRecord {
                kind: kind.into(),
                id: id.into(),
                body: "{}".into(),
                created_ms: 0,
                updated_ms: 0,
            }),
            (None, _) => Err(TmError::Internal(format!(
                "{} `{id}` was not written",
                kind.kind
            ))),
        }
    }

    /// Replace an entry; the fields that form its id cannot change.
    pub fn catalog_update(&self, kind: &Kind, id: &str, body: &Value) -> Result<Value, TmError> {
        let cur = self
            .db
            .get_entry(kind.kind, id)
            .map_err(|e| storage(e, kind.kind, id))?;
        let (new_id, m) = kind.check(body)?;
        if new_id != id {
            return Err(TmError::invalid(format!(
                "the fields that identify {} `{id}` cannot change",
                kind.kind
            )));
        }
        self.check_refs(kind, &m)?;
        let e = self.write(
            kind,
            id,
            EntryWrite::Update(&CatalogRecord {
                body: Value::Object(m).to_string(),
                updated_ms: now_ms(),
                ..cur
            }),
        )?;
        view(&e)
    }

    pub fn catalog_delete(&self, kind: &Kind, id: &str) -> Result<(), TmError> {
        self.db
            .get_entry(kind.kind, id)
            .map_err(|e| storage(e, kind.kind, id))?;
        // A version some tenant is bound to stays.
        if let Some((field, _)) = TEMPLATE_VERSIONS.iter().find(|(_, k)| *k == kind.kind) {
            let (tenants, _) = self.db.list_tenants(&TenantFilter::default(), 0, None)?;
            if let Some(t) = tenants.iter().find(|t| {
                let v = super::service::version_field(t, field);
                v.to_string() == id
            }) {
                return Err(TmError::Conflict(format!(
                    "{} {id} is used by tenant `{}`",
                    kind.kind, t.id
                )));
            }
        }
        // An entry a mapping still names stays.
        for other in KINDS {
            for (field, target) in other.refs {
                if *target == kind.kind {
                    let used = self.db.list_entries(other.kind)?.iter().any(|e| {
                        serde_json::from_str::<Value>(&e.body)
                            .ok()
                            .and_then(|b| b.get(*field).and_then(id_text))
                            .as_deref()
                            == Some(id)
                    });
                    if used {
                        return Err(TmError::Conflict(format!(
                            "{} `{id}` is named by a {}",
                            kind.kind, other.kind
                        )));
                    }
                }
            }
        }
        self.write(
            kind,
            id,
            EntryWrite::Delete {
                kind: kind.kind,
                id,
            },
        )?;
        Ok(())
    }
}

fn view(e: &CatalogRecord) -> Result<Value, TmError> {
    let mut v: Value =
        serde_json::from_str(&e.body).map_err(|err| TmError::Internal(err.to_string()))?;
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), Value::from(e.id.clone()));
        m.insert(
            "created".into(),
            Value::from(crate::clock::rfc3339_ms(e.created_ms)),
        );
        m.insert(
            "updated".into(),
            Value::from(crate::clock::rfc3339_ms(e.updated_ms)),
        );
    }
    Ok(v)
}
