//! Statement conditions and policy variables (docs/ENGINE_API.md, "Conditions").
//!
//! A statement's `conditions` block is written operator first, as in AWS IAM:
//! `{"IpAddress": {"kaa:SourceIp": ["10.0.0.0/8"]}, "StringEquals": {"iam:metadata/site": "a"}}`.
//! Every (operator, key) entry must hold for the statement to apply (AND); the values of one entry
//! are alternatives (OR), and a negated operator holds when the key matches none of them (NOR).
//! A key absent from the request makes its entry false, unless the operator ends in `IfExists`
//! (then true); `Null` tests presence. Values and resources may name variables, `${key}`, replaced
//! by the key's value at decision time.
//!
//! Everything is parsed and checked when the policy is written; a decision only looks values up
//! and compares. Conditions are evaluated only for statements the index already matched.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::krn::Krn;

/// Most (operator, key) entries in one statement's conditions.
pub const MAX_CONDITIONS: usize = 64;
/// Most values of one (operator, key) entry.
pub const MAX_CONDITION_VALUES: usize = 256;
/// Longest condition value or context key, in bytes.
pub const MAX_CONDITION_TEXT: usize = 1024;

/// The request's attributes beyond principal, action and resource: the request context, the
/// principal's metadata and the resources' metadata. The engine reads them only for statements
/// with conditions or variables.
pub trait Env: fmt::Debug + Sync {
    /// A key of the request context (`kaa:CurrentTime`, `kaa:SourceIp`, or a caller's key).
    fn context(&self, _key: &str) -> Option<&Value> {
        None
    }
    /// A metadata key of the principal (the user asked about).
    fn principal_metadata(&self, _key: &str) -> Option<&Value> {
        None
    }
    /// A metadata key of a registered resource.
    fn resource_metadata(&self, _resource: &Krn, _key: &str) -> Option<&Value> {
        None
    }
}

/// No context, no metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl Env for NoEnv {}

/// A request context and metadata held in maps; the simplest [`Env`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapEnv {
    pub context: Map<String, Value>,
    pub principal_metadata: Map<String, Value>,
    /// Resource KRN -> its metadata.
    pub resource_metadata: std::collections::BTreeMap<String, Map<String, Value>>,
}

impl Env for MapEnv {
    fn context(&self, key: &str) -> Option<&Value> {
        self.context.get(key)
    }
    fn principal_metadata(&self, key: &str) -> Option<&Value> {
        self.principal_metadata.get(key)
    }
    fn resource_metadata(&self, resource: &Krn, key: &str) -> Option<&Value> {
        self.resource_metadata.get(resource.as_str())?.get(key)
    }
}

/// The global keys, with the `kaa:` prefix.
pub const GLOBAL_KEYS: [&str; 4] = [
    "kaa:CurrentTime",
    "kaa:SourceIp",
    "kaa:CurrentHour",
    "kaa:CurrentDayOfWeek",
];

/// A condition key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// `kaa:CurrentTime`: RFC 3339 text or epoch seconds, from the context (the service puts its
    /// own time there when the caller does not).
    CurrentTime,
    /// `kaa:SourceIp`, from the context.
    SourceIp,
    /// `kaa:CurrentHour` (0-23) and `kaa:CurrentDayOfWeek` (1 = Monday .. 7), of
    /// `kaa:CurrentTime` in its own UTC offset.
    CurrentHour,
    CurrentDayOfWeek,
    /// `krn:principal`: the principal's KRN.
    Principal,
    /// `iam:username`, `iam:path`, `iam:tenant`, `iam:groups`: of the principal's KRN and set.
    Username,
    Path,
    Tenant,
    Groups,
    /// `iam:metadata/<key>`.
    PrincipalMetadata(String),
    /// `resource:krn`, `resource:service`, `resource:tenant`, `resource:type`.
    ResourceKrn,
    ResourceService,
    ResourceTenant,
    ResourceType,
    /// `resource:metadata/<key>`: metadata of the registered resource.
    ResourceMetadata(String),
    /// Any other key: the request context sent with the question.
    Context(String),
}

impl Key {
    /// Reads a key; the message says what is wrong.
    pub fn parse(s: &str) -> Result<Key, String> {
        if s.is_empty() {
            return Err("empty condition key".into());
        }
        if s.len() > 256 {
            return Err(format!("key `{}` is longer than 256 bytes", short(s)));
        }
        let meta = |rest: &str, whose: &str| -> Result<String, String> {
            if rest.is_empty() {
                Err(format!("key `{s}` names no {whose} metadata key"))
            } else {
                Ok(rest.to_owned())
            }
        };
        Ok(match s {
            "kaa:CurrentTime" => Key::CurrentTime,
            "kaa:SourceIp" => Key::SourceIp,
            "kaa:CurrentHour" => Key::CurrentHour,
            "kaa:CurrentDayOfWeek" => Key::CurrentDayOfWeek,
            "krn:principal" => Key::Principal,
            "iam:username" => Key::Username,
            "iam:path" => Key::Path,
            "iam:tenant" => Key::Tenant,
            "iam:groups" => Key::Groups,
            "resource:krn" => Key::ResourceKrn,
            "resource:service" => Key::ResourceService,
            "resource:tenant" => Key::ResourceTenant,
            "resource:type" => Key::ResourceType,
            _ => {
                if let Some(rest) = s.strip_prefix("iam:metadata/") {
                    Key::PrincipalMetadata(meta(rest, "principal")?)
                } else if let Some(rest) = s.strip_prefix("resource:metadata/") {
                    Key::ResourceMetadata(meta(rest, "resource")?)
                } else if let Some(p) = reserved_prefix(s) {
                    return Err(unknown_reserved(s, p));
                } else {
                    check_context_key(s)?;
                    Key::Context(s.to_owned())
                }
            }
        })
    }

