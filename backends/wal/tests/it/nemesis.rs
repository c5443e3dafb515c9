//! Seeded fault runs (partitions, delays, crashes) against three wal nodes, in both modes:
//! every declared check holds, and deliberately broken variants (and a false declaration) are
//! caught.
//! `SWITCHYARD_CONFORMANCE_SEED=N` replays one seed of the passing runs.

use anyhow::{Context, ensure};
use switchyard_compat_tests::broken::{BrokenHarness, Flaw};
use switchyard_compat_tests::nemesis::{check_seeds, first_failure};

use crate::support::harness;
use crate::support::toml_value::Value;

/// Two seeds from `base` in `mode`, printing each report. The loss-window check must have
/// been exercised as the mode declares: `sync` loses no acknowledged write with its leader,
/// `async` loses the writes only its isolated primary had.
async fn holds_in(mode: &'static str, base: u64) -> anyhow::Result<()> {
    let mut h = harness(&[("mode", Value::Str(mode))]);
    if mode == "async" {
        h = h.declaring(switchyard_backend_wal::ASYNC_GUARANTEES);
    }
    for report in check_seeds(&h, base, 2, 60).await? {
        println!("{report}; {} lost in the window", report.lost_in_window);
        ensure!(
            (mode == "async") == (report.lost_in_window > 0),
            "{mode}: {} acknowledged writes lost in the window",
            report.lost_in_window
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_holds_its_declarations_under_faults() -> anyhow::Result<()> {
    holds_in("sync", 100).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_mode_holds_its_declarations_under_faults() -> anyhow::Result<()> {
    holds_in("async", 200).await
}

/// The checkers are not vacuous: a wal that acknowledges before committing is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_before_commit_is_caught() -> anyhow::Result<()> {
    let h = BrokenHarness::new(harness(&[]), Flaw::AckBeforeCommit);
    let report = first_failure(&h, 300, 5, 40)
        .await?
        .context("no run caught a wal that acknowledges before committing")?;
    println!("caught: {report}");
    let failed: Vec<&str> = report.failures().iter().map(|c| c.name).collect();
    ensure!(
        failed.contains(&"linearizable") || failed.contains(&"no-lost-ack"),
        "{report}"
    );
    Ok(())
}

/// ... and so is `async` mode declaring that it loses nothing: its isolated primary
/// acknowledges writes that die with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_wal_declared_lossless_is_caught() -> anyhow::Result<()> {
    let h = harness(&[("mode", Value::Str("async"))])
        .declaring(switchyard_backend_wal::SYNC_GUARANTEES);
    let report = first_failure(&h, 500, 2, 20)
        .await?
        .context("no run caught async mode declared lossless")?;
    println!("caught: {report}");
    let failed: Vec<&str> = report.failures().iter().map(|c| c.name).collect();
    ensure!(failed.contains(&"loss-window"), "{report}");
    Ok(())
}

/// ... and so are local reads passed off as linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_declared_linearizable_are_caught() -> anyhow::Result<()> {
    let h = BrokenHarness::new(harness(&[]), Flaw::StaleReads);
    let report = first_failure(&h, 400, 8, 60)
        .await?
        .context("no run caught local reads declared linearizable")?;
    println!("caught: {report}");
    let failed: Vec<&str> = report.failures().iter().map(|c| c.name).collect();
    ensure!(failed == ["linearizable"], "{report}");
    Ok(())
}
