//! The real `switchyard` binary.

use std::path::Path;

use anyhow::{Context as _, ensure};
use switchyard::backends::{LINKED_BACKENDS, default_backend};

use crate::process::{Running, run};

#[tokio::test]
async fn backends_lists_every_linked_backend_with_its_guarantees() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = run(dir.path(), &["backends"], &[]).await?;
    ensure!(out.status.success(), "{out:?}");
    let memory = out
        .stdout
        .lines()
        .find(|line| line.starts_with("memory "))
        .with_context(|| format!("no line starts with `memory`:\n{}", out.stdout))?;
    ensure!(memory.contains("durability=none"), "{memory}");
    ensure!(memory.contains("reference backend"), "{memory}");

    let mut listed: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    listed.sort_unstable();
    let mut linked = LINKED_BACKENDS.to_vec();
    linked.sort_unstable();
    ensure!(listed == linked, "listed {listed:?}, linked {linked:?}");
    Ok(())
}

#[tokio::test]
async fn serve_memory_gets_ready_and_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data_arg = data.to_string_lossy().into_owned();
    let args = [
        "serve",
        "--metadata-backend",
        "memory",
        "--data-dir",
        &data_arg,
    ];
    let mut node = Running::spawn(dir.path(), &args, &[])?;

    let ready = node.wait_for_line("metadata backend ready").await?;
    ensure!(
        ready.contains("memory") && ready.contains("node=1"),
        "{ready}"
    );
    ensure!(
        data.join("metadata").join("memory").is_dir(),
        "no metadata dir"
    );

    node.terminate()?;
    let (status, lines) = node.wait_exit().await?;
    let stderr = lines.join("\n");
    ensure!(status.success(), "exit {status}; stderr:\n{stderr}");
    ensure!(stderr.contains("SIGTERM"), "{stderr}");
    ensure!(stderr.contains("metadata backend shut down"), "{stderr}");
    ensure!(stderr.contains("switchyard stopped"), "{stderr}");
    Ok(())
}

/// What under `root` others can read or enter: `root` must be 0700 and nothing below it may
/// give group or others any access.
fn not_private(root: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut wrong = Vec::new();
    let mut pending = vec![root.to_owned()];
    let mut files = 0;
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o777;
        if (path == root && mode != 0o700) || mode & 0o077 != 0 {
            wrong.push(format!("{} is {mode:o}", path.display()));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        } else {
            files += 1;
        }
    }
    ensure!(files > 0, "no files under {}", root.display());
    Ok(wrong)
}

#[tokio::test]
async fn serve_keeps_its_data_private() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data_arg = data.to_string_lossy().into_owned();
    let args = [
        "serve",
        "--metadata-backend",
        "wal",
        "--data-dir",
        &data_arg,
    ];
    let mut node = Running::spawn(dir.path(), &args, &[])?;
    node.wait_for_line("metadata backend ready").await?;
    node.terminate()?;
    let (status, lines) = node.wait_exit().await?;
    ensure!(
        status.success(),
        "exit {status}; stderr:\n{}",
        lines.join("\n")
    );
    let wrong = not_private(&data)?;
    ensure!(wrong.is_empty(), "readable by others: {wrong:?}");
    Ok(())
}

#[tokio::test]
async fn serve_reads_switchyard_toml_and_env() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("switchyard.toml"),
        "metadata_backend = \"memory\"\ndata_dir = \"from-file\"\nnode_id = 5\n",
    )?;
    let mut node = Running::spawn(dir.path(), &["serve"], &[("SWITCHYARD_NODE_ID", "6")])?;

    let ready = node.wait_for_line("metadata backend ready").await?;
    ensure!(ready.contains("node=6"), "{ready}");
    ensure!(
        dir.path().join("from-file/metadata/memory").is_dir(),
        "data_dir from the file was not used"
    );

    node.terminate()?;
    let (status, lines) = node.wait_exit().await?;
    ensure!(
        status.success(),
        "exit {status}; stderr:\n{}",
        lines.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn serve_unknown_backend_fails_listing_the_available_ones() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = run(
        dir.path(),
        &["serve", "--metadata-backend", "nope", "--data-dir", "data"],
        &[],
    )
    .await?;
    ensure!(!out.status.success(), "{out:?}");
    ensure!(
        out.stderr
            .contains("unknown metadata backend \"nope\"; available: "),
        "{}",
        out.stderr
    );
    for name in LINKED_BACKENDS {
        ensure!(
            out.stderr.contains(name),
            "{name} not listed: {}",
            out.stderr
        );
    }
    ensure!(!dir.path().join("data/metadata").exists(), "created a dir");
    Ok(())
}