    /// The key as written.
    pub fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(match self {
            Key::CurrentTime => "kaa:CurrentTime",
            Key::SourceIp => "kaa:SourceIp",
            Key::CurrentHour => "kaa:CurrentHour",
            Key::CurrentDayOfWeek => "kaa:CurrentDayOfWeek",
            Key::Principal => "krn:principal",
            Key::Username => "iam:username",
            Key::Path => "iam:path",
            Key::Tenant => "iam:tenant",
            Key::Groups => "iam:groups",
            Key::ResourceKrn => "resource:krn",
            Key::ResourceService => "resource:service",
            Key::ResourceTenant => "resource:tenant",
            Key::ResourceType => "resource:type",
            Key::PrincipalMetadata(k) => return Cow::Owned(format!("iam:metadata/{k}")),
            Key::ResourceMetadata(k) => return Cow::Owned(format!("resource:metadata/{k}")),
            Key::Context(k) => k,
        })
    }

    fn about_resource(&self) -> bool {
        matches!(
            self,
            Key::ResourceKrn
                | Key::ResourceService
                | Key::ResourceTenant
                | Key::ResourceType
                | Key::ResourceMetadata(_)
        )
    }
}

/// The reserved prefix `s` starts with, if any.
fn reserved_prefix(s: &str) -> Option<&'static str> {
    ["kaa:", "iam:", "resource:", "krn:"]
        .into_iter()
        .find(|p| s.starts_with(p))
}

fn unknown_reserved(s: &str, prefix: &str) -> String {
    let known = match prefix {
        "kaa:" => "`kaa:CurrentTime`, `kaa:SourceIp`, `kaa:CurrentHour`, `kaa:CurrentDayOfWeek`",
        "iam:" => "`iam:username`, `iam:path`, `iam:tenant`, `iam:groups`, `iam:metadata/<key>`",
        "resource:" => {
            "`resource:krn`, `resource:service`, `resource:tenant`, `resource:type`, `resource:metadata/<key>`"
        }
        _ => "`krn:principal`",
    };
    format!(
        "unknown key `{}`: the `{prefix}` keys are {known}",
        short(s)
    )
}

/// A key of the request context that a caller may send: not empty, at most 256 bytes of
/// `A-Z a-z 0-9 _ . : / -`, not under a reserved prefix unless it is `kaa:CurrentTime` or
/// `kaa:SourceIp`.
pub fn check_context_key(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty context key".into());
    }
    if s.len() > 256 {
        return Err(format!(
            "context key `{}` is longer than 256 bytes",
            short(s)
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-'))
    {
        return Err(format!(
            "key `{}`: only `A-Z a-z 0-9 _ . : / -` are allowed",
            short(s)
        ));
    }
    Ok(())
}

/// Checks one entry of a request context: `kaa:CurrentTime` must be a date, `kaa:SourceIp` an
/// address, no other reserved key may be set, and values are strings, numbers, booleans or lists
/// of them.
pub fn check_context_entry(key: &str, value: &Value) -> Result<(), String> {
    check_context_key(key)?;
    match key {
        "kaa:CurrentTime" => {
            if to_time(value).is_none() {
                return Err(format!(
                    "`kaa:CurrentTime` must be an RFC 3339 date-time or epoch seconds, got `{}`",
                    short(&display(value))
                ));
            }
        }
        "kaa:SourceIp" => {
            if !matches!(value, Value::String(s) if s.parse::<IpAddr>().is_ok()) {
                return Err(format!(
                    "`kaa:SourceIp` must be an IPv4 or IPv6 address, got `{}`",
                    short(&display(value))
                ));
            }
        }
        _ => {
            if let Some(p) = reserved_prefix(key) {
                return Err(format!(
                    "context key `{}` is reserved: `{p}` keys come from the principal, the resource or the service ({})",
                    short(key),
                    "the caller may set `kaa:CurrentTime` and `kaa:SourceIp`"
                ));
            }
        }
    }
    let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
    let ok = match value {
        Value::Array(a) => a.len() <= MAX_CONDITION_VALUES && a.iter().all(scalar),
        v => scalar(v),
    };
    if !ok {
        return Err(format!(
            "context key `{}`: a value is a string, a number, a boolean or a list of at most {MAX_CONDITION_VALUES} of them",
            short(key)
        ));
    }
    Ok(())
}

fn short(s: &str) -> String {
    super::err::shown(s)
}

/// A text with `${key}` variables: literal pieces and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Text(String),
    /// `${$}`, `${*}`, `${?}`: the character itself, never a wildcard.
    Escaped(char),
    Var(Key),
}

/// Splits `s` into text and variables. `${$}`, `${*}` and `${?}` stand for the character itself.
pub(crate) fn parse_template(s: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        text.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("`{}`: `${{` without its `}}`", short(s)));
        };
        let name = &after[..end];
        match name {
            "$" | "*" | "?" => {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Escaped(name.chars().next().unwrap_or('$')));
            }
            _ => {
                let key = Key::parse(name).map_err(|e| format!("variable `${{{name}}}`: {e}"))?;
                if matches!(key, Key::Groups) {
                    return Err(format!(
                        "variable `${{{name}}}`: `iam:groups` has several values and cannot stand in a text"
                    ));
                }
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Var(key));
            }
        }
        rest = &after[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// The facts a decision reads: the principal set (the principal first), the resource and the
/// environment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub principals: &'a [Krn],
    pub resource: &'a Krn,
    pub env: &'a dyn Env,
}

/// The values of a key: absent (`None`), or one or more values.
type Found<'a> = Option<Vec<Cow<'a, Value>>>;

fn text(s: &str) -> Cow<'static, Value> {
    Cow::Owned(Value::String(s.to_owned()))
}

