//! Errors of the policy engine: one enum per concern (KRNs, actions, policy documents, the
//! index). Messages are lowercase, without a final period, and quote user input in backticks;
//! long input is shortened so that a message stays readable.

use std::fmt;

use thiserror::Error;

/// Longest piece of user input quoted in a message, in characters.
const SHOWN_MAX: usize = 96;

/// User input as quoted in a message: shortened with `…` past [`SHOWN_MAX`] characters.
pub(crate) fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_MAX) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

/// A KRN that does not follow the grammar, or an id that does not decode to one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KrnError {
    /// The text is not a KRN. Wildcard faults read "malformed wildcard KRN".
    #[error("{} `{}`: {flaw}", if .flaw.is_wildcard() { "malformed wildcard KRN" } else { "malformed KRN" }, shown(.krn))]
    Malformed { krn: String, flaw: KrnFlaw },
    /// The text is not a base64 id of a KRN.
    #[error("invalid KRN id `{}`: {flaw}", shown(.id))]
    InvalidId { id: String, flaw: IdFlaw },
}

impl KrnError {
    /// The text that was rejected.
    pub fn input(&self) -> &str {
        match self {
            KrnError::Malformed { krn, .. } => krn,
            KrnError::InvalidId { id, .. } => id,
        }
    }
}

/// What is wrong with a KRN (spec §1.1, with the Go library's wording).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KrnFlaw {
    EmptyPrefix,
    InvalidPrefix,
    LastTokenEmpty,
    TooFewTokens,
    TooManyTokens,
    TooLong { max: usize },
    InvalidService,
    InvalidTenant,
    InvalidPool { index: usize },
    InvalidResourceType,
    InvalidResourcePath { index: usize },
    InvalidResourceId,
    MisplacedAsterisk { index: usize },
    OnlyOneAsterisk,
    WildcardInPath,
    NotEmptyAfterWildcard { segment: &'static str },
}

impl KrnFlaw {
    /// Faults reported as "malformed wildcard KRN".
    pub fn is_wildcard(&self) -> bool {
        matches!(
            self,
            KrnFlaw::MisplacedAsterisk { .. }
                | KrnFlaw::OnlyOneAsterisk
                | KrnFlaw::WildcardInPath
                | KrnFlaw::NotEmptyAfterWildcard { .. }
        )
    }
}

impl fmt::Display for KrnFlaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KrnFlaw::EmptyPrefix => f.write_str("empty prefix token"),
            KrnFlaw::InvalidPrefix => f.write_str("invalid prefix token, expected `krn`"),
            KrnFlaw::LastTokenEmpty => f.write_str("last token is empty"),
            KrnFlaw::TooFewTokens => f.write_str("too few tokens in a non-wildcard KRN"),
            KrnFlaw::TooManyTokens => f.write_str("too many tokens"),
            KrnFlaw::TooLong { max } => write!(f, "longer than {max} bytes"),
            KrnFlaw::InvalidService => f.write_str("invalid service token"),
            KrnFlaw::InvalidTenant => f.write_str("invalid tenant ID token"),
            KrnFlaw::InvalidPool { index } => write!(f, "invalid pool token {index}"),
            KrnFlaw::InvalidResourceType => f.write_str("invalid resource type token"),
            KrnFlaw::InvalidResourcePath { index } => {
                write!(f, "invalid resource path token {index}")
            }
            KrnFlaw::InvalidResourceId => f.write_str("invalid resource ID token"),
            KrnFlaw::MisplacedAsterisk { index } => {
                write!(f, "misplaced asterisk at index {index}")
            }
            KrnFlaw::OnlyOneAsterisk => f.write_str("only one asterisk allowed"),
            KrnFlaw::WildcardInPath => f.write_str("wildcards not permitted in the resource path"),
            KrnFlaw::NotEmptyAfterWildcard { segment } => write!(f, "{segment} is not empty"),
        }
    }
}

