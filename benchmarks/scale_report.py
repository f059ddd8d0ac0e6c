"""`resnet-search report` of a big study: wall time, and the page in headless Chromium.

Uses the stores of benchmarks/scale.py (the same study, written the platform's way; `--stores
DIR` reuses them). For each size: `report` as a user runs it (a new process, the PNGs and the
log to the study run included) `--repeats` times, with the load average around each run; then
the page it wrote: its size, and headless Chromium's time to parse it and draw every chart
(stamped by a script after the page's own) and to redraw the biggest chart after a zoom, the
time a user waits for the page to answer.

    python benchmarks/scale_report.py [--sizes 1000 10000] [--repeats 3] [--stores DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from scale import _summary, study_store, timed_process  # noqa: E402 - benchmarks/ on the path

# Runs after the page's own script (which draws the charts): how long drawing took from the
# start of navigation, and how long one zoom of the history chart takes to redraw.
PROBE = """<script>
const drawnAt = performance.now();
const divs = document.querySelectorAll(".plotly-graph-div");
const started = performance.now();
Plotly.relayout("chart-history", {"xaxis.range": [0, 500]}).then(() => {
  document.body.setAttribute("data-probe", JSON.stringify({
    drawn_ms: drawnAt, zoom_ms: performance.now() - started, charts: divs.length,
    svg: [...divs].filter(d => d.querySelector(".main-svg")).length}));
});
</script>"""


def browser_check(page: Path) -> dict:
    """Headless Chromium on the page: wall seconds, when the charts were drawn, a zoom's redraw."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return {"note": "no Chromium"}
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>", 1))
    started = time.perf_counter()
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=30000", "--dump-dom", probed.as_uri()],
                         capture_output=True, text=True, timeout=300).stdout
    wall = time.perf_counter() - started
    match = re.search(r'data-probe="([^"]*)"', dom)
    probe = json.loads(match.group(1).replace("&quot;", '"')) if match else {"note": "no probe"}
    return {"page_mb": round(page.stat().st_size / 1e6, 2), "chromium_wall_s": round(wall, 2),
            **probe}


def measure(size: int, repeats: int, stores: Path | None) -> dict:
    folder, uri, _, _ = study_store(size, 20, stores)
    out = folder / "report-bench"
    args = ["-m", "search.cli", "report", "scale", "--out", str(out), "--tracking-uri", uri]
    runs, loads = [], []
    for _ in range(repeats):
        before = os.getloadavg()[0]
        runs.append(timed_process(args, timeout=600))
        loads.append((round(before, 1), round(os.getloadavg()[0], 1)))
        print(f"{size} trials: report {runs[-1]} s, load {loads[-1]}", file=sys.stderr, flush=True)
    pngs = sorted(p.name for p in (out / "charts").glob("*.png"))
    return {"trials": size, "report": _summary(runs, 600), "load_before_after": loads,
            "pngs": pngs, "browser": browser_check(out / "report.html")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stores", type=Path, default=None)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "scale_report.json")
    args = parser.parse_args()
    from machine import machine, write_result  # benchmarks/: CPU, flags, versions, load

    host = machine()  # before the measurements: its load average is the one at the start
    rows = [measure(size, args.repeats, args.stores) for size in args.sizes]
    result = {"machine": host, "store": "sqlite", "results": rows}
    write_result(result, args.out)  # adds the load average at the end
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