impl<'a> Facts<'a> {
    fn principal(&self) -> Option<&'a Krn> {
        self.principals.first()
    }

    /// A user principal (`krn:iam:<t>::user/...`).
    fn user(&self) -> Option<&'a Krn> {
        self.principal()
            .filter(|p| p.service() == "iam" && p.resource_type() == "user")
    }

    /// The values of `key`; an empty list counts as absent.
    pub(crate) fn lookup(&self, key: &Key) -> Found<'a> {
        let one = |v: Option<Cow<'a, Value>>| v.map(|v| vec![v]);
        let many = |v: Option<&'a Value>| -> Found<'a> {
            match v? {
                Value::Array(a) if a.is_empty() => None,
                Value::Array(a) => Some(a.iter().map(Cow::Borrowed).collect()),
                Value::Null => None,
                v => Some(vec![Cow::Borrowed(v)]),
            }
        };
        match key {
            Key::CurrentTime => many(self.env.context("kaa:CurrentTime")),
            Key::SourceIp => many(self.env.context("kaa:SourceIp")),
            Key::CurrentHour | Key::CurrentDayOfWeek => {
                let v = self.env.context("kaa:CurrentTime")?;
                let (ms, offset_min) = to_time(v)?;
                let local = ms.checked_add(offset_min.checked_mul(60_000)?)?;
                let n = if *key == Key::CurrentHour {
                    local.div_euclid(3_600_000).rem_euclid(24)
                } else {
                    // 1970-01-01 was a Thursday (4).
                    (local.div_euclid(86_400_000) + 3).rem_euclid(7) + 1
                };
                one(Some(Cow::Owned(Value::from(n))))
            }
            Key::Principal => one(self.principal().map(|p| text(p.as_str()))),
            Key::Username => one(self.user().map(|u| text(u.id()))),
            Key::Path => one(self.user().map(|u| text(&u.path().join("/")))),
            Key::Tenant => one(self
                .principal()
                .filter(|p| !p.tenant().is_empty() && !p.is_wildcard())
                .map(|p| text(p.tenant()))),
            Key::Groups => {
                let groups: Vec<Cow<'a, Value>> = self
                    .principals
                    .iter()
                    .skip(1)
                    .filter(|g| g.service() == "iam" && g.resource_type() == "group")
                    .map(|g| text(g.as_str()))
                    .collect();
                (!groups.is_empty()).then_some(groups)
            }
            Key::PrincipalMetadata(k) => {
                self.user()?;
                many(self.env.principal_metadata(k))
            }
            Key::ResourceKrn => one(Some(text(self.resource.as_str()))),
            Key::ResourceService => one(Some(text(self.resource.service()))),
            Key::ResourceTenant => one(Some(text(self.resource.tenant()))),
            Key::ResourceType => one(Some(text(self.resource.resource_type()))),
            Key::ResourceMetadata(k) => many(self.env.resource_metadata(self.resource, k)),
            Key::Context(k) => many(self.env.context(k)),
        }
    }

    /// The text of a variable: the key's one value as text; `None` when absent or not one scalar.
    fn variable(&self, key: &Key) -> Option<String> {
        let found = self.lookup(key)?;
        match found.as_slice() {
            [one] => scalar_text(one),
            _ => None,
        }
    }

    /// `parts` with every variable replaced; `Err(key)` names the first one without a value.
    /// For a `StringLike` pattern (`like`), escaped characters and variable values are matched
    /// literally.
    pub(crate) fn substitute(&self, parts: &[Part], like: bool) -> Result<String, String> {
        render(parts, like, |k| {
            self.variable(k).ok_or_else(|| k.name().into_owned())
        })
    }
}

/// The text of `parts`, variables given by `var`. With `like`, the result is a `StringLike`
/// pattern in which `\` escapes: `*` and `?` of text stay wildcards, escaped characters and
/// variable values match themselves.
fn render(
    parts: &[Part],
    like: bool,
    mut var: impl FnMut(&Key) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::new();
    let literal = |out: &mut String, s: &str, wild: bool| {
        for c in s.chars() {
            if like && (c == '\\' || (!wild && (c == '*' || c == '?'))) {
                out.push('\\');
            }
            out.push(c);
        }
    };
    for p in parts {
        match p {
            Part::Text(t) => literal(&mut out, t, true),
            Part::Escaped(c) => literal(&mut out, &c.to_string(), false),
            Part::Var(k) => literal(&mut out, &var(k)?, false),
        }
    }
    Ok(out)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A value shown in an explanation.
fn display(v: &Value) -> String {
    scalar_text(v).unwrap_or_else(|| v.to_string())
}

/// Milliseconds since the epoch and the UTC offset in minutes of an RFC 3339 date-time, a date,
/// or epoch seconds (a number or a numeric text).
pub(crate) fn to_time(v: &Value) -> Option<(i64, i64)> {
    match v {
        Value::Number(n) => secs_to_ms(n.as_f64()?).map(|ms| (ms, 0)),
        Value::String(s) => {
            if let Ok(x) = s.trim().parse::<f64>() {
                return secs_to_ms(x).map(|ms| (ms, 0));
            }
            let ms = crate::clock::parse_date_ms(s)?;
            Some((ms, utc_offset_minutes(s)))
        }
        _ => None,
    }
}

fn secs_to_ms(x: f64) -> Option<i64> {
    let ms = (x * 1000.0).round();
    // Years 0 to 9999.
    (x.is_finite() && (-62_167_219_200_000.0..=253_402_300_799_000.0).contains(&ms))
        .then_some(ms as i64)
}

/// The `+hh:mm` / `-hh:mm` offset at the end of an RFC 3339 text, in minutes (0 for `Z`).
fn utc_offset_minutes(s: &str) -> i64 {
    let b = s.as_bytes();
    let Some(tail) = s.get(s.len().saturating_sub(6)..).filter(|t| t.len() == 6) else {
        return 0;
    };
    let tb = tail.as_bytes();
    if !matches!(tb[0], b'+' | b'-') || tb[3] != b':' || b.len() <= 19 {
        return 0;
    }
    let h: i64 = tail.get(1..3).and_then(|x| x.parse().ok()).unwrap_or(0);
    let m: i64 = tail.get(4..6).and_then(|x| x.parse().ok()).unwrap_or(0);
    let off = h * 60 + m;
    if tb[0] == b'-' { -off } else { off }
}

fn to_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

fn to_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// An address range: an address and the length of its network prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub(crate) fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|n| *n <= max)?
            }
            Some(_) => return None,
        };
        Some(IpNet { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `*` matches any run of characters, `?` one character; everything else itself.
pub(crate) fn like(pattern: &str, s: &str) -> bool {
    // Tokens: `None` for `*`, `Some(None)` for `?`, `Some(Some(c))` for a literal character.
    let mut p: Vec<Option<Option<char>>> = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        p.push(match c {
            '*' => None,
            '?' => Some(None),
            '\\' => Some(Some(chars.next().unwrap_or('\\'))),
            c => Some(Some(c)),
        });
    }
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(None) => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(Some(c)) if c.is_none_or(|c| c == t[ti]) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(Option::is_none)
}

/// The comparison of an operator, before negation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Test {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    NumericEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    IpAddress,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Numeric,
    Date,
    Bool,
    Ip,
    Null,
}

