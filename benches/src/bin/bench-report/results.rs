//! Criterion's results of one run: every `new/` directory under the criterion directory whose
//! files were written during the run, read into [`Measurement`]s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use serde::Deserialize;

/// `new/benchmark.json`: the benchmark's id (the fields the report uses).
#[derive(Debug, Deserialize)]
struct BenchmarkFile {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    throughput: Option<BTreeMap<String, u64>>,
}

/// `new/sample.json`: per sample, the iterations run and the nanoseconds they took.
#[derive(Debug, Deserialize)]
struct SampleFile {
    iters: Vec<f64>,
    times: Vec<f64>,
}

/// One benchmark of the run.
#[derive(Debug, Clone)]
pub(crate) struct Measurement {
    /// Elements (or bytes) one iteration processes (criterion's `Throughput::Elements` or
    /// `Throughput::Bytes`), else 1.
    pub(crate) elements: u64,
    /// Per sample, the mean time of one iteration in nanoseconds (`times[i] / iters[i]`),
    /// sorted ascending.
    pub(crate) sample_means: Vec<f64>,
}

impl Measurement {
    /// The `q` quantile (0–1) of the sample means, interpolated linearly between ranks.
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        let n = self.sample_means.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = q.clamp(0.0, 1.0) * (n - 1) as f64;
        let low = rank.floor() as usize;
        let high = rank.ceil() as usize;
        let weight = rank - low as f64;
        self.sample_means[low] * (1.0 - weight) + self.sample_means[high] * weight
    }

    /// Median of the sample means: nanoseconds per iteration.
    pub(crate) fn p50(&self) -> f64 {
        self.quantile(0.5)
    }

    /// 99th percentile of the sample means: nanoseconds per iteration.
    pub(crate) fn p99(&self) -> f64 {
        self.quantile(0.99)
    }

    /// Elements per second at the median.
    pub(crate) fn throughput(&self) -> f64 {
        self.elements as f64 * 1e9 / self.p50()
    }

    /// Samples taken.
    pub(crate) fn samples(&self) -> usize {
        self.sample_means.len()
    }
}

/// The measurements of one run, by `group/function/value` (criterion's id).
#[derive(Debug, Default)]
pub(crate) struct Results {
    by_id: BTreeMap<String, Measurement>,
}

impl Results {
    /// Read every benchmark under `dir` whose `new/sample.json` was written between `started`
    /// and `finished` (Unix seconds): the run's, not an older run's left in the same place.
    pub(crate) fn load(dir: &Path, started: u64, finished: u64) -> anyhow::Result<Self> {
        let mut new_dirs = Vec::new();
        find_new_dirs(dir, &mut new_dirs)?;
        let mut by_id = BTreeMap::new();
        for new in new_dirs {
            let sample_path = new.join("sample.json");
            let written = std::fs::metadata(&sample_path)
                .and_then(|m| m.modified())
                .with_context(|| format!("reading the time of {}", sample_path.display()))?;
            let written = written
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs();
            if written < started || written > finished + 1 {
                continue;
            }
            let id: BenchmarkFile = read_json(&new.join("benchmark.json"))?;
            let sample: SampleFile = read_json(&sample_path)?;
            let mut sample_means: Vec<f64> = sample
                .iters
                .iter()
                .zip(&sample.times)
                .filter(|(iters, _)| **iters > 0.0)
                .map(|(iters, time)| time / iters)
                .collect();
            sample_means.sort_by(f64::total_cmp);
            let elements = id
                .throughput
                .as_ref()
                .and_then(|t| t.get("Elements").or_else(|| t.get("Bytes")).copied())
                .unwrap_or(1)
                .max(1);
            let key = [Some(id.group_id), id.function_id, id.value_str]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("/");
            by_id.insert(
                key,
                Measurement {
                    elements,
                    sample_means,
                },
            );
        }
        Ok(Self { by_id })
    }

    /// The measurement `group/function/value`, if the run took it.
    pub(crate) fn get(&self, id: &str) -> Option<&Measurement> {
        self.by_id.get(id)
    }

    /// `group/backend/param`, if the run took it.
    pub(crate) fn of(&self, group: &str, backend: &str, param: &str) -> Option<&Measurement> {
        self.get(&format!("{group}/{backend}/{param}"))
    }

    /// Number of measurements.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

fn find_new_dirs(dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if path.join("sample.json").is_file() && path.join("benchmark.json").is_file() {
                found.push(path);
            }
        } else if path.file_name().is_some_and(|n| n != "report") {
            find_new_dirs(&path, found)?;
        }
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("decoding {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(means: &[f64]) -> Measurement {
        Measurement {
            elements: 1,
            sample_means: means.to_vec(),
        }
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let m = measurement(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m.p50(), 2.5);
        assert!((m.p99() - 3.97).abs() < 1e-9);
        assert_eq!(m.quantile(0.0), 1.0);
        assert_eq!(m.quantile(1.0), 4.0);
        assert!(measurement(&[]).p50().is_nan());
    }

    #[test]
    fn throughput_counts_elements_at_the_median() {
        let m = Measurement {
            elements: 256,
            sample_means: vec![2_560_000.0],
        };
        assert_eq!(m.throughput(), 100_000.0);
    }
}
