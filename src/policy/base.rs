//! Base policies as written in the service config: documents of type `base` whose principals and
//! resources may use the variable `${tenant}`, instantiated for the tenant of each decision.
//! A base policy is validated once, with the variable replaced by a sample tenant.

use serde_json::Value;

use super::action::Action;
use super::condition::Conditions;
use super::document::{Effect, PolicyDocument, PolicyKind, RawDocument, Statement};
use super::err::{KrnError, PolicyError, StatementError};
use super::krn::{Krn, is_token};

/// The one variable base policies may use.
pub const TENANT_VARIABLE: &str = "${tenant}";

/// The tenant substituted to validate a base policy.
const SAMPLE_TENANT: &str = "sample-tenant";

/// A base policy from config: a `base` document whose KRNs may hold `${tenant}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasePolicy {
    name: String,
    description: Option<String>,
    statements: Vec<BaseStatement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct BaseStatement {
    effect: Effect,
    actions: Vec<Action>,
    resources: Vec<Template>,
    principals: Vec<Template>,
    description: Option<String>,
    conditions: Conditions,
}

/// A KRN, or a KRN text with `${tenant}` in it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Template {
    Fixed(Krn),
    Variable(String),
}

impl Template {
    fn read(field: &'static str, s: &str) -> Result<Template, StatementError> {
        let krn_error = |error| StatementError::Krn { field, error };
        if !s.contains("${") {
            return Krn::parse(s).map(Template::Fixed).map_err(krn_error);
        }
        if s.replace(TENANT_VARIABLE, "").contains("${") {
            return Err(StatementError::UnknownVariable {
                field,
                value: s.to_owned(),
            });
        }
        match Krn::parse(&s.replace(TENANT_VARIABLE, SAMPLE_TENANT)) {
            Ok(_) => Ok(Template::Variable(s.to_owned())),
            Err(KrnError::Malformed { flaw, .. }) => Err(krn_error(KrnError::Malformed {
                krn: s.to_owned(),
                flaw,
            })),
            Err(e) => Err(krn_error(e)),
        }
    }

    /// The KRN for `tenant`; `None` when the tenant is not a KRN token or the result is no KRN.
    fn instantiate(&self, tenant: &str) -> Option<Krn> {
        match self {
            Template::Fixed(k) => Some(k.clone()),
            Template::Variable(s) if is_token(tenant) => {
                Krn::parse(&s.replace(TENANT_VARIABLE, tenant)).ok()
            }
            Template::Variable(_) => None,
        }
    }
}

