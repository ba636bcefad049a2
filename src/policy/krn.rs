//! KRN, the Kaa Resource Name (spec §1.1): parsing with the Go library's rules, the canonical
//! form, prefix matching of wildcard patterns, MatchingKRNs, and the base64 id codec.
//!
//! `krn:<service>:<tenant>:[<pool>]:<type>[/<path>...]/<id>`; at most one `*`, as the last
//! character, standing alone as a token or subtoken; none in the path. The canonical form is the
//! input itself except `krn:*`, which is `*`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::err::{IdFlaw, KrnError, KrnFlaw};
use super::id;

/// Longest KRN accepted, in bytes.
pub const KRN_MAX_LEN: usize = 1024;

/// A valid KRN in canonical form. Ordering, equality and hashing are those of the canonical
/// string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Krn(Box<str>);

/// A KRN token: non-empty, characters `a-z A-Z 0-9 - _ @ . +`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'@' | b'.' | b'+'))
}

impl Krn {
    /// Validates `s` and returns it in canonical form (`krn:*` becomes `*`).
    pub fn parse(s: &str) -> Result<Krn, KrnError> {
        match check(s) {
            Ok(Shape::Blanket) => Ok(Krn("*".into())),
            Ok(Shape::AsWritten) => Ok(Krn(s.into())),
            Err(flaw) => Err(KrnError::Malformed {
                krn: s.to_owned(),
                flaw,
            }),
        }
    }

    /// The canonical string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the resource ID is empty or `*`, i.e. the KRN ends in `*`.
    pub fn is_wildcard(&self) -> bool {
        self.0.ends_with('*')
    }

    /// The `:`-tokens after the prefix: service, tenant, pool, resource (missing ones empty).
    fn tokens(&self) -> [&str; 4] {
        let mut out = [""; 4];
        if &*self.0 == "*" {
            out[0] = "*";
            return out;
        }
        for (slot, tok) in out.iter_mut().zip(self.0.split(':').skip(1)) {
            *slot = tok;
        }
        out
    }

    pub fn service(&self) -> &str {
        self.tokens()[0]
    }

    pub fn tenant(&self) -> &str {
        self.tokens()[1]
    }

    /// The pool segment as written (`/a/b`), `*` or `/a/*` in a pool wildcard, empty for none.
    pub fn pool(&self) -> &str {
        self.tokens()[2]
    }

    pub fn resource_type(&self) -> &str {
        self.tokens()[3].split('/').next().unwrap_or("")
    }

    /// The subtokens between the resource type and the resource ID.
    pub fn path(&self) -> Vec<&str> {
        let subs: Vec<&str> = self.tokens()[3].split('/').collect();
        if subs.len() > 2 {
            subs[1..subs.len() - 1].to_vec()
        } else {
            Vec::new()
        }
    }

    /// The resource ID: `*` in an ID wildcard, empty in wildcards above it.
    pub fn id(&self) -> &str {
        let res = self.tokens()[3];
        match res.rsplit_once('/') {
            Some((_, id)) => id,
            None => "",
        }
    }

    /// `self` matches `pattern`: a pattern ending in `*` matches by prefix, any other by
    /// equality.
    pub fn matches(&self, pattern: &Krn) -> bool {
        match pattern.0.strip_suffix('*') {
            Some(prefix) => self.0.starts_with(prefix),
            None => self.0 == pattern.0,
        }
    }

    /// MatchingKRNs: every canonical pattern that `self` matches, most specific first: `self`
    /// (when not a wildcard), then each prefix cut after a `:` or `/` with `*` appended, then `*`.
    pub fn matching_patterns(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(10);
        if !self.is_wildcard() {
            out.push(self.0.to_string());
        }
        for prefix in wildcard_prefixes(&self.0) {
            let mut p = String::with_capacity(prefix.len() + 1);
            p.push_str(prefix);
            p.push('*');
            out.push(p);
        }
        out
    }

    /// The REST id: standard base64 with padding of the canonical string.
    pub fn to_id(&self) -> String {
        id::encode(&self.0)
    }

    /// Reads an id: standard or URL-safe base64, padded or not, possibly percent-encoded.
    pub fn from_id(id_text: &str) -> Result<Krn, KrnError> {
        let invalid = |flaw| KrnError::InvalidId {
            id: id_text.to_owned(),
            flaw,
        };
        let text = id::decode(id_text).map_err(invalid)?;
        Krn::parse(&text).map_err(|e| invalid(IdFlaw::NotKrn(Box::new(e))))
    }
}

