"""The data-path soak: `datapath.run_schedule` for N seeds per multi-node backend, summed into
the "Kafka data path under faults" section of docs/CONFORMANCE.md, a block per backend (a soak
replaces the blocks of the backends it ran and keeps the others). Run it with
`scripts/soak-datapath` (which builds the binaries and the venv first).

Each run's cluster lives in a temp dir removed afterwards, unless a check failed: then the dir
(the brokers' logs and data) is kept and named, with the run's schedule and violations.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

from conftest import MULTI_NODE, share_ports
from datapath import CHECKS, FAULTS, Fault, Result, resent, run_schedule

BEGIN = "<!-- data-path soak: begin (written by scripts/soak-datapath; do not edit) -->"
END = "<!-- data-path soak: end -->"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedules", type=int, required=True, help="runs per backend")
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--backends", help="comma-separated (default: every multi-node one)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs side by side, each schedule in a process of its own, with "
                             "its own share of the ports (default 1)")
    parser.add_argument("--doc", type=Path, help="write the section into this Markdown file")
    parser.add_argument("--broken", type=int, default=20,
                        help="seeds (from 1, all faults) the broken variant may take to be "
                             "caught (0: do not run it)")
    args = parser.parse_args()
    backends = [b for b in MULTI_NODE
                if not args.backends or b.name in args.backends.split(",")]
    if not backends:
        parser.error("no multi-node backend selected")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    results: dict[str, list[Run]] = defaultdict(list)
    # (backend, the run or None if it did not finish, what to report).
    failed: list[tuple[str, Run | None, str]] = []
    # Backend -> (its first run's start, its last run's end), in time.monotonic().
    spans: dict[str, tuple[float, float]] = {}
    runs = [(backend.name, seed) for backend in backends
            for seed in range(args.first_seed, args.first_seed + args.schedules)]
    context = multiprocessing.get_context("spawn")
    shares = context.Queue()
    for share in range(args.jobs):
        shares.put(share)
    # A process per schedule: a client a run leaves running (`datapath.stop`) dies with its
    # process, and never reaches a later run's cluster on ports it knew (the proxies' are
    # ephemeral; the kernel hands them out again).
    with ProcessPoolExecutor(args.jobs, mp_context=context, max_tasks_per_child=1,
                             initializer=take_shares, initargs=(shares, args.jobs)) as pool:
        for future in as_completed([pool.submit(run_one, name, seed) for name, seed in runs]):
            name, seed, run, error, (began, ended) = future.result()
            first, last = spans.get(name, (began, ended))
            spans[name] = (min(first, began), max(last, ended))
            if run is None:  # the run did not finish: a liveness failure, kept
                failed.append((name, None, f"{name} seed {seed}: {error}"))
                print(f"{name} seed {seed}: FAILED TO FINISH: {error}", flush=True)
                continue
            results[name].append(run)
            if run.violations:
                failed.append((name, run, f"{run.report}\n({error})"))
                print(run.report, flush=True)
            else:
                left = (f"; left running when stopped: {', '.join(run.abandoned)}"
                        if run.abandoned else "")
                print(f"{name} seed {seed}: ok ({run.acked} acknowledged appends, "
                      f"{', '.join(f.kind for f in run.faults)}{left})", flush=True)
    caught = broken_variant(backends[0], args.broken) if args.broken else None
    blocks = render(args, results, failed, caught, spans)
    print("\n".join(blocks.values()))
    if args.doc:
        write_section(args.doc, blocks)
    return 1 if failed or (caught is not None and caught[1] is None) else 0


_SHARES = None
_SHARE_COUNT = 1


def take_shares(shares, count: int) -> None:
    """A schedule's process: where it takes its share of the ports from (`run_one`)."""
    global _SHARES, _SHARE_COUNT
    _SHARES, _SHARE_COUNT = shares, count


@dataclasses.dataclass
class Run:
    """What the report needs of one schedule's result (a whole history stays in its job)."""
    faults: list[Fault]
    violations: list[str]
    availability: list[tuple[str, float | None, float | None]]
    appends: int
    acked: int
    reads: int
    commits: int
    abandoned: list[str]
    # Values written twice under different epochs of one producer (`datapath.resent`).
    resent: int
    report: str

    @classmethod
    def of(cls, result: Result) -> Run:
        h = result.history
        return cls(result.faults, result.violations, result.availability, len(h.appends),
                   sum(1 for a in h.appends if a.outcome == "ok"), len(h.reads),
                   len(h.commits), h.abandoned, len(resent(h)), result.report())


