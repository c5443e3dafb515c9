"""The data-path soak: `datapath.run_schedule` for N seeds per multi-node backend, summed into
the "Kafka data path under faults" section of docs/CONFORMANCE.md. Run it with
`scripts/soak-datapath` (which builds the binaries and the venv first).

Each run's cluster lives in a temp dir removed afterwards, unless a check failed: then the dir
(the brokers' logs and data) is kept and named, with the run's schedule and violations.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

from conftest import MULTI_NODE
from datapath import CHECKS, FAULTS, Result, run_schedule

BEGIN = "<!-- data-path soak: begin (written by scripts/soak-datapath; do not edit) -->"
END = "<!-- data-path soak: end -->"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedules", type=int, required=True, help="runs per backend")
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--backends", help="comma-separated (default: every multi-node one)")
    parser.add_argument("--doc", type=Path, help="write the section into this Markdown file")
    parser.add_argument("--broken", type=int, default=20,
                        help="seeds (from 1, all faults) the broken variant may take to be "
                             "caught (0: do not run it)")
    args = parser.parse_args()
    backends = [b for b in MULTI_NODE
                if not args.backends or b.name in args.backends.split(",")]
    if not backends:
        parser.error("no multi-node backend selected")
    started = time.monotonic()
    results: dict[str, list[Result]] = defaultdict(list)
    failed: list[tuple[Result | None, str]] = []
    for backend in backends:
        for seed in range(args.first_seed, args.first_seed + args.schedules):
            base = Path(tempfile.mkdtemp(prefix=f"soak-{backend.name}-{seed}-"))
            try:
                result = run_schedule(backend, base, seed)
            except Exception as e:  # the run did not finish: a liveness failure, kept
                failed.append((None, f"{backend.name} seed {seed}: {e} (kept {base})"))
                print(f"{backend.name} seed {seed}: FAILED TO FINISH: {e}", flush=True)
                continue
            results[backend.name].append(result)
            if result.violations:
                result.history.save(base / "history.json")
                failed.append((result, f"{result.report()}\n(kept {base}, with history.json)"))
                print(result.report(), flush=True)
            else:
                shutil.rmtree(base, ignore_errors=True)
                acked = sum(1 for a in result.history.appends if a.outcome == "ok")
                print(f"{backend.name} seed {seed}: ok ({acked} acknowledged appends, "
                      f"{', '.join(f.kind for f in result.faults)})", flush=True)
    caught = broken_variant(backends[0], args.broken) if args.broken else None
    section = render(args, backends, results, failed, caught, time.monotonic() - started)
    print(section)
    if args.doc:
        write_section(args.doc, section)
    return 1 if failed or (caught is not None and caught[1] is None) else 0


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


def render(args, backends, results, failed, caught, seconds: float) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    # Changes to the docs (this report among them) do not change what ran.
    dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!docs"],
                           capture_output=True, text=True).stdout.strip()
    names = ",".join(b.name for b in backends)
    lines = [
        BEGIN,
        "## Kafka data path under faults",
        "",
        f"`scripts/soak-datapath --schedules {args.schedules} --first-seed {args.first_seed} "
        f"--backends {names}` at {commit}"
        f"{' (with uncommitted changes)' if dirty else ''}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {seconds / 60:.0f} minutes. Each "
        "schedule starts three `switchyard serve` processes (five for every fourth seed) "
        "behind `switchyard-netem`'s proxies "
        "(every link, broker to broker and client to broker), creates an RF=3 topic "
        "(`min.insync.replicas=2`), runs two idempotent `acks=all` producers appending to "
        "eight keys and a two-member consumer group that commits, and injects two to four "
        "faults drawn from the seed (`compat-tests/clients/datapath.py`); then it heals, waits "
        "for a write and a whole ISR, reads every partition and every node's segment files, "
        "and checks. `SWITCHYARD_CONFORMANCE_SEED=N compat-tests/clients/run.sh -k datapath` "
        "replays one schedule; CI runs seed 1 per backend.",
        "",
        "Checks: " + "; ".join(f"**{name}** — {what}" for name, what in CHECKS.items()) + ".",
        "",
        "| backend | fault | schedules | appends (acknowledged / unknown) | reads | commits | "
        + " | ".join(CHECKS) + " | first write after the fault ends (p50 / max) |",
        "|---|---|---|---|---|---|" + "---|" * len(CHECKS) + "---|",
    ]
    for backend in backends:
        runs = results.get(backend.name, [])
        for kind in FAULTS:
            with_kind = [r for r in runs if any(f.kind == kind for f in r.faults)]
            if not with_kind:
                continue
            appends = [a for r in with_kind for a in r.history.appends]
            acked = sum(1 for a in appends if a.outcome == "ok")
            broken = Counter(v.split(":")[0] for r in with_kind for v in r.violations)
            cells = [f"pass {len(with_kind)}/{len(with_kind)}" if not broken[name]
                     else f"**FAIL** ({broken[name]})" for name in CHECKS]
            recover = [after for r in with_kind for k, _, after in r.availability
                       if k == kind and after is not None]
            recovery = (f"{statistics.median(recover):.2f} s / {max(recover):.2f} s"
                        if recover else "—")
            lines.append(
                f"| {backend.name} | {kind} | {len(with_kind)} | {len(appends)} ({acked} / "
                f"{len(appends) - acked}) | {sum(len(r.history.reads) for r in with_kind)} | "
                f"{sum(len(r.history.commits) for r in with_kind)} | " + " | ".join(cells)
                + f" | {recovery} |")
    lines.append("")
    if caught is not None:
        name, seed, checks = caught
        lines += [
            "Broken variant: brokers that acknowledge `acks=all` writes once the leader has "
            "them, before the ISR does (a `conformance` build run with "
            f"`SWITCHYARD_FLAW=acks-before-isr`), on {name}, seeds from 1, all faults: "
            + (f"caught at seed {seed} by {', '.join(checks)}." if seed is not None
               else f"**not caught** in {args.broken} seeds."),
            ""]
    total = sum(len(r) for r in results.values())
    if failed:
        lines.append(f"{len(failed)} of {total + sum(1 for r, _ in failed if r is None)} "
                     "schedules failed:")
        lines.append("")
        lines += [f"    {line}" for _, text in failed for line in text.splitlines()]
    else:
        lines.append(f"All {total} schedules passed every check.")
    lines.append(END)
    return "\n".join(lines)


def write_section(doc: Path, section: str) -> None:
    """Replace the section between the markers, or add it at the end."""
    text = doc.read_text() if doc.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