impl Test {
    fn kind(self) -> Kind {
        use Test::*;
        match self {
            StringEquals | StringEqualsIgnoreCase | StringLike => Kind::String,
            NumericEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => Kind::Numeric,
            DateEquals
            | DateLessThan
            | DateLessThanEquals
            | DateGreaterThan
            | DateGreaterThanEquals => Kind::Date,
            Bool => Kind::Bool,
            IpAddress => Kind::Ip,
            Null => Kind::Null,
        }
    }
}

/// The operators, as written (without `IfExists`): (name, test, negated).
const OPERATORS: [(&str, Test, bool); 22] = [
    ("StringEquals", Test::StringEquals, false),
    ("StringNotEquals", Test::StringEquals, true),
    (
        "StringEqualsIgnoreCase",
        Test::StringEqualsIgnoreCase,
        false,
    ),
    (
        "StringNotEqualsIgnoreCase",
        Test::StringEqualsIgnoreCase,
        true,
    ),
    ("StringLike", Test::StringLike, false),
    ("StringNotLike", Test::StringLike, true),
    ("NumericEquals", Test::NumericEquals, false),
    ("NumericNotEquals", Test::NumericEquals, true),
    ("NumericLessThan", Test::NumericLessThan, false),
    ("NumericLessThanEquals", Test::NumericLessThanEquals, false),
    ("NumericGreaterThan", Test::NumericGreaterThan, false),
    (
        "NumericGreaterThanEquals",
        Test::NumericGreaterThanEquals,
        false,
    ),
    ("DateEquals", Test::DateEquals, false),
    ("DateNotEquals", Test::DateEquals, true),
    ("DateLessThan", Test::DateLessThan, false),
    ("DateLessThanEquals", Test::DateLessThanEquals, false),
    ("DateGreaterThan", Test::DateGreaterThan, false),
    ("DateGreaterThanEquals", Test::DateGreaterThanEquals, false),
    ("Bool", Test::Bool, false),
    ("IpAddress", Test::IpAddress, false),
    ("NotIpAddress", Test::IpAddress, true),
    ("Null", Test::Null, false),
];

/// The names of every operator (each also with `IfExists`, except `Null`).
pub fn operator_names() -> impl Iterator<Item = &'static str> {
    OPERATORS.iter().map(|(n, _, _)| *n)
}

/// A value of a condition as parsed when written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expected {
    Text(String),
    Number(f64),
    /// Milliseconds since the epoch.
    Time(i64),
    Bool(bool),
    Net(IpNet),
    /// A text with variables, converted at decision time.
    Template(Vec<Part>),
}

/// One (operator, key) entry of a conditions block.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The operator as written, `IfExists` included.
    operator: String,
    test: Test,
    negated: bool,
    if_exists: bool,
    key: Key,
    /// The values as written (a scalar or a list).
    raw: Value,
    values: Vec<Expected>,
}

impl Eq for Condition {}

/// The conditions block of a statement: every entry must hold. Empty: no conditions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conditions(Vec<Condition>);

impl Conditions {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Reads a conditions block; the message names the operator, the key and the value at fault.
    pub fn from_json(v: &Value) -> Result<Conditions, String> {
        let Value::Object(ops) = v else {
            return Err(
                "`conditions` must be an object of operators, e.g. {\"StringEquals\": {\"key\": \"value\"}}"
                    .into(),
            );
        };
        let mut out = Vec::new();
        for (op_name, keys) in ops {
            let (base, if_exists) = match op_name.strip_suffix("IfExists") {
                Some(b) if b != "Null" => (b, true),
                _ => (op_name.as_str(), false),
            };
            let Some(&(_, test, negated)) = OPERATORS.iter().find(|(n, _, _)| *n == base) else {
                return Err(format!(
                    "unknown condition operator `{}`; the operators are {}, each also with `IfExists` (except `Null`)",
                    short(op_name),
                    operator_names().collect::<Vec<_>>().join(", ")
                ));
            };
            let Value::Object(keys) = keys else {
                return Err(format!(
                    "operator `{op_name}`: must be an object of keys and values"
                ));
            };
            if keys.is_empty() {
                return Err(format!("operator `{op_name}`: names no key"));
            }
            for (key_name, raw) in keys {
                if out.len() >= MAX_CONDITIONS {
                    return Err(format!(
                        "more than {MAX_CONDITIONS} (operator, key) entries in one statement"
                    ));
                }
                let at = |msg: String| format!("`{op_name}` on `{}`: {msg}", short(key_name));
                let key = Key::parse(key_name).map_err(&at)?;
                let list: Vec<&Value> = match raw {
                    Value::Array(a) => a.iter().collect(),
                    v => vec![v],
                };
                if list.is_empty() {
                    return Err(at("no value".into()));
                }
                if list.len() > MAX_CONDITION_VALUES {
                    return Err(at(format!(
                        "{} values, at most {MAX_CONDITION_VALUES}",
                        list.len()
                    )));
                }
                if test == Test::Null && list.len() != 1 {
                    return Err(at("`Null` takes one value, `true` or `false`".into()));
                }
                let values = list
                    .iter()
                    .map(|v| expected(test, v).map_err(&at))
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(Condition {
                    operator: op_name.clone(),
                    test,
                    negated,
                    if_exists,
                    key,
                    raw: raw.clone(),
                    values,
                });
            }
        }
        Ok(Conditions(out))
    }

