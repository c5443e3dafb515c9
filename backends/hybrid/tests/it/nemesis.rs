//! Seeded fault runs (partitions, delays, crashes) against three hybrid nodes: every declared
//! check holds. `SWITCHYARD_CONFORMANCE_SEED=N` replays one seed.

use switchyard_compat_tests::RegistryHarness;
use switchyard_compat_tests::nemesis::check_seeds;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_its_declarations_under_faults() -> anyhow::Result<()> {
    let reports = check_seeds(&RegistryHarness::new("hybrid"), 600, 2, 60).await?;
    for report in reports {
        println!("{report}");
    }
    Ok(())
}
