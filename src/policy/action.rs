//! Actions (spec §1.3, DESIGN §3.2): 2 to 4 `:`-separated tokens of lowercase `a-z` and `-`,
//! e.g. `iam:user:read` or `iam:group:user:add`; wildcards are the whole `*` or a trailing `:*`.
//! Matching is by prefix for wildcard patterns and by equality otherwise; MatchingActions lists
//! every pattern an action matches.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::err::{ActionError, ActionFlaw};

/// Longest action accepted, in bytes.
pub const ACTION_MAX_LEN: usize = 256;

/// A valid action or action pattern.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Action(Box<str>);

impl Action {
    pub fn parse(s: &str) -> Result<Action, ActionError> {
        check(s)
            .map(|()| Action(s.into()))
            .map_err(|flaw| ActionError {
                action: s.to_owned(),
                flaw,
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `*` or ending in `:*`.
    pub fn is_wildcard(&self) -> bool {
        self.0.ends_with('*')
    }

    /// A pattern ending in `*` matches by prefix, any other by equality.
    pub fn matches(&self, pattern: &Action) -> bool {
        match pattern.0.strip_suffix('*') {
            Some(prefix) => self.0.starts_with(prefix),
            None => self.0 == pattern.0,
        }
    }

    /// MatchingActions: `self` (when not a wildcard), then each prefix cut after a `:` with `*`
    /// appended, then `*`. `iam:user:read` gives `[iam:user:read, iam:user:*, iam:*, *]`.
    pub fn matching_patterns(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(5);
        if !self.is_wildcard() {
            out.push(self.0.to_string());
        }
        for prefix in wildcard_prefixes(&self.0) {
            out.push(format!("{prefix}*"));
        }
        out
    }
}

/// The prefixes `X` of the patterns `X*` an action string matches, most specific first, ending
/// with the empty prefix of `*`.
pub(crate) fn wildcard_prefixes(s: &str) -> impl Iterator<Item = &str> {
    s.bytes()
        .enumerate()
        .rev()
        .filter(|&(_, c)| c == b':')
        .map(move |(i, _)| &s[..=i])
        .chain(std::iter::once(""))
}

fn check(s: &str) -> Result<(), ActionFlaw> {
    if s.is_empty() {
        return Err(ActionFlaw::Empty);
    }
    if s.len() > ACTION_MAX_LEN {
        return Err(ActionFlaw::TooLong {
            max: ACTION_MAX_LEN,
        });
    }
    if s == "*" {
        return Ok(());
    }
    let n = s.split(':').count();
    let mut offset = 0;
    for (index, token) in s.split(':').enumerate() {
        if token.is_empty() {
            return Err(ActionFlaw::EmptyToken { index });
        }
        if let Some(star) = token.find('*') {
            if token != "*" || index + 1 != n {
                return Err(ActionFlaw::PartialWildcard {
                    index: offset + star,
                });
            }
        } else if !token.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
            return Err(ActionFlaw::InvalidToken {
                index,
                token: token.to_owned(),
            });
        }
        offset += token.len() + 1;
    }
    if n > 4 {
        return Err(ActionFlaw::TooManyTokens);
    }
    if n < 2 {
        return Err(ActionFlaw::TooFewTokens);
    }
    Ok(())
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Action({:?})", &*self.0)
    }
}

impl FromStr for Action {
    type Err = ActionError;

    fn from_str(s: &str) -> Result<Action, ActionError> {
        Action::parse(s)
    }
}

impl AsRef<str> for Action {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Action, D::Error> {
        let s = String::deserialize(deserializer)?;
        Action::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Action {
        Action::parse(s).unwrap()
    }

