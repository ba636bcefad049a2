//! Fuzzing of every parser of the policy engine with proptest: arbitrary strings and bytes,
//! near-valid mutations of valid KRNs, actions and documents, and arbitrary JSON values. Nothing
//! may panic, and whatever is accepted must round-trip. fuzz/ holds the cargo-fuzz twin.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use kaa::policy::{Action, BasePolicy, Krn, PolicyDocument, PolicyIndex, Query, StoredPolicy};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};

/// Everything an accepted KRN must satisfy.
fn check_krn(k: &Krn) -> Result<(), TestCaseError> {
    let s = k.as_str();
    prop_assert_eq!(&Krn::parse(s).unwrap(), k, "parse(as_str) differs");
    prop_assert_eq!(
        &Krn::from_id(&k.to_id()).unwrap(),
        k,
        "from_id(to_id) differs"
    );
    let url = k.to_id().replace('+', "-").replace('/', "_");
    prop_assert_eq!(&Krn::from_id(url.trim_end_matches('=')).unwrap(), k);
    prop_assert!(s != "krn:*");
    prop_assert_eq!(k.is_wildcard(), s.ends_with('*'));
    prop_assert!(s.matches('*').count() <= 1);
    prop_assert!(k.matches(k));
    prop_assert!(k.matches(&Krn::parse("*").unwrap()));
    for p in k.matching_patterns() {
        let parsed = Krn::parse(&p).unwrap();
        prop_assert_eq!(parsed.as_str(), p.as_str(), "pattern not canonical");
        prop_assert!(k.matches(&parsed));
    }
    // The accessors never panic and rebuild a concrete KRN.
    let (svc, tenant, pool, ty, path, id) = (
        k.service(),
        k.tenant(),
        k.pool(),
        k.resource_type(),
        k.path(),
        k.id(),
    );
    if !k.is_wildcard() {
        let mut rebuilt = format!("krn:{svc}:{tenant}:{pool}:{ty}");
        for p in &path {
            rebuilt.push('/');
            rebuilt.push_str(p);
        }
        rebuilt.push('/');
        rebuilt.push_str(id);
        prop_assert_eq!(rebuilt.as_str(), s);
    }
    let json = serde_json::to_string(k).unwrap();
    prop_assert_eq!(&serde_json::from_str::<Krn>(&json).unwrap(), k);
    Ok(())
}

fn check_action(a: &Action) -> Result<(), TestCaseError> {
    prop_assert_eq!(&Action::parse(a.as_str()).unwrap(), a);
    prop_assert!(a.matches(a));
    for p in a.matching_patterns() {
        let parsed = Action::parse(&p).unwrap();
        prop_assert!(a.matches(&parsed));
    }
    prop_assert!(a.matching_patterns().len() <= 5);
    Ok(())
}

fn fuzz_krn_text(s: &str) -> Result<(), TestCaseError> {
    match Krn::parse(s) {
        Ok(k) => check_krn(&k)?,
        Err(e) => {
            let m = e.to_string();
            prop_assert!(!m.is_empty() && !m.ends_with('.'));
        }
    }
    if let Ok(k) = Krn::from_id(s) {
        check_krn(&k)?;
    }
    if let Ok(a) = Action::parse(s) {
        check_action(&a)?;
    }
    Ok(())
}

/// Text from the characters that matter to the grammars.
fn grammar_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        select(vec![
            "krn",
            ":",
            "/",
            "*",
            "a",
            "Z",
            "0",
            "-",
            "_",
            "@",
            ".",
            "+",
            "%",
            "=",
            "$",
            "{",
            "}",
            "iam",
            "kaa",
            "user",
            "::",
            "é",
            " ",
            "\u{0}",
            "%2F",
            "%3D",
            "${tenant}",
        ]),
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

