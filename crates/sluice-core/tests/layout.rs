//! The crate's layout shows the pipeline: top-level modules are stages, a stage imports only
//! the stages below it, and no file imports, through any chain, a file that imports it.
//!
//! Imports are read from the source: every `crate::…` and `super::…` path outside a
//! `#[cfg(test)]` module, and in a `mod.rs` (or `lib.rs`) the paths through its own child
//! modules. Each path is resolved to the file of the longest module prefix it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The stages, lowest first. A module may import its own stage and those before it.
const STAGES: &[&str] = &[
    "error", "metrics", "schema", "catalog", "table", "lake", "source", "chunk", "queue", "decode",
    "parquet", "delta", "pipeline", "home",
];

const MAX_TOP_LEVEL: usize = 14;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module path (segments after `crate`) of every `.rs` file under `src`.
fn modules() -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let mut m = prefix.to_vec();
            if p.is_dir() {
                m.push(name);
                walk(&p, &m, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                if name != "mod" && name != "lib" && name != "main" {
                    m.push(name);
                }
                out.insert(m, p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src(), &[], &mut out);
    out
}

/// The code of a file without its test module and comments, and for a `mod.rs` or `lib.rs`
/// without its re-exports (`pub use child::Item` is the folder's surface, not a use of it: a
/// child that implements its folder's trait and is re-exported by it is no cycle).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let is_mod_file = matches!(
        path.file_name().and_then(|n| n.to_str()),
        Some("mod.rs" | "lib.rs")
    );
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    let mut in_reexport = false;
    while let Some(l) = lines.next() {
        let t = l.trim_start();
        if is_mod_file
            && (in_reexport || t.starts_with("pub use ") || t.starts_with("pub(crate) use "))
        {
            in_reexport = !t.trim_end().ends_with(';');
            continue;
        }
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod tests"))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Paths (`a::b::c` segments) a file refers to, made absolute from the crate root.
fn imports(module: &[String], is_mod_file: bool, code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let children: Vec<String> = if is_mod_file {
        code.lines()
            .filter_map(|l| {
                let t = l.trim_start();
                let t = t.strip_prefix("pub ").unwrap_or(t);
                let t = t.strip_prefix("pub(crate) ").unwrap_or(t);
                t.strip_prefix("mod ")
                    .and_then(|r| r.strip_suffix(';'))
                    .map(str::to_string)
            })
            .collect()
    } else {
        Vec::new()
    };
    // Tokens are runs of identifier characters and `::`; braces of grouped imports are expanded
    // one level (`a::{b, c::d}`).
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let starts = (c.is_ascii_alphabetic() || c == b'_')
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < bytes.len()
            && (bytes[j].is_ascii_alphanumeric()
                || bytes[j] == b'_'
                || (bytes[j] == b':' && bytes.get(j + 1) == Some(&b':'))
                || (bytes[j] == b':' && j > 0 && bytes[j - 1] == b':'))
        {
            j += 1;
        }
        let path = &code[i..j];
        let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let mut base: Option<Vec<String>> = match segs.first().copied() {
            Some("crate") => Some(Vec::new()),
            Some("super") => {
                let mut m = module.to_vec();
                let mut k = 0;
                // `super` of `a/b.rs` and of `a/b/mod.rs` (both module `a::b`) is `a`.
                while segs.get(k) == Some(&"super") {
                    m.pop();
                    k += 1;
                }
                let mut abs = m;
                abs.extend(segs[k..].iter().map(|s| s.to_string()));
                out.push(abs);
                None
            }
            Some(first) if children.iter().any(|c| c == first) && segs.len() > 1 => {
                let mut abs = module.to_vec();
                abs.extend(segs.iter().map(|s| s.to_string()));
                out.push(abs);
                None
            }
            _ => None,
        };
        if let Some(b) = base.as_mut() {
            b.extend(segs[1..].iter().map(|s| s.to_string()));
            if path.ends_with("::") && bytes.get(j) == Some(&b'{') {
                // Grouped: one path per member.
                let close = code[j..].find('}').map(|k| j + k).unwrap_or(code.len());
                for member in code[j + 1..close].split(',') {
                    let member = member.trim().split(" as ").next().unwrap_or("").trim();
                    if member.is_empty() || member == "self" {
                        out.push(b.clone());
                        continue;
                    }
                    let mut abs = b.clone();
                    abs.extend(member.split("::").map(|s| s.trim().to_string()));
                    out.push(abs);
                }
            } else {
                out.push(b.clone());
            }
        }
        i = j.max(i + 1);
    }
    out
}