    fn msg(s: &str) -> String {
        Action::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn valid_actions() {
        for s in [
            "*",
            "iam:*",
            "iam:user:*",
            "iam:group:user:*",
            "iam:user:read",
            "iam:group:user:add",
            "endpoint:read",
            "tenant:application:create",
            "a-b:c-d",
        ] {
            assert_eq!(a(s).as_str(), s);
            assert_eq!(a(s).is_wildcard(), s.ends_with('*'));
        }
    }

    #[test]
    fn spec_invalid_actions() {
        assert_eq!(
            msg("iam:User:read"),
            "malformed action `iam:User:read`: invalid token 1 `User`: only lowercase `a-z` and `-` are allowed"
        );
        assert_eq!(
            msg("iam:us*"),
            "malformed action `iam:us*`: misplaced asterisk at index 6: a wildcard must be the whole action or the whole last token"
        );
        assert_eq!(
            msg("iam::read"),
            "malformed action `iam::read`: token 1 is empty"
        );
        assert_eq!(
            msg("iam"),
            "malformed action `iam`: too few tokens, expected 2 to 4"
        );
        assert_eq!(
            msg("iam:group:user:add:x"),
            "malformed action `iam:group:user:add:x`: too many tokens, expected 2 to 4"
        );
        assert_eq!(
            msg("iam:group:user:x:*"),
            "malformed action `iam:group:user:x:*`: too many tokens, expected 2 to 4"
        );
        assert_eq!(msg(""), "malformed action ``: empty action");
        assert_eq!(msg(":iam"), "malformed action `:iam`: token 0 is empty");
        assert_eq!(msg("iam:"), "malformed action `iam:`: token 1 is empty");
        assert!(msg("*:read").contains("misplaced asterisk at index 0"));
        assert!(msg("iam:*:read").contains("misplaced asterisk at index 4"));
        assert!(msg("**").contains("misplaced asterisk at index 0"));
        assert!(msg("iam:user1:read").contains("invalid token 1 `user1`"));
        assert!(msg("iam:user_x:read").contains("invalid token 1"));
        assert!(msg("iam:ü:read").contains("invalid token 1"));
        let long = format!("iam:user:{}", "a".repeat(ACTION_MAX_LEN));
        assert!(msg(&long).ends_with("longer than 256 bytes"));
    }

    #[test]
    fn matching() {
        assert!(a("iam:user:read").matches(&a("iam:user:*")));
        assert!(a("iam:user:read").matches(&a("iam:*")));
        assert!(a("iam:user:read").matches(&a("*")));
        assert!(a("iam:user:read").matches(&a("iam:user:read")));
        assert!(!a("iam:user:read").matches(&a("iam:user:update")));
        assert!(!a("iam:users:read").matches(&a("iam:user:*")));
        assert!(!a("iam:user").matches(&a("iam:user:*")));
    }

    #[test]
    fn matching_actions() {
        assert_eq!(
            a("iam:group:user:add").matching_patterns(),
            vec![
                "iam:group:user:add",
                "iam:group:user:*",
                "iam:group:*",
                "iam:*",
                "*"
            ]
        );
        assert_eq!(
            a("iam:user:read").matching_patterns(),
            vec!["iam:user:read", "iam:user:*", "iam:*", "*"]
        );
        assert_eq!(
            a("iam:user:*").matching_patterns(),
            vec!["iam:user:*", "iam:*", "*"]
        );
        assert_eq!(a("*").matching_patterns(), vec!["*"]);
        for s in ["iam:group:user:add", "endpoint:read", "iam:*"] {
            for p in a(s).matching_patterns() {
                assert!(a(s).matches(&a(&p)), "{s} vs {p}");
            }
        }
    }

    #[test]
    fn serde_validates() {
        let x: Action = serde_json::from_str("\"iam:user:read\"").unwrap();
        assert_eq!(serde_json::to_string(&x).unwrap(), "\"iam:user:read\"");
        assert!(serde_json::from_str::<Action>("\"iam\"").is_err());
        assert_eq!("iam:*".parse::<Action>().unwrap(), a("iam:*"));
    }
}
