#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Helm charts against the seed: every key of the published "Chart Values" table
//! (charts/iam/seed-values.tsv) is in each chart's values.yaml with the published default and a
//! comment, and values.schema.json types it; every variable of the published environment table
//! (charts/iam/seed-env.tsv) is set by the chart's templates or documented there as left to the
//! binary's default; every variable the charts set is one the binaries read.
//! Rendering, `helm lint` and Kubernetes schema validation are in scripts/check-charts.sh.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

const CHARTS: &[&str] = &["iam", "tenant-manager"];

/// Defaults that differ by design from the seed's table (which is IAM's): chart, key, default.
const CHART_DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "tenant-manager",
        "postgresql.postgresqlDatabase",
        "\"tenant_manager\"",
    ),
    (
        "tenant-manager",
        "postgresql.postgresqlUsername",
        "\"tenant_manager\"",
    ),
];

/// Seed types the charts deliberately widen: key, the type the schema has instead, why.
const TYPE_DEVIATIONS: &[(&str, &str, &str)] = &[(
    "ingress.annotations",
    "object",
    "the seed prints `string` (default nil) for key-value annotations; a mapping is what an \
     Ingress takes",
)];

/// Variables the charts set that the binaries do not read yet (reported, not failed).
const PENDING_IN_BINARY: &[&str] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Rows of a tab-separated file, without `#` comments and the header row.
fn tsv(path: &Path) -> Vec<Vec<String>> {
    read(path)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `a.b."c.d"[1]` -> [a, b, c.d, 1]; the seed prints typographic quotes around some keys.
fn parse_path(key: &str) -> Vec<Seg> {
    let is_quote = |c: char| matches!(c, '"' | '\u{201c}' | '\u{201d}');
    let mut segs = Vec::new();
    let mut chars = key.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == '.' {
            chars.next();
        } else if c == '[' {
            chars.next();
            let n: String = chars.by_ref().take_while(|&c| c != ']').collect();
            segs.push(Seg::Index(
                n.parse().unwrap_or_else(|_| panic!("index in {key}")),
            ));
        } else if is_quote(c) {
            chars.next();
            let s: String = chars.by_ref().take_while(|&c| !is_quote(c)).collect();
            segs.push(Seg::Key(s));
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c == '.' || c == '[' {
                    break;
                }
                s.push(c);
                chars.next();
            }
            segs.push(Seg::Key(s));
        }
    }
    segs
}

fn lookup<'a>(v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, s| match s {
        Seg::Key(k) => v.as_object()?.get(k),
        Seg::Index(i) => v.as_array()?.get(*i),
    })
}

fn parse_default(text: &str) -> Value {
    if text == "nil" {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("seed default `{text}`: {e}"))
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn seed_type(t: &str) -> &'static str {
    match t {
        "string" => "string",
        "int" => "integer",
        "bool" => "boolean",
        "list" => "array",
        "object" => "object",
        other => panic!("unknown seed type `{other}`"),
    }
}

/// The schema node of a values path (properties, additionalProperties, items).
fn schema_node<'a>(schema: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(schema, |node, seg| match seg {
        Seg::Key(k) => node
            .get("properties")
            .and_then(|p| p.get(k))
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object())),
        Seg::Index(_) => node.get("items"),
    })
}

fn schema_types(node: &Value) -> Vec<String> {
    match node.get("type") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

fn schema_accepts(types: &[String], t: &str) -> bool {
    types
        .iter()
        .any(|s| s == t || (s == "number" && t == "integer"))
}

/// values.yaml lines that define a key, by dotted path (quoted keys unquoted), with whether the
/// line (or the block above it) carries a comment.
fn documented_keys(text: &str) -> Vec<(Vec<String>, bool)> {
    let mut out = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut comment_above = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            comment_above = false;
            continue;
        }
        if trimmed.starts_with('#') {
            comment_above = true;
            continue;
        }
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with("- ") {
            comment_above = false;
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches('"').to_string();
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        out.push((
            stack.iter().map(|(_, k)| k.clone()).collect(),
            comment_above || trimmed.contains(" # "),
        ));
        comment_above = false;
    }
    out
}