/// The module a path names: its longest prefix that is a module of the crate.
fn resolve(path: &[String], mods: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| mods.contains_key(p))
}

/// Edges between modules (importer → imported), without self edges.
fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mods = modules();
    let mut g = BTreeMap::new();
    for (m, file) in &mods {
        let is_mod_file = matches!(
            file.file_name().and_then(|n| n.to_str()),
            Some("mod.rs" | "lib.rs")
        );
        let edges: BTreeSet<Vec<String>> = imports(m, is_mod_file, &code_of(file))
            .iter()
            .filter_map(|p| resolve(p, &mods))
            .filter(|t| t != m)
            .collect();
        g.insert(m.clone(), edges);
    }
    g
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn rank(m: &[String]) -> usize {
    match m.first() {
        None => 0,
        Some(top) => STAGES
            .iter()
            .position(|s| s == top)
            .unwrap_or_else(|| panic!("top-level module {top} is not a stage of {STAGES:?}")),
    }
}

#[test]
fn top_level_modules_are_the_stages() {
    let tops: BTreeSet<String> = modules()
        .keys()
        .filter_map(|m| m.first().cloned())
        .collect();
    assert!(
        tops.len() <= MAX_TOP_LEVEL,
        "{} top-level modules: {tops:?}",
        tops.len()
    );
    for t in &tops {
        assert!(STAGES.contains(&t.as_str()), "{t} is not a stage");
    }
}

#[test]
fn no_stage_imports_a_later_stage() {
    let mut bad = Vec::new();
    for (from, tos) in graph() {
        for to in tos {
            if !from.is_empty() && rank(&to) > rank(&from) {
                bad.push(format!("{} -> {}", name(&from), name(&to)));
            }
        }
    }
    assert!(bad.is_empty(), "imports up the stages:\n{}", bad.join("\n"));
}

#[test]
fn no_import_cycles() {
    let g = graph();
    // Tarjan's strongly connected components; any with more than one module is a cycle.
    struct T<'a> {
        g: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        sccs: Vec<Vec<&'a Vec<String>>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let Some((w, _)) = t.g.get_key_value(w) else {
                continue;
            };
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w);
                if w == v {
                    break;
                }
            }
            t.sccs.push(scc);
        }
    }
    let mut t = T {
        g: &g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        sccs: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    let cycles: Vec<String> = t
        .sccs
        .iter()
        .filter(|s| s.len() > 1)
        .map(|s| s.iter().map(|m| name(m)).collect::<Vec<_>>().join(", "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checker_sees_imports() {
    // The checker itself: a `use` of another stage, a grouped import, `super` and a child path.
    let m = vec!["decode".to_string(), "rows".to_string()];
    let code = "use crate::source::csv::{CsvFormat, FieldSplitter};\nuse super::json::add;\nlet x = crate::pipeline::producer::go();\n";
    let got = imports(&m, false, code);
    assert!(got.contains(&vec!["source".into(), "csv".into(), "CsvFormat".into()]));
    assert!(got.contains(&vec!["decode".into(), "json".into(), "add".into()]));
    assert!(got.contains(&vec!["pipeline".into(), "producer".into(), "go".into()]));
    let got = imports(
        &["delta".to_string()],
        true,
        "pub mod log;\nfn f() { log::open(); }\n",
    );
    assert_eq!(
        got,
        vec![vec!["delta".to_string(), "log".into(), "open".into()]]
    );
    assert_eq!(rank(&["home".to_string()]), STAGES.len() - 1);
}

/// `Error::Task` is for joined tasks that panicked or were cancelled, nothing with a name of its
/// own: built at most three times in the workspace's library and binary code.
#[test]
fn task_errors_are_only_for_joined_tasks() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut found = Vec::new();
    for krate in std::fs::read_dir(crates).unwrap() {
        let src = krate.unwrap().path().join("src");
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    for (i, l) in code_of(&p).lines().enumerate() {
                        if l.contains("Error::Task(") {
                            found.push(format!("{}:{}", p.display(), i + 1));
                        }
                    }
                }
            }
        }
    }
    assert!(
        !found.is_empty(),
        "the scan found nothing: is it reading the crates?"
    );
    assert!(
        found.len() <= 3,
        "Error::Task built at:\n{}",
        found.join("\n")
    );
}

/// The CLI's `main.rs` dispatches; the commands live in their own modules.
#[test]
fn the_cli_main_only_dispatches() {
    let main = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sluice-cli/src/main.rs");
    let lines = std::fs::read_to_string(&main).unwrap().lines().count();
    assert!(
        lines > 0 && lines <= 500,
        "{}: {lines} lines",
        main.display()
    );
}