/// The prefixes `X` of the wildcard patterns `X*` that a KRN string matches, most specific first:
/// each cut right after a `:` or `/`, then the empty prefix of `*`. The cut `krn:` is left out
/// because `krn:*` is written `*`.
pub(crate) fn wildcard_prefixes(s: &str) -> impl Iterator<Item = &str> {
    // Separators are ASCII, so a byte scan finds them (and cuts on char boundaries).
    let seps = s
        .bytes()
        .enumerate()
        .rev()
        .filter(|&(_, c)| c == b':' || c == b'/')
        .map(move |(i, _)| &s[..=i])
        .filter(|p| *p != "krn:");
    seps.chain(std::iter::once(""))
}

/// What a valid string canonicalizes to.
enum Shape {
    /// `*` or `krn:*`.
    Blanket,
    /// Already canonical.
    AsWritten,
}

/// The KRN grammar. Structure is checked before asterisk positions so that the message names the
/// segment at fault.
fn check(s: &str) -> Result<Shape, KrnFlaw> {
    if s.len() > KRN_MAX_LEN {
        return Err(KrnFlaw::TooLong { max: KRN_MAX_LEN });
    }
    if s == "*" {
        return Ok(Shape::Blanket);
    }
    if s.bytes().filter(|&b| b == b'*').count() > 1 {
        return Err(KrnFlaw::OnlyOneAsterisk);
    }
    let tokens: Vec<&str> = s.split(':').collect();
    let n = tokens.len();
    let prefix = tokens[0];
    if prefix.is_empty() {
        return Err(KrnFlaw::EmptyPrefix);
    }
    if prefix != "krn" {
        return Err(KrnFlaw::InvalidPrefix);
    }
    if n > 5 {
        return Err(KrnFlaw::TooManyTokens);
    }
    if tokens[n - 1].is_empty() {
        return Err(KrnFlaw::LastTokenEmpty);
    }
    let not_empty = |segment| Err(KrnFlaw::NotEmptyAfterWildcard { segment });
    // Service.
    let Some(&service) = tokens.get(1) else {
        return Err(KrnFlaw::TooFewTokens);
    };
    if service == "*" {
        return if n > 2 {
            not_empty("tenant ID")
        } else {
            Ok(Shape::Blanket)
        };
    }
    if !is_token(service) {
        return Err(KrnFlaw::InvalidService);
    }
    // Tenant.
    let Some(&tenant) = tokens.get(2) else {
        return Err(KrnFlaw::TooFewTokens);
    };
    if tenant == "*" {
        return if n > 3 {
            not_empty("pool")
        } else {
            Ok(Shape::AsWritten)
        };
    }
    if !is_token(tenant) {
        return Err(KrnFlaw::InvalidTenant);
    }
    // Pool.
    let Some(&pool) = tokens.get(3) else {
        return Err(KrnFlaw::TooFewTokens);
    };
    if pool == "*" {
        return if n > 4 {
            not_empty("resource type")
        } else {
            Ok(Shape::AsWritten)
        };
    }
    if !pool.is_empty() {
        let subs: Vec<&str> = pool.split('/').collect();
        if !subs[0].is_empty() {
            return Err(KrnFlaw::InvalidPool { index: 0 });
        }
        let last = subs.len() - 1;
        for (i, sub) in subs.iter().enumerate().skip(1) {
            if *sub == "*" {
                if i != last {
                    return Err(KrnFlaw::MisplacedAsterisk {
                        index: s.find('*').unwrap_or(0),
                    });
                }
                return if n > 4 {
                    not_empty("resource type")
                } else {
                    Ok(Shape::AsWritten)
                };
            }
            if !is_token(sub) {
                return Err(KrnFlaw::InvalidPool { index: i });
            }
        }
    }
    // Resource: type, path..., id.
    let Some(&resource) = tokens.get(4) else {
        return Err(KrnFlaw::TooFewTokens);
    };
    let subs: Vec<&str> = resource.split('/').collect();
    let last = subs.len() - 1;
    if subs[0] == "*" {
        return match last {
            0 => Ok(Shape::AsWritten),
            1 => not_empty("resource ID"),
            _ => not_empty("resource path"),
        };
    }
    if !is_token(subs[0]) {
        return Err(KrnFlaw::InvalidResourceType);
    }
    if last == 0 {
        return Err(KrnFlaw::InvalidResourceId);
    }
    for (i, sub) in subs.iter().enumerate().take(last).skip(1) {
        if *sub == "*" {
            return Err(KrnFlaw::WildcardInPath);
        }
        if !is_token(sub) {
            return Err(KrnFlaw::InvalidResourcePath { index: i });
        }
    }
    if subs[last] != "*" && !is_token(subs[last]) {
        return Err(KrnFlaw::InvalidResourceId);
    }
    Ok(Shape::AsWritten)
}