/// Why an id is not the base64 of a KRN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdFlaw {
    /// A `%` not followed by two hexadecimal digits.
    BadPercent,
    NotBase64,
    NotUtf8,
    /// The decoded text is not a KRN.
    NotKrn(Box<KrnError>),
}

impl fmt::Display for IdFlaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdFlaw::BadPercent => f.write_str("bad percent-encoding"),
            IdFlaw::NotBase64 => f.write_str("not base64"),
            IdFlaw::NotUtf8 => f.write_str("decoded bytes are not UTF-8"),
            IdFlaw::NotKrn(e) => write!(f, "{e}"),
        }
    }
}

/// An action that does not follow the grammar (spec §1.3, DESIGN §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed action `{}`: {flaw}", shown(.action))]
pub struct ActionError {
    pub action: String,
    pub flaw: ActionFlaw,
}

/// What is wrong with an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionFlaw {
    Empty,
    TooLong { max: usize },
    TooFewTokens,
    TooManyTokens,
    EmptyToken { index: usize },
    InvalidToken { index: usize, token: String },
    PartialWildcard { index: usize },
}

impl fmt::Display for ActionFlaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionFlaw::Empty => f.write_str("empty action"),
            ActionFlaw::TooLong { max } => write!(f, "longer than {max} bytes"),
            ActionFlaw::TooFewTokens => f.write_str("too few tokens, expected 2 to 4"),
            ActionFlaw::TooManyTokens => f.write_str("too many tokens, expected 2 to 4"),
            ActionFlaw::EmptyToken { index } => write!(f, "token {index} is empty"),
            ActionFlaw::InvalidToken { index, token } => write!(
                f,
                "invalid token {index} `{}`: only lowercase `a-z` and `-` are allowed",
                shown(token)
            ),
            ActionFlaw::PartialWildcard { index } => write!(
                f,
                "misplaced asterisk at index {index}: a wildcard must be the whole action or the whole last token"
            ),
        }
    }
}

