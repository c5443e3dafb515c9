//! Run the real `switchyard` binary with a deadline on every wait, so a bug fails a test
//! instead of hanging it.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};
use tokio::time::{Instant, timeout, timeout_at};

/// How long any one step (start-up, a log line, exit) may take.
pub(crate) const STEP: Duration = Duration::from_secs(30);

/// `switchyard ARGS` in `dir`, with logging at `info`, no inherited `SWITCHYARD_*` variable
/// and `envs` set. The process is killed if the test drops it.
fn command(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            command.env_remove(key);
        }
    }
    // Any free port, so tests running side by side never fight over 9092.
    command.env("SWITCHYARD_LISTEN", "127.0.0.1:0");
    command.envs(envs.iter().copied());
    command
}

/// What a finished run printed.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Run to completion within [`STEP`].
pub(crate) async fn run(
    dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> anyhow::Result<Finished> {
    let output = timeout(STEP, command(dir, args, envs).output())
        .await
        .with_context(|| format!("switchyard {args:?} did not exit within {STEP:?}"))?
        .with_context(|| format!("running switchyard {args:?}"))?;
    Ok(Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A running `switchyard` whose stderr is read line by line.
#[derive(Debug)]
pub(crate) struct Running {
    child: Child,
    stderr: Lines<BufReader<ChildStderr>>,
    /// Every stderr line read so far.
    pub(crate) lines: Vec<String>,
}

impl Running {
    /// Start `switchyard ARGS` in `dir`.
    pub(crate) fn spawn(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut child = command(dir, args, envs)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning switchyard")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        Ok(Self {
            child,
            stderr: BufReader::new(stderr).lines(),
            lines: Vec::new(),
        })
    }

    /// Start `switchyard ARGS` in `dir` under a shell that first sets both open-file limits
    /// (soft and hard) to `open_files`.
    pub(crate) fn spawn_with_file_limit(
        dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        open_files: u32,
    ) -> anyhow::Result<Self> {
        let inner = command(dir, args, envs);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
            .arg(inner.as_std().get_program())
            .args(inner.as_std().get_args())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in inner.as_std().get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let mut child = command.spawn().context("spawning switchyard")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        Ok(Self {
            child,
            stderr: BufReader::new(stderr).lines(),
            lines: Vec::new(),
        })
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("switchyard has already exited")
    }

    /// Read stderr until a line contains `needle`, within [`STEP`]; returns that line.
    pub(crate) async fn wait_for_line(&mut self, needle: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + STEP;
        loop {
            match timeout_at(deadline, self.stderr.next_line()).await {
                Err(_) => bail!(
                    "no stderr line containing {needle:?} within {STEP:?}; stderr so far:\n{}",
                    self.lines.join("\n")
                ),
                Ok(Err(e)) => return Err(e).context("reading stderr"),
                Ok(Ok(None)) => {
                    let status = timeout_at(deadline, self.child.wait()).await;
                    bail!(
                        "switchyard closed stderr ({status:?}) before a line containing \
                         {needle:?}; stderr:\n{}",
                        self.lines.join("\n")
                    )
                }
                Ok(Ok(Some(line))) => {
                    self.lines.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
            }
        }
    }

    /// Send SIGKILL (kill -9). Used by the multi-node cluster tests.
    #[cfg(any(
        feature = "backend-wal",
        feature = "backend-raft",
        feature = "backend-hybrid"
    ))]
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill().context("kill -9 switchyard")
    }

    /// Send SIGTERM.
    pub(crate) fn terminate(&self) -> anyhow::Result<()> {
        let pid = self.child.id().context("switchyard has already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed: {status}");
        Ok(())
    }

    /// Read the rest of stderr and wait for the exit, within [`STEP`].
    pub(crate) async fn wait_exit(mut self) -> anyhow::Result<(ExitStatus, Vec<String>)> {
        let deadline = Instant::now() + STEP;
        loop {
            match timeout_at(deadline, self.stderr.next_line()).await {
                Err(_) => bail!(
                    "switchyard did not close stderr within {STEP:?}; stderr:\n{}",
                    self.lines.join("\n")
                ),
                Ok(Err(e)) => return Err(e).context("reading stderr"),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(line))) => self.lines.push(line),
            }
        }
        let status = timeout_at(deadline, self.child.wait())
            .await
            .with_context(|| {
                format!(
                    "switchyard did not exit within {STEP:?}; stderr:\n{}",
                    self.lines.join("\n")
                )
            })?
            .context("waiting for switchyard")?;
        Ok((status, self.lines))
    }
}
