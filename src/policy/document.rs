//! Policy documents (spec §2.3): a name, a type (`identity`, `resource` or `base`) and statements
//! of effect, actions, resources and principals. Documents are read from JSON and validated once,
//! on write; errors name the statement index (from 0) and the value at fault.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use super::action::Action;
use super::condition::{Conditions, ResourceTemplate};
use super::err::{PolicyError, StatementError};
use super::krn::{Krn, is_token};

/// Most statements in one policy.
pub const MAX_STATEMENTS: usize = 1000;
/// Most entries in one list of a statement (`actions`, `resources`, `principals`).
pub const MAX_ENTRIES: usize = 1000;
/// Longest policy name, in characters (KRN token characters only).
pub const MAX_NAME_LEN: usize = 128;
/// Longest description, of a policy or a statement, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 4096;

/// Statement effect. JSON `"allow"` / `"deny"`; input also accepts `"Allow"` / `"Deny"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Effect {
    #[serde(rename = "allow", alias = "Allow")]
    Allow,
    #[serde(rename = "deny", alias = "Deny")]
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }

    fn parse(s: &str) -> Option<Effect> {
        match s {
            "allow" | "Allow" => Some(Effect::Allow),
            "deny" | "Deny" => Some(Effect::Deny),
            _ => None,
        }
    }
}

/// Policy type. JSON `"identity"`, `"resource"`, `"base"` (key `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    Identity,
    Resource,
    Base,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Identity => "identity",
            PolicyKind::Resource => "resource",
            PolicyKind::Base => "base",
        }
    }

    fn parse(s: &str) -> Option<PolicyKind> {
        match s {
            "identity" => Some(PolicyKind::Identity),
            "resource" => Some(PolicyKind::Resource),
            "base" => Some(PolicyKind::Base),
            _ => None,
        }
    }
}

/// One statement of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub effect: Effect,
    /// Non-empty.
    pub actions: Vec<Action>,
    /// Non-empty for identity and base policies; for resource policies empty or only the bound
    /// resource.
    pub resources: Vec<Krn>,
    /// Optional for identity policies; required (non-empty) for resource and base policies.
    pub principals: Vec<Krn>,
    pub description: Option<String>,
    /// Resources with policy variables (`krn:fs:t1::folder/${iam:username}/*`), written after
    /// `resources` in JSON; identity and base policies only.
    pub templates: Vec<ResourceTemplate>,
    /// Every entry must hold for the statement to apply; empty: no conditions.
    pub conditions: Conditions,
}

impl Statement {
    /// A statement without conditions or variables.
    pub fn new(
        effect: Effect,
        actions: Vec<Action>,
        resources: Vec<Krn>,
        principals: Vec<Krn>,
    ) -> Statement {
        Statement {
            effect,
            actions,
            resources,
            principals,
            description: None,
            templates: Vec::new(),
            conditions: Conditions::default(),
        }
    }

    /// True when deciding it takes more than the index's keys: conditions or variables.
    pub fn is_conditional(&self) -> bool {
        !self.conditions.is_empty() || !self.templates.is_empty()
    }
}

/// A policy document as written through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocument {
    pub name: String,
    /// JSON key `type`.
    pub kind: PolicyKind,
    pub description: Option<String>,
    pub statements: Vec<Statement>,
}

