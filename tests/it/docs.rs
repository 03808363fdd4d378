//! The README's reference sections against the binary: every config key the
//! parser accepts is named in its section's line of "Configuration
//! reference" and every key named there is accepted; every subcommand and
//! flag of `heal --help` is in the "Commands" table and every one in the table
//! exists. Both lists come from the binary itself (serde's "expected one of"
//! for an unknown key, argh's help), so a key or flag added without a word in
//! the README, or one removed while the README still offers it, fails here.
//! And ARCHITECTURE.md's code map names every source file, and every file it
//! names exists.

use std::collections::BTreeSet;

use crate::support::{check_config, heal_cli, repo, test_dir};

/// One line of the configuration reference: its head, the TOML snippets
/// that place an unknown key in each table the section holds (the section
/// itself and its inline tables), and the lowercase words in backticks that
/// name values, not keys.
struct Section {
    head: &'static str,
    tables: &'static [&'static str],
    values: &'static [&'static str],
}

/// `@` stands for the unknown key.
const SECTIONS: &[Section] = &[
    Section {
        head: "[server]",
        tables: &["[server]\n@ = 1\n"],
        values: &[],
    },
    Section {
        head: "[[token]]",
        tables: &["[[token]]\n@ = 1\n"],
        // The scopes.
        values: &["admin", "read", "webhook", "ping"],
    },
    Section {
        head: "[[source]]",
        tables: &["[[source]]\n@ = 1\n"],
        // What `status` gives.
        values: &["firing", "resolved"],
    },
    Section {
        head: "[safety]",
        tables: &["[safety]\n@ = 1\n"],
        values: &[],
    },
    Section {
        head: "[[rule]]",
        tables: &["[[rule]]\n@ = 1\n"],
        // The event an escalation makes.
        values: &["escalated"],
    },
    Section {
        head: "[runbook.NAME]",
        tables: &[
            "[runbook.x]\n@ = 1\n",
            "[runbook.x]\nsteps = [{ name = \"a\", run = \"b\", @ = 1 }]\n",
            "[runbook.x]\nverify = { @ = 1 }\n",
        ],
        values: &[],
    },
    Section {
        head: "[[heartbeat]]",
        tables: &["[[heartbeat]]\n@ = 1\n"],
        values: &[],
    },
    Section {
        head: "[[probe]]",
        tables: &[
            "[[probe]]\n@ = 1\n",
            "[[probe]]\nhttp = { @ = 1 }\n",
            "[[probe]]\ntcp = { @ = 1 }\n",
            "[[probe]]\ncommand = { @ = 1 }\n",
            "[[probe]]\nprometheus = { @ = 1 }\n",
            "[[probe]]\nsql = { @ = 1 }\n",
            "[[probe]]\ngraphite = { @ = 1 }\n",
        ],
        values: &["last", "avg", "max", "min"],
    },
    Section {
        head: "[[schedule]]",
        tables: &["[[schedule]]\n@ = 1\n"],
        values: &[],
    },
    Section {
        head: "[channel.NAME]",
        tables: &[
            "[channel.x]\n@ = 1\n",
            "[channel.x]\nslack = { @ = 1 }\n",
            "[channel.x]\npagerduty = { @ = 1 }\n",
            "[channel.x]\nopsgenie = { @ = 1 }\n",
            "[channel.x]\nwebhook = { @ = 1 }\n",
            "[channel.x]\nemail = { @ = 1 }\n",
            "[channel.x]\ncommand = { @ = 1 }\n",
        ],
        values: &[],
    },
    Section {
        head: "[[notify]]",
        tables: &["[[notify]]\n@ = 1\n"],
        values: &[],
    },
    Section {
        head: "[retention]",
        tables: &["[retention]\n@ = 1\n"],
        values: &[],
    },
];

/// Keys the parser accepts only to refuse them with a hint (a command probe
/// has no `on`: it runs on the server).
const REFUSED_WITH_A_HINT: &[&str] = &["on"];

const UNKNOWN: &str = "zz_no_such_key";

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("read README.md")
}

/// The part of `text` from the line `start` up to the next line `end`.
fn part<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(&format!("\n{start}\n"))
        .unwrap_or_else(|| panic!("README has no {start:?}"));
    let rest = &text[from + 1..];
    let to = rest
        .find(&format!("\n{end}\n"))
        .unwrap_or_else(|| panic!("README has no {end:?} after {start:?}"));
    &rest[..to]
}