/// A policy document (or base policy) that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("a policy document must be a JSON object")]
    NotObject,
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown field `{}`", shown(.0))]
    UnknownField(String),
    #[error("invalid policy name `{}`: {reason}", shown(.name))]
    InvalidName { name: String, reason: &'static str },
    #[error("unknown policy type `{}`, expected `identity`, `resource` or `base`", shown(.0))]
    UnknownKind(String),
    #[error("a base policy must have type `base`, not `{0}`")]
    NotBase(&'static str),
    #[error("`description` is longer than {max} characters")]
    DescriptionTooLong { max: usize },
    #[error("too many statements: {count}, at most {max}")]
    TooManyStatements { count: usize, max: usize },
    #[error("statement {index}: {error}")]
    Statement { index: usize, error: StatementError },
}

/// What is wrong with one statement of a policy document.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StatementError {
    #[error("a statement must be a JSON object")]
    NotObject,
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown field `{}`", shown(.0))]
    UnknownField(String),
    #[error("unknown effect `{}`, expected `allow` or `deny`", shown(.0))]
    UnknownEffect(String),
    #[error("`{0}` is empty")]
    Empty(&'static str),
    #[error("`{field}` has {count} entries, at most {max}")]
    TooManyEntries {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error("`principals` is required in a {0} policy")]
    MissingPrincipals(&'static str),
    #[error("`description` is longer than {max} characters")]
    DescriptionTooLong { max: usize },
    #[error("action `{}`: {}", shown(&.error.action), .error.flaw)]
    Action { error: ActionError },
    #[error("{field} `{}`: {}", shown(.error.input()), krn_reason(.error))]
    Krn {
        field: &'static str,
        error: KrnError,
    },
    #[error("{field} `{}`: unknown variable, only `${{tenant}}` is allowed", shown(.value))]
    UnknownVariable { field: &'static str, value: String },
    #[error("resource `{}`: {reason}", shown(.value))]
    ResourceVariable { value: String, reason: String },
    #[error("conditions: {0}")]
    Condition(String),
    #[error("resource `{}`: a resource policy names only its one concrete resource", shown(.0))]
    WildcardBoundResource(String),
    #[error("resource `{}`: a resource policy names only its one resource, `{}`", shown(.resource), shown(.bound))]
    OtherResource { resource: String, bound: String },
}

/// The reason part of a KRN error, as quoted after the value in a statement error.
fn krn_reason(e: &KrnError) -> String {
    match e {
        KrnError::Malformed { flaw, .. } if flaw.is_wildcard() => {
            format!("malformed wildcard KRN: {flaw}")
        }
        KrnError::Malformed { flaw, .. } => format!("malformed KRN: {flaw}"),
        KrnError::InvalidId { flaw, .. } => format!("invalid KRN id: {flaw}"),
    }
}

/// A policy the index refuses to store.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IndexError {
    #[error("policy id is empty")]
    EmptyId,
    #[error("policy id `{}` is longer than {max} bytes", shown(.id))]
    IdTooLong { id: String, max: usize },
    #[error("policy `{}`: {error}", shown(.id))]
    Invalid { id: String, error: PolicyError },
    #[error("policy `{}`: a resource policy needs its bound resource", shown(.0))]
    Unbound(String),
    #[error("policy `{}`: bound resource `{}` is a wildcard", shown(.id), shown(.resource))]
    WildcardBound { id: String, resource: String },
    #[error("policy `{}`: statement {statement}: resource `{}` is not the bound resource `{}`", shown(.id), shown(.resource), shown(.bound))]
    OtherResource {
        id: String,
        statement: usize,
        resource: String,
        bound: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_shortens_long_input() {
        assert_eq!(shown("abc"), "abc");
        let long = "x".repeat(200);
        let s = shown(&long);
        assert_eq!(s.chars().count(), SHOWN_MAX + 1);
        assert!(s.ends_with('…'));
        // Multi-byte characters are cut on a boundary.
        let wide = "é".repeat(200);
        assert!(shown(&wide).ends_with('…'));
    }

    #[test]
    fn messages_are_lowercase_without_final_period() {
        let errors: Vec<String> = vec![
            KrnError::Malformed {
                krn: "krn:a".into(),
                flaw: KrnFlaw::TooFewTokens,
            }
            .to_string(),
            KrnError::InvalidId {
                id: "!!".into(),
                flaw: IdFlaw::NotBase64,
            }
            .to_string(),
            ActionError {
                action: "iam".into(),
                flaw: ActionFlaw::TooFewTokens,
            }
            .to_string(),
            PolicyError::NotObject.to_string(),
            IndexError::EmptyId.to_string(),
        ];
        for e in errors {
            assert!(!e.ends_with('.'), "{e}");
            let first = e.chars().next().unwrap_or('a');
            assert!(!first.is_uppercase(), "{e}");
        }
    }

    #[test]
    fn statement_errors_name_index_and_value() {
        let e = PolicyError::Statement {
            index: 2,
            error: StatementError::Action {
                error: ActionError {
                    action: "iam:Us*".into(),
                    flaw: ActionFlaw::PartialWildcard { index: 6 },
                },
            },
        };
        assert_eq!(
            e.to_string(),
            "statement 2: action `iam:Us*`: misplaced asterisk at index 6: a wildcard must be the whole action or the whole last token"
        );
        let e = PolicyError::Statement {
            index: 0,
            error: StatementError::Krn {
                field: "resource",
                error: KrnError::Malformed {
                    krn: "krn:a".into(),
                    flaw: KrnFlaw::TooFewTokens,
                },
            },
        };
        assert_eq!(
            e.to_string(),
            "statement 0: resource `krn:a`: malformed KRN: too few tokens in a non-wildcard KRN"
        );
    }
}