/// With no backend configured, the default is the strongest durable backend linked in; with
/// none linked (the case until the durable backend crates exist), `serve` refuses to start
/// rather than fall back to `memory`.
#[tokio::test]
async fn serve_without_a_backend_uses_the_durable_default_or_refuses() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    match default_backend(LINKED_BACKENDS) {
        None => {
            let out = run(dir.path(), &["serve", "--data-dir", "data"], &[]).await?;
            ensure!(!out.status.success(), "{out:?}");
            ensure!(
                out.stderr.contains(
                    "no durable metadata backend is compiled into this binary; choose one with \
                     --metadata-backend (available: memory"
                ),
                "{}",
                out.stderr
            );
            ensure!(
                !out.stderr.contains("metadata backend ready"),
                "{}",
                out.stderr
            );
        }
        Some(name) => {
            let mut node = Running::spawn(dir.path(), &["serve", "--data-dir", "data"], &[])?;
            let ready = node.wait_for_line("metadata backend ready").await?;
            ensure!(ready.contains(name), "{ready}");
            node.terminate()?;
            let (status, lines) = node.wait_exit().await?;
            ensure!(
                status.success(),
                "exit {status}; stderr:\n{}",
                lines.join("\n")
            );
        }
    }
    Ok(())
}

/// Runs `serve` with a memory backend and `extra` arguments and expects it to refuse to start,
/// saying `expected`, without creating any data.
async fn refuses(
    dir: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
    expected: &str,
) -> anyhow::Result<()> {
    let mut args = vec![
        "serve",
        "--metadata-backend",
        "memory",
        "--data-dir",
        "data",
    ];
    args.extend_from_slice(extra);
    let out = run(dir, &args, envs).await?;
    ensure!(!out.status.success(), "{args:?} {envs:?} started: {out:?}");
    ensure!(
        out.stderr.contains(expected),
        "{args:?} {envs:?}: expected {expected:?} in stderr:\n{}",
        out.stderr
    );
    ensure!(
        !out.stderr.contains("panicked"),
        "{args:?} {envs:?} panicked:\n{}",
        out.stderr
    );
    ensure!(!dir.join("data").exists(), "{args:?} {envs:?} created data");
    Ok(())
}

#[tokio::test]
async fn serve_rejects_bad_peers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cases: &[(&str, &str)] = &[
        ("1=host", "invalid peers entry \"1=host\": missing ':PORT'"),
        ("1=:9093", "the host is empty"),
        ("1=host:port", "the port is not a number"),
        ("one=host:9093", "the id is not a number"),
        ("1=a:9093,1=b:9093", "peers list node id 1 more than once"),
        ("2=a:9093,3=b:9093", "peers do not include this node's id 1"),
    ];
    for (peers, expected) in cases {
        refuses(dir.path(), &["--peers", peers], &[], expected).await?;
    }
    refuses(
        dir.path(),
        &[],
        &[("SWITCHYARD_PEERS", "1=a:9093,x")],
        "invalid peers entry \"x\"",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn serve_rejects_bad_config() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    refuses(
        dir.path(),
        &["--node-id", "2147483648"],
        &[],
        "must be in 0..=2147483647",
    )
    .await?;
    refuses(
        dir.path(),
        &["--node-id", "-1"],
        &[],
        "node id -1 is out of range",
    )
    .await?;
    refuses(
        dir.path(),
        &["--config", "missing.toml"],
        &[],
        "config file missing.toml does not exist",
    )
    .await?;
    refuses(dir.path(), &[], &[("SWITCHYARD_BOGUS", "1")], "bogus").await?;
    std::fs::write(dir.path().join("bad.toml"), "node_idd = 2\n")?;
    refuses(dir.path(), &["--config", "bad.toml"], &[], "node_idd").await?;
    Ok(())
}

