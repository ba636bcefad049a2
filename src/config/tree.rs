//! The raw configuration tree: the YAML file as a JSON-like value, environment overrides written
//! into it at dotted keys, and typed reads that remember where each value came from so an error
//! can name the key (and the variable) that holds the bad value. Keys nobody read are reported.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value};

use super::err::ConfigError;
use super::secret::Secret;

/// The layered tree: file values with environment overrides applied.
#[derive(Debug, Default)]
pub struct Tree {
    root: Value,
    /// Dotted key -> environment variable that set it.
    origin: BTreeMap<String, String>,
    /// Dotted keys (and subtrees) that were read.
    read: BTreeSet<String>,
}

impl Tree {
    pub fn new(root: Value) -> Tree {
        let root = if root.is_null() {
            Value::Object(Map::new())
        } else {
            root
        };
        Tree {
            root,
            origin: BTreeMap::new(),
            read: BTreeSet::new(),
        }
    }

    /// Parse YAML text; `source` names the file in errors.
    pub fn from_yaml(text: &str, source: &str) -> Result<Tree, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Tree::new(Value::Null));
        }
        let value: Value = serde_norway::from_str(text).map_err(|e| ConfigError::File {
            path: source.to_string(),
            message: first_line(&e.to_string()),
        })?;
        if !(value.is_object() || value.is_null()) {
            return Err(ConfigError::File {
                path: source.to_string(),
                message: "the top level must be a mapping of sections".into(),
            });
        }
        Ok(Tree::new(value))
    }

    /// Write an environment value at a dotted key (nested objects are created).
    pub fn set_env(&mut self, key: &str, env: &str, value: &str) {
        let parts: Vec<&str> = key.split('.').collect();
        set_path(&mut self.root, &parts, Value::String(value.to_string()));
        self.origin.insert(key.to_string(), env.to_string());
    }

    fn lookup<'a>(node: &'a Value, parts: &[&str]) -> Option<&'a Value> {
        if parts.is_empty() {
            return Some(node);
        }
        let map = node.as_object()?;
        for k in 1..=parts.len() {
            let key = parts[..k].join(".");
            if let Some(child) = map.get(&key)
                && let Some(v) = Tree::lookup(child, &parts[k..])
            {
                return Some(v);
            }
        }
        None
    }

    /// The raw value at a dotted key (marks the key and its subtree as read).
    pub fn raw(&mut self, key: &str) -> Option<Value> {
        self.read.insert(key.to_string());
        let parts: Vec<&str> = key.split('.').collect();
        match Tree::lookup(&self.root, &parts) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.clone()),
        }
    }

    fn invalid(&self, key: &str, value: &Value, problem: &str) -> ConfigError {
        let shown = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        ConfigError::Invalid {
            key: key.to_string(),
            env: self.origin.get(key).cloned(),
            value: shown,
            problem: problem.to_string(),
        }
    }

    /// Same as `invalid` but never shows the value (secrets).
    fn invalid_secret(&self, key: &str, problem: &str) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            env: self.origin.get(key).cloned(),
            value: "***".into(),
            problem: problem.to_string(),
        }
    }

    pub fn string(&mut self, key: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.opt_string(key)?.unwrap_or_else(|| default.to_string()))
    }

    pub fn opt_string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(v) => Err(self.invalid(key, &v, "expected a string")),
        }
    }

    pub fn secret(&mut self, key: &str, default: &str) -> Result<Secret, ConfigError> {
        match self.raw(key) {
            None => Ok(Secret::new(default)),
            Some(Value::String(s)) => Ok(Secret::new(&s)),
            Some(Value::Number(n)) => Ok(Secret::new(&n.to_string())),
            Some(_) => Err(self.invalid_secret(key, "expected a string")),
        }
    }

    pub fn bool(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(b),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" | "" => Ok(false),
                _ => Err(self.invalid(key, &Value::String(s.clone()), "expected true or false")),
            },
            Some(v) => Err(self.invalid(key, &v, "expected true or false")),
        }
    }

    /// An unsigned integer within `min..=max`.
    pub fn uint(
        &mut self,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let v = match self.raw(key) {
            None => return Ok(default),
            Some(v) => v,
        };
        let parsed = match &v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            Some(_) => Err(self.invalid(key, &v, &format!("must be between {min} and {max}"))),
            None => Err(self.invalid(key, &v, "expected a whole number")),
        }
    }

    pub fn port(&mut self, key: &str, default: u16) -> Result<u16, ConfigError> {
        let n = self.uint(key, u64::from(default), 1, 65535)?;
        Ok(u16::try_from(n).unwrap_or(default))
    }

    /// Seconds as a whole number (`30`) or with a unit (`30s`, `500ms`, `2m`).
    pub fn duration(
        &mut self,
        key: &str,
        default: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let v = match self.raw(key) {
            None => return Ok(default),
            Some(v) => v,
        };
        let parsed = match &v {
            Value::Number(n) => n.as_u64().map(Duration::from_secs),
            Value::String(s) => parse_duration(s),
            _ => None,
        };
        match parsed {
            Some(d) if d <= max => Ok(d),
            Some(_) => Err(self.invalid(
                key,
                &v,
                &format!("must be at most {} seconds", max.as_secs()),
            )),
            None => Err(self.invalid(
                key,
                &v,
                "expected seconds (`30`) or a duration (`500ms`, `30s`, `2m`)",
            )),
        }
    }

    /// One of `allowed` (case-insensitive), returned lower-case.
    pub fn one_of(
        &mut self,
        key: &str,
        default: &str,
        allowed: &[&str],
    ) -> Result<String, ConfigError> {
        let s = self.string(key, default)?.trim().to_ascii_lowercase();
        if allowed.contains(&s.as_str()) {
            Ok(s)
        } else {
            Err(self.invalid(
                key,
                &Value::String(s),
                &format!("expected one of {}", allowed.join(", ")),
            ))
        }
    }

    /// A list of strings: a YAML sequence or a comma-separated string.
    pub fn string_list(&mut self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.trim().to_string()),
                    other => Err(self.invalid(key, other, "expected a list of strings")),
                })
                .collect(),
            Some(v) => Err(self.invalid(key, &v, "expected a list of strings")),
        }
    }

    /// Build an error for `key` from a caller-side validation.
    pub fn error(&self, key: &str, value: &str, problem: &str) -> ConfigError {
        self.invalid(key, &Value::String(value.to_string()), problem)
    }

    /// Leaf keys of the file that no read touched.
    pub fn unread_keys(&self) -> Vec<String> {
        let mut leaves = Vec::new();
        collect_leaves(&self.root, String::new(), &mut leaves);
        leaves
            .into_iter()
            .filter(|leaf| {
                !self.read.iter().any(|r| {
                    leaf == r
                        || leaf.starts_with(&format!("{r}."))
                        || r.starts_with(&format!("{leaf}."))
                })
            })
            .collect()
    }
}