impl BasePolicy {
    /// Reads a base policy. `type` may be left out; when present it must be `base`. Every
    /// `${...}` other than `${tenant}` is an error.
    pub fn from_json(v: &Value) -> Result<BasePolicy, PolicyError> {
        let raw = RawDocument::read(v)?;
        match raw.kind.as_deref() {
            None | Some("base") => {}
            Some("identity") => return Err(PolicyError::NotBase("identity")),
            Some("resource") => return Err(PolicyError::NotBase("resource")),
            Some(other) => return Err(PolicyError::UnknownKind(other.to_owned())),
        }
        let mut statements = Vec::with_capacity(raw.statements.len());
        for (index, st) in raw.statements.iter().enumerate() {
            let at = |error| PolicyError::Statement { index, error };
            statements.push(BaseStatement {
                effect: st.effect,
                actions: st
                    .actions
                    .iter()
                    .map(|a| Action::parse(a).map_err(|error| at(StatementError::Action { error })))
                    .collect::<Result<_, _>>()?,
                resources: st
                    .resources
                    .iter()
                    .map(|r| Template::read("resource", r).map_err(at))
                    .collect::<Result<_, _>>()?,
                principals: st
                    .principals
                    .iter()
                    .map(|p| Template::read("principal", p).map_err(at))
                    .collect::<Result<_, _>>()?,
                description: st.description.clone(),
                conditions: match &st.conditions {
                    None => Conditions::default(),
                    Some(v) => {
                        Conditions::from_json(v).map_err(|e| at(StatementError::Condition(e)))?
                    }
                },
            });
        }
        let policy = BasePolicy {
            name: raw.name,
            description: raw.description,
            statements,
        };
        policy.instantiate(SAMPLE_TENANT).validate()?;
        Ok(policy)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when some principal or resource uses `${tenant}`.
    pub fn uses_tenant(&self) -> bool {
        self.statements.iter().any(|s| {
            s.resources
                .iter()
                .chain(&s.principals)
                .any(|t| matches!(t, Template::Variable(_)))
        })
    }

    /// The document for `tenant` (kind `base`). When `tenant` cannot stand in a KRN (not a KRN
    /// token, or too long), entries using `${tenant}` fail toward deny: dropped from allow
    /// statements, widened to `*` in deny statements.
    pub fn instantiate(&self, tenant: &str) -> PolicyDocument {
        let statements = self
            .statements
            .iter()
            .map(|s| {
                let fill = |list: &[Template]| -> Vec<Krn> {
                    list.iter()
                        .filter_map(|t| match (t.instantiate(tenant), s.effect) {
                            (Some(k), _) => Some(k),
                            (None, Effect::Allow) => None,
                            (None, Effect::Deny) => Krn::parse("*").ok(),
                        })
                        .collect()
                };
                Statement {
                    effect: s.effect,
                    actions: s.actions.clone(),
                    resources: fill(&s.resources),
                    principals: fill(&s.principals),
                    description: s.description.clone(),
                    templates: Vec::new(),
                    conditions: s.conditions.clone(),
                }
            })
            .collect();
        PolicyDocument {
            name: self.name.clone(),
            kind: PolicyKind::Base,
            description: self.description.clone(),
            statements,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shipped() -> Value {
        json!({
            "name": "tenant-admin",
            "statements": [{
                "effect": "allow",
                "actions": ["iam:*"],
                "resources": ["krn:iam:${tenant}:*"],
                "principals": ["krn:iam:${tenant}::role/tenant-admin"]
            }]
        })
    }

    #[test]
    fn instantiates_the_shipped_policy() {
        let b = BasePolicy::from_json(&shipped()).unwrap();
        assert_eq!(b.name(), "tenant-admin");
        assert!(b.uses_tenant());
        let doc = b.instantiate("acme");
        assert_eq!(doc.kind, PolicyKind::Base);
        assert_eq!(doc.name, "tenant-admin");
        assert_eq!(doc.statements[0].resources[0].as_str(), "krn:iam:acme:*");
        assert_eq!(
            doc.statements[0].principals[0].as_str(),
            "krn:iam:acme::role/tenant-admin"
        );
        assert!(doc.validate().is_ok());
    }

    #[test]
    fn fixed_policies_need_no_variable() {
        let b = BasePolicy::from_json(&json!({
            "name": "all-read", "type": "base",
            "statements": [{"effect": "allow", "actions": ["iam:user:read"], "resources": ["*"], "principals": ["krn:iam:kaa::role/auditor"]}]
        }))
        .unwrap();
        assert!(!b.uses_tenant());
        assert_eq!(
            b.instantiate("t1").statements[0].principals[0].as_str(),
            "krn:iam:kaa::role/auditor"
        );
    }

    #[test]
    fn errors() {
        let e = |v: Value| BasePolicy::from_json(&v).unwrap_err().to_string();
        let mut v = shipped();
        v["statements"][0]["resources"] = json!(["krn:iam:${tenantID}:*"]);
        assert_eq!(
            e(v),
            "statement 0: resource `krn:iam:${tenantID}:*`: unknown variable, only `${tenant}` is allowed"
        );
        let mut v = shipped();
        v["statements"][0]["principals"] = json!(["krn:iam:${tenant}::role/${x"]);
        assert_eq!(
            e(v),
            "statement 0: principal `krn:iam:${tenant}::role/${x`: unknown variable, only `${tenant}` is allowed"
        );
        let mut v = shipped();
        v["statements"][0]["resources"] = json!(["krn:iam:${tenant}"]);
        assert_eq!(
            e(v),
            "statement 0: resource `krn:iam:${tenant}`: malformed KRN: too few tokens in a non-wildcard KRN"
        );
        let mut v = shipped();
        v["statements"][0]["principals"] = json!([]);
        assert_eq!(
            e(v),
            "statement 0: `principals` is required in a base policy"
        );
        let mut v = shipped();
        v["type"] = json!("identity");
        assert_eq!(e(v), "a base policy must have type `base`, not `identity`");
        let mut v = shipped();
        v["type"] = json!("other");
        assert!(e(v).starts_with("unknown policy type `other`"));
        let mut v = shipped();
        v["statements"][0]["actions"] = json!(["${tenant}:read"]);
        assert!(e(v).starts_with("statement 0: action `${tenant}:read`"));
        let mut v = shipped();
        v["name"] = json!("${tenant}");
        assert!(e(v).starts_with("invalid policy name"));
    }

    #[test]
    fn odd_tenants_fail_toward_deny() {
        let b = BasePolicy::from_json(&json!({
            "name": "mixed",
            "statements": [
                {"effect": "allow", "actions": ["iam:*"], "resources": ["krn:iam:${tenant}:*", "krn:iam:kaa::user/x"], "principals": ["*"]},
                {"effect": "deny", "actions": ["iam:user:delete"], "resources": ["krn:iam:kaa::user/${tenant}"], "principals": ["*"]}
            ]
        }))
        .unwrap();
        // `a/b` would move the variable into the path.
        for tenant in ["a/b", "", "a:b", "x*"] {
            let doc = b.instantiate(tenant);
            assert_eq!(doc.statements[0].resources.len(), 1, "{tenant}");
            assert_eq!(
                doc.statements[0].resources[0].as_str(),
                "krn:iam:kaa::user/x"
            );
            assert_eq!(doc.statements[1].resources[0].as_str(), "*");
        }
        let long = "t".repeat(2000);
        let doc = b.instantiate(&long);
        assert_eq!(doc.statements[0].resources.len(), 1);
    }
}
