//! Helpers shared by the WAL-specific tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use figment::Figment;
use figment::providers::Serialized;
use switchyard_backend_api::MetadataBackend;
use switchyard_compat_tests::RegistryHarness;
pub(crate) use switchyard_compat_tests::fixtures::converges;
use switchyard_compat_tests::fixtures::create_topic_ok;

/// A `wal` harness with these `[metadata.wal]` keys.
pub(crate) fn harness(keys: &[(&str, toml_value::Value)]) -> RegistryHarness {
    let mut config = Figment::new();
    for (key, value) in keys {
        config = match value {
            toml_value::Value::Int(v) => config.merge(Serialized::default(key, v)),
            toml_value::Value::Str(v) => config.merge(Serialized::default(key, v)),
        };
    }
    RegistryHarness::new("wal").with_config(config)
}

/// Values for [`harness`].
pub(crate) mod toml_value {
    /// A config value.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Value {
        /// An integer.
        Int(u64),
        /// A string.
        Str(&'static str),
    }
}

/// Create topics `{prefix}-{i}` for `range`, each with one partition on broker 1.
pub(crate) async fn create_topics(
    node: &Arc<dyn MetadataBackend>,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> anyhow::Result<()> {
    for i in range {
        create_topic_ok(node, &format!("{prefix}-{i}"), &[&[1]]).await?;
    }
    Ok(())
}

/// The WAL directory of a node's data directory.
pub(crate) fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

/// Files in `dir` whose names start with `prefix`, sorted.
pub(crate) fn files(dir: &Path, prefix: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(prefix))
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// The segment files of a node, oldest first.
pub(crate) fn segments(data_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    files(&wal_dir(data_dir), "wal-")
}
