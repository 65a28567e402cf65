//! No import cycles between sibling modules, in any crate of the workspace.
//!
//! A plain-text scanner, no parser: each `src/**/*.rs` file is a module
//! (`a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` and `main.rs` the root), and
//! each `crate::…`, `super::…` or `self::…` path in it (`use` groups such as
//! `crate::{a::X, b::{Y, Z}}` are split) is an edge to the longest module that
//! path names. An edge A → B where neither contains the other becomes an edge
//! between the children of their lowest common ancestor (`node::driver` →
//! `behaviour` counts as `node` → `behaviour`); a cycle among such siblings is
//! a violation. Edges between a module and its ancestors are fine: a parent
//! declares and re-exports its children, a child uses its parent's re-exports.
//!
//! Ignored: comments (doc links included) and string literals; modules named
//! `tests` (files and inline blocks) and their descendants; modules declared
//! `#[cfg(test)] mod x;`; every item (block or `…;`) after `#[cfg(test)]`.
//! Blind spots: a path through a re-export is an edge to the re-exporting
//! module (proto's `crate::PublicKey`, from `pub use keys::…` in lib.rs, is an
//! edge to the root, not to `keys`); relative `use` paths without
//! `crate`/`super`/`self` are not read; paths in macro bodies count as code.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// One `crate::…`/`super::…`/`self::…` path found in a file.
struct Reference {
    /// The module the path is written in (file module plus inline `mod`s).
    from: Module,
    /// The path's segments, as written.
    path: Vec<String>,
    line: usize,
}

#[derive(Default)]
struct FileScan {
    inline_mods: Vec<Module>,
    test_mods: Vec<Module>,
    refs: Vec<Reference>,
}

/// One reference that makes a sibling edge.
#[derive(Clone, Debug)]
pub struct Witness {
    pub file: String,
    pub line: usize,
    pub path: String,
}

/// A cycle among siblings: `modules[0] -> modules[1] -> … -> modules[0]`,
/// `witnesses[i]` being a reference for the edge leaving `modules[i]`.
#[derive(Debug)]
pub struct Cycle {
    pub modules: Vec<String>,
    pub witnesses: Vec<Witness>,
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The text with comments and string/char literal contents blanked out,
/// newlines kept (so line numbers still hold).
fn strip(text: &str) -> Vec<char> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::with_capacity(c.len());
    let blank = |out: &mut Vec<char>, s: &[char]| {
        out.extend(s.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }))
    };
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, ch)| c.get(i + k) == Some(&ch))
    };
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
        let end = if at(i, "//") {
            c[i..]
                .iter()
                .position(|&ch| ch == '\n')
                .map_or(c.len(), |p| i + p)
        } else if at(i, "/*") {
            let (mut j, mut depth) = (i + 2, 1);
            while j < c.len() && depth > 0 {
                depth += usize::from(at(j, "/*"));
                depth -= usize::from(at(j, "*/"));
                j += if at(j, "/*") || at(j, "*/") { 2 } else { 1 };
            }
            j
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        } else if c[i] == 'r'
            && !(prev_ident && c[i - 1] != 'b')
            && c.get(i + 1 + hashes) == Some(&'"')
        {
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let mut j = i + 2 + hashes;
            while j < c.len() && !at(j, &close) {
                j += 1;
            }
            j + close.len()
        } else if c[i] == '\'' && c.get(i + 1) == Some(&'\\') {
            i + 4
                + c.get(i + 3..)
                    .and_then(|r| r.iter().position(|&ch| ch == '\''))
                    .unwrap_or(0)
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            i + 3
        } else {
            out.push(c[i]);
            i += 1;
            continue;
        };
        let end = end.min(c.len());
        blank(&mut out, &c[i..end]);
        i = end;
    }
    out
}

fn skip_ws(c: &[char], mut i: usize) -> usize {
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    i
}

fn ident_at(c: &[char], i: usize) -> Option<String> {
    let first = *c.get(i)?;
    if !(first.is_alphabetic() || first == '_') || (i > 0 && is_ident(c[i - 1])) {
        return None;
    }
    Some(c[i..].iter().take_while(|&&ch| is_ident(ch)).collect())
}