/// The cluster secret file of the nodes and `switchyard cluster` commands running in `dir`,
/// written once; the variable naming it (relative to `dir`, their working directory).
#[cfg(any(
    feature = "backend-wal",
    feature = "backend-raft",
    feature = "backend-hybrid"
))]
fn secret_env(dir: &Path) -> anyhow::Result<(&'static str, &'static str)> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("cluster.secret");
    if !path.exists() {
        let secret = switchyard_backend_api::ClusterSecret::generate();
        std::fs::write(&path, secret.to_file_contents())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(("SWITCHYARD_CLUSTER_SECRET_FILE", "cluster.secret"))
}

/// `switchyard serve` as node `id` of `backend` with `peers`, its data under `dir/node-<id>`.
#[cfg(any(
    feature = "backend-wal",
    feature = "backend-raft",
    feature = "backend-hybrid"
))]
fn spawn_node(
    dir: &Path,
    backend: &str,
    id: usize,
    peers: &str,
    envs: &[(&str, &str)],
) -> anyhow::Result<Running> {
    let data = dir.join(format!("node-{id}"));
    let data = data.to_string_lossy().into_owned();
    let id = id.to_string();
    let args = [
        "serve",
        "--metadata-backend",
        backend,
        "--data-dir",
        &data,
        "--node-id",
        &id,
        "--peers",
        peers,
    ];
    let mut envs = envs.to_vec();
    envs.push(secret_env(dir)?);
    Running::spawn(dir, &args, &envs)
}

/// SIGTERM every node still running and check that each exits cleanly.
#[cfg(any(
    feature = "backend-wal",
    feature = "backend-raft",
    feature = "backend-hybrid"
))]
async fn stop_all(nodes: Vec<Option<Running>>) -> anyhow::Result<()> {
    for node in nodes.iter().flatten() {
        node.terminate()?;
    }
    for node in nodes.into_iter().flatten() {
        let (status, lines) = node.wait_exit().await?;
        ensure!(status.success(), "exit {status}: {}", lines.join("\n"));
    }
    Ok(())
}

/// Reserved cluster addresses of nodes 1..=n.
#[cfg(any(
    feature = "backend-wal",
    feature = "backend-raft",
    feature = "backend-hybrid"
))]
struct ClusterAddrs(Vec<String>);

#[cfg(any(
    feature = "backend-wal",
    feature = "backend-raft",
    feature = "backend-hybrid"
))]
impl ClusterAddrs {
    fn reserve(n: usize) -> anyhow::Result<Self> {
        (0..n)
            .map(|_| switchyard_compat_tests::reserve_addr())
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    /// The `--peers` value naming `ids`.
    fn peers(&self, ids: &[usize]) -> String {
        ids.iter()
            .map(|id| format!("{id}={}", self.0[id - 1]))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `id`'s address.
    fn of(&self, id: usize) -> &str {
        &self.0[id - 1]
    }
}

/// `switchyard cluster ARGS --metadata-backend BACKEND --peers PEERS`.
#[cfg(any(
    feature = "backend-wal",
    feature = "backend-raft",
    feature = "backend-hybrid"
))]
async fn cluster_command(
    dir: &Path,
    backend: &str,
    args: &[&str],
    peers: &str,
) -> anyhow::Result<crate::process::Finished> {
    let mut all = vec!["cluster"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--metadata-backend", backend, "--peers", peers]);
    run(dir, &all, &[secret_env(dir)?]).await
}

/// Three `wal` nodes; `switchyard cluster promote 2` makes node 2 the primary at a new epoch.
/// Without the cluster secret, or with another one, the command is refused and nothing
/// changes. Promotion with a backend that has no manual failover is refused with a clear
/// error.
#[cfg(feature = "backend-wal")]
#[tokio::test]
async fn cluster_promote_makes_another_wal_node_primary() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let peers = ClusterAddrs::reserve(3)?.peers(&[1, 2, 3]);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(spawn_node(dir.path(), "wal", id, &peers, &[])?);
    }
    for node in &mut nodes {
        node.wait_for_line("metadata backend ready").await?;
    }
    let promote = [
        "cluster",
        "promote",
        "2",
        "--metadata-backend",
        "wal",
        "--peers",
        &peers,
    ];
    let without = run(dir.path(), &promote, &[]).await?;
    ensure!(
        !without.status.success() && without.stderr.contains("/dev/urandom"),
        "{without:?}"
    );
    let other = dir.path().join("other.secret");
    std::fs::write(
        &other,
        switchyard_backend_api::ClusterSecret::generate().to_file_contents(),
    )?;
    let other = other.to_string_lossy().into_owned();
    let wrong = run(
        dir.path(),
        &promote,
        &[("SWITCHYARD_CLUSTER_SECRET_FILE", &other)],
    )
    .await?;
    ensure!(
        !wrong.status.success() && wrong.stderr.contains("cluster secrets differ"),
        "{wrong:?}"
    );
    let promoted = run(dir.path(), &promote, &[secret_env(dir.path())?]).await?;
    ensure!(promoted.status.success(), "{promoted:?}");
    ensure!(
        promoted.stdout.contains("node 2 is the primary at epoch"),
        "{promoted:?}"
    );
    nodes[1].wait_for_line("role=Leader").await?;

    let refused = run(
        dir.path(),
        &[
            "cluster",
            "promote",
            "2",
            "--metadata-backend",
            "memory",
            "--peers",
            &peers,
        ],
        &[secret_env(dir.path())?],
    )
    .await?;
    ensure!(!refused.status.success(), "{refused:?}");
    ensure!(refused.stderr.contains("manual promotion"), "{refused:?}");
    for node in &nodes {
        node.terminate()?;
    }
    for node in nodes {
        let (status, lines) = node.wait_exit().await?;
        ensure!(status.success(), "exit {status}: {}", lines.join("\n"));
    }
    Ok(())
}