    /// The block as written (operator first).
    pub fn to_json(&self) -> Value {
        let mut ops: Map<String, Value> = Map::new();
        for c in &self.0 {
            let entry = ops
                .entry(c.operator.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.insert(c.key.name().into_owned(), c.raw.clone());
            }
        }
        Value::Object(ops)
    }

    /// True when every entry holds (no trace kept, stops at the first that fails).
    pub(crate) fn hold(&self, facts: &Facts<'_>) -> bool {
        self.0.iter().all(|c| c.eval(facts, None))
    }

    /// Every entry evaluated, with what it compared; true when all hold.
    pub(crate) fn trace(&self, facts: &Facts<'_>, out: &mut Vec<ConditionCheck>) -> bool {
        let mut all = true;
        for c in &self.0 {
            let mut check = ConditionCheck {
                operator: c.operator.clone(),
                key: c.key.name().into_owned(),
                values: Vec::new(),
                actual: None,
                held: false,
                note: None,
            };
            let held = c.eval(facts, Some(&mut check));
            check.held = held;
            all &= held;
            out.push(check);
        }
        all
    }

    /// True when some entry reads a key of the resource (its result may differ per resource).
    pub fn reads_resource(&self) -> bool {
        self.0.iter().any(|c| {
            c.key.about_resource()
                || c.values.iter().any(|v| {
                    matches!(v, Expected::Template(parts)
                        if parts.iter().any(|p| matches!(p, Part::Var(k) if k.about_resource())))
                })
        })
    }
}

/// One value of a condition, parsed for its operator. Texts with `${...}` are kept as templates.
fn expected(test: Test, v: &Value) -> Result<Expected, String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => {
            return Err(format!(
                "value `{}` must be a string, a number or a boolean",
                short(&other.to_string())
            ));
        }
    };
    if text.len() > MAX_CONDITION_TEXT {
        return Err(format!(
            "value `{}` is longer than {MAX_CONDITION_TEXT} bytes",
            short(&text)
        ));
    }
    let like = test == Test::StringLike;
    if test != Test::Null && text.contains("${") {
        let parts = parse_template(&text)?;
        if parts.iter().any(|p| matches!(p, Part::Var(_))) {
            return Ok(Expected::Template(parts));
        }
        // Only escapes: the literal text (a pattern for `StringLike`).
        let literal = render(&parts, like, |_| Ok(String::new()))?;
        return convert(test, &Value::String(literal.clone()))
            .ok_or_else(|| bad_value(test, &text));
    }
    if like {
        let pattern = render(&[Part::Text(text.clone())], true, |_| Ok(String::new()))?;
        return Ok(Expected::Text(pattern));
    }
    convert(test, v).ok_or_else(|| bad_value(test, &text))
}

fn bad_value(test: Test, text: &str) -> String {
    let what = match test.kind() {
        Kind::String => "a string",
        Kind::Numeric => "a number",
        Kind::Date => "an RFC 3339 date-time or epoch seconds",
        Kind::Bool => "`true` or `false`",
        Kind::Ip => "an IPv4 or IPv6 address or CIDR range",
        Kind::Null => "`true` or `false`",
    };
    format!("value `{}` is not {what}", short(text))
}

/// A value converted to the type of the operator; `None` when it is not of that type.
fn convert(test: Test, v: &Value) -> Option<Expected> {
    Some(match test.kind() {
        Kind::String => Expected::Text(scalar_text(v)?),
        Kind::Numeric => Expected::Number(to_number(v)?),
        Kind::Date => Expected::Time(to_time(v)?.0),
        Kind::Bool | Kind::Null => Expected::Bool(to_bool(v)?),
        Kind::Ip => match v {
            Value::String(s) => Expected::Net(IpNet::parse(s.trim())?),
            _ => return None,
        },
    })
}