def run_one(name: str, seed: int) -> tuple[str, int, Run | None, str | None,
                                          tuple[float, float]]:
    """One schedule in a temp dir, removed unless a check failed or the run did not finish:
    (backend, seed, the run or None, where the dir was kept or why the run failed, when it
    began and ended in time.monotonic(), which every process of the machine shares)."""
    backend = next(b for b in MULTI_NODE if b.name == name)
    base = Path(tempfile.mkdtemp(prefix=f"soak-{name}-{seed}-"))
    # One share of the ports per running schedule: held until its cluster is gone.
    share = _SHARES.get()
    share_ports(share, _SHARE_COUNT)
    began = time.monotonic()
    try:
        result = run_schedule(backend, base, seed)
    except Exception as e:
        return name, seed, None, f"{e} (kept {base})", (began, time.monotonic())
    finally:
        _SHARES.put(share)
    span = (began, time.monotonic())
    if result.violations:
        result.history.save(base / "history.json")
        return name, seed, Run.of(result), f"kept {base}, with history.json", span
    shutil.rmtree(base, ignore_errors=True)
    return name, seed, Run.of(result), None, span


def broken_variant(backend, seeds: int) -> tuple[str, int | None, list[str]]:
    """Seeds from 1, all faults, until a run of the broken variant (brokers acknowledging
    acks=all before the ISR has the write) fails a check: (backend, seed, checks failed)."""
    flawed = Path(os.environ["SWITCHYARD_BIN"]).parent / "switchyard-conformance"
    normal = os.environ["SWITCHYARD_BIN"]
    os.environ["SWITCHYARD_BIN"] = str(flawed)
    try:
        for seed in range(1, seeds + 1):
            base = Path(tempfile.mkdtemp(prefix=f"soak-broken-{seed}-"))
            result = run_schedule(backend, base, seed, flaw="acks-before-isr")
            shutil.rmtree(base, ignore_errors=True)
            print(f"broken variant, seed {seed}: "
                  f"{'caught' if result.violations else 'not caught'}", flush=True)
            if result.violations:
                return backend.name, seed, sorted({v.split(":")[0] for v in result.violations})
        return backend.name, None, []
    finally:
        os.environ["SWITCHYARD_BIN"] = normal


def block_marker(name: str) -> str:
    """The line that opens a block of the section: one per backend, and `broken`."""
    return f"<!-- soak: {name} -->"