impl PolicyDocument {
    /// Reads and validates a document. `type` defaults to `identity`; top-level keys other than
    /// `name`, `type`, `description` and `statements` are ignored (API bodies carry more), while an
    /// unknown statement key is an error (a `condition` ignored would grant too much).
    pub fn from_json(v: &Value) -> Result<PolicyDocument, PolicyError> {
        let raw = RawDocument::read(v)?;
        let kind = match &raw.kind {
            None => PolicyKind::Identity,
            Some(s) => PolicyKind::parse(s).ok_or_else(|| PolicyError::UnknownKind(s.clone()))?,
        };
        let mut statements = Vec::with_capacity(raw.statements.len());
        for (index, st) in raw.statements.iter().enumerate() {
            let at = |error| PolicyError::Statement { index, error };
            let parse_krn = |field: &'static str, s: &String| {
                Krn::parse(s).map_err(|error| at(StatementError::Krn { field, error }))
            };
            let mut resources = Vec::with_capacity(st.resources.len());
            let mut templates = Vec::new();
            for r in &st.resources {
                match ResourceTemplate::parse(r) {
                    Ok(Some(t)) => templates.push(t),
                    Ok(None) => resources.push(parse_krn("resource", r)?),
                    Err(reason) => {
                        return Err(at(StatementError::ResourceVariable {
                            value: r.clone(),
                            reason,
                        }));
                    }
                }
            }
            let conditions = match &st.conditions {
                None => Conditions::default(),
                Some(v) => {
                    Conditions::from_json(v).map_err(|e| at(StatementError::Condition(e)))?
                }
            };
            statements.push(Statement {
                effect: st.effect,
                actions: st
                    .actions
                    .iter()
                    .map(|a| Action::parse(a).map_err(|error| at(StatementError::Action { error })))
                    .collect::<Result<_, _>>()?,
                resources,
                principals: st
                    .principals
                    .iter()
                    .map(|p| parse_krn("principal", p))
                    .collect::<Result<_, _>>()?,
                description: st.description.clone(),
                templates,
                conditions,
            });
        }
        let doc = PolicyDocument {
            name: raw.name,
            kind,
            description: raw.description,
            statements,
        };
        doc.validate()?;
        Ok(doc)
    }

    /// The document as JSON, in the shape `from_json` reads.
    pub fn to_json(&self) -> Value {
        let statements: Vec<Value> = self
            .statements
            .iter()
            .map(|s| {
                let mut m = Map::new();
                m.insert("effect".into(), json!(s.effect.as_str()));
                m.insert("actions".into(), json!(s.actions));
                let mut resources: Vec<Value> = s.resources.iter().map(|r| json!(r)).collect();
                resources.extend(s.templates.iter().map(|t| json!(t.as_str())));
                m.insert("resources".into(), Value::Array(resources));
                m.insert("principals".into(), json!(s.principals));
                if let Some(d) = &s.description {
                    m.insert("description".into(), json!(d));
                }
                if !s.conditions.is_empty() {
                    m.insert("conditions".into(), s.conditions.to_json());
                }
                Value::Object(m)
            })
            .collect();
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("type".into(), json!(self.kind.as_str()));
        if let Some(d) = &self.description {
            m.insert("description".into(), json!(d));
        }
        m.insert("statements".into(), Value::Array(statements));
        Value::Object(m)
    }

    /// The rules `from_json` applies after parsing, for documents built in code: name, limits,
    /// non-empty lists, principals where required, and a resource policy naming one concrete
    /// resource.
    pub fn validate(&self) -> Result<(), PolicyError> {
        check_name(&self.name)?;
        check_description(self.description.as_deref()).map_err(|_| {
            PolicyError::DescriptionTooLong {
                max: MAX_DESCRIPTION_LEN,
            }
        })?;
        if self.statements.len() > MAX_STATEMENTS {
            return Err(PolicyError::TooManyStatements {
                count: self.statements.len(),
                max: MAX_STATEMENTS,
            });
        }
        let mut bound: Option<&Krn> = None;
        for (index, st) in self.statements.iter().enumerate() {
            check_statement(self.kind, st, &mut bound)
                .map_err(|error| PolicyError::Statement { index, error })?;
        }
        Ok(())
    }
}