/// What one (operator, key) entry compared, for explanations.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConditionCheck {
    pub operator: String,
    pub key: String,
    /// The policy's values, variables replaced.
    pub values: Vec<String>,
    /// The request's values of the key; `None`: absent.
    pub actual: Option<Vec<String>>,
    pub held: bool,
    /// Why it failed when the values alone do not say (a variable without a value, a value of
    /// the wrong type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Condition {
    /// Whether the entry holds; with `trace`, records what was compared.
    fn eval(&self, facts: &Facts<'_>, mut trace: Option<&mut ConditionCheck>) -> bool {
        let found = facts.lookup(&self.key);
        if let Some(t) = trace.as_deref_mut() {
            t.actual = found
                .as_ref()
                .map(|vals| vals.iter().map(|v| display(v)).collect());
        }
        if self.test == Test::Null {
            let want_absent = matches!(self.values.first(), Some(Expected::Bool(true)));
            if let Some(t) = trace {
                t.values = vec![want_absent.to_string()];
            }
            return found.is_none() == want_absent;
        }
        // The policy's values, variables replaced.
        let mut expected: Vec<Cow<'_, Expected>> = Vec::with_capacity(self.values.len());
        let mut failure: Option<String> = None;
        for v in &self.values {
            match v {
                Expected::Template(parts) => match facts
                    .substitute(parts, self.test == Test::StringLike)
                {
                    Ok(s) => match convert(self.test, &Value::String(s.clone())) {
                        Some(x) => expected.push(Cow::Owned(x)),
                        None => {
                            failure.get_or_insert_with(|| {
                                format!("`{s}` (from a variable) is not of the operator's type")
                            });
                        }
                    },
                    Err(key) => {
                        failure
                            .get_or_insert_with(|| format!("variable `${{{key}}}` has no value"));
                    }
                },
                other => expected.push(Cow::Borrowed(other)),
            }
        }
        if let Some(t) = trace.as_deref_mut() {
            t.values = expected.iter().map(|e| show_expected(e)).collect();
        }
        let Some(actual) = found else {
            return self.if_exists;
        };
        if let Some(f) = failure {
            if let Some(t) = trace {
                t.note = Some(f);
            }
            return false;
        }
        let mut any = false;
        for a in &actual {
            match self.matches_any(a, &expected) {
                Some(true) => {
                    any = true;
                    break;
                }
                Some(false) => {}
                None => {
                    if let Some(t) = trace {
                        t.note = Some(format!(
                            "the request's value `{}` is not {}",
                            short(&display(a)),
                            match self.test.kind() {
                                Kind::Numeric => "a number",
                                Kind::Date => "a date-time",
                                Kind::Bool => "a boolean",
                                Kind::Ip => "an IP address",
                                Kind::String | Kind::Null => "a string",
                            }
                        ));
                    }
                    return false;
                }
            }
        }
        any != self.negated
    }

    /// Whether `actual` matches one of `expected`; `None` when it is not of the operator's type.
    fn matches_any(&self, actual: &Value, expected: &[Cow<'_, Expected>]) -> Option<bool> {
        use std::cmp::Ordering;
        let cmp = |o: Option<Ordering>| -> bool {
            let Some(o) = o else { return false };
            match self.test {
                Test::NumericEquals | Test::DateEquals => o == Ordering::Equal,
                Test::NumericLessThan | Test::DateLessThan => o == Ordering::Less,
                Test::NumericLessThanEquals | Test::DateLessThanEquals => o != Ordering::Greater,
                Test::NumericGreaterThan | Test::DateGreaterThan => o == Ordering::Greater,
                _ => o != Ordering::Less,
            }
        };
        Some(match self.test.kind() {
            Kind::String => {
                let a = scalar_text(actual)?;
                let lower = (self.test == Test::StringEqualsIgnoreCase).then(|| a.to_lowercase());
                expected.iter().any(|e| match (&**e, self.test) {
                    (Expected::Text(t), Test::StringEquals) => *t == a,
                    (Expected::Text(t), Test::StringEqualsIgnoreCase) => {
                        lower.as_deref() == Some(t.to_lowercase().as_str())
                    }
                    (Expected::Text(t), _) => like(t, &a),
                    _ => false,
                })
            }
            Kind::Numeric => {
                let a = to_number(actual)?;
                expected.iter().any(|e| match &**e {
                    Expected::Number(n) => cmp(a.partial_cmp(n)),
                    _ => false,
                })
            }
            Kind::Date => {
                let a = to_time(actual)?.0;
                expected.iter().any(|e| match &**e {
                    Expected::Time(t) => cmp(Some(a.cmp(t))),
                    _ => false,
                })
            }
            Kind::Bool => {
                let a = to_bool(actual)?;
                expected
                    .iter()
                    .any(|e| matches!(&**e, Expected::Bool(b) if *b == a))
            }
            Kind::Ip => {
                let ip: IpAddr = match actual {
                    Value::String(s) => s.trim().parse().ok()?,
                    _ => return None,
                };
                expected
                    .iter()
                    .any(|e| matches!(&**e, Expected::Net(n) if n.contains(ip)))
            }
            Kind::Null => false,
        })
    }
}

fn show_expected(e: &Expected) -> String {
    match e {
        Expected::Text(t) => t.clone(),
        Expected::Number(n) => Value::from(*n)
            .to_string()
            .trim_end_matches(".0")
            .to_owned(),
        Expected::Time(ms) => crate::clock::rfc3339_ms(*ms),
        Expected::Bool(b) => b.to_string(),
        Expected::Net(n) => format!("{}/{}", n.addr, n.prefix),
        Expected::Template(_) => String::new(),
    }
}

/// A resource pattern with variables, e.g. `krn:fs:t1::folder/${iam:username}/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceTemplate {
    text: String,
    parts: Vec<Part>,
    /// The wildcard pattern it is indexed under: the text before its first variable, cut after
    /// the last `:` or `/` (`*` when that leaves nothing).
    index_key: Krn,
}

impl ResourceTemplate {
    /// Reads a resource with `${...}`; `Ok(None)` when it has no variable.
    pub fn parse(s: &str) -> Result<Option<ResourceTemplate>, String> {
        if !s.contains("${") {
            return Ok(None);
        }
        let parts = parse_template(s)?;
        if !parts.iter().any(|p| matches!(p, Part::Var(_))) {
            return Ok(None);
        }
        if let Some(k) = parts.iter().find_map(|p| match p {
            Part::Var(k) if k.about_resource() => Some(k),
            _ => None,
        }) {
            return Err(format!(
                "variable `${{{}}}`: a resource cannot be named by its own attributes",
                k.name()
            ));
        }
        // Each variable replaced by a sample value must give a KRN.
        let sample: String = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Escaped(c) => c.to_string(),
                Part::Var(Key::Principal) => "krn:iam:sample::user/sample".to_owned(),
                Part::Var(_) => "sample".to_owned(),
            })
            .collect();
        Krn::parse(&sample).map_err(|e| {
            format!(
                "with its variables replaced (`{}`), {}",
                short(&sample),
                e.to_string().replace(&format!("`{sample}`"), "").trim()
            )
        })?;
        let before = s.split("${").next().unwrap_or("");
        let cut = before
            .rfind([':', '/'])
            .map_or("", |i| &before[..=i])
            .to_owned();
        let index_key = match cut.as_str() {
            "" | "krn:" => Krn::parse("*"),
            c => Krn::parse(&format!("{c}*")).or_else(|_| Krn::parse("*")),
        }
        .map_err(|e| e.to_string())?;
        Ok(Some(ResourceTemplate {
            text: s.to_owned(),
            parts,
            index_key,
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The wildcard pattern every resource it can match starts with.
    pub fn index_key(&self) -> &Krn {
        &self.index_key
    }

    /// The pattern for these facts: `Err` says why there is none (a variable without a value, a
    /// value with `*`, or a text that is no KRN).
    pub(crate) fn instantiate(&self, facts: &Facts<'_>) -> Result<Krn, String> {
        let mut out = String::with_capacity(self.text.len() + 16);
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Escaped(c) => out.push(*c),
                Part::Var(k) => match facts.variable(k) {
                    Some(v) if v.contains('*') => {
                        return Err(format!("variable `${{{}}}` holds a `*`", k.name()));
                    }
                    Some(v) => out.push_str(&v),
                    None => return Err(format!("variable `${{{}}}` has no value", k.name())),
                },
            }
        }
        Krn::parse(&out).map_err(|e| e.to_string())
    }

    /// True when `facts.resource` matches the pattern for these facts.
    pub(crate) fn matches(&self, facts: &Facts<'_>) -> bool {
        self.instantiate(facts)
            .is_ok_and(|k| facts.resource.matches(&k))
    }
}