def render(args, results, failed, caught, spans) -> dict[str, str]:
    """This soak's blocks of the section, by name: one per backend it ran (`spans`: backend ->
    (first run started, last run ended) in time.monotonic()) and `broken` if it ran that."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    # Changes to the docs (this report among them) do not change what ran.
    dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!docs"],
                           capture_output=True, text=True).stdout.strip()
    release = Path(os.environ["SWITCHYARD_BIN"]).parent.name == "release"
    command = (f"`scripts/soak-datapath{' --release' if release else ''} --schedules "
               f"{args.schedules} --first-seed "
               f"{args.first_seed} --backends {','.join(spans)}"
               f"{f' --jobs {args.jobs}' if args.jobs > 1 else ''}` at {commit}"
               f"{' (with uncommitted changes)' if dirty else ''}")
    when = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    blocks = {}
    for name, (first, last) in spans.items():
        runs = results.get(name, [])
        lines = [
            block_marker(name), f"### {name}", "",
            f"{command}, finished {when}; this backend's {args.schedules} schedules took "
            f"{(last - first) / 60:.0f} minutes.", "",
            "| fault | schedules | appends (acknowledged / unknown) | reads | commits | "
            + " | ".join(CHECKS) + " | first write after the fault ends (p50 / max) |",
            "|---|---|---|---|---|" + "---|" * len(CHECKS) + "---|",
        ]
        for kind in FAULTS:
            with_kind = [r for r in runs if any(f.kind == kind for f in r.faults)]
            if not with_kind:
                continue
            appends = sum(r.appends for r in with_kind)
            acked = sum(r.acked for r in with_kind)
            broken = Counter(v.split(":")[0] for r in with_kind for v in r.violations)
            cells = [f"pass {len(with_kind)}/{len(with_kind)}" if not broken[check]
                     else f"**FAIL** ({broken[check]})" for check in CHECKS]
            recover = [after for r in with_kind for k, _, after in r.availability
                       if k == kind and after is not None]
            recovery = (f"{statistics.median(recover):.2f} s / {max(recover):.2f} s"
                        if recover else "—")
            lines.append(
                f"| {kind} | {len(with_kind)} | {appends} ({acked} / {appends - acked}) | "
                f"{sum(r.reads for r in with_kind)} | {sum(r.commits for r in with_kind)} | "
                + " | ".join(cells) + f" | {recovery} |")
        lines.append("")
        twice = sum(r.resent for r in runs)
        if twice:
            lines += [f"{twice} values were written twice, each copy under another epoch of its "
                      "idempotent producer: re-sent by the client after it bumped its epoch "
                      "(new writes by the protocol, not a broker's duplicate; see **duplicate**)"
                      ".", ""]
        mine = [text for backend, _, text in failed if backend == name]
        if mine:
            lines += [f"{len(mine)} of {args.schedules} schedules failed:", ""]
            lines += [f"    {line}" for text in mine for line in text.splitlines()]
        else:
            lines.append(f"All {len(runs)} schedules passed every check.")
        lines.append("")
        blocks[name] = "\n".join(lines)
    if caught is not None:
        name, seed, checks = caught
        blocks["broken"] = "\n".join([
            block_marker("broken"), "### The broken variant", "",
            "Brokers that acknowledge `acks=all` writes once the leader has them, before the "
            "ISR does (a `conformance` build run with `SWITCHYARD_FLAW=acks-before-isr`), on "
            f"{name}, seeds from 1, all faults, by {command}, {when}: "
            + (f"caught at seed {seed} by {', '.join(checks)}." if seed is not None
               else f"**not caught** in {args.broken} seeds."),
            ""])
    return blocks


HEADER = [
    BEGIN,
    "## Kafka data path under faults",
    "",
    "Written by `scripts/soak-datapath` (`--help` for its options); each backend's block is "
    "its last soak, with that soak's command, commit and time. Each schedule starts three "
    "`switchyard serve` processes (five for every fourth seed) behind `switchyard-netem`'s "
    "proxies (every link, broker to broker and client to broker), creates an RF=3 topic "
    "(`min.insync.replicas=2`), runs two idempotent `acks=all` producers appending to eight "
    "keys, a two-member consumer group that commits and a transactional "
    "consume–transform–produce loop, and injects two to four faults drawn from the seed "
    "(`compat-tests/clients/datapath.py`); then it heals, waits for a write and a whole ISR, "
    "reads every partition and every node's segment files, and checks. With `--jobs N`, N "
    "schedules run side by side, each cluster on its own ports; the machine's two cores are "
    "then shared, which slows elections and replication but changes no check. "
    "`SWITCHYARD_CONFORMANCE_SEED=N compat-tests/clients/run.sh -k datapath` replays one "
    "schedule; CI runs seed 1 per backend.",
    "",
    "Checks: " + "; ".join(f"**{name}** — {what}" for name, what in CHECKS.items()) + ".",
    "",
]


def write_section(doc: Path, blocks: dict[str, str]) -> None:
    """Write the section with `blocks` in place of the blocks of the same names, keeping the
    others (backends this soak did not run) as they were."""
    text = doc.read_text() if doc.exists() else ""
    kept: dict[str, str] = {}
    if BEGIN in text and END in text:
        old = text[text.index(BEGIN):text.index(END)]
        parts = old.split("<!-- soak: ")[1:]
        for part in parts:
            name = part[:part.index(" -->")]
            kept[name] = "<!-- soak: " + part.rstrip("\n") + "\n"
        before, after = text[:text.index(BEGIN)], text[text.index(END) + len(END):]
    else:
        before, after = text.rstrip("\n") + "\n\n", "\n"
    kept.update(blocks)
    order = sorted(n for n in kept if n != "broken") + (["broken"] if "broken" in kept else [])
    section = "\n".join(HEADER) + "\n" + "\n".join(kept[n].rstrip("\n") + "\n"
                                                     for n in order) + END
    doc.write_text(before + section + after)


if __name__ == "__main__":
    sys.exit(main())