impl fmt::Display for Krn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Krn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Krn({:?})", &*self.0)
    }
}

impl FromStr for Krn {
    type Err = KrnError;

    fn from_str(s: &str) -> Result<Krn, KrnError> {
        Krn::parse(s)
    }
}

impl AsRef<str> for Krn {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Krn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Krn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Krn, D::Error> {
        let s = String::deserialize(deserializer)?;
        Krn::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Krn {
        Krn::parse(s).unwrap()
    }

    fn flaw(s: &str) -> KrnFlaw {
        match Krn::parse(s) {
            Err(KrnError::Malformed { flaw, .. }) => flaw,
            other => panic!("{s}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn spec_parsing_vectors() {
        let bob = k("krn:iam:kaa::user/org1/bob");
        assert_eq!(bob.service(), "iam");
        assert_eq!(bob.tenant(), "kaa");
        assert_eq!(bob.pool(), "");
        assert_eq!(bob.resource_type(), "user");
        assert_eq!(bob.path(), vec!["org1"]);
        assert_eq!(bob.id(), "bob");
        assert!(!bob.is_wildcard());

        let w = k("krn:iam:kaa::user/org1/*");
        assert!(w.is_wildcard());
        assert_eq!(w.id(), "*");
        assert_eq!(w.path(), vec!["org1"]);

        assert_eq!(flaw("krn:iam:kaa::user/*/bob"), KrnFlaw::WildcardInPath);
        assert_eq!(flaw("krn:iam:kaa::user/al*"), KrnFlaw::InvalidResourceId);
        assert_eq!(k("krn:*").as_str(), "*");
        assert_eq!(k("krn:*"), k("*"));
        let pool_wild = k("krn:iam:kaa:*");
        assert!(pool_wild.is_wildcard());
        assert_eq!(pool_wild.pool(), "*");
        assert_eq!(flaw("krn:iam:kaa::user"), KrnFlaw::InvalidResourceId);
        assert_eq!(flaw("krn:iam:kaa::user/bob:x"), KrnFlaw::TooManyTokens);
    }

    #[test]
    fn every_error_kind_and_message() {
        let cases: &[(&str, &str)] = &[
            (
                ":iam:kaa::user/bob",
                "malformed KRN `:iam:kaa::user/bob`: empty prefix token",
            ),
            ("", "malformed KRN ``: empty prefix token"),
            (
                "irn:iam:kaa::user/bob",
                "malformed KRN `irn:iam:kaa::user/bob`: invalid prefix token, expected `krn`",
            ),
            (
                "krn:iam:kaa::",
                "malformed KRN `krn:iam:kaa::`: last token is empty",
            ),
            ("krn:", "malformed KRN `krn:`: last token is empty"),
            (
                "krn",
                "malformed KRN `krn`: too few tokens in a non-wildcard KRN",
            ),
            (
                "krn:a",
                "malformed KRN `krn:a`: too few tokens in a non-wildcard KRN",
            ),
            (
                "krn:iam:kaa",
                "malformed KRN `krn:iam:kaa`: too few tokens in a non-wildcard KRN",
            ),
            (
                "krn:iam:kaa:/p",
                "malformed KRN `krn:iam:kaa:/p`: too few tokens in a non-wildcard KRN",
            ),
            (
                "krn:iam:kaa::user/bob:x",
                "malformed KRN `krn:iam:kaa::user/bob:x`: too many tokens",
            ),
            (
                "krn:i$m:kaa::user/bob",
                "malformed KRN `krn:i$m:kaa::user/bob`: invalid service token",
            ),
            (
                "krn:iam:k a::user/bob",
                "malformed KRN `krn:iam:k a::user/bob`: invalid tenant ID token",
            ),
            (
                "krn:iam:kaa:p:user/bob",
                "malformed KRN `krn:iam:kaa:p:user/bob`: invalid pool token 0",
            ),
            (
                "krn:iam:kaa:/a/:user/bob",
                "malformed KRN `krn:iam:kaa:/a/:user/bob`: invalid pool token 2",
            ),
            (
                "krn:iam:kaa:/:user/bob",
                "malformed KRN `krn:iam:kaa:/:user/bob`: invalid pool token 1",
            ),
            (
                "krn:iam:kaa::us!er/bob",
                "malformed KRN `krn:iam:kaa::us!er/bob`: invalid resource type token",
            ),
            (
                "krn:iam:kaa::/bob",
                "malformed KRN `krn:iam:kaa::/bob`: invalid resource type token",
            ),
            (
                "krn:iam:kaa::user/a//bob",
                "malformed KRN `krn:iam:kaa::user/a//bob`: invalid resource path token 2",
            ),
            (
                "krn:iam:kaa::user/bo%b",
                "malformed KRN `krn:iam:kaa::user/bo%b`: invalid resource ID token",
            ),
            (
                "krn:iam:kaa::user/",
                "malformed KRN `krn:iam:kaa::user/`: invalid resource ID token",
            ),
            (
                "krn:iam:kaa:/a/*/b:user/bob",
                "malformed wildcard KRN `krn:iam:kaa:/a/*/b:user/bob`: misplaced asterisk at index 15",
            ),
            (
                "krn:iam:*:*",
                "malformed wildcard KRN `krn:iam:*:*`: only one asterisk allowed",
            ),
            (
                "krn:iam:kaa::user/*/bob",
                "malformed wildcard KRN `krn:iam:kaa::user/*/bob`: wildcards not permitted in the resource path",
            ),
            (
                "krn:*:kaa",
                "malformed wildcard KRN `krn:*:kaa`: tenant ID is not empty",
            ),
            (
                "krn:iam:*:x",
                "malformed wildcard KRN `krn:iam:*:x`: pool is not empty",
            ),
            (
                "krn:iam:kaa:*:user/x",
                "malformed wildcard KRN `krn:iam:kaa:*:user/x`: resource type is not empty",
            ),
            (
                "krn:iam:kaa:/a/*:user/x",
                "malformed wildcard KRN `krn:iam:kaa:/a/*:user/x`: resource type is not empty",
            ),
            (
                "krn:iam:kaa::*/x",
                "malformed wildcard KRN `krn:iam:kaa::*/x`: resource ID is not empty",
            ),
            (
                "krn:iam:kaa::*/p/x",
                "malformed wildcard KRN `krn:iam:kaa::*/p/x`: resource path is not empty",
            ),
        ];
        for (input, message) in cases {
            match Krn::parse(input) {
                Err(e) => {
                    assert_eq!(e.to_string(), *message, "{input}");
                    assert_eq!(e.input(), *input);
                }
                Ok(k) => panic!("{input} parsed as {k}"),
            }
        }
        let long = format!("krn:iam:kaa::user/{}", "a".repeat(KRN_MAX_LEN));
        assert_eq!(flaw(&long), KrnFlaw::TooLong { max: KRN_MAX_LEN });
        assert!(
            Krn::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than 1024 bytes")
        );
    }

    #[test]
    fn partial_token_wildcards_are_invalid_tokens() {
        assert_eq!(flaw("krn:ia*"), KrnFlaw::InvalidService);
        assert_eq!(flaw("krn:iam:ka*"), KrnFlaw::InvalidTenant);
        assert_eq!(flaw("krn:iam:kaa:/a*"), KrnFlaw::InvalidPool { index: 1 });
        assert_eq!(flaw("krn:iam:kaa::us*"), KrnFlaw::InvalidResourceType);
        assert_eq!(
            flaw("krn:iam:kaa:/*/a:x/y"),
            KrnFlaw::MisplacedAsterisk { index: 13 }
        );
        assert_eq!(flaw("*x"), KrnFlaw::InvalidPrefix);
        assert_eq!(flaw("**"), KrnFlaw::OnlyOneAsterisk);
    }

    #[test]
    fn valid_forms_are_canonical_as_written() {
        for s in [
            "*",
            "krn:iam:*",
            "krn:iam:kaa:*",
            "krn:iam:kaa:/*",
            "krn:iam:kaa:/a/*",
            "krn:iam:kaa:/a/b:*",
            "krn:iam:kaa::*",
            "krn:iam:kaa::user/*",
            "krn:iam:kaa::user/org1/*",
            "krn:iam:kaa::user/bob",
            "krn:iam:kaa:/a/b:user/p/q/bob",
            "krn:iam:3fdfde93-661a-47d1-abcc-68452dd320c7::user/a.b+c@d_e-f",
        ] {
            assert_eq!(k(s).as_str(), s);
            assert_eq!(k(s).to_string(), s);
        }
    }

    #[test]
    fn accessors_of_wildcards_and_pools() {
        let b = k("*");
        assert_eq!(
            (b.service(), b.tenant(), b.pool(), b.resource_type(), b.id()),
            ("*", "", "", "", "")
        );
        let t = k("krn:iam:*");
        assert_eq!((t.service(), t.tenant(), t.pool()), ("iam", "*", ""));
        let ty = k("krn:iam:kaa:/a/b:*");
        assert_eq!((ty.pool(), ty.resource_type(), ty.id()), ("/a/b", "*", ""));
        let p = k("krn:s:t:/a/b:x/p1/p2/y");
        assert_eq!(p.pool(), "/a/b");
        assert_eq!(p.path(), vec!["p1", "p2"]);
        assert_eq!(p.id(), "y");
        assert!(k("krn:s:t::x/y").path().is_empty());
    }

    #[test]
    fn spec_matching_vectors() {
        assert!(k("krn:iam:kaa::user/org1/bob").matches(&k("krn:iam:kaa::user/*")));
        assert!(!k("krn:iam:kaa::user/bob").matches(&k("krn:iam:kaa::user/bo")));
        for x in ["krn:iam:kaa::user/bob", "krn:a:b:/p:c/d", "krn:iam:*", "*"] {
            assert!(k(x).matches(&k("*")));
            assert!(k(x).matches(&k(x)));
        }
        assert!(k("krn:iam:kaa::user/bob").matches(&k("krn:iam:kaa:*")));
        assert!(!k("krn:iam:kaa2::user/bob").matches(&k("krn:iam:kaa::*")));
        assert!(k("krn:s:t:/a/b:x/y").matches(&k("krn:s:t:/a/*")));
        assert!(!k("krn:s:t::x/y").matches(&k("krn:s:t:/*")));
    }

    #[test]
    fn matching_patterns_worked_example() {
        assert_eq!(
            k("krn:iam:kaa::user/org1/bob").matching_patterns(),
            vec![
                "krn:iam:kaa::user/org1/bob",
                "krn:iam:kaa::user/org1/*",
                "krn:iam:kaa::user/*",
                "krn:iam:kaa::*",
                "krn:iam:kaa:*",
                "krn:iam:*",
                "*",
            ]
        );
        assert_eq!(
            k("krn:s:t:/a/b:x/y").matching_patterns(),
            vec![
                "krn:s:t:/a/b:x/y",
                "krn:s:t:/a/b:x/*",
                "krn:s:t:/a/b:*",
                "krn:s:t:/a/*",
                "krn:s:t:/*",
                "krn:s:t:*",
                "krn:s:*",
                "*",
            ]
        );
        assert_eq!(k("*").matching_patterns(), vec!["*"]);
        assert_eq!(k("krn:iam:*").matching_patterns(), vec!["krn:iam:*", "*"]);
        assert_eq!(
            k("krn:iam:kaa::user/*").matching_patterns(),
            vec![
                "krn:iam:kaa::user/*",
                "krn:iam:kaa::*",
                "krn:iam:kaa:*",
                "krn:iam:*",
                "*"
            ]
        );
    }

    #[test]
    fn matching_patterns_are_canonical_and_match() {
        for s in [
            "krn:iam:kaa::user/org1/bob",
            "krn:s:t:/a/b:x/p/y",
            "krn:s:t:/a:x/y",
            "krn:iam:kaa::user/org1/*",
            "krn:s:t:/a/*",
            "krn:s:t:/a/b:*",
        ] {
            let krn = k(s);
            for p in krn.matching_patterns() {
                let parsed = k(&p);
                assert_eq!(parsed.as_str(), p, "{p} is not canonical");
                assert!(krn.matches(&parsed), "{s} does not match {p}");
            }
        }
    }

    #[test]
    fn base64_ids() {
        let p = k("krn:iam:kaa::policy/Admin_user_read");
        assert_eq!(
            p.to_id(),
            "a3JuOmlhbTprYWE6OnBvbGljeS9BZG1pbl91c2VyX3JlYWQ="
        );
        assert_eq!(
            Krn::from_id("a3JuOmlhbTprYWE6OnBvbGljeS9BZG1pbl91c2VyX3JlYWQ=").unwrap(),
            p
        );
        assert_eq!(
            Krn::from_id("a3JuOmlhbTprYWE6OnBvbGljeS9BZG1pbl91c2VyX3JlYWQ").unwrap(),
            p
        );
        assert_eq!(
            Krn::from_id("a3JuOmlhbTprYWE6OnBvbGljeS9BZG1pbl91c2VyX3JlYWQ%3D").unwrap(),
            p
        );
        assert_eq!(
            Krn::from_id("a3JuOmlhbTprYWE6Omdyb3VwL0Zvbw==").unwrap(),
            k("krn:iam:kaa::group/Foo")
        );
    }

    #[test]
    fn base64_round_trip_every_form() {
        // Token characters never give `+` or `/` in base64 (id.rs tests those alphabets with
        // other text); every padding and percent form is read back.
        for i in 0..400 {
            let krn = k(&format!("krn:iam:kaa::user/u{i}-x"));
            let std_id = krn.to_id();
            assert!(!std_id.contains('+') && !std_id.contains('/'));
            let url = std_id.replace('+', "-").replace('/', "_");
            let pct = std_id
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D");
            for id in [&std_id, &url, url.trim_end_matches('='), &pct] {
                assert_eq!(Krn::from_id(id).unwrap(), krn, "{id}");
            }
        }
    }

    #[test]
    fn bad_ids() {
        let e = Krn::from_id("!!").unwrap_err();
        assert_eq!(e.to_string(), "invalid KRN id `!!`: not base64");
        let e = Krn::from_id("a%4").unwrap_err();
        assert_eq!(e.to_string(), "invalid KRN id `a%4`: bad percent-encoding");
        let e = Krn::from_id("//4=").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid KRN id `//4=`: decoded bytes are not UTF-8"
        );
        // base64 of `krn:a`.
        let e = Krn::from_id("a3JuOmE=").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid KRN id `a3JuOmE=`: malformed KRN `krn:a`: too few tokens in a non-wildcard KRN"
        );
    }