#[test]
fn every_seed_value_is_in_each_chart_with_its_default_type_and_comment() {
    let rows = tsv(&root().join("charts/iam/seed-values.tsv"));
    assert!(rows.len() >= 60, "seed table has {} rows", rows.len());
    let mut problems = Vec::new();
    for chart in CHARTS {
        let dir = root().join("charts").join(chart);
        let text = read(&dir.join("values.yaml"));
        let values: Value = serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("charts/{chart}/values.yaml: {e}"));
        let schema: Value = serde_json::from_str(&read(&dir.join("values.schema.json")))
            .unwrap_or_else(|e| panic!("charts/{chart}/values.schema.json: {e}"));
        let documented = documented_keys(&text);
        for row in &rows {
            let [key, typ, default, ..] = row.as_slice() else {
                panic!("bad seed row {row:?}");
            };
            let path = parse_path(key);
            let override_default = CHART_DEFAULTS
                .iter()
                .find(|(c, k, _)| c == chart && k == key)
                .map(|(_, _, d)| *d);
            let expected = parse_default(override_default.unwrap_or(default));
            let deviation = TYPE_DEVIATIONS.iter().find(|(k, _, _)| k == key);

            // The seed's own default has the seed's type (nil aside).
            if !expected.is_null() && json_type(&expected) != seed_type(typ) {
                problems.push(format!("seed: {key}: default {expected} is not a {typ}"));
            }
            match lookup(&values, &path) {
                None => problems.push(format!("{chart}: {key} is missing from values.yaml")),
                Some(actual) if *actual != expected => problems.push(format!(
                    "{chart}: {key} defaults to {actual}, the seed says {expected}"
                )),
                Some(_) => {}
            }
            // Lists: exactly the seed's elements.
            if let Some(Seg::Index(i)) = path.last() {
                let parent = &path[..path.len() - 1];
                let seed_len = rows
                    .iter()
                    .filter(|r| {
                        let p = parse_path(&r[0]);
                        p.len() == path.len() && p[..p.len() - 1] == *parent
                    })
                    .count();
                let len = lookup(&values, parent)
                    .and_then(Value::as_array)
                    .map(Vec::len);
                if *i == 0 && len != Some(seed_len) {
                    problems.push(format!(
                        "{chart}: {key}: the list has {len:?} elements, the seed {seed_len}"
                    ));
                }
            }
            // The schema types the key and accepts the default and the seed's type.
            match schema_node(&schema, &path) {
                None => problems.push(format!("{chart}: {key} is not in values.schema.json")),
                Some(node) => {
                    let types = schema_types(node);
                    let wanted = deviation.map_or(seed_type(typ), |(_, t, _)| *t);
                    if types.is_empty() {
                        problems.push(format!("{chart}: {key}: the schema gives no type"));
                    } else if !schema_accepts(&types, wanted) {
                        problems.push(format!(
                            "{chart}: {key}: the schema types it {types:?}, not {wanted}"
                        ));
                    } else if !schema_accepts(&types, json_type(&expected)) {
                        problems.push(format!(
                            "{chart}: {key}: the schema {types:?} rejects the default {expected}"
                        ));
                    }
                }
            }
            // A comment documents the key (for a list element: the list).
            let key_path: Vec<String> = path
                .iter()
                .filter_map(|s| match s {
                    Seg::Key(k) => Some(k.clone()),
                    Seg::Index(_) => None,
                })
                .collect();
            match documented.iter().find(|(p, _)| *p == key_path) {
                Some((_, true)) => {}
                Some((_, false)) => {
                    problems.push(format!("{chart}: {key} has no comment in values.yaml"))
                }
                None => problems.push(format!("{chart}: {key} not found as a line of values.yaml")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Template text of a chart: every file under templates/.
fn templates(chart: &str) -> String {
    let dir = root().join("charts").join(chart).join("templates");
    let mut names: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "yaml" || x == "tpl" || x == "txt")
        })
        .collect();
    names.sort();
    names.iter().map(|p| read(p)).collect::<Vec<_>>().join("\n")
}

/// Names the templates set: `set $env "NAME"`.
fn set_names(text: &str) -> BTreeSet<String> {
    text.split("set $env \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

/// Names on lines that say `<marker>` (for example "binary default:").
fn marked_names(text: &str, marker: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.contains(marker))
        .flat_map(|l| {
            l.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .filter(|w| w.len() > 3 && w.contains('_'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_seed_variable_is_set_by_each_chart_or_left_to_the_binary_default() {
    let rows = tsv(&root().join("charts/iam/seed-env.tsv"));
    assert!(rows.len() >= 19, "seed env table has {} rows", rows.len());
    let mut problems = Vec::new();
    for chart in CHARTS {
        let text = templates(chart);
        let set = set_names(&text);
        let by_default = marked_names(&text, "binary default:");
        let not_applicable = marked_names(&text, "not applicable:");
        for row in &rows {
            let name = row[0].as_str();
            // Set (possibly only in some cases, the binary's default otherwise), left to the
            // binary's default, or not applicable to this service: never none, and never
            // "not applicable" together with another.
            let (s, d, n) = (
                set.contains(name),
                by_default.contains(name),
                not_applicable.contains(name),
            );
            if !(s || d || n) {
                problems.push(format!(
                    "{chart}: {name} is neither set by the templates nor documented there as \
                     `binary default:` or `not applicable:`"
                ));
            } else if n && (s || d) {
                problems.push(format!(
                    "{chart}: {name} is documented as not applicable but also set or defaulted"
                ));
            }
        }
        if *chart == "iam" && !not_applicable.is_empty() {
            problems.push(format!(
                "iam: every seed variable applies to IAM, not {not_applicable:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_variable_the_charts_set_is_read_by_the_binaries() {
    let known: BTreeSet<&str> = kaa::config::ENV_KEYS
        .iter()
        .map(|(name, _)| *name)
        .chain(["APP_CONFIG_PATH"])
        .collect();
    let mut unknown = Vec::new();
    for chart in CHARTS {
        for name in set_names(&templates(chart)) {
            if known.contains(name.as_str()) {
                continue;
            }
            if PENDING_IN_BINARY.contains(&name.as_str()) {
                println!("note: charts/{chart} sets {name}, which the binary does not read yet");
            } else {
                unknown.push(format!("charts/{chart} sets {name}, which no binary reads"));
            }
        }
    }
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
}

#[test]
fn the_seed_path_syntax_is_understood() {
    assert_eq!(
        parse_path("primary.initdb.scripts.\u{201d}00_init_extensions.sql\u{201d}"),
        vec![
            Seg::Key("primary".into()),
            Seg::Key("initdb".into()),
            Seg::Key("scripts".into()),
            Seg::Key("00_init_extensions.sql".into()),
        ]
    );
    assert_eq!(
        parse_path("postgresql.init.extraSteps[1]"),
        vec![
            Seg::Key("postgresql".into()),
            Seg::Key("init".into()),
            Seg::Key("extraSteps".into()),
            Seg::Index(1),
        ]
    );
    assert_eq!(parse_default("nil"), Value::Null);
    assert_eq!(parse_default("\"a\\nb\""), Value::String("a\nb".into()));
}

/// Every key of values.yaml, seed or extension: (dotted path, value).
fn value_keys(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    if let Some(map) = v.as_object() {
        for (k, child) in map {
            prefix.push(k.clone());
            out.push((prefix.clone(), child.clone()));
            value_keys(child, prefix, out);
            prefix.pop();
        }
    }
}

#[test]
fn every_value_of_each_chart_is_typed_by_the_schema_and_commented() {
    let mut problems = Vec::new();
    for chart in CHARTS {
        let dir = root().join("charts").join(chart);
        let text = read(&dir.join("values.yaml"));
        let values: Value = serde_norway::from_str(&text).unwrap();
        let schema: Value = serde_json::from_str(&read(&dir.join("values.schema.json"))).unwrap();
        let documented = documented_keys(&text);
        let mut keys = Vec::new();
        value_keys(&values, &mut Vec::new(), &mut keys);
        for (path, value) in &keys {
            let segs: Vec<Seg> = path.iter().map(|k| Seg::Key(k.clone())).collect();
            // Below a free-form mapping of the schema (a security context, annotations) the
            // keys are Kubernetes' own.
            let free_form = (1..segs.len()).any(|n| {
                schema_node(&schema, &segs[..n]).is_none_or(|p| p.get("properties").is_none())
            });
            if free_form {
                continue;
            }
            let key = path.join(".");
            match schema_node(&schema, &segs) {
                None => problems.push(format!("{chart}: {key} is not in values.schema.json")),
                Some(node) => {
                    let types = schema_types(node);
                    let enumerated = node
                        .get("enum")
                        .and_then(Value::as_array)
                        .is_some_and(|e| e.contains(value));
                    if !(enumerated || schema_accepts(&types, json_type(value))) {
                        problems.push(format!(
                            "{chart}: {key}: the schema ({types:?}) rejects the default {value}"
                        ));
                    }
                }
            }
            // A comment on the key or on a key above it (for a value; a mapping of keys groups
            // them).
            if value.as_object().is_some_and(|m| !m.is_empty()) {
                continue;
            }
            let commented = (1..=path.len()).any(|n| {
                documented
                    .iter()
                    .any(|(p, c)| *c && p.as_slice() == &path[..n])
            });
            if !commented {
                problems.push(format!("{chart}: {key} has no comment in values.yaml"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_default_pods_run_as_the_images_user_under_pod_security_restricted() {
    // The image's numeric user and group (Dockerfile `USER uid:gid`).
    let dockerfile = read(&root().join("Dockerfile"));
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the Dockerfile names a USER");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    let (uid, gid): (i64, i64) = (uid.parse().unwrap(), gid.parse().unwrap());
    assert_ne!(uid, 0, "the image runs as root");
    for chart in CHARTS {
        let dir = root().join("charts").join(chart);
        let values: Value = serde_norway::from_str(&read(&dir.join("values.yaml"))).unwrap();
        let pod = &values["podSecurityContext"];
        assert_eq!(
            pod["runAsUser"], uid,
            "{chart}: runAsUser is the image's user"
        );
        assert_eq!(
            pod["runAsGroup"], gid,
            "{chart}: runAsGroup is the image's group"
        );
        assert_eq!(pod["runAsNonRoot"], true, "{chart}");
        assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{chart}");
        let c = &values["defaultSecurityContext"];
        assert_eq!(c["allowPrivilegeEscalation"], false, "{chart}");
        assert_eq!(
            c["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{chart}"
        );
        assert_eq!(c["readOnlyRootFilesystem"], true, "{chart}");
        assert_eq!(c["runAsNonRoot"], true, "{chart}");
        // Every container of the chart gets that context; /tmp stays writable.
        let pod_tpl = read(&dir.join("templates/_pod.tpl"));
        let prefix = format!("\"{chart}.containerSecurityContext\"");
        assert!(pod_tpl.contains(&prefix), "{chart}: _pod.tpl");
        assert_eq!(
            pod_tpl
                .matches("securityContext:\n      {{- $csc | nindent 6 }}")
                .count(),
            3,
            "{chart}: the service and both wait containers carry the container security context"
        );
        assert!(
            pod_tpl.contains("mountPath: /tmp") && pod_tpl.contains("- name: tmp\n    emptyDir:")
        );
        // The shutdown window and drain fit in the grace period by default.
        let l = &values["lifecycle"];
        let busy =
            l["shutdownDelaySeconds"].as_i64().unwrap() + l["drainSeconds"].as_i64().unwrap();
        assert!(
            values["terminationGracePeriodSeconds"].is_null(),
            "{chart}: computed by default"
        );
        assert!(
            pod_tpl.contains("{{- add $busy 10 -}}") && busy > 0,
            "{chart}: the default grace period is the delay and drain plus 10 s"
        );
    }
}

#[test]
fn iam_points_at_the_tenant_manager_charts_service_by_default() {
    // The tenant-manager chart names its Service `<release>-<chart name>` (its fullname).
    let tm_chart: Value =
        serde_norway::from_str(&read(&root().join("charts/tenant-manager/Chart.yaml"))).unwrap();
    let name = tm_chart["name"].as_str().unwrap();
    let service = read(&root().join("charts/tenant-manager/templates/service.yaml"));
    assert!(service.contains("name: {{ include \"tenant-manager.fullname\" . }}"));
    let helpers = read(&root().join("charts/tenant-manager/templates/_helpers.tpl"));
    assert!(
        helpers
            .contains("{{- printf \"%s-%s\" .Release.Name $name | trunc 63 | trimSuffix \"-\" -}}")
    );
    let iam: Value = serde_norway::from_str(&read(&root().join("charts/iam/values.yaml"))).unwrap();
    // A leading "-" appends to the release name (iam.releaseName).
    assert_eq!(iam["tenantManager"]["url"], format!("-{name}"));
    let service_env = read(&root().join("charts/iam/templates/_service.tpl"));
    assert!(service_env.contains("set $env \"KAA_SECURITY_MULTITENANCY_TENANT_MANAGER_URL\""));
}
