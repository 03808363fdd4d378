//! The ground floor stays untangled: the core modules (everything but
//! `server`, `agent` and `cli`) import nothing from those three, the core
//! modules import each other without a cycle (so each can be read, tested
//! and changed from the bottom up), and no source file grows past about
//! 900 lines of code outside its tests. ARCHITECTURE.md draws the layers.

use std::collections::{BTreeMap, BTreeSet};

use crate::docs::rust_files;
use crate::support::repo;

/// The modules above the core: they may import anything, nothing imports them.
const UPPER: &[&str] = &["server", "agent", "cli"];

/// Most lines of code (neither blank nor only a comment) a source file may
/// hold before its `#[cfg(test)]` tests.
const MAX_CODE_LINES: usize = 900;

/// The top-level module a file of `src/` belongs to (`src/store/watch.rs` →
/// `store`); None for the crate roots.
fn module_of(file: &str) -> Option<String> {
    let rest = file.strip_prefix("src/")?;
    let first = rest.split('/').next()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "main" | "lib")).then(|| name.to_string())
}

/// The top-level modules a file names: `crate::x`, `use crate::{x, y::z}`,
/// and `super::x` from a file whose parent is the crate root.
fn imports(file: &str, text: &str) -> BTreeSet<String> {
    // Comments name modules too (`crate::server` in a doc line); only code counts.
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = code.as_str();
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // A group: each top-level name in it (nested groups belong to a name before them).
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 || item.is_empty() {
                    item.push(c);
                }
            }
            found.insert(ident(item.trim()));
        } else {
            found.insert(ident(rest));
        }
    }
    // `super::` reaches the crate root from `src/x.rs`'s children only via
    // `src/x/mod.rs` or `src/x.rs` itself.
    let depth = file.matches('/').count();
    let at_root = depth == 1 || (depth == 2 && file.ends_with("/mod.rs"));
    if at_root {
        let mut rest = text;
        while let Some(at) = rest.find("super::") {
            rest = &rest[at + "super::".len()..];
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

/// The source of a file before its tests, with the lines of code counted.
fn code_lines(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .filter(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with("//")
        })
        .count()
}

fn sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(repo().join(&f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            (f, text)
        })
        .collect()
}

#[test]
fn core_modules_import_nothing_above_them_and_no_cycle() {
    let files = sources();
    let modules: BTreeSet<String> = files.iter().filter_map(|(f, _)| module_of(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (file, text) in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        for used in imports(file, text) {
            if used == module || !modules.contains(&used) {
                continue;
            }
            if !UPPER.contains(&module.as_str()) && UPPER.contains(&used.as_str()) {
                problems.push(format!(
                    "{file} (core module {module}) imports {used}, which is above the core"
                ));
            }
            graph.entry(module.clone()).or_default().insert(used);
        }
    }
    // A cycle among the core modules: depth-first, reporting the path.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_string());
            cycles.push(cycle.join(" → "));
            return;
        }
        if !done.insert(m.to_string()) {
            return;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if !UPPER.contains(&next.as_str()) {
                visit(next, graph, path, done, cycles);
            }
        }
        path.pop();
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for m in modules.iter().filter(|m| !UPPER.contains(&m.as_str())) {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    for c in cycles {
        problems.push(format!("core modules import each other in a cycle: {c}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_source_file_holds_more_than_900_lines_of_code_outside_its_tests() {
    let too_long: Vec<String> = sources()
        .iter()
        .filter(|(f, _)| !f.ends_with("/tests.rs"))
        .map(|(f, text)| (f, code_lines(text)))
        .filter(|(_, n)| *n > MAX_CODE_LINES)
        .map(|(f, n)| format!("{f}: {n} lines of code outside its tests (at most {MAX_CODE_LINES}): split it along a seam"))
        .collect();
    assert!(too_long.is_empty(), "{}", too_long.join("\n"));
}