    #[test]
    fn serde_validates() {
        let krn: Krn = serde_json::from_str("\"krn:iam:kaa::user/bob\"").unwrap();
        assert_eq!(
            serde_json::to_string(&krn).unwrap(),
            "\"krn:iam:kaa::user/bob\""
        );
        let blanket: Krn = serde_json::from_str("\"krn:*\"").unwrap();
        assert_eq!(blanket.as_str(), "*");
        let e = serde_json::from_str::<Krn>("\"krn:a\"").unwrap_err();
        assert!(e.to_string().contains("too few tokens"), "{e}");
        assert!(serde_json::from_str::<Krn>("3").is_err());
        assert_eq!("krn:iam:*".parse::<Krn>().unwrap(), k("krn:iam:*"));
    }

    #[test]
    fn ordering_is_by_string() {
        let mut v = [k("krn:b:t::x/y"), k("*"), k("krn:a:t::x/y")];
        v.sort();
        let s: Vec<&str> = v.iter().map(Krn::as_str).collect();
        assert_eq!(s, vec!["*", "krn:a:t::x/y", "krn:b:t::x/y"]);
    }

    #[test]
    fn wildcard_prefixes_skip_krn_colon() {
        let v: Vec<&str> = wildcard_prefixes("krn:iam:kaa::user/bob").collect();
        assert_eq!(
            v,
            vec![
                "krn:iam:kaa::user/",
                "krn:iam:kaa::",
                "krn:iam:kaa:",
                "krn:iam:",
                ""
            ]
        );
    }
}
