//! `switchyard conformance`: seeded fault runs of every multi-node backend linked into this
//! binary, judged against each backend's declared guarantees, and the deliberately broken
//! variants the checkers must catch, written as a Markdown report (`docs/CONFORMANCE.md`).
//!
//! Each backend, in each mode its registration declares, runs `seeds` seeds under each fault
//! kind alone and all together; a row of the report is one backend mode under one fault kind,
//! with the operations and faults counted over its seeds and, per check, how many seeds it held
//! in. The broken variants wrap each backend in its default mode.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use switchyard_backend_api::{Guarantees, available_backends};
use switchyard_compat_tests::broken::{BrokenHarness, Flaw};
use switchyard_compat_tests::nemesis::{self, Faults, Report, RunConfig, Verdict};
use switchyard_compat_tests::{BackendHarness, RegistryHarness};

/// A deliberately broken broker behaviour, for the data-path fault runs of real processes
/// (`compat-tests/clients/datapath.py`) to catch: chosen by `SWITCHYARD_FLAW`, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerFlaw {
    /// `acks-before-isr`: acknowledge `acks=all` writes before the ISR has them.
    AcksBeforeIsr,
}

/// The flaw `SWITCHYARD_FLAW` names, if any (an unknown name is no flaw, and says so).
pub fn flaw() -> Option<BrokerFlaw> {
    static FLAW: OnceLock<Option<BrokerFlaw>> = OnceLock::new();
    *FLAW.get_or_init(|| {
        let name = std::env::var("SWITCHYARD_FLAW").ok()?;
        let flaw = match name.as_str() {
            "acks-before-isr" => Some(BrokerFlaw::AcksBeforeIsr),
            _ => None,
        };
        match flaw {
            Some(flaw) => tracing::warn!(
                ?flaw,
                "SWITCHYARD_FLAW: this broker is deliberately broken for the fault runs"
            ),
            None => tracing::warn!(%name, "SWITCHYARD_FLAW names no flaw; none is active"),
        }
        flaw
    })
}

/// Where the data-path soak's section of the report begins and ends
/// (`compat-tests/clients/soak.py` writes it between these lines).
const DATA_PATH_BEGIN: &str =
    "<!-- data-path soak: begin (written by scripts/soak-datapath; do not edit) -->";
const DATA_PATH_END: &str = "<!-- data-path soak: end -->";

/// `report` followed by the data-path soak's section of `previous` (the report it replaces),
/// if that has one: this command does not run the data path, so it keeps what the soak wrote.
pub fn keeping_data_path_section(report: &str, previous: &str) -> String {
    let section = previous.find(DATA_PATH_BEGIN).and_then(|begin| {
        let end = begin + previous[begin..].find(DATA_PATH_END)? + DATA_PATH_END.len();
        Some(&previous[begin..end])
    });
    match section {
        Some(section) => format!("{}\n\n{section}\n", report.trim_end()),
        None => report.to_owned(),
    }
}

/// The checks, in report order.
const CHECKS: [&str; 7] = [
    "linearizable",
    "no-lost-ack",
    "converged",
    "one-leader-per-epoch",
    "one-writer-per-epoch",
    "failover",
    "loss-window",
];

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Backends to run (registry names); empty: every linked multi-node backend.
    pub backends: Vec<String>,
    /// Seeds per backend and fault kind.
    pub seeds: u64,
    /// Operations per client per run.
    pub ops_per_client: usize,
    /// The first seed.
    pub base_seed: u64,
}

/// One configuration under test: a backend in one mode.
struct Subject {
    label: String,
    harness: RegistryHarness,
    /// Whether this is the backend's default mode.
    default_mode: bool,
}