/// The spans between backticks.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Every lowercase word (letters, digits, `_`) in `text`.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_lowercase()))
}

/// The backticked names of serde's "unknown field `x`, expected one of `a`,
/// `b`" (or "expected `a` or `b`", "expected `a`").
fn expected_fields(message: &str) -> Vec<String> {
    let (_, after) = message
        .split_once("expected ")
        .unwrap_or_else(|| panic!("no \"expected\" in {message:?}"));
    let line = after.lines().next().unwrap_or_default();
    backticked(line).into_iter().map(str::to_string).collect()
}

/// The keys the config parser accepts in the table of `snippet`.
fn accepted_keys(dir: &std::path::Path, snippet: &str) -> Vec<String> {
    let path = dir.join("runbooks.toml");
    std::fs::write(&path, snippet.replace('@', UNKNOWN)).expect("write config");
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "check-config refuses {snippet:?}: {stderr}");
    assert!(
        stderr.contains(&format!("unknown field `{UNKNOWN}`")),
        "the unknown key is what {snippet:?} is refused for: {stderr}"
    );
    expected_fields(&stderr)
}

/// A bullet of the configuration reference: from `- \`HEAD\`` up to the next
/// bullet or blank line.
fn bullet<'a>(reference: &'a str, head: &str) -> &'a str {
    let start = format!("- `{head}`");
    let from = reference
        .find(&start)
        .unwrap_or_else(|| panic!("the configuration reference has no {start:?}"));
    let rest = &reference[from..];
    let to = rest[1..]
        .find("\n- ")
        .map(|i| i + 1)
        .into_iter()
        .chain(rest.find("\n\n"))
        .min()
        .unwrap_or(rest.len());
    &rest[..to]
}

