"""`resnet-search report`: an offline HTML page of a study, with PNG charts."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path


def cmd_report(args: argparse.Namespace) -> int:
    """An offline HTML report (and PNG charts) of a study, from the tracking store; the same
    files go to the study run, where MLflow's artifact view previews the PNGs as images."""
    # plotly's and MLflow's imports cost seconds: only `report` pays them.
    from search.results.report import build_report

    out = args.out or Path("reports") / args.name
    files = build_report(args.name, out, args.tracking_uri, log=True)
    page, charts = files[0], files[1:]
    print(f"report of {args.name}: {page}" + (f" and {len(charts)} PNG charts in {charts[0].parent}"
                                              if charts else " (no PNG charts: see the page's notes)"))
    if args.open:
        webbrowser.open(page.resolve().as_uri())
    return 0
