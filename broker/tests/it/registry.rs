//! The registry and [`LINKED_BACKENDS`] agree, and the broker's source names no backend.

use std::fs;
use std::path::{Path, PathBuf};

use switchyard::backends::LINKED_BACKENDS;
use switchyard_backend_api::available_backends;

#[test]
fn registry_holds_exactly_the_linked_backends() {
    let mut registered: Vec<&str> = available_backends().iter().map(|r| r.name).collect();
    registered.sort_unstable();
    let mut linked = LINKED_BACKENDS.to_vec();
    linked.sort_unstable();
    assert_eq!(registered, linked);
}

#[test]
fn memory_is_always_linked() {
    assert!(LINKED_BACKENDS.contains(&"memory"));
}

/// A backend is one crate plus one feature line in `broker/Cargo.toml`: the broker's source
/// (and its build script) names none of the backend crates in the workspace (the crates under
/// `backends/` that register themselves) — not as a string,
/// a word in a comment, a crate path or a type — so everything it knows of a backend comes from
/// the registration.
#[test]
fn the_broker_source_names_no_backend() -> std::io::Result<()> {
    let broker = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = Vec::new();
    for entry in fs::read_dir(broker.join("../backends"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // A backend registers itself; `api` and shared support crates do not.
        let lib = fs::read_to_string(entry.path().join("src/lib.rs")).unwrap_or_default();
        if lib.contains("inventory::submit!") && name != "api" {
            names.push(name);
        }
    }
    assert!(names.len() >= 3, "backend crates found: {names:?}");
    let mut files = vec![broker.join("build.rs")];
    collect_rust_files(&broker.join("src"), &mut files)?;
    let mut found = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file)?;
        for (number, line) in text.lines().enumerate() {
            for name in &names {
                if let Some(why) = names_backend(line, name) {
                    found.push(format!("{}:{}: {why}: {line}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
    Ok(())
}

#[test]
fn the_backend_name_check_finds_what_it_looks_for() {
    assert!(names_backend(r#"if name == "wal" {"#, "wal").is_some());
    assert!(names_backend("use switchyard_backend_raft as _;", "raft").is_some());
    assert!(names_backend("let c = HybridConfig::default();", "hybrid").is_some());
    assert!(names_backend("manual failover of the `wal` backend", "wal").is_some());
    assert!(names_backend("a Raft group elects", "raft").is_none());
    assert!(names_backend("let wallet = withdrawal;", "wal").is_none());
}

/// Why `line` names the backend `name`: the word itself, or a type named after it
/// (`Name` followed by another capitalised word).
fn names_backend(line: &str, name: &str) -> Option<&'static str> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let words = line.split(|c: char| !is_ident(c));
    let snake = format!("switchyard_backend_{name}");
    let mut camel = name.to_owned();
    if let Some(first) = camel.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    for word in words {
        if word == name {
            return Some("its name");
        }
        if word == snake {
            return Some("its crate");
        }
        if word
            .strip_prefix(&camel)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
        {
            return Some("its type");
        }
    }
    None
}

fn collect_rust_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rust_files(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}