#[test]
fn every_config_key_is_in_the_readme_and_every_key_there_is_accepted() {
    let dir = test_dir("docs-config-keys");
    let readme = readme();
    let reference = part(&readme, "## Configuration reference", "## HTTP API");
    let mut problems = Vec::new();
    for section in SECTIONS {
        let text = bullet(reference, section.head);
        let mut accepted = BTreeSet::new();
        for snippet in section.tables {
            accepted.extend(accepted_keys(&dir, snippet));
        }
        // Any word in backticks counts as naming a key: `http = { url, method }` names both.
        let named: BTreeSet<&str> = backticked(text).into_iter().flat_map(words).collect();
        for key in &accepted {
            if REFUSED_WITH_A_HINT.contains(&key.as_str()) {
                continue;
            }
            // A secret's `*_file` sibling is named once for all of them.
            let file_sibling = key
                .strip_suffix("_file")
                .is_some_and(|stem| named.contains(stem) && text.contains("`*_file`"));
            if !named.contains(key.as_str()) && !file_sibling {
                problems.push(format!(
                    "{}: heal accepts `{key}`, the README does not name it",
                    section.head
                ));
            }
        }
        // A span that is one bare lowercase word names a key or a value.
        for span in backticked(text) {
            let bare = span.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !span.is_empty();
            if bare && !accepted.contains(span) && !section.values.contains(&span) {
                problems.push(format!(
                    "{}: the README names `{span}`, which heal does not accept there",
                    section.head
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The subcommands `heal --help` lists.
fn subcommands() -> Vec<String> {
    let (code, out, err) = heal_cli(&["--help"], &[], None);
    assert_eq!(code, 0, "heal --help: {err}");
    let list = out
        .split_once("\nCommands:\n")
        .unwrap_or_else(|| panic!("no Commands in heal --help: {out}"))
        .1;
    list.lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The flags `heal CMD --help` lists (without `--help`).
fn flags(command: &str) -> BTreeSet<String> {
    let (code, out, err) = heal_cli(&[command, "--help"], &[], None);
    assert_eq!(code, 0, "heal {command} --help: {err}");
    out.lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| l.starts_with("--"))
        .filter_map(|l| l.split_whitespace().next())
        .map(|f| f.trim_end_matches(','))
        .filter(|f| *f != "--help")
        .map(str::to_string)
        .collect()
}

/// Every `--flag` in `text` (a bare `--` is not one).
fn flags_in(text: &str) -> BTreeSet<String> {
    text.match_indices("--")
        .filter(|(i, _)| *i == 0 || !text[..*i].ends_with(|c: char| c.is_alphanumeric()))
        .map(|(i, _)| {
            let name: String = text[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            name
        })
        .filter(|name| !name.is_empty())
        .map(|name| format!("--{name}"))
        .collect()
}

/// Flags every client command takes, explained once under the table.
const CLIENT_FLAGS: &[&str] = &["--server", "--token", "--token-file"];

#[test]
fn every_subcommand_and_flag_is_in_the_readme_commands_table_and_back() {
    let readme = readme();
    let commands = part(&readme, "## Commands", "## Configuration reference");
    // Each row: the commands of its first cell and the whole row.
    let rows: Vec<(Vec<&str>, &str, &str)> = commands
        .lines()
        .filter(|l| l.starts_with("| `heal "))
        .map(|row| {
            let first = row.split(" | ").next().unwrap_or(row);
            let names = first
                .split("`heal ")
                .skip(1)
                .filter_map(|s| s.split([' ', '`']).next())
                .collect();
            (names, first, row)
        })
        .collect();
    let subcommands = subcommands();
    let mut problems = Vec::new();
    for (names, first, _) in &rows {
        for name in names {
            if *name != "--version" && !subcommands.iter().any(|s| s == name) {
                problems.push(format!("the table names `heal {name}`, which heal lacks"));
            }
        }
        // A flag in the command cell is a flag of one of its commands.
        let known: BTreeSet<String> = names
            .iter()
            .filter(|n| subcommands.iter().any(|s| s == *n))
            .flat_map(|n| flags(n))
            .collect();
        for flag in flags_in(first) {
            if !known.contains(&flag) && flag != "--version" {
                problems.push(format!(
                    "the table offers {flag} in {first}, which none of its commands takes"
                ));
            }
        }
    }
    for command in &subcommands {
        let own: Vec<&&str> = rows
            .iter()
            .filter(|(names, _, _)| names.contains(&command.as_str()))
            .map(|(_, _, row)| row)
            .collect();
        if own.is_empty() {
            problems.push(format!(
                "`heal {command}` has no row in the README's commands table"
            ));
            continue;
        }
        // A row whose synopsis ends in `...` leaves its flags to another section.
        let elsewhere = own.iter().any(|row| {
            row.split(" | ")
                .next()
                .is_some_and(|c| c.trim_end().ends_with("...`"))
        });
        for flag in flags(command) {
            let documented = if CLIENT_FLAGS.contains(&flag.as_str()) || elsewhere {
                flags_in(&readme).contains(&flag)
            } else {
                own.iter().any(|row| flags_in(row).contains(&flag))
            };
            if !documented {
                problems.push(format!("`heal {command} {flag}` is not in the README"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `.rs` files under `dir`, as paths relative to the repository.
pub fn rust_files(dir: &std::path::Path, out: &mut Vec<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(repo()).expect("under the repository");
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

#[test]
fn the_code_map_names_every_source_file_and_only_files_that_exist() {
    let map = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let spans: BTreeSet<&str> = backticked(&map).into_iter().collect();
    let mut files = Vec::new();
    for dir in ["src", "benches"] {
        rust_files(&repo().join(dir), &mut files);
    }
    let mut problems = Vec::new();
    // Every source file is named: by its file name, or its module's (`store::watch`,
    // `cli/`), or its directory's for a `mod.rs`.
    for file in files.iter().filter(|f| f.starts_with("src/")) {
        let parts: Vec<&str> = file.trim_end_matches(".rs").split('/').collect();
        let module = match parts.as_slice() {
            [.., dir, "mod"] => *dir,
            [.., stem] => *stem,
            [] => unreachable!("a path has a last part"),
        };
        let file_name = file.rsplit('/').next().unwrap_or(file);
        let named = (file_name != "mod.rs" && map.contains(file_name))
            || map.contains(&format!("{module}/"))
            || spans
                .iter()
                .any(|s| *s == module || s.split("::").any(|p| p == module));
        if !named {
            problems.push(format!("{file} is not named in ARCHITECTURE.md"));
        }
    }
    // Every file it names exists (a name is the end of a path: `front/framing.rs`).
    for name in map
        .split(|c: char| !(c.is_ascii_alphanumeric() || "_/.-".contains(c)))
        .filter(|w| w.ends_with(".rs") && w.len() > 3)
    {
        let exists = files
            .iter()
            .any(|f| f == name || f.ends_with(&format!("/{name}")));
        if !exists {
            problems.push(format!(
                "ARCHITECTURE.md names {name}, which does not exist"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