/// A `wal` cluster of three grows to four with `cluster add-node` (the joiner lists every
/// node as its peers), loses node 3 to kill -9 and removes it, then loses its primary to
/// kill -9: `cluster promote` makes node 4 primary and `cluster remove-node 1` goes through
/// it. Every survivor exits cleanly on SIGTERM.
#[cfg(feature = "backend-wal")]
#[tokio::test]
async fn cluster_add_node_remove_node_and_promote_operate_a_wal_cluster() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let addrs = ClusterAddrs::reserve(4)?;
    let peers_of = |ids: &[usize]| addrs.peers(ids);
    let cluster =
        async |args: &[&str], peers: &str| cluster_command(dir.path(), "wal", args, peers).await;
    let (three, four) = (peers_of(&[1, 2, 3]), peers_of(&[1, 2, 3, 4]));
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Some(spawn_node(dir.path(), "wal", id, &three, &[])?));
    }
    for node in nodes.iter_mut().flatten() {
        node.wait_for_line("metadata backend ready").await?;
    }
    nodes.push(Some(spawn_node(dir.path(), "wal", 4, &four, &[])?));
    let added = cluster(&["add-node", "4", addrs.of(4)], &three).await?;
    ensure!(added.status.success(), "{added:?}");
    ensure!(
        added.stdout.starts_with("leader 1,")
            && (1..=4).all(|id| added.stdout.contains(&format!("node {id} voter"))),
        "{added:?}"
    );
    if let Some(node) = nodes[3].as_mut() {
        node.wait_for_line("metadata backend ready").await?;
    }

    if let Some(mut killed) = nodes[2].take() {
        killed.kill()?;
    }
    let removed = cluster(&["remove-node", "3"], &four).await?;
    ensure!(removed.status.success(), "{removed:?}");
    ensure!(!removed.stdout.contains("node 3 "), "{removed:?}");

    if let Some(mut killed) = nodes[0].take() {
        killed.kill()?;
    }
    let promoted = cluster(&["promote", "4"], &four).await?;
    ensure!(promoted.status.success(), "{promoted:?}");
    let shrunk = cluster(&["remove-node", "1"], &four).await?;
    ensure!(shrunk.status.success(), "{shrunk:?}");
    ensure!(
        shrunk.stdout.starts_with("leader 4,")
            && shrunk.stdout.contains("node 2 voter")
            && shrunk.stdout.contains("node 4 voter")
            && !shrunk.stdout.contains("node 1 "),
        "{shrunk:?}"
    );
    stop_all(nodes).await
}