/// What a variable resource of a statement came to, for explanations.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceCheck {
    /// As written.
    pub pattern: String,
    /// With its variables replaced; `None` when that failed (see `note`).
    pub substituted: Option<String>,
    pub held: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn k(s: &str) -> Krn {
        Krn::parse(s).unwrap()
    }

    fn env(context: Value) -> MapEnv {
        MapEnv {
            context: context.as_object().cloned().unwrap_or_default(),
            ..MapEnv::default()
        }
    }

    fn holds(conds: Value, context: Value) -> bool {
        let c = Conditions::from_json(&conds).unwrap();
        let principals = [k("krn:iam:t1::user/ops/bob"), k("krn:iam:t1::group/ops")];
        let resource = k("krn:epr:t1::endpoint/e1");
        let e = env(context);
        let facts = Facts {
            principals: &principals,
            resource: &resource,
            env: &e,
        };
        let quick = c.hold(&facts);
        let mut trace = Vec::new();
        assert_eq!(c.trace(&facts, &mut trace), quick, "{conds}");
        assert_eq!(trace.len(), c.len());
        quick
    }

    #[test]
    fn string_operators() {
        let c = json!({"site": "a"});
        assert!(holds(json!({"StringEquals": {"site": "a"}}), c.clone()));
        assert!(!holds(json!({"StringEquals": {"site": "A"}}), c.clone()));
        assert!(holds(
            json!({"StringEqualsIgnoreCase": {"site": "A"}}),
            c.clone()
        ));
        assert!(holds(
            json!({"StringEquals": {"site": ["b", "a"]}}),
            c.clone()
        ));
        // Negated with several values: none may match (NOR).
        assert!(!holds(
            json!({"StringNotEquals": {"site": ["b", "a"]}}),
            c.clone()
        ));
        assert!(holds(
            json!({"StringNotEquals": {"site": ["b", "c"]}}),
            c.clone()
        ));
        assert!(holds(
            json!({"StringLike": {"name": "dev-*-?"}}),
            json!({"name": "dev-east-1"})
        ));
        assert!(!holds(
            json!({"StringLike": {"name": "dev-*-?"}}),
            json!({"name": "dev-east-12"})
        ));
        assert!(holds(
            json!({"StringNotLike": {"name": "prod*"}}),
            json!({"name": "dev"})
        ));
        // Missing key: false, negated too, unless IfExists.
        assert!(!holds(json!({"StringEquals": {"zone": "a"}}), c.clone()));
        assert!(!holds(json!({"StringNotEquals": {"zone": "a"}}), c.clone()));
        assert!(holds(
            json!({"StringNotEqualsIfExists": {"zone": "a"}}),
            c.clone()
        ));
        // Keys AND-ed, operators AND-ed.
        assert!(!holds(
            json!({"StringEquals": {"site": "a", "zone": "z"}}),
            c.clone()
        ));
        assert!(holds(
            json!({"StringEquals": {"site": "a"}, "StringLike": {"site": "*"}}),
            c
        ));
    }

    #[test]
    fn like_matches_wildcards() {
        assert!(like("*", ""));
        assert!(like("a*b*c", "axxbyyc"));
        assert!(!like("a*b*c", "axxbyy"));
        assert!(like("?é?", "xéy"));
        assert!(!like("abc", "abcd"));
        assert!(like("**a", "a"));
        assert!(like("a\\*b", "a*b"));
        assert!(!like("a\\*b", "axb"));
        assert!(like("a\\\\b", "a\\b"));
    }

    #[test]
    fn numbers_dates_bools_ips_null() {
        assert!(holds(
            json!({"NumericLessThan": {"n": 10}}),
            json!({"n": "9.5"})
        ));
        assert!(!holds(
            json!({"NumericLessThan": {"n": 10}}),
            json!({"n": 10})
        ));
        assert!(holds(
            json!({"NumericLessThanEquals": {"n": "10"}}),
            json!({"n": 10})
        ));
        assert!(holds(
            json!({"NumericGreaterThanEquals": {"n": 3}, "NumericNotEquals": {"n": [4, 5]}}),
            json!({"n": 3})
        ));
        // A value of the wrong type never matches.
        assert!(!holds(
            json!({"NumericNotEquals": {"n": 1}}),
            json!({"n": "x"})
        ));
        let t = json!({"kaa:CurrentTime": "2026-12-07T10:30:00+01:00"});
        assert!(holds(
            json!({"DateGreaterThan": {"kaa:CurrentTime": "2026-12-07T09:00:00Z"}}),
            t.clone()
        ));
        assert!(holds(
            json!({"DateLessThan": {"kaa:CurrentTime": 1_796_644_800}}),
            t.clone()
        ));
        assert!(holds(
            json!({"NumericEquals": {"kaa:CurrentHour": 10, "kaa:CurrentDayOfWeek": 1}}),
            t.clone()
        ));
        assert!(holds(
            json!({"NumericEquals": {"kaa:CurrentHour": 9}}),
            json!({"kaa:CurrentTime": "2026-12-07T09:59:59Z"})
        ));
        assert!(holds(
            json!({"Bool": {"mfa": true}}),
            json!({"mfa": "TRUE"})
        ));
        assert!(!holds(
            json!({"Bool": {"mfa": "true"}}),
            json!({"mfa": false})
        ));
        let ip = json!({"kaa:SourceIp": "10.1.2.3"});
        assert!(holds(
            json!({"IpAddress": {"kaa:SourceIp": "10.0.0.0/8"}}),
            ip.clone()
        ));
        assert!(!holds(
            json!({"IpAddress": {"kaa:SourceIp": ["192.168.0.0/16", "2001:db8::/32"]}}),
            ip.clone()
        ));
        assert!(holds(
            json!({"NotIpAddress": {"kaa:SourceIp": "192.168.0.0/16"}}),
            ip.clone()
        ));
        assert!(holds(
            json!({"IpAddress": {"kaa:SourceIp": "2001:db8::/32"}}),
            json!({"kaa:SourceIp": "2001:db8::1"})
        ));
        assert!(holds(
            json!({"IpAddress": {"kaa:SourceIp": "0.0.0.0/0"}}),
            ip.clone()
        ));
        assert!(holds(json!({"Null": {"kaa:SourceIp": false}}), ip.clone()));
        assert!(holds(json!({"Null": {"site": "true"}}), ip.clone()));
        assert!(!holds(json!({"Null": {"site": false}}), ip));
    }

    #[test]
    fn principal_and_resource_keys_and_variables() {
        assert!(holds(
            json!({"StringEquals": {"iam:username": "bob", "iam:path": "ops", "iam:tenant": "t1",
                    "krn:principal": "krn:iam:t1::user/ops/bob", "resource:type": "endpoint",
                    "resource:service": "epr", "resource:tenant": "t1",
                    "iam:groups": "krn:iam:t1::group/ops"}}),
            json!({})
        ));
        assert!(holds(
            json!({"StringEquals": {"owner": "${iam:username}"}}),
            json!({"owner": "bob"})
        ));
        assert!(holds(
            json!({"StringLike": {"resource:krn": "krn:epr:${iam:tenant}::*"}}),
            json!({})
        ));
        // A variable without a value makes the entry false, negated or not.
        assert!(!holds(
            json!({"StringNotEquals": {"owner": "${zone}"}}),
            json!({"owner": "bob"})
        ));
        assert!(holds(
            json!({"StringEquals": {"owner": "a${$}b"}}),
            json!({"owner": "a$b"})
        ));
    }

    #[test]
    fn write_time_errors_name_operator_key_and_value() {
        let e = |v: Value| Conditions::from_json(&v).unwrap_err();
        assert!(
            e(json!({"StringEqual": {"a": "b"}}))
                .starts_with("unknown condition operator `StringEqual`")
        );
        assert_eq!(
            e(json!({"NumericLessThan": {"kaa:CurrentHour": "eight"}})),
            "`NumericLessThan` on `kaa:CurrentHour`: value `eight` is not a number"
        );
        assert_eq!(
            e(json!({"IpAddress": {"kaa:SourceIp": "10.0.0.0/33"}})),
            "`IpAddress` on `kaa:SourceIp`: value `10.0.0.0/33` is not an IPv4 or IPv6 address or CIDR range"
        );
        assert_eq!(
            e(json!({"DateLessThan": {"kaa:CurrentTime": "tomorrow"}})),
            "`DateLessThan` on `kaa:CurrentTime`: value `tomorrow` is not an RFC 3339 date-time or epoch seconds"
        );
        assert!(
            e(json!({"StringEquals": {"kaa:SourceIP": "x"}}))
                .starts_with("`StringEquals` on `kaa:SourceIP`: unknown key `kaa:SourceIP`")
        );
        assert!(e(json!({"StringEquals": {"a b": "x"}})).contains("only `A-Z a-z 0-9 _ . : / -`"));
        assert_eq!(
            e(json!({"StringEquals": {"a": []}})),
            "`StringEquals` on `a`: no value"
        );
        assert_eq!(
            e(json!({"StringEquals": {"a": {"x": 1}}})),
            "`StringEquals` on `a`: value `{\"x\":1}` must be a string, a number or a boolean"
        );
        assert_eq!(e(json!({"Bool": {}})), "operator `Bool`: names no key");
        assert!(e(json!({"NullIfExists": {"a": true}})).starts_with("unknown condition operator"));
        assert!(
            e(json!({"StringEquals": {"a": "${iam:nope}"}})).contains("unknown key `iam:nope`")
        );
        assert!(e(json!({"StringEquals": {"a": "${x"}})).contains("without its"));
        assert!(e(json!([])).starts_with("`conditions` must be an object"));
    }

    #[test]
    fn round_trip() {
        let v = json!({"IpAddressIfExists": {"kaa:SourceIp": ["10.0.0.0/8"]},
                       "StringEquals": {"iam:metadata/site": "${resource:metadata/site}", "x": 1}});
        let c = Conditions::from_json(&v).unwrap();
        assert_eq!(c.to_json(), v);
        assert!(c.reads_resource());
    }

    #[test]
    fn resource_templates() {
        let t = ResourceTemplate::parse("krn:fs:t1::folder/${iam:username}/*")
            .unwrap()
            .unwrap();
        assert_eq!(t.index_key().as_str(), "krn:fs:t1::folder/*");
        let principals = [k("krn:iam:t1::user/bob")];
        let e = NoEnv;
        let at = |r: &str| {
            let resource = k(r);
            t.matches(&Facts {
                principals: &principals,
                resource: &resource,
                env: &e,
            })
        };
        assert!(at("krn:fs:t1::folder/bob/a"));
        assert!(!at("krn:fs:t1::folder/alice/a"));
        let whole = ResourceTemplate::parse("${krn:principal}")
            .unwrap()
            .unwrap();
        assert_eq!(whole.index_key().as_str(), "*");
        let tenant = ResourceTemplate::parse("krn:iam:${iam:tenant}::user/*")
            .unwrap()
            .unwrap();
        assert_eq!(tenant.index_key().as_str(), "krn:iam:*");
        assert!(
            ResourceTemplate::parse("krn:fs:t1::folder/x")
                .unwrap()
                .is_none()
        );
        assert!(
            ResourceTemplate::parse("krn:fs:t1::folder/${resource:type}")
                .unwrap_err()
                .contains("its own attributes")
        );
        assert!(
            ResourceTemplate::parse("krn:fs:${a}")
                .unwrap_err()
                .contains("malformed KRN")
        );
    }
}
