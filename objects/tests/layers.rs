//! The modules of `objects` point one way: each uses only modules below it
//! in the layer order (lower first), as `docs/architecture.md` draws them.
//! A new `use crate::…` that points up fails here; the fix is a small trait
//! owned by the lower module (see `alarm::AlarmTarget`,
//! `websocket::socket::Deliver`), not an exception in this list.

use std::collections::BTreeSet;
use std::path::Path;

/// Lowest first. A module may use the modules before it.
const LAYERS: &[&str] = &[
    "sync",
    "error",
    "id",
    "clock",
    "metrics",
    "storage",
    "http",
    "stream",
    "remote",
    "alarm",
    "websocket",
    "options",
    "shared",
    "background",
    "context",
    "object",
    "event",
    "gate",
    "forward",
    "activation",
    "dispatch",
    "admin",
    "registry",
    "namespace",
    "runtime",
    "cluster",
];

/// The one pair allowed to use each other: the mailbox router starts
/// object tasks, and an evicted task hands late events back to it.
const PAIR: (&str, &str) = ("activation", "dispatch");

/// `error` gathers every layer's error type into the top-level `Error`;
/// it may name those types (and nothing else above it).
const ERROR_SOURCES: &[&str] = &["id", "storage", "websocket", "admin", "http"];

fn rank(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|m| *m == module)
        .unwrap_or_else(|| panic!("module {module} is not in LAYERS: add it where it belongs"))
}

/// The crate modules a source file names (`crate::x`), comments skipped.
fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let tail = &rest[at + "crate::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.insert(name);
            }
            rest = tail;
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.iter().next().expect("a component").to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "testing" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read file");
        for used in uses(&text) {
            if used == module || !LAYERS.contains(&used.as_str()) {
                continue;
            }
            let allowed = rank(&used) < rank(&module)
                || (module == PAIR.0 && used == PAIR.1)
                || (module == "error" && ERROR_SOURCES.contains(&used.as_str()));
            if !allowed {
                wrong.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "modules pointing up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_uses_and_skips_comments() {
    let found =
        uses("use crate::alarm::X;\n// crate::runtime in a comment\nlet a = crate::id::hex(x);");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        vec!["alarm".to_string(), "id".to_string()]
    );
}