fn check_statement<'a>(
    kind: PolicyKind,
    st: &'a Statement,
    bound: &mut Option<&'a Krn>,
) -> Result<(), StatementError> {
    for (field, len) in [
        ("actions", st.actions.len()),
        ("resources", st.resources.len() + st.templates.len()),
        ("principals", st.principals.len()),
    ] {
        if len > MAX_ENTRIES {
            return Err(StatementError::TooManyEntries {
                field,
                count: len,
                max: MAX_ENTRIES,
            });
        }
    }
    check_description(st.description.as_deref())?;
    if st.actions.is_empty() {
        return Err(StatementError::Empty("actions"));
    }
    match kind {
        PolicyKind::Identity | PolicyKind::Base
            if st.resources.is_empty() && st.templates.is_empty() =>
        {
            return Err(StatementError::Empty("resources"));
        }
        PolicyKind::Resource | PolicyKind::Base if st.principals.is_empty() => {
            return Err(StatementError::MissingPrincipals(kind.as_str()));
        }
        _ => {}
    }
    if kind == PolicyKind::Resource {
        if let Some(t) = st.templates.first() {
            return Err(StatementError::ResourceVariable {
                value: t.as_str().to_owned(),
                reason: "a resource policy names its one concrete resource, without variables"
                    .into(),
            });
        }
        for r in &st.resources {
            if r.is_wildcard() {
                return Err(StatementError::WildcardBoundResource(r.to_string()));
            }
            match bound {
                None => *bound = Some(r),
                Some(b) if *b != r => {
                    return Err(StatementError::OtherResource {
                        resource: r.to_string(),
                        bound: b.to_string(),
                    });
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), PolicyError> {
    let bad = |reason| {
        Err(PolicyError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 128 characters");
    }
    if !is_token(name) {
        return bad("only `a-z A-Z 0-9 - _ @ . +` are allowed");
    }
    Ok(())
}

fn check_description(d: Option<&str>) -> Result<(), StatementError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_LEN => {
            Err(StatementError::DescriptionTooLong {
                max: MAX_DESCRIPTION_LEN,
            })
        }
        _ => Ok(()),
    }
}

/// A document read from JSON with its strings not yet parsed; shared with base policies, whose
/// KRNs may hold `${tenant}`.
pub(crate) struct RawDocument {
    pub name: String,
    pub kind: Option<String>,
    pub description: Option<String>,
    pub statements: Vec<RawStatement>,
}

pub(crate) struct RawStatement {
    pub effect: Effect,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub principals: Vec<String>,
    pub description: Option<String>,
    /// The conditions block as written.
    pub conditions: Option<Value>,
}

impl RawDocument {
    pub fn read(v: &Value) -> Result<RawDocument, PolicyError> {
        let Value::Object(m) = v else {
            return Err(PolicyError::NotObject);
        };
        let name = match m.get("name") {
            None | Some(Value::Null) => return Err(PolicyError::MissingField("name")),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(wrong("name", "a string")),
        };
        let kind = opt_string(m, "type").ok_or(wrong("type", "a string"))?;
        let description = opt_string(m, "description").ok_or(wrong("description", "a string"))?;
        let list = match m.get("statements") {
            None | Some(Value::Null) => return Err(PolicyError::MissingField("statements")),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(wrong("statements", "an array")),
        };
        if list.len() > MAX_STATEMENTS {
            return Err(PolicyError::TooManyStatements {
                count: list.len(),
                max: MAX_STATEMENTS,
            });
        }
        let statements = list
            .iter()
            .enumerate()
            .map(|(index, s)| {
                RawStatement::read(s).map_err(|error| PolicyError::Statement { index, error })
            })
            .collect::<Result<_, _>>()?;
        Ok(RawDocument {
            name,
            kind,
            description,
            statements,
        })
    }
}

fn wrong(field: &'static str, expected: &'static str) -> PolicyError {
    PolicyError::WrongType { field, expected }
}

/// `Some(None)` when absent or null, `None` when not a string.
fn opt_string(m: &Map<String, Value>, key: &str) -> Option<Option<String>> {
    match m.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => None,
    }
}

impl RawStatement {
    fn read(v: &Value) -> Result<RawStatement, StatementError> {
        let Value::Object(m) = v else {
            return Err(StatementError::NotObject);
        };
        if let Some(k) = m.keys().find(|k| {
            !matches!(
                k.as_str(),
                "effect" | "actions" | "resources" | "principals" | "description" | "conditions"
            )
        }) {
            return Err(StatementError::UnknownField(k.clone()));
        }
        let effect = match m.get("effect") {
            None | Some(Value::Null) => return Err(StatementError::MissingField("effect")),
            Some(Value::String(s)) => {
                Effect::parse(s).ok_or_else(|| StatementError::UnknownEffect(s.clone()))?
            }
            Some(_) => return Err(swrong("effect", "a string")),
        };
        let actions = match m.get("actions") {
            None | Some(Value::Null) => return Err(StatementError::MissingField("actions")),
            Some(v) => strings(v, "actions")?,
        };
        let resources = match m.get("resources") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => strings(v, "resources")?,
        };
        let principals = match m.get("principals") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => strings(v, "principals")?,
        };
        let description = opt_string(m, "description").ok_or(swrong("description", "a string"))?;
        let conditions = match m.get("conditions") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.clone()),
        };
        Ok(RawStatement {
            effect,
            actions,
            resources,
            principals,
            description,
            conditions,
        })
    }
}

fn swrong(field: &'static str, expected: &'static str) -> StatementError {
    StatementError::WrongType { field, expected }
}

