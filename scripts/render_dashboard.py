"""Render the Grafana dashboard docs/grafana/switchyard.json to a PNG without Grafana: each
panel's queries are run against a Prometheus server over a time range (`query_range`) and drawn
where the dashboard places the panel. Run through `scripts/render-dashboard`, which installs
matplotlib.

    python3 render_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 10 \
        --output docs/grafana/switchyard.png
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

GRID_COLUMNS = 24
# Grid units above the first panel, for the title.
HEADER = 2
# Inches per grid unit: Grafana's panels are about 30 px per height unit on a 24-column grid.
UNIT_W, UNIT_H = 0.85, 0.32
# Per unit: (scale, axis label).
UNITS = {
    "s": (1e3, "ms"),
    "bytes": (1 / 2**20, "MiB"),
    "Bps": (1 / 2**20, "MiB/s"),
    "reqps": (1, "requests/s"),
    "short": (1, ""),
}


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list:
    params = urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise SystemExit(f"query failed: {expr}: {answer}")
    return answer["data"]["result"]


def expand(expr: str, rate_interval: str) -> str:
    """The dashboard's variables as Grafana would set them with every node selected."""
    return (expr.replace("$__rate_interval", rate_interval)
            .replace('=~"$instance"', '=~".*"'))


def legend(template: str, labels: dict) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--dashboard", default=str(
        Path(__file__).resolve().parents[1] / "docs" / "grafana" / "switchyard.json"))
    parser.add_argument("--minutes", type=float, default=10.0, help="time range to draw")
    parser.add_argument("--end", type=float, default=None, help="end (Unix time; default now)")
    parser.add_argument("--rate-interval", default="15s", help="what $__rate_interval becomes")
    parser.add_argument("--output", required=True, help="PNG to write")
    args = parser.parse_args()

    dashboard = json.loads(Path(args.dashboard).read_text())
    end = args.end or time.time()
    start = end - args.minutes * 60
    step = max(1.0, args.minutes * 60 / 300)
    panels = dashboard["panels"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) + HEADER
    fig = plt.figure(figsize=(GRID_COLUMNS * UNIT_W, height * UNIT_H), facecolor="#111217")
    title = (f"{dashboard['title']} — "
             f"{datetime.fromtimestamp(start, timezone.utc):%Y-%m-%d %H:%M} to "
             f"{datetime.fromtimestamp(end, timezone.utc):%H:%M} UTC")
    fig.suptitle(title, color="white", fontsize=14, y=1 - 0.8 / height)
    empty = []
    for panel in panels:
        g = panel["gridPos"]
        left, width = g["x"] / GRID_COLUMNS, g["w"] / GRID_COLUMNS
        top = (g["y"] + HEADER) / height
        if panel["type"] == "row":
            fig.text(0.005, 1 - top - 0.5 / height, panel["title"], color="#ccccdc",
                     fontsize=12, weight="bold", va="center")
            continue
        ax = fig.add_axes((left + 0.012,
                           1 - top - g["h"] / height + 0.9 / height,
                           width - 0.022, g["h"] / height - 1.6 / height))
        ax.set_facecolor("#181b1f")
        for spine in ax.spines.values():
            spine.set_color("#333")
        ax.tick_params(colors="#ccccdc", labelsize=7)
        ax.grid(color="#2a2d33", linewidth=0.5)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        scale, unit_label = UNITS.get(unit, (1, unit))
        ax.set_title(panel["title"], color="#ccccdc", fontsize=9, loc="left")
        if unit_label:
            ax.set_ylabel(unit_label, color="#ccccdc", fontsize=7)
        drawn = 0
        for target in panel.get("targets", []):
            for series in query_range(args.prometheus, expand(target["expr"], args.rate_interval),
                                      start, end, step):
                points = [(datetime.fromtimestamp(t, timezone.utc), float(v) * scale)
                          for t, v in series["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if not points:
                    continue
                xs, ys = zip(*points)
                ax.plot(xs, ys, linewidth=1,
                        label=legend(target.get("legendFormat", ""), series["metric"]))
                drawn += 1
        if drawn == 0:
            empty.append(panel["title"])
            ax.text(0.5, 0.5, "no data", color="#888", ha="center", va="center",
                    transform=ax.transAxes)
        else:
            ax.legend(fontsize=6, loc="upper left", framealpha=0.3, ncol=2,
                      labelcolor="#ccccdc", facecolor="#181b1f", edgecolor="#333")
        ax.set_xlim(datetime.fromtimestamp(start, timezone.utc),
                    datetime.fromtimestamp(end, timezone.utc))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    fig.savefig(args.output, dpi=90, facecolor=fig.get_facecolor())
    print(f"wrote {args.output}: {sum(p['type'] != 'row' for p in panels)} panels, "
          f"{len(empty)} without data{': ' + ', '.join(empty) if empty else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
