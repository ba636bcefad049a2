#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The layering of docs/ARCHITECTURE.md, read from the code: every `.rs` file under `src/` is
//! scanned for the crate's own paths (`use crate::x`, grouped `use crate::{x, y}` over any number
//! of lines, `crate::x::...` written inline in code, `$crate::x` in macros, and `super::` chains
//! that climb to the crate root), with comments, doc comments and string literals left out. Each
//! file belongs to its top-level module (`src/iam.rs` and `src/iam/**` are `iam`); each
//! reference to another top-level module must be allowed by the layer table below, no two
//! top-level modules may import each other, directly or round a longer circle, and `policy`
//! imports nothing of the crate but `clock`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// `clock`, `policy`, `password`, `logging`, `license`: "layer 0" of the table.
const LAYER0: &[&str] = &["clock", "policy", "password", "logging", "license"];

/// The table "What each module may import" of docs/ARCHITECTURE.md, as data: keep the two in
/// step. Each row: the top-level modules it is about, and the top-level modules they may import
/// (besides themselves); `LAYER0` stands for layer 0. A module missing from the table fails the
/// test, so a new top-level module has to be placed in the table (and the document) first.
const TABLE: &[(&[&str], &[&str], bool)] = &[
    // (modules, may import, and layer 0 as well)
    (&["clock"], &[], false),
    (&["policy"], &["clock"], false),
    (&["password", "logging", "license"], &["clock"], false),
    (&["config"], &[], true),
    (&["storage"], &["config", "clock"], false),
    (&["clients"], &["config", "clock"], false),
    (
        &["audit", "outbox"],
        &["storage", "clients", "config"],
        true,
    ),
    (
        &["iam", "tenants"],
        &["storage", "clients", "audit", "outbox", "config"],
        true,
    ),
    (
        &["http"],
        &[
            "iam", "tenants", "audit", "outbox", "storage", "clients", "config",
        ],
        true,
    ),
    (
        &["app"],
        &[
            "http", "iam", "tenants", "audit", "outbox", "storage", "clients", "config",
        ],
        true,
    ),
];

/// Where the table lives, for the failure messages.
const DOC: &str = "docs/ARCHITECTURE.md";

/// One reference of a file to a top-level module of the crate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ref {
    line: usize,
    module: String,
    /// The path as written, for the message (`crate::http::auth`).
    text: String,
}

fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let mut map = BTreeMap::new();
    for (modules, imports, layer0) in TABLE {
        let mut set: BTreeSet<&str> = imports.iter().copied().collect();
        if *layer0 {
            set.extend(LAYER0.iter().copied());
        }
        for m in *modules {
            let mut own = set.clone();
            own.remove(m);
            assert!(
                map.insert(*m, own).is_none(),
                "`{m}` is in the layer table twice"
            );
        }
    }
    map
}

// ------------------------------------------------------------------------------ reading

/// The text with comments and string and char literals blanked out (newlines kept, so offsets
/// keep their line numbers).
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out: Vec<char> = Vec::with_capacity(b.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push(' ');
                    out.push(' ');
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push(' ');
                    out.push(' ');
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            continue;
        }
        // Raw strings: r"..", r#".."#, br#".."# (the `r` not the end of a longer name).
        if c == 'r' {
            let starts_word =
                i == 0 || !ident(b[i - 1]) || (b[i - 1] == 'b' && (i < 2 || !ident(b[i - 2])));
            let mut j = i + 1;
            while j < b.len() && b[j] == '#' {
                j += 1;
            }
            if starts_word && j < b.len() && b[j] == '"' {
                let hashes = j - i - 1;
                out.extend(std::iter::repeat_n(' ', j - i + 1));
                i = j + 1;
                while i < b.len() {
                    if b[i] == '"' && (1..=hashes).all(|k| b.get(i + k) == Some(&'#')) {
                        out.extend(std::iter::repeat_n(' ', hashes + 1));
                        i += hashes + 1;
                        break;
                    }
                    out.push(blank(b[i]));
                    i += 1;
                }
                continue;
            }
        }
        if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() {
                if b[i] == '\\' {
                    out.push(' ');
                    if let Some(&e) = b.get(i + 1) {
                        out.push(blank(e));
                    }
                    i += 2;
                    continue;
                }
                if b[i] == '"' {
                    out.push(' ');
                    i += 1;
                    break;
                }
                out.push(blank(b[i]));
                i += 1;
            }
            continue;
        }
        // A char literal ('x', '\n', '\u{..}'); a lifetime ('a) is left as it is.
        if c == '\'' {
            let end = if next == Some('\\') {
                (i + 3..b.len()).find(|&k| b[k] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                out.extend(std::iter::repeat_n(' ', end - i + 1));
                i = end + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out.into_iter().collect()
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier starting at `i` (after blanks), and where it ends.
fn ident_at(t: &[char], mut i: usize) -> Option<(String, usize)> {
    while i < t.len() && t[i].is_whitespace() {
        i += 1;
    }
    let start = i;
    while i < t.len() && is_ident(t[i]) {
        i += 1;
    }
    (i > start).then(|| (t[start..i].iter().collect(), i))
}

/// `::` at `i` (after blanks): where it ends.
fn path_sep(t: &[char], mut i: usize) -> Option<usize> {
    while i < t.len() && t[i].is_whitespace() {
        i += 1;
    }
    (t.get(i) == Some(&':') && t.get(i + 1) == Some(&':')).then_some(i + 2)
}

/// The first names of a group `{a, b::c, d as e, f::{g, h}}` whose `{` is at `open`.
fn group_heads(t: &[char], open: usize) -> Vec<(usize, String)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    let mut i = open;
    while i < t.len() {
        let c = t[i];
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    expect_head = true;
                }
                i += 1;
            }
            '}' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                expect_head = true;
                i += 1;
            }
            c if depth == 1 && expect_head && is_ident(c) => {
                let (name, end) = ident_at(t, i).unwrap();
                heads.push((i, name));
                expect_head = false;
                i = end;
            }
            c if c.is_whitespace() => i += 1,
            _ => {
                if depth == 1 {
                    expect_head = false;
                }
                i += 1;
            }
        }
    }
    heads
}

