//! The machine the report is generated on (the one the run used: the report runs right after
//! it): CPU model and count, memory, kernel, compiler.

use std::process::Command;

/// What `/proc` and `rustc` say about this machine.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Machine {
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub(crate) cpu: String,
    /// Logical CPUs listed in `/proc/cpuinfo`.
    pub(crate) cpus: usize,
    /// `MemTotal` of `/proc/meminfo`, in GiB.
    pub(crate) memory_gib: f64,
    /// `/proc/sys/kernel/osrelease`.
    pub(crate) kernel: String,
    /// `rustc --version`.
    pub(crate) rustc: String,
}

impl Machine {
    /// Read it; a fact that cannot be read is reported as `unknown`.
    pub(crate) fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self::parse(
            &cpuinfo,
            &meminfo,
            std::fs::read_to_string("/proc/sys/kernel/osrelease").ok(),
            command_output("rustc", &["--version"]),
        )
    }

    fn parse(cpuinfo: &str, meminfo: &str, kernel: Option<String>, rustc: Option<String>) -> Self {
        let field = |line: &str, name: &str| {
            line.split_once(':')
                .filter(|(key, _)| key.trim() == name)
                .map(|(_, value)| value.trim().to_owned())
        };
        let cpu = cpuinfo
            .lines()
            .find_map(|l| field(l, "model name"))
            .unwrap_or_else(|| "unknown".into());
        let cpus = cpuinfo
            .lines()
            .filter(|l| field(l, "processor").is_some())
            .count();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| field(l, "MemTotal"))
            .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Self {
            cpu,
            cpus,
            memory_gib: memory_kib / (1024.0 * 1024.0),
            kernel: kernel.map_or_else(|| "unknown".into(), |k| k.trim().to_owned()),
            rustc: rustc.unwrap_or_else(|| "unknown".into()),
        }
    }
}

/// `program args`, trimmed, if it ran and succeeded.
pub(crate) fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpuinfo = "processor\t: 0\nmodel name\t: Test CPU @ 2.0GHz\n\nprocessor\t: 1\nmodel name\t: Test CPU @ 2.0GHz\n";
        let meminfo = "MemTotal:       25165824 kB\nMemFree: 1 kB\n";
        let machine = Machine::parse(cpuinfo, meminfo, Some("6.1.0\n".into()), None);
        assert_eq!(
            machine,
            Machine {
                cpu: "Test CPU @ 2.0GHz".into(),
                cpus: 2,
                memory_gib: 24.0,
                kernel: "6.1.0".into(),
                rustc: "unknown".into(),
            }
        );
    }
}