fn set_path(node: &mut Value, parts: &[&str], value: Value) {
    let Some((first, rest)) = parts.split_first() else {
        *node = value;
        return;
    };
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    let Value::Object(map) = node else { return };
    // A literal dotted key already present at this level (`replica.id`) takes the write.
    let joined = parts.join(".");
    if !rest.is_empty() && map.contains_key(&joined) {
        map.insert(joined, value);
        return;
    }
    let child = map
        .entry((*first).to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    set_path(child, rest, value);
}

fn collect_leaves(node: &Value, prefix: String, out: &mut Vec<String>) {
    match node {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                collect_leaves(v, key, out);
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.push(prefix);
            }
        }
    }
}

/// `30`, `30s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_literal_dotted_keys_both_resolve() {
        let mut t = Tree::from_yaml(
            "service:\n  instance:\n    name: x\n    replica.id: r1\n",
            "f.yml",
        )
        .unwrap();
        assert_eq!(t.string("service.instance.name", "").unwrap(), "x");
        assert_eq!(t.string("service.instance.replica.id", "").unwrap(), "r1");
        assert!(t.unread_keys().is_empty());
    }

    #[test]
    fn env_overrides_win_and_errors_name_the_variable() {
        let mut t = Tree::from_yaml("server:\n  port: 9000\n", "f.yml").unwrap();
        t.set_env("server.port", "SERVER_PORT", "abc");
        let err = t.port("server.port", 8090).unwrap_err().to_string();
        assert!(err.contains("`server.port`"), "{err}");
        assert!(err.contains("SERVER_PORT"), "{err}");
        assert!(err.contains("`abc`"), "{err}");
    }

    #[test]
    fn unread_keys_are_reported() {
        let mut t = Tree::from_yaml("server:\n  port: 1\n  prot: 2\n", "f.yml").unwrap();
        t.port("server.port", 1).unwrap();
        assert_eq!(t.unread_keys(), vec!["server.prot".to_string()]);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("5d"), None);
    }

    #[test]
    fn bad_yaml_names_the_file() {
        let err = Tree::from_yaml("a: [", "/x/y.yml").unwrap_err().to_string();
        assert!(err.contains("/x/y.yml"), "{err}");
        let err = Tree::from_yaml("- 1\n- 2\n", "/x/y.yml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mapping"), "{err}");
    }
}