/// Every reference of `src` (the text of a file whose module path is `module_path`, e.g.
/// `["iam", "users"]`) to a top-level module of the crate.
fn references(src: &str, module_path: &[String]) -> Vec<Ref> {
    let code = code_only(src);
    let t: Vec<char> = code.chars().collect();
    let line_of = |pos: usize| t[..pos].iter().filter(|&&c| c == '\n').count() + 1;
    let mut refs = Vec::new();
    // Inline `mod name { .. }` blocks open at these brace depths (for `super::`).
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        let c = t[i];
        if c == '{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == '}' {
            if inline_mods.last() == Some(&depth) {
                inline_mods.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
            continue;
        }
        if !is_ident(c) || (i > 0 && is_ident(t[i - 1])) {
            i += 1;
            continue;
        }
        let (word, end) = ident_at(&t, i).unwrap();
        match word.as_str() {
            "mod" => {
                // `mod name {` opens an inline module; `mod name;` is a file.
                if let Some((_, after)) = ident_at(&t, end) {
                    let mut k = after;
                    while k < t.len() && t[k].is_whitespace() {
                        k += 1;
                    }
                    if t.get(k) == Some(&'{') {
                        inline_mods.push(depth + 1);
                    }
                }
            }
            "crate" => {
                if let Some(after) = path_sep(&t, end) {
                    let mut k = after;
                    while k < t.len() && t[k].is_whitespace() {
                        k += 1;
                    }
                    if t.get(k) == Some(&'{') {
                        for (pos, name) in group_heads(&t, k) {
                            refs.push(Ref {
                                line: line_of(pos),
                                module: name.clone(),
                                text: format!("crate::{{{name}, ..}}"),
                            });
                        }
                    } else if let Some((name, _)) = ident_at(&t, k) {
                        refs.push(Ref {
                            line: line_of(i),
                            module: name.clone(),
                            text: format!("crate::{name}"),
                        });
                    }
                }
            }
            "super" => {
                // Count the chain; when it climbs to the crate root, the next name is a
                // top-level module.
                let mut supers = 1;
                let mut k = end;
                let mut next = None;
                while let Some(after) = path_sep(&t, k) {
                    match ident_at(&t, after) {
                        Some((w, e)) if w == "super" => {
                            supers += 1;
                            k = e;
                        }
                        Some((w, _)) => {
                            next = Some(w);
                            break;
                        }
                        None => break,
                    }
                }
                let here = module_path.len() + inline_mods.len();
                if supers >= here
                    && let Some(name) = next
                {
                    refs.push(Ref {
                        line: line_of(i),
                        module: name.clone(),
                        text: format!("{}{name}", "super::".repeat(supers)),
                    });
                }
                i = k;
                continue;
            }
            _ => {}
        }
        i = end;
    }
    // `self` in `crate::{self, ..}` and `crate::self` is the crate root itself.
    refs.retain(|r| r.module != "self");
    refs
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/` (`iam/users.rs` -> `["iam", "users"]`); `None` for the
/// crate root and the binaries (which are crates of their own and import `kaa::`).
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") || parts == ["lib.rs"] {
        return None;
    }
    let mut path: Vec<String> = parts;
    let last = path.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        path.push(stem.to_string());
    }
    Some(path)
}

struct Scan {
    /// file (relative to the crate), its top-level module, its references.
    files: Vec<(String, String, Vec<Ref>)>,
}

fn scan() -> Scan {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    rust_files(&root.join("src"), &mut paths);
    paths.sort();
    let mut files = Vec::new();
    for p in paths {
        let rel = p.strip_prefix(root.join("src")).unwrap();
        let Some(mp) = module_path(rel) else { continue };
        let text = fs::read_to_string(&p).unwrap();
        let refs = references(&text, &mp);
        let shown = p.strip_prefix(root).unwrap().display().to_string();
        files.push((shown, mp[0].clone(), refs));
    }
    Scan { files }
}

/// What breaks the table: one line per reference, naming the file, the line and the rule.
fn table_violations(scan: &Scan) -> Vec<String> {
    let table = allowed();
    let mut out = Vec::new();
    let known: BTreeSet<&str> = scan.files.iter().map(|(_, m, _)| m.as_str()).collect();
    for (file, module, refs) in &scan.files {
        let Some(may) = table.get(module.as_str()) else {
            out.push(format!(
                "{file}: top-level module `{module}` is not in the layer table of {DOC} (and of \
                 tests/architecture.rs): place it in a layer first"
            ));
            continue;
        };
        for r in refs {
            if r.module == *module || !known.contains(r.module.as_str()) {
                continue;
            }
            if !may.contains(r.module.as_str()) {
                let list: Vec<&str> = may.iter().copied().collect();
                out.push(format!(
                    "{file}:{}: `{}`: `{module}` may not import `{}` ({DOC}, the layer table: \
                     `{module}` may import {})",
                    r.line,
                    r.text,
                    r.module,
                    if list.is_empty() {
                        "nothing of the crate".to_string()
                    } else {
                        list.join(", ")
                    }
                ));
            }
        }
    }
    out
}

/// The circles between top-level modules, each with one reference per step.
fn cycles(scan: &Scan) -> Vec<String> {
    let known: BTreeSet<&str> = scan.files.iter().map(|(_, m, _)| m.as_str()).collect();
    // edge -> first reference (file:line) that makes it.
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    for (file, module, refs) in &scan.files {
        for r in refs {
            if r.module != *module && known.contains(r.module.as_str()) {
                edges
                    .entry((module.clone(), r.module.clone()))
                    .or_insert_with(|| format!("{file}:{} `{}`", r.line, r.text));
            }
        }
    }
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        graph.entry(a.as_str()).or_default().push(b.as_str());
    }
    // A circle through each module, found by a depth-first walk from it back to it.
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in &known {
        let mut stack = vec![(vec![*start], 0usize)];
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        while let Some((path, next)) = stack.pop() {
            let here = *path.last().unwrap();
            let outs = graph.get(here).cloned().unwrap_or_default();
            if next < outs.len() {
                stack.push((path.clone(), next + 1));
                let to = outs[next];
                if to == *start {
                    let mut circle: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                    // The same circle from any of its modules once: start at the least.
                    let least = (0..circle.len()).min_by_key(|&k| &circle[k]).unwrap();
                    circle.rotate_left(least);
                    found.insert(circle);
                } else if !seen.contains(to) && !path.contains(&to) {
                    seen.insert(to);
                    let mut longer = path.clone();
                    longer.push(to);
                    stack.push((longer, 0));
                }
            }
        }
    }
    found
        .into_iter()
        .map(|circle| {
            let steps: Vec<String> = (0..circle.len())
                .map(|k| {
                    let (a, b) = (&circle[k], &circle[(k + 1) % circle.len()]);
                    format!("{a} -> {b} ({})", edges[&(a.clone(), b.clone())])
                })
                .collect();
            format!(
                "import circle between top-level modules ({DOC}: no circles): {}",
                steps.join("; ")
            )
        })
        .collect()
}

// ------------------------------------------------------------------------------ the rules

#[test]
fn every_import_keeps_to_the_layer_table() {
    let scan = scan();
    // Not vacuous: the crate's files were read and their references found.
    assert!(
        scan.files.len() > 100,
        "only {} files read",
        scan.files.len()
    );
    let app_http = scan
        .files
        .iter()
        .filter(|(_, m, _)| m == "app")
        .flat_map(|(_, _, r)| r)
        .any(|r| r.module == "http");
    assert!(
        app_http,
        "no reference of app to http found: the scan reads nothing"
    );
    let bad = table_violations(&scan);
    assert!(
        bad.is_empty(),
        "{} imports break the layers:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn no_import_circle_between_top_level_modules() {
    let bad = cycles(&scan());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn policy_imports_nothing_of_the_crate_but_clock() {
    let scan = scan();
    let mut bad = Vec::new();
    let mut files = 0;
    for (file, module, refs) in &scan.files {
        if module != "policy" {
            continue;
        }
        files += 1;
        for r in refs {
            if r.module != "policy" && r.module != "clock" {
                bad.push(format!(
                    "{file}:{}: `{}`: the decision engine is pure: `policy` imports nothing of \
                     the crate but `clock` ({DOC})",
                    r.line, r.text
                ));
            }
        }
    }
    assert!(files > 5, "only {files} files of src/policy read");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_table_names_every_top_level_module_of_lib_rs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let table = allowed();
    let declared: Vec<String> = code_only(&lib)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .collect();
    assert!(!declared.is_empty());
    for m in &declared {
        assert!(
            table.contains_key(m.as_str()),
            "src/lib.rs declares `{m}`, which is not in the layer table of {DOC}"
        );
    }
    for m in table.keys() {
        assert!(
            declared.iter().any(|d| d == m),
            "the layer table names `{m}`, which src/lib.rs does not declare"
        );
    }
}

// ------------------------------------------------------------------------------ the reader

fn mods(m: &[&str]) -> Vec<String> {
    m.iter().map(|s| s.to_string()).collect()
}

fn names(refs: &[Ref]) -> Vec<(usize, &str)> {
    refs.iter().map(|r| (r.line, r.module.as_str())).collect()
}

#[test]
fn the_reader_finds_grouped_inline_and_macro_paths_and_skips_comments_and_strings() {
    let src = r####"//! Uses `crate::app` in a doc comment only.
use crate::{
    clock::now_ms,
    config::{self, Config},
    http as h,
};
/* block: crate::iam /* nested crate::iam */ still crate::iam */
fn f() {
    let s = "crate::tenants";
    let r = r#"crate::tenants "quoted" "#;
    let c = '"';
    let _ = crate::storage::Database::open(x); // crate::app
    let l: &'static str = "";
    macro_rules! m { () => { $crate::audit::x() } }
    crate :: outbox::y();
}
"####;
    let refs = references(src, &mods(&["iam", "users"]));
    assert_eq!(
        names(&refs),
        vec![
            (3, "clock"),
            (4, "config"),
            (5, "http"),
            (12, "storage"),
            (14, "audit"),
            (15, "outbox")
        ]
    );
}

#[test]
fn the_reader_follows_super_chains_to_the_crate_root() {
    let src = "use super::state;\nuse super::super::http::x;\nmod tests {\n    use super::super::super::app;\n    use super::super::events;\n}\n";
    // In src/iam/users.rs: `super` is `iam`, `super::super` the crate root; inside `mod tests`
    // one more `super` is needed.
    let refs = references(src, &mods(&["iam", "users"]));
    assert_eq!(names(&refs), vec![(2, "http"), (4, "app")]);
}

#[test]
fn a_forbidden_import_and_a_circle_are_reported_with_file_line_and_rule() {
    let scan = Scan {
        files: vec![
            (
                "src/policy/engine.rs".into(),
                "policy".into(),
                references(
                    "use crate::clock;\nfn f() { crate::storage::x(); }\n",
                    &mods(&["policy", "engine"]),
                ),
            ),
            (
                "src/storage.rs".into(),
                "storage".into(),
                references("use crate::policy::Krn;\n", &mods(&["storage"])),
            ),
            ("src/clock.rs".into(), "clock".into(), Vec::new()),
        ],
    };
    let bad = table_violations(&scan);
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(
        bad[0].starts_with(
            "src/policy/engine.rs:2: `crate::storage`: `policy` may not import `storage`"
        ),
        "{}",
        bad[0]
    );
    assert!(bad[0].contains("`policy` may import clock"), "{}", bad[0]);
    assert!(
        bad[1].starts_with("src/storage.rs:1: `crate::policy`: `storage` may not import `policy`"),
        "{}",
        bad[1]
    );
    let circles = cycles(&scan);
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(
        circles[0].contains("policy -> storage (src/policy/engine.rs:2 `crate::storage`)")
            && circles[0].contains("storage -> policy (src/storage.rs:1 `crate::policy`)"),
        "{}",
        circles[0]
    );
}