/// `switchyard cluster add-node` / `remove-node` grow one `raft` node to three and shrink the
/// cluster back to one, with a kill -9 of the leader in between: the two survivors elect a new
/// leader, which commits the removal of the dead node.
#[cfg(feature = "backend-raft")]
#[tokio::test]
async fn cluster_add_node_and_remove_node_grow_and_shrink_a_raft_cluster() -> anyhow::Result<()> {
    // Joiners have not the lowest id: by raft's bootstrap rule they wait to be added.
    grow_and_shrink("raft", &[]).await
}

/// The same with `hybrid`: joiners start with `bootstrap = false`.
#[cfg(feature = "backend-hybrid")]
#[tokio::test]
async fn cluster_add_node_and_remove_node_grow_and_shrink_a_hybrid_cluster() -> anyhow::Result<()> {
    grow_and_shrink(
        "hybrid",
        &[("SWITCHYARD_METADATA__HYBRID__BOOTSTRAP", "false")],
    )
    .await
}

/// One node of `backend` grows to three through `cluster add-node` (joiners started with
/// `joiner_env`), the leader is killed -9 and removed through the survivors, then one more is
/// removed; every survivor exits cleanly on SIGTERM.
#[cfg(any(feature = "backend-raft", feature = "backend-hybrid"))]
async fn grow_and_shrink(backend: &str, joiner_env: &[(&str, &str)]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let addrs = ClusterAddrs::reserve(3)?;
    let peers_of = |ids: &[usize]| addrs.peers(ids);
    let spawn = |id: usize, peers: String, envs: &[(&str, &str)]| {
        spawn_node(dir.path(), backend, id, &peers, envs)
    };
    let cluster =
        async |args: &[&str], peers: &str| cluster_command(dir.path(), backend, args, peers).await;
    let leader_of = |stdout: &str| -> anyhow::Result<usize> {
        let line = stdout.lines().next().unwrap_or_default();
        line.strip_prefix("leader ")
            .and_then(|rest| rest.split(',').next())
            .and_then(|id| id.parse().ok())
            .with_context(|| format!("no leader in {stdout:?}"))
    };

    // One node that initializes itself, with a cluster address others can reach.
    let mut nodes = vec![Some(spawn(1, peers_of(&[1]), &[])?)];
    if let Some(node) = nodes[0].as_mut() {
        node.wait_for_line("metadata backend ready").await?;
    }
    // Two more, each waiting to be added.
    let mut leader = 0;
    for id in [2, 3] {
        nodes.push(Some(spawn(id, peers_of(&[1, id]), joiner_env)?));
        let added = cluster(
            &["add-node", &id.to_string(), addrs.of(id)],
            &peers_of(&[1]),
        )
        .await?;
        ensure!(added.status.success(), "{added:?}");
        ensure!(
            added.stdout.contains(&format!("node {id} voter")),
            "{added:?}"
        );
        if let Some(node) = nodes[id - 1].as_mut() {
            node.wait_for_line("metadata backend ready").await?;
        }
        leader = leader_of(&added.stdout)?;
    }
    let all = peers_of(&[1, 2, 3]);
    let refused = cluster(&["remove-node", "7"], &all).await?;
    ensure!(!refused.status.success(), "{refused:?}");
    ensure!(refused.stderr.contains("not a member"), "{refused:?}");

    // kill -9 the leader; the survivors elect a new one, which commits its removal.
    if let Some(mut killed) = nodes[leader - 1].take() {
        killed.kill()?;
    }
    let survivors: Vec<usize> = (1..=3).filter(|id| *id != leader).collect();
    let removed = cluster(&["remove-node", &leader.to_string()], &all).await?;
    ensure!(removed.status.success(), "{removed:?}");
    let new_leader = leader_of(&removed.stdout)?;
    ensure!(
        new_leader != leader && survivors.contains(&new_leader),
        "{removed:?}"
    );
    ensure!(
        !removed.stdout.contains(&format!("node {leader} ")),
        "{removed:?}"
    );

    // Down to one node.
    let (gone, last) = (survivors[0], survivors[1]);
    let shrunk = cluster(&["remove-node", &gone.to_string()], &all).await?;
    ensure!(shrunk.status.success(), "{shrunk:?}");
    ensure!(
        shrunk.stdout.contains(&format!("node {last} voter"))
            && !shrunk.stdout.contains(&format!("node {gone} ")),
        "{shrunk:?}"
    );
    stop_all(nodes).await
}