/// Index just past the bracket matching the one at `i`.
fn skip_group(c: &[char], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < c.len() {
        match c[i] {
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Reads a path at `i` (after `prefix`), splitting `{…}` groups into `out`.
fn parse_path(c: &[char], i: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    loop {
        *i = skip_ws(c, *i);
        if c.get(*i) == Some(&'{') {
            *i += 1;
            loop {
                *i = skip_ws(c, *i);
                match c.get(*i) {
                    None => return,
                    Some('}') => {
                        *i += 1;
                        break;
                    }
                    Some(',') => *i += 1,
                    _ => {
                        parse_path(c, i, prefix.clone(), out);
                        // Skips an `as name` rename.
                        while *i < c.len() && !matches!(c[*i], ',' | '}' | '{') {
                            *i += 1;
                        }
                    }
                }
            }
            return;
        }
        let Some(id) = ident_at(c, *i) else {
            return out.push(prefix);
        };
        *i += id.chars().count();
        prefix.push(id);
        let j = skip_ws(c, *i);
        if c.get(j) != Some(&':') || c.get(j + 1) != Some(&':') {
            return out.push(prefix);
        }
        *i = j + 2;
    }
}

fn scan_file(module: &[String], text: &str) -> FileScan {
    let c = strip(text);
    let line_of = |i: usize| 1 + c[..i].iter().filter(|&&ch| ch == '\n').count();
    let mut scan = FileScan::default();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let (mut depth, mut i) = (0usize, 0usize);
    let here = |inline: &[(String, usize)]| -> Module {
        module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(m, _)| m.clone()))
            .collect()
    };
    while i < c.len() {
        if c[i..].starts_with(&['#', '[', 'c', 'f', 'g', '(', 't', 'e', 's', 't', ')', ']']) {
            let mut j = i;
            while c.get(j) == Some(&'#') {
                j = skip_ws(c.as_slice(), skip_group(&c, j + 1));
            }
            let start = j;
            while j < c.len() && !matches!(c[j], ';' | '{') {
                j = if matches!(c[j], '(' | '[') {
                    skip_group(&c, j)
                } else {
                    j + 1
                };
            }
            let header: Vec<String> = c[start..j.min(c.len())]
                .iter()
                .collect::<String>()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if c.get(j) == Some(&';') && header.len() >= 2 && header[header.len() - 2] == "mod" {
                let mut m = here(&inline);
                m.push(header[header.len() - 1].clone());
                scan.test_mods.push(m);
            }
            i = if c.get(j) == Some(&'{') {
                skip_group(&c, j)
            } else {
                j + 1
            };
            continue;
        }
        match c[i] {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|&(_, d)| d == depth) {
                    inline.pop();
                }
            }
            _ => {}
        }
        let Some(id) = ident_at(&c, i) else {
            i += 1;
            continue;
        };
        let after = skip_ws(&c, i + id.chars().count());
        if id == "mod" {
            if let Some(name) = ident_at(&c, after) {
                let brace = skip_ws(&c, after + name.chars().count());
                if c.get(brace) == Some(&'{') && name == "tests" {
                    i = skip_group(&c, brace);
                    continue;
                } else if c.get(brace) == Some(&'{') {
                    inline.push((name, depth));
                    scan.inline_mods.push(here(&inline));
                    i = brace;
                    continue;
                }
            }
        } else if matches!(id.as_str(), "crate" | "super" | "self")
            && c[after..].starts_with(&[':', ':'])
        {
            let (line, mut paths) = (line_of(i), Vec::new());
            parse_path(&c, &mut i, Vec::new(), &mut paths);
            let from = here(&inline);
            scan.refs.extend(paths.into_iter().map(|path| Reference {
                from: from.clone(),
                path,
                line,
            }));
            continue;
        }
        i += id.chars().count();
    }
    scan
}