fn valid_krn() -> impl Strategy<Value = String> {
    (
        select(vec!["iam", "epr", "a.b+c@d_e-f"]),
        select(vec!["kaa", "t1", "*"]),
        select(vec!["", "/a", "/a/b", "*", "/a/*"]),
        select(vec!["user", "*"]),
        select(vec!["", "org1/", "x/y/"]),
        select(vec!["bob", "*"]),
    )
        .prop_map(|(s, t, pool, ty, path, id)| {
            let full = if t == "*" {
                format!("krn:{s}:*")
            } else if pool.ends_with('*') {
                format!("krn:{s}:{t}:{pool}")
            } else if ty == "*" {
                format!("krn:{s}:{t}:{pool}:*")
            } else {
                format!("krn:{s}:{t}:{pool}:{ty}/{path}{id}")
            };
            Krn::parse(&full).unwrap().as_str().to_owned()
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, char),
    Delete(usize),
    Replace(usize, char),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ch = select(vec![
        ':', '/', '*', 'a', 'A', '-', '$', '%', '=', 'é', ' ', '+',
    ]);
    prop_oneof![
        (any::<usize>(), ch.clone()).prop_map(|(i, c)| Mutation::Insert(i, c)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), ch).prop_map(|(i, c)| Mutation::Replace(i, c)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::Duplicate(i, j)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(s: &str, ms: &[Mutation]) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    for m in ms {
        let n = chars.len();
        match *m {
            Mutation::Insert(i, c) => chars.insert(i % (n + 1), c),
            Mutation::Delete(i) if n > 0 => {
                chars.remove(i % n);
            }
            Mutation::Replace(i, c) if n > 0 => chars[i % n] = c,
            Mutation::Duplicate(i, j) if n > 0 => {
                let (a, b) = (i % n, j % n);
                let (a, b) = (a.min(b), a.max(b));
                let piece: Vec<char> = chars[a..=b].to_vec();
                chars.splice(b + 1..b + 1, piece);
            }
            Mutation::Truncate(i) => chars.truncate(i % (n + 1)),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

fn valid_action() -> impl Strategy<Value = String> {
    select(vec![
        "*",
        "iam:*",
        "iam:user:read",
        "iam:group:user:add",
        "endpoint:read",
        "iam:group:user:*",
    ])
    .prop_map(str::to_owned)
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        grammar_text().prop_map(Value::String),
        valid_krn().prop_map(Value::String),
        valid_action().prop_map(Value::String),
        select(vec![
            "allow", "deny", "Allow", "identity", "resource", "base", "p"
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = select(vec![
            "name",
            "type",
            "description",
            "statements",
            "effect",
            "actions",
            "resources",
            "principals",
            "condition",
            "x",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.prop_map(str::to_owned), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid document to start mutations from.
fn valid_document() -> impl Strategy<Value = Value> {
    (
        select(vec!["identity", "resource", "base"]),
        prop::collection::vec((select(vec!["allow", "deny"]), valid_action(), valid_krn()), 1..4),
    )
        .prop_map(|(kind, sts)| {
            let statements: Vec<Value> = sts
                .into_iter()
                .map(|(effect, action, resource)| {
                    // Conditions of every operator family, for the mutations to work on.
                    let conditions = json!({
                        "StringLike": {"site": ["a*", "?b"]},
                        "IpAddressIfExists": {"kaa:SourceIp": "10.0.0.0/8"},
                        "DateLessThan": {"kaa:CurrentTime": "2027-01-01T00:00:00+01:00"},
                        "NumericLessThan": {"kaa:CurrentHour": 18},
                        "Bool": {"mfa": true},
                        "Null": {"iam:metadata/site": false},
                        "StringEquals": {"resource:metadata/site": "${iam:metadata/site}"}
                    });
                    match kind {
                        "resource" => json!({"effect": effect, "actions": [action], "principals": ["krn:iam:t::user/x"], "conditions": conditions}),
                        "identity" => json!({"effect": effect, "actions": [action],
                            "resources": [resource, "krn:fs:t::folder/${iam:username}/*"],
                            "principals": ["krn:iam:t::user/x"], "conditions": conditions}),
                        _ => json!({"effect": effect, "actions": [action], "resources": [resource], "principals": ["krn:iam:${tenant}::role/r"]}),
                    }
                })
                .collect();
            json!({"name": "p", "type": kind, "statements": statements})
        })
}

#[derive(Debug, Clone)]
enum DocMutation {
    /// Replace the value at a path (indexes into objects and arrays taken modulo) by another.
    Set(Vec<usize>, Value),
    Remove(Vec<usize>),
}

fn doc_mutation() -> impl Strategy<Value = DocMutation> {
    let path = prop::collection::vec(any::<usize>(), 1..5);
    prop_oneof![
        (path.clone(), arb_json()).prop_map(|(p, v)| DocMutation::Set(p, v)),
        path.prop_map(DocMutation::Remove),
    ]
}

fn apply(doc: &mut Value, m: &DocMutation) {
    let (path, new) = match m {
        DocMutation::Set(p, v) => (p, Some(v.clone())),
        DocMutation::Remove(p) => (p, None),
    };
    let mut cur = doc;
    for (depth, &step) in path.iter().enumerate() {
        let last = depth + 1 == path.len();
        match cur {
            Value::Object(map) if !map.is_empty() => {
                let key = map
                    .keys()
                    .nth(step % map.len())
                    .cloned()
                    .unwrap_or_default();
                if last {
                    match &new {
                        Some(v) => {
                            map.insert(key, v.clone());
                        }
                        None => {
                            map.remove(&key);
                        }
                    }
                    return;
                }
                let Some(next) = map.get_mut(&key) else {
                    return;
                };
                cur = next;
            }
            Value::Array(items) if !items.is_empty() => {
                let i = step % items.len();
                if last {
                    match &new {
                        Some(v) => items[i] = v.clone(),
                        None => {
                            items.remove(i);
                        }
                    }
                    return;
                }
                cur = &mut items[i];
            }
            _ => return,
        }
    }
}

fn fuzz_document(v: &Value) -> Result<(), TestCaseError> {
    if let Ok(doc) = PolicyDocument::from_json(v) {
        prop_assert!(doc.validate().is_ok());
        prop_assert_eq!(&PolicyDocument::from_json(&doc.to_json()).unwrap(), &doc);
        // Accepted documents can be indexed (a resource policy with its bound resource).
        let bound = doc
            .statements
            .iter()
            .flat_map(|s| s.resources.first())
            .next()
            .cloned();
        let mut ix = PolicyIndex::new();
        let p = StoredPolicy {
            id: "x".into(),
            document: doc,
            attached_principals: vec![Krn::parse("krn:iam:t::user/x").unwrap()],
            attached_pools: vec![],
            resource: bound.or_else(|| Krn::parse("krn:a:b::c/d").ok()),
        };
        prop_assert!(ix.upsert(p).is_ok());
        let principals = [Krn::parse("krn:iam:t::user/x").unwrap()];
        let action = Action::parse("iam:user:read").unwrap();
        let resource = Krn::parse("krn:iam:kaa::user/bob").unwrap();
        let mut env = kaa::policy::MapEnv::default();
        env.context.insert("kaa:SourceIp".into(), json!("10.1.2.3"));
        env.context
            .insert("kaa:CurrentTime".into(), json!("2026-12-07T10:00:00+01:00"));
        env.context.insert("site".into(), json!(["ab", 3, true]));
        env.principal_metadata.insert("site".into(), json!("ab"));
        let _ = ix.decide(&Query {
            env: &env,
            principals: &principals,
            action: &action,
            resource: &resource,
            resource_pools: &[],
        });
    }
    if let Ok(b) = BasePolicy::from_json(v) {
        for tenant in ["t1", "", "a/b", "x:y"] {
            let doc = b.instantiate(tenant);
            if tenant == "t1" {
                prop_assert!(doc.validate().is_ok());
            }
        }
    }
    let _ = serde_json::from_value::<PolicyDocument>(v.clone());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings(s in any::<String>()) {
        fuzz_krn_text(&s)?;
    }

    #[test]
    fn grammar_strings(s in grammar_text()) {
        fuzz_krn_text(&s)?;
        fuzz_krn_text(&format!("krn:{s}"))?;
        fuzz_krn_text(&format!("krn:iam:kaa::{s}"))?;
        fuzz_krn_text(&format!("iam:{s}"))?;
    }

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        fuzz_krn_text(&String::from_utf8_lossy(&bytes))?;
        // Reach the KRN parser through every id alphabet.
        let std_id = base64::engine::general_purpose::STANDARD.encode(&bytes);
        fuzz_krn_text(&std_id)?;
        fuzz_krn_text(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes))?;
        fuzz_krn_text(&std_id.replace('/', "%2F").replace('=', "%3d"))?;
    }

    #[test]
    fn mutated_krns(k in valid_krn(), ms in prop::collection::vec(mutation(), 1..4)) {
        check_krn(&Krn::parse(&k).unwrap())?;
        let m = mutate(&k, &ms);
        fuzz_krn_text(&m)?;
        let id = base64::engine::general_purpose::STANDARD.encode(m.as_bytes());
        fuzz_krn_text(&id)?;
    }

    #[test]
    fn mutated_actions(a in valid_action(), ms in prop::collection::vec(mutation(), 1..4)) {
        check_action(&Action::parse(&a).unwrap())?;
        fuzz_krn_text(&mutate(&a, &ms))?;
    }

    #[test]
    fn arbitrary_json(v in arb_json()) {
        fuzz_document(&v)?;
    }

    #[test]
    fn mutated_documents(doc in valid_document(), ms in prop::collection::vec(doc_mutation(), 0..4)) {
        let mut v = doc;
        for m in &ms {
            apply(&mut v, m);
        }
        fuzz_document(&v)?;
    }
}

#[test]
fn valid_documents_are_accepted() {
    // The start points of the document mutations are valid as base policies or documents.
    let runner_doc = json!({"name": "p", "type": "base", "statements": [
        {"effect": "allow", "actions": ["iam:*"], "resources": ["krn:iam:${tenant}:*"], "principals": ["krn:iam:${tenant}::role/r"]}
    ]});
    assert!(BasePolicy::from_json(&runner_doc).is_ok());
    let identity = json!({"name": "p", "type": "identity", "statements": [
        {"effect": "allow", "actions": ["iam:*"], "resources": ["krn:iam:kaa:*"]}
    ]});
    assert!(PolicyDocument::from_json(&identity).is_ok());
    // Every generated start document is valid (conditions and variables included).
    let mut runner = proptest::test_runner::TestRunner::default();
    for _ in 0..64 {
        let doc = valid_document().new_tree(&mut runner).unwrap().current();
        let ok = if doc["type"] == "base" {
            BasePolicy::from_json(&doc)
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            PolicyDocument::from_json(&doc)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(ok.is_ok(), "{doc}: {ok:?}");
    }
}
