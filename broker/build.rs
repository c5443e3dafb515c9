//! Links the metadata backends this build enables. Each feature `backend-<name>` pulls in the
//! crate `switchyard-backend-<name>`; a crate that is not referenced registers nothing with
//! `inventory`, so this script writes one `use switchyard_backend_<name> as _;` per enabled
//! feature (`linked_crates.rs`) and the list of their registry names (`linked_names.rs`), both
//! included by `src/backends.rs`. The broker's own source never names a backend.

use std::env;
use std::fs;
use std::path::PathBuf;

const FEATURE_PREFIX: &str = "CARGO_FEATURE_BACKEND_";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-changed=build.rs");
    let mut names: Vec<String> = env::vars()
        .filter_map(|(key, _)| {
            key.strip_prefix(FEATURE_PREFIX)
                .map(|suffix| suffix.to_lowercase())
        })
        .collect();
    names.sort();
    let crates: String = names
        .iter()
        .map(|name| format!("use switchyard_backend_{name} as _;\n"))
        .collect();
    let list: Vec<String> = std::iter::once("memory".to_owned())
        .chain(names.iter().map(|name| name.replace('_', "-")))
        .map(|name| format!("{name:?}"))
        .collect();
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("linked_crates.rs"), crates)?;
    fs::write(
        out.join("linked_names.rs"),
        format!("&[{}]\n", list.join(", ")),
    )?;
    Ok(())
}