/// `a/b.rs` and `a/b/mod.rs` → `a::b`; `lib.rs`, `main.rs` → the root.
fn module_of(path: &str) -> Module {
    let mut parts: Vec<String> = path
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn longest_known(tree: &BTreeSet<Module>, m: &[String]) -> Module {
    (0..=m.len())
        .rev()
        .map(|n| m[..n].to_vec())
        .find(|p| tree.contains(p))
        .unwrap_or_default()
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Sibling cycles among the modules of one crate; `files` are
/// (path relative to `src/`, text).
pub fn find_cycles(files: &[(String, String)]) -> Vec<Cycle> {
    let scans: Vec<(&str, Module, FileScan)> = files
        .iter()
        .map(|(path, text)| {
            (
                path.as_str(),
                module_of(path),
                scan_file(&module_of(path), text),
            )
        })
        .collect();
    let test_mods: Vec<&Module> = scans.iter().flat_map(|s| &s.2.test_mods).collect();
    let ignored =
        |m: &Module| m.iter().any(|s| s == "tests") || test_mods.iter().any(|t| m.starts_with(t));
    let mut tree: BTreeSet<Module> = scans
        .iter()
        .flat_map(|s| std::iter::once(&s.1).chain(&s.2.inline_mods))
        .filter(|m| !ignored(m))
        .cloned()
        .collect();
    tree.insert(Vec::new());
    // parent → (child, child) → one witness
    let mut edges: BTreeMap<Module, BTreeMap<(String, String), Witness>> = BTreeMap::new();
    for (path, _, scan) in &scans {
        for r in scan.refs.iter().filter(|r| !ignored(&r.from)) {
            let mut target = if r.path[0] == "crate" {
                Vec::new()
            } else {
                r.from.clone()
            };
            for seg in &r.path {
                match seg.as_str() {
                    "crate" | "self" => {}
                    "super" => {
                        target.pop();
                    }
                    _ => target.push(seg.clone()),
                }
            }
            let (a, b) = (longest_known(&tree, &r.from), longest_known(&tree, &target));
            if a.starts_with(&b) || b.starts_with(&a) {
                continue;
            }
            let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            let witness = Witness {
                file: (*path).to_owned(),
                line: r.line,
                path: r.path.join("::"),
            };
            edges
                .entry(a[..common].to_vec())
                .or_default()
                .entry((name(&a[..=common]), name(&b[..=common])))
                .or_insert(witness);
        }
    }
    edges.values().flat_map(cycles_in).collect()
}

/// A shortest cycle through each module that is on one, each cycle once.
fn cycles_in(graph: &BTreeMap<(String, String), Witness>) -> Vec<Cycle> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in graph.keys() {
        next.entry(a).or_default().push(b);
    }
    let (mut seen, mut cycles) = (BTreeSet::new(), Vec::new());
    for &start in next.keys() {
        // Breadth-first from `start`: each module reached, with its predecessor.
        let mut prev = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(m) = queue.pop_front() {
            for &n in next.get(m).into_iter().flatten() {
                if let Entry::Vacant(e) = prev.entry(n) {
                    e.insert(m);
                    queue.push_back(n);
                }
            }
        }
        let mut modules = Vec::new();
        let mut m = start;
        while let Some(&p) = prev.get(m) {
            modules.insert(0, p.to_owned());
            m = p;
            if m == start {
                break;
            }
        }
        if m != start || modules.is_empty() {
            continue;
        }
        let first = (0..modules.len()).min_by_key(|&k| &modules[k]).unwrap();
        modules.rotate_left(first);
        if seen.insert(modules.clone()) {
            let witnesses = (0..modules.len())
                .map(|k| {
                    graph[&(modules[k].clone(), modules[(k + 1) % modules.len()].clone())].clone()
                })
                .collect();
            cycles.push(Cycle { modules, witnesses });
        }
    }
    cycles
}

fn rust_files(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The workspace's crate directories: the root package and `members`.
fn crate_dirs(root: &Path) -> Vec<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or_default();
    let mut dirs = vec![".".to_owned()];
    dirs.extend(members.split('"').skip(1).step_by(2).map(str::to_owned));
    dirs
}

#[test]
fn no_import_cycles_between_sibling_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (mut report, mut scanned) = (String::new(), Vec::new());
    for dir in crate_dirs(&root) {
        let src = root.join(&dir).join("src");
        if !src.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&src, &src, &mut files);
        let label = if dir == "." { "meshcast" } else { dir.as_str() };
        scanned.push(label.to_owned());
        for cycle in find_cycles(&files) {
            report += &format!(
                "{label}: {} -> {}\n",
                cycle.modules.join(" -> "),
                cycle.modules[0]
            );
            for (k, w) in cycle.witnesses.iter().enumerate() {
                let to = &cycle.modules[(k + 1) % cycle.modules.len()];
                let file = Path::new(&dir).join("src").join(&w.file);
                report += &format!(
                    "    {} -> {to}: {}:{}: {}\n",
                    cycle.modules[k],
                    file.display(),
                    w.line,
                    w.path
                );
            }
        }
    }
    for krate in [
        "meshcast",
        "proto",
        "node",
        "relay",
        "origin",
        "client-wasm",
    ] {
        assert!(
            scanned.iter().any(|s| s == krate),
            "{krate} was not scanned: {scanned:?}"
        );
    }
    assert!(
        report.is_empty(),
        "import cycles between sibling modules (make one side stop using the other):\n{report}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycles(files: &[(&str, &str)]) -> Vec<Vec<String>> {
        let files: Vec<_> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        find_cycles(&files).into_iter().map(|c| c.modules).collect()
    }

    #[test]
    fn two_module_cycle() {
        let files = [
            ("lib.rs", "mod gateway;\nmod session;\n"),
            ("gateway.rs", "\n\nuse crate::session::Session;\n"),
            ("session.rs", "fn f() { crate::gateway::Gateway::new(); }\n"),
        ];
        let found = find_cycles(&files.map(|(p, t)| (p.into(), t.into())));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].modules, ["gateway", "session"]);
        let w = &found[0].witnesses;
        assert_eq!(
            (w[0].file.as_str(), w[0].line, w[0].path.as_str()),
            ("gateway.rs", 3, "crate::session::Session")
        );
        assert_eq!((w[1].file.as_str(), w[1].line), ("session.rs", 1));
    }

    #[test]
    fn three_module_cycle() {
        let files = [
            ("a.rs", "use crate::b::X;"),
            ("b.rs", "use crate::c::Y;"),
            ("c.rs", "use crate::a::Z;"),
            ("d.rs", "use crate::a::Z;"),
        ];
        assert_eq!(cycles(&files), [["a", "b", "c"]]);
        assert!(cycles(&files[1..]).is_empty());
    }

    #[test]
    fn parent_and_child_references_are_not_cycles() {
        let files = [
            ("lib.rs", "mod a;\npub use a::b::X;\nuse self::a::Y;"),
            ("a/mod.rs", "mod b;\npub use b::X;\nuse crate::Z;"),
            ("a/b.rs", "use super::Y;\nuse crate::a::W;\nuse crate::Z;"),
        ];
        assert!(cycles(&files).is_empty());
    }

    #[test]
    fn use_groups_are_split() {
        let files = [
            ("a.rs", "use crate::{b::X, c::{Y, Z}};"),
            ("b.rs", "use crate::a::X;"),
            ("c.rs", "use crate::{\n  a as aa,\n};"),
        ];
        assert_eq!(cycles(&files), [["a", "b"], ["a", "c"]]);
    }

    #[test]
    fn super_from_a_nested_file_is_its_parent() {
        let files = [
            ("a/b.rs", "use super::super::c::X;"),
            ("a/d.rs", "use super::b::Y;"),
            ("a/mod.rs", ""),
            ("c.rs", "use crate::a::Z;"),
        ];
        assert_eq!(cycles(&files), [["a", "c"]]);
        // `super::b` from `a/d.rs` is the sibling `a::b`, not the root's `b`.
        let files = [
            ("a/b.rs", "use super::d::X;"),
            ("a/d.rs", "use super::b::Y;"),
            ("b.rs", ""),
        ];
        assert_eq!(cycles(&files), [["a::b", "a::d"]]);
    }

    #[test]
    fn nested_modules_map_to_siblings() {
        let files = [
            ("node/mod.rs", "mod driver;\npub use driver::Driver;"),
            ("node/driver.rs", "use crate::behaviour::Behaviour;"),
            ("behaviour.rs", "use crate::node::Driver;"),
        ];
        assert_eq!(cycles(&files), [["behaviour", "node"]]);
    }

    #[test]
    fn test_code_comments_and_strings_are_ignored() {
        let files = [
            (
                "a.rs",
                "use crate::b::X;\n#[cfg(test)]\nmod helpers;\n#[cfg(test)]\nuse crate::c::Y;",
            ),
            ("a/helpers.rs", "use crate::b::X;"),
            (
                "b.rs",
                "// crate::a::X\nconst S: &str = \"crate::a::X\";\nlet c = '\"';\nmod tests {\n use crate::a::X;\n}\n#[cfg(test)]\nfn f() { crate::a::g() }",
            ),
            ("b/tests.rs", "use crate::a::X;"),
            (
                "c.rs",
                "/* crate::a::X */ const R: &str = r#\"crate::a::X\"#;",
            ),
        ];
        assert!(cycles(&files).is_empty());
        // The same references outside test code are cycles.
        let files = [
            ("a.rs", "use crate::b::X;"),
            ("b.rs", "fn f() { crate::a::g() }"),
        ];
        assert_eq!(cycles(&files), [["a", "b"]]);
    }

    #[test]
    fn inline_modules_are_modules() {
        let files = [
            ("lib.rs", "pub mod pb {\n  use super::a::X;\n}\nmod a;"),
            ("a.rs", "use crate::pb::Y;"),
        ];
        assert_eq!(cycles(&files), [["a", "pb"]]);
    }
}