fn subjects(plan: &Plan) -> anyhow::Result<Vec<Subject>> {
    let linked: Vec<&str> = available_backends()
        .iter()
        .filter(|r| r.guarantees.multi_node)
        .map(|r| r.name)
        .collect();
    let wanted: Vec<String> = if plan.backends.is_empty() {
        linked.iter().map(|n| (*n).to_owned()).collect()
    } else {
        plan.backends.clone()
    };
    let mut subjects = Vec::new();
    for name in wanted {
        if !linked.contains(&name.as_str()) {
            anyhow::bail!(
                "{name} is not a multi-node backend linked into this binary (linked: {})",
                linked.join(", ")
            );
        }
        let harness = RegistryHarness::new(&name);
        match harness.registration().modes {
            [] => subjects.push(Subject {
                label: name.clone(),
                harness,
                default_mode: true,
            }),
            modes => {
                for (i, mode) in modes.iter().enumerate() {
                    subjects.push(Subject {
                        label: format!("{name} ({})", mode.name),
                        harness: harness.clone().in_mode(mode),
                        default_mode: i == 0,
                    });
                }
            }
        }
    }
    Ok(subjects)
}

/// The fault kinds, alone and together.
fn fault_kinds() -> [(&'static str, Faults); 6] {
    let none = Faults {
        partitions: false,
        delays: false,
        drops: false,
        crashes: false,
        power_cuts: false,
    };
    [
        (
            "partitions",
            Faults {
                partitions: true,
                ..none
            },
        ),
        (
            "delays",
            Faults {
                delays: true,
                ..none
            },
        ),
        (
            "drops",
            Faults {
                drops: true,
                ..none
            },
        ),
        (
            "crashes",
            Faults {
                crashes: true,
                ..none
            },
        ),
        (
            "power cuts",
            Faults {
                power_cuts: true,
                ..none
            },
        ),
        ("all", Faults::ALL),
    ]
}

/// One row: a subject under one fault kind, over its seeds.
struct Row {
    subject: String,
    declared: Guarantees,
    fault: &'static str,
    reports: Vec<Report>,
}

/// A broken variant and what caught it.
struct Caught {
    variant: String,
    report: Option<Report>,
}

/// What [`run`] tells its caller as it goes.
#[derive(Debug)]
pub enum Step<'a> {
    /// How many fault runs and broken-variant checks it will make.
    Planned(u64),
    /// A fault run finished.
    Ran(&'a Report),
    /// A broken variant was checked: the run that caught it, if one did.
    Checked(Option<&'a Report>),
}

/// The broken variants every default-mode backend is checked with, and what they break.
const FLAWS: [(Flaw, &str); 2] = [
    (Flaw::AckBeforeCommit, "acknowledging before commit"),
    (Flaw::StaleReads, "serving local reads as linearizable"),
];

/// Run the plan; return the Markdown report. `progress` is told the plan, then of every
/// finished run and check.
pub async fn run(plan: &Plan, mut progress: impl FnMut(Step<'_>)) -> anyhow::Result<String> {
    let subjects = subjects(plan)?;
    let runs = subjects.len() as u64 * fault_kinds().len() as u64 * plan.seeds
        + (subjects.iter().filter(|s| s.default_mode).count() * FLAWS.len()) as u64;
    progress(Step::Planned(runs));
    let mut rows = Vec::new();
    for subject in &subjects {
        for (fault, faults) in fault_kinds() {
            let mut reports = Vec::new();
            for seed in plan.base_seed..plan.base_seed + plan.seeds {
                let config = RunConfig {
                    seed,
                    nodes: 3,
                    clients: 4,
                    ops_per_client: plan.ops_per_client,
                    faults,
                };
                let report = nemesis::run(&subject.harness, config).await?;
                progress(Step::Ran(&report));
                reports.push(report);
            }
            rows.push(Row {
                subject: subject.label.clone(),
                declared: subject.harness.declared(),
                fault,
                reports,
            });
        }
    }
    let mut caught = Vec::new();
    for subject in subjects.iter().filter(|s| s.default_mode) {
        for (flaw, what) in FLAWS {
            let broken = BrokenHarness::new(subject.harness.clone(), flaw);
            let report = nemesis::first_failure(
                &broken,
                plan.base_seed,
                plan.seeds.max(4),
                plan.ops_per_client,
            )
            .await?;
            progress(Step::Checked(report.as_ref()));
            caught.push(Caught {
                variant: format!("{} {what}", subject.label),
                report,
            });
        }
    }
    Ok(render(plan, &rows, &caught))
}

fn declared(g: &Guarantees) -> String {
    format!(
        "durability {:?}, reads {:?}, failover {:?}, loss {:?}",
        g.durability, g.reads, g.failover, g.loss_window
    )
}

fn render(plan: &Plan, rows: &[Row], caught: &[Caught]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Conformance under faults\n");
    let _ = writeln!(
        out,
        "Generated by `switchyard conformance --seeds {} --ops {}` (first seed {}); do not edit \
         by hand. Each run starts three nodes on loopback behind TCP proxies, registers a \
         broker, and has four clients issue {} operations each (create and delete topics, \
         commit offsets, register and fence brokers, start group generations, and \
         linearizable reads where declared) against random nodes while \
         the nemesis injects the row's faults: a node isolated from the others and healed \
         (partitions), one direction of a link slowed by 20–120 ms (delays), one direction of a \
         link dropping one chunk in 2 to 5 and closing the connection that lost it (drops), \
         a node crashed \
         without shutdown and reopened from its data (crashes), a node's power cut in the \
         middle of whatever it was writing — of its bytes not yet synced, a random prefix \
         reaches the disk and the rest is lost — and reopened (power cuts; a backend without \
         a power-cut model is crashed instead, counted as a crash). Then the network heals, a \
         barrier write goes through the leader and every key is read there.\n",
        plan.seeds, plan.ops_per_client, plan.base_seed, plan.ops_per_client
    );
    let _ = writeln!(
        out,
        "Checks: **linearizable** — per key, the history (with unknown outcomes allowed to \
         have happened or not) has a linearization; **no-lost-ack** — every acknowledged, \
         never-deleted topic exists at the end (checked where durability is declared); \
         **converged** — every node holds the leader's state; **one-leader-per-epoch** — no \
         two ready nodes claimed leadership in one epoch; **one-writer-per-epoch** — from the \
         acknowledgements themselves (each names the epoch and the leader that wrote it, and \
         its log index): no epoch has two writers, and every write of a later epoch sits \
         after every write of an earlier one; **failover** — with the healed cluster's \
         leader crashed, an automatic backend takes writes again on its own within 20 s, a \
         manual one does not (watched for 2 s) but does once a survivor is promoted, and the \
         crashed node converges after reopening; **loss-window** — through the healed \
         cluster's leader, three writes every node applies, then three more while the leader \
         is isolated (300 ms each); the leader is crashed, the network heals and a survivor \
         takes over (elected, or promoted): every write all nodes applied survives, the \
         isolated writes that were acknowledged are lost only as the declared window allows \
         (none, or a tail of the log), and the lost leader converges once reopened. A cell \
         counts the seeds the check held in. Replay one seed with `SWITCHYARD_CONFORMANCE_SEED=N` in the backend's fault-run \
         test.\n"
    );
    let _ = writeln!(
        out,
        "| backend | declared | faults | seeds | operations (ok / rejected / unknown) | faults injected | {} |",
        CHECKS.join(" | ")
    );
    let _ = writeln!(out, "|{}", "---|".repeat(6 + CHECKS.len()));
    for row in rows {
        let (ok, rejected, unknown) = row.reports.iter().fold((0, 0, 0), |(o, r, u), rep| {
            (o + rep.ok, r + rep.rejected, u + rep.unknown)
        });
        let mut injected: BTreeMap<&str, usize> = BTreeMap::new();
        for rep in &row.reports {
            for (kind, n) in &rep.faults {
                *injected.entry(kind).or_default() += n;
            }
        }
        let injected = if injected.is_empty() {
            "none".to_owned()
        } else {
            injected
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cells: Vec<String> = CHECKS
            .iter()
            .map(|name| {
                let verdicts: Vec<(&Verdict, u64)> = row
                    .reports
                    .iter()
                    .filter_map(|rep| {
                        rep.checks
                            .iter()
                            .find(|c| c.name == *name)
                            .map(|c| (&c.verdict, rep.seed))
                    })
                    .collect();
                if verdicts.iter().all(|(v, _)| **v == Verdict::NotDeclared) {
                    return "not declared".to_owned();
                }
                let passed = verdicts
                    .iter()
                    .filter(|(v, _)| **v == Verdict::Pass)
                    .count();
                let failed: Vec<String> = verdicts
                    .iter()
                    .filter(|(v, _)| matches!(v, Verdict::Fail(_)))
                    .map(|(_, seed)| seed.to_string())
                    .collect();
                let lost: usize = row.reports.iter().map(|r| r.lost_in_window).sum();
                if failed.is_empty() && *name == "loss-window" && lost > 0 {
                    format!(
                        "pass {passed}/{} ({lost} acked writes lost, all in the window)",
                        verdicts.len()
                    )
                } else if failed.is_empty() {
                    format!("pass {passed}/{}", verdicts.len())
                } else {
                    format!("**FAIL** seeds {}", failed.join(", "))
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} ({ok} / {rejected} / {unknown}) | {injected} | {} |",
            row.subject,
            declared(&row.declared),
            row.fault,
            row.reports.len(),
            ok + rejected + unknown,
            cells.join(" | ")
        );
    }
    let _ = writeln!(out, "\n## Broken variants\n");
    let _ = writeln!(
        out,
        "Deliberately broken wrappers of each backend in its default mode \
         (`compat-tests/src/broken.rs`); the suite must flag each. Seeds from {} on, all faults, until one run fails a check.\n",
        plan.base_seed
    );
    let _ = writeln!(out, "| variant | caught | by | seed |");
    let _ = writeln!(out, "|---|---|---|---|");
    for c in caught {
        match &c.report {
            Some(r) => {
                let by: Vec<&str> = r.failures().iter().map(|f| f.name).collect();
                let _ = writeln!(
                    out,
                    "| {} | yes | {} | {} |",
                    c.variant,
                    by.join(", "),
                    r.seed
                );
            }
            None => {
                let _ = writeln!(out, "| {} | **no** | — | — |", c.variant);
            }
        }
    }
    let _ = writeln!(out, "\n## Soak\n");
    let _ = writeln!(
        out,
        "CI runs two seeds per backend in each backend's fault-run test (`cargo nextest run \
         --workspace -E 'test(nemesis)'`). A longer soak: \
         `cargo run -p switchyard --features conformance -- conformance --seeds 50 --ops 200 \
         --output /tmp/soak.md` (runs grow with \
         the number of operations: this report's 60 per client take about 5 s a run); any \
         failing cell names its seeds."
    );
    let _ = writeln!(
        out,
        "\nThe runs above crash nodes inside one process. Real processes are killed with \
         SIGKILL by the client suite: `compat-tests/clients/test_kill_seeded.py` runs three \
         `switchyard serve` processes per multi-node backend while a client creates topics \
         through the running nodes, kills the metadata leader or a follower on a schedule \
         drawn from the seed (promoting a survivor when the primary of a backend with manual failover dies), restarts it, \
         and checks that every acknowledged creation is on every node (seeds 11 and 12 in CI; \
         `SWITCHYARD_CONFORMANCE_SEED=N compat-tests/clients/run.sh -k kill_seeded` replays \
         one). The Kafka data path under faults — real processes and clients, every link \
         through proxies — is the next section, written by `scripts/soak-datapath`, which this \
         command keeps when it rewrites the file."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_report_keeps_the_data_path_section_of_the_old_one() {
        let section = format!("{DATA_PATH_BEGIN}\n## Kafka data path\n| a | b |\n{DATA_PATH_END}");
        let previous = format!("# old\n\nold rows\n\n{section}\n");
        assert_eq!(
            keeping_data_path_section("# new\n\nnew rows\n", &previous),
            format!("# new\n\nnew rows\n\n{section}\n")
        );
        assert_eq!(
            keeping_data_path_section("# new\n", "# old, no section\n"),
            "# new\n"
        );
        let torn = format!("# old\n{DATA_PATH_BEGIN}\nno end");
        assert_eq!(keeping_data_path_section("# new\n", &torn), "# new\n");
    }
}