fn strings(v: &Value, field: &'static str) -> Result<Vec<String>, StatementError> {
    let Value::Array(a) = v else {
        return Err(swrong(field, "an array of strings"));
    };
    if a.len() > MAX_ENTRIES {
        return Err(StatementError::TooManyEntries {
            field,
            count: a.len(),
            max: MAX_ENTRIES,
        });
    }
    a.iter()
        .map(|x| match x {
            Value::String(s) => Ok(s.clone()),
            _ => Err(swrong(field, "an array of strings")),
        })
        .collect()
}

impl Serialize for PolicyDocument {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PolicyDocument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PolicyDocument, D::Error> {
        let v = Value::deserialize(deserializer)?;
        PolicyDocument::from_json(&v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(v: Value) -> String {
        PolicyDocument::from_json(&v).unwrap_err().to_string()
    }

    fn identity(statements: Value) -> Value {
        json!({"name": "p", "type": "identity", "statements": statements})
    }

    #[test]
    fn reads_the_concept_page_example() {
        let v = json!({
          "name": "thermostat-X-policy",
          "type": "identity",
          "description": "Allow Alice to read thermostat data",
          "statements": [{
              "effect": "allow",
              "actions": ["endpoint:read"],
              "principals": ["krn:iam:3fdfde93-661a-47d1-abcc-68452dd320c7::user/alice"],
              "resources": ["krn:epr:3fdfde93-661a-47d1-abcc-68452dd320c7::endpoint/5766b7e9-1f16-443d-8e4a-553f70733aa7"],
              "description": "Example statement description"
          }]
        });
        let doc = PolicyDocument::from_json(&v).unwrap();
        assert_eq!(doc.name, "thermostat-X-policy");
        assert_eq!(doc.kind, PolicyKind::Identity);
        assert_eq!(doc.statements.len(), 1);
        assert_eq!(doc.statements[0].effect, Effect::Allow);
        assert_eq!(doc.statements[0].actions[0].as_str(), "endpoint:read");
        assert_eq!(PolicyDocument::from_json(&doc.to_json()).unwrap(), doc);
        assert_eq!(doc.to_json(), v);
        let via_serde: PolicyDocument = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(via_serde, doc);
        assert_eq!(serde_json::to_value(&doc).unwrap(), v);
    }

    #[test]
    fn defaults_and_capitalised_effects() {
        let doc = PolicyDocument::from_json(&json!({
            "name": "p", "id": "ignored", "statements": [
                {"effect": "Allow", "actions": ["iam:*"], "resources": ["krn:iam:kaa:*"]},
                {"effect": "Deny", "actions": ["iam:user:delete"], "resources": ["*"], "principals": null}
            ]
        }))
        .unwrap();
        assert_eq!(doc.kind, PolicyKind::Identity);
        assert_eq!(doc.statements[0].effect, Effect::Allow);
        assert_eq!(doc.statements[1].effect, Effect::Deny);
        assert!(doc.statements[1].principals.is_empty());
        let empty = PolicyDocument::from_json(&json!({"name": "p", "statements": []})).unwrap();
        assert!(empty.statements.is_empty());
        let krn_star = PolicyDocument::from_json(&identity(
            json!([{"effect": "allow", "actions": ["*"], "resources": ["krn:*"]}]),
        ))
        .unwrap();
        assert_eq!(krn_star.statements[0].resources[0].as_str(), "*");
    }

    #[test]
    fn document_errors() {
        assert_eq!(err(json!([])), "a policy document must be a JSON object");
        assert_eq!(err(json!({"statements": []})), "missing field `name`");
        assert_eq!(
            err(json!({"name": 3, "statements": []})),
            "field `name` must be a string"
        );
        assert_eq!(err(json!({"name": "p"})), "missing field `statements`");
        assert_eq!(
            err(json!({"name": "p", "statements": {}})),
            "field `statements` must be an array"
        );
        assert_eq!(
            err(json!({"name": "p", "type": 1, "statements": []})),
            "field `type` must be a string"
        );
        assert_eq!(
            err(json!({"name": "p", "type": "group", "statements": []})),
            "unknown policy type `group`, expected `identity`, `resource` or `base`"
        );
        assert_eq!(
            err(json!({"name": "p", "description": [], "statements": []})),
            "field `description` must be a string"
        );
        assert_eq!(
            err(
                json!({"name": "p", "description": "x".repeat(MAX_DESCRIPTION_LEN + 1), "statements": []})
            ),
            "`description` is longer than 4096 characters"
        );
    }

    #[test]
    fn name_rules() {
        assert_eq!(
            err(json!({"name": "", "statements": []})),
            "invalid policy name ``: empty"
        );
        assert_eq!(
            err(json!({"name": "a b", "statements": []})),
            "invalid policy name `a b`: only `a-z A-Z 0-9 - _ @ . +` are allowed"
        );
        assert_eq!(
            err(json!({"name": "a/b", "statements": []})),
            "invalid policy name `a/b`: only `a-z A-Z 0-9 - _ @ . +` are allowed"
        );
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert!(
            err(json!({"name": long, "statements": []})).ends_with("longer than 128 characters")
        );
        let ok = "n".repeat(MAX_NAME_LEN);
        assert!(PolicyDocument::from_json(&json!({"name": ok, "statements": []})).is_ok());
        assert!(
            PolicyDocument::from_json(&json!({"name": "Admin_user.read+x@y-z", "statements": []}))
                .is_ok()
        );
    }

    #[test]
    fn statement_errors() {
        let base = json!({"effect": "allow", "actions": ["iam:user:read"], "resources": ["*"]});
        let with = |key: &str, val: Value| {
            let mut s = base.clone();
            if let Value::Object(m) = &mut s {
                if val.is_null() {
                    m.remove(key);
                } else {
                    m.insert(key.into(), val);
                }
            }
            identity(json!([base.clone(), base.clone(), s]))
        };
        assert_eq!(
            err(identity(json!([1]))),
            "statement 0: a statement must be a JSON object"
        );
        assert_eq!(
            err(with("effect", Value::Null)),
            "statement 2: missing field `effect`"
        );
        assert_eq!(
            err(with("effect", json!("permit"))),
            "statement 2: unknown effect `permit`, expected `allow` or `deny`"
        );
        assert_eq!(
            err(with("effect", json!(true))),
            "statement 2: field `effect` must be a string"
        );
        assert_eq!(
            err(with("actions", Value::Null)),
            "statement 2: missing field `actions`"
        );
        assert_eq!(
            err(with("actions", json!([]))),
            "statement 2: `actions` is empty"
        );
        assert_eq!(
            err(with("actions", json!("iam:user:read"))),
            "statement 2: field `actions` must be an array of strings"
        );
        assert_eq!(
            err(with("actions", json!([1]))),
            "statement 2: field `actions` must be an array of strings"
        );
        assert_eq!(
            err(with("actions", json!(["iam:Us*"]))),
            "statement 2: action `iam:Us*`: misplaced asterisk at index 6: a wildcard must be the whole action or the whole last token"
        );
        assert_eq!(
            err(with("resources", json!([]))),
            "statement 2: `resources` is empty"
        );
        assert_eq!(
            err(with("resources", Value::Null)),
            "statement 2: `resources` is empty"
        );
        assert_eq!(
            err(with("resources", json!(["krn:a"]))),
            "statement 2: resource `krn:a`: malformed KRN: too few tokens in a non-wildcard KRN"
        );
        assert_eq!(
            err(with("principals", json!(["krn:iam:kaa::user/*/x"]))),
            "statement 2: principal `krn:iam:kaa::user/*/x`: malformed wildcard KRN: wildcards not permitted in the resource path"
        );
        assert_eq!(
            err(with("condition", json!({}))),
            "statement 2: unknown field `condition`"
        );
        assert_eq!(
            err(with("conditions", json!({"Bool": {"mfa": "yes"}}))),
            "statement 2: conditions: `Bool` on `mfa`: value `yes` is not `true` or `false`"
        );
        assert_eq!(
            err(with("resources", json!(["krn:fs:t::folder/${iam:user}/*"]))),
            "statement 2: resource `krn:fs:t::folder/${iam:user}/*`: variable `${iam:user}`: unknown key `iam:user`: the `iam:` keys are `iam:username`, `iam:path`, `iam:tenant`, `iam:groups`, `iam:metadata/<key>`"
        );
        assert_eq!(
            err(with("description", json!(1))),
            "statement 2: field `description` must be a string"
        );
        assert_eq!(
            err(with(
                "description",
                json!("d".repeat(MAX_DESCRIPTION_LEN + 1))
            )),
            "statement 2: `description` is longer than 4096 characters"
        );
    }

    #[test]
    fn limits() {
        let st = json!({"effect": "allow", "actions": ["iam:user:read"], "resources": ["*"]});
        let many = vec![st.clone(); MAX_STATEMENTS + 1];
        assert_eq!(
            err(identity(json!(many))),
            "too many statements: 1001, at most 1000"
        );
        let ok = vec![st; MAX_STATEMENTS];
        assert!(PolicyDocument::from_json(&identity(json!(ok))).is_ok());
        let actions = vec!["iam:user:read"; MAX_ENTRIES + 1];
        assert_eq!(
            err(identity(
                json!([{"effect": "allow", "actions": actions, "resources": ["*"]}])
            )),
            "statement 0: `actions` has 1001 entries, at most 1000"
        );
        let resources = vec!["*"; MAX_ENTRIES + 1];
        assert_eq!(
            err(identity(
                json!([{"effect": "allow", "actions": ["*"], "resources": resources}])
            )),
            "statement 0: `resources` has 1001 entries, at most 1000"
        );
        // The same limits hold for documents built in code.
        let mut doc = PolicyDocument::from_json(&identity(json!([
            {"effect": "allow", "actions": ["*"], "resources": ["*"]}
        ])))
        .unwrap();
        doc.statements[0].principals = vec![Krn::parse("*").unwrap(); MAX_ENTRIES + 1];
        assert_eq!(
            doc.validate().unwrap_err().to_string(),
            "statement 0: `principals` has 1001 entries, at most 1000"
        );
        doc.statements = vec![doc.statements[0].clone(); MAX_STATEMENTS + 1];
        assert_eq!(
            doc.validate().unwrap_err().to_string(),
            "too many statements: 1001, at most 1000"
        );
    }

    #[test]
    fn resource_and_base_rules() {
        let r =
            |statements: Value| json!({"name": "r", "type": "resource", "statements": statements});
        let ok = PolicyDocument::from_json(&r(json!([
            {"effect": "allow", "actions": ["endpoint:read"], "principals": ["krn:iam:t::user/a"]},
            {"effect": "deny", "actions": ["endpoint:delete"], "principals": ["*"], "resources": ["krn:epr:t::endpoint/e1"]},
            {"effect": "allow", "actions": ["endpoint:update"], "principals": ["*"], "resources": ["krn:epr:t::endpoint/e1"]}
        ])))
        .unwrap();
        assert_eq!(ok.kind, PolicyKind::Resource);
        assert_eq!(
            err(r(
                json!([{"effect": "allow", "actions": ["endpoint:read"]}])
            )),
            "statement 0: `principals` is required in a resource policy"
        );
        assert_eq!(
            err(r(json!([
                {"effect": "allow", "actions": ["endpoint:read"], "principals": ["*"], "resources": ["krn:epr:t::endpoint/e1"]},
                {"effect": "allow", "actions": ["endpoint:read"], "principals": ["*"], "resources": ["krn:epr:t::endpoint/e2"]}
            ]))),
            "statement 1: resource `krn:epr:t::endpoint/e2`: a resource policy names only its one resource, `krn:epr:t::endpoint/e1`"
        );
        assert_eq!(
            err(r(json!([
                {"effect": "allow", "actions": ["endpoint:read"], "principals": ["*"], "resources": ["krn:epr:t::endpoint/*"]}
            ]))),
            "statement 0: resource `krn:epr:t::endpoint/*`: a resource policy names only its one concrete resource"
        );
        let b = |statements: Value| json!({"name": "b", "type": "base", "statements": statements});
        assert_eq!(
            err(b(
                json!([{"effect": "allow", "actions": ["*"], "resources": ["*"]}])
            )),
            "statement 0: `principals` is required in a base policy"
        );
        assert_eq!(
            err(b(
                json!([{"effect": "allow", "actions": ["*"], "principals": ["*"]}])
            )),
            "statement 0: `resources` is empty"
        );
        assert!(
            PolicyDocument::from_json(&b(json!([
                {"effect": "allow", "actions": ["*"], "principals": ["*"], "resources": ["*"]}
            ])))
            .is_ok()
        );
    }

    #[test]
    fn identity_principals_are_optional() {
        let doc = PolicyDocument::from_json(&identity(json!([
            {"effect": "allow", "actions": ["iam:user:read"], "resources": ["krn:iam:kaa::user/*"]}
        ])))
        .unwrap();
        assert!(doc.statements[0].principals.is_empty());
    }
}
