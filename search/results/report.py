"""The study report: one offline HTML page and PNG charts, built from what MLflow holds.

    build_report(name, out_dir)        `resnet-search report NAME`: report.html + charts/*.png
                                       (and, with log=True, the same files on the study run)
    log_report(client, study_run_id)   the same files as artifacts of the study run (report/)

This module reads the store and writes the page; search.results.charts draws the charts.

Everything comes from the tracking store (the study run, its trial runs, their
params, tags and per-epoch metric histories), so a report can be made for any
study in any store, finished or still running. The page inlines plotly.js: it
opens from a file, an MLflow artifact view or an e-mail, with no network. plotly.js
(4.8 MB) is the page's last script, so the headings and tables show while it is parsed.
"""

from __future__ import annotations

import html
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from search.results.charts import (
    cost_figure,
    curves_figure,
    group_rows,
    groups_figure,
    history_figure,
    optuna_figures,
)
from search.results.sampling import marker_trials, optuna_trials
from search.tracking import tags
from search.tracking.records import StudyRecord, TrialRecord, collect_study
from search.tracking.store import open_study

REPORT_FILE = "report.html"
# A bounded chart's PNG says so in a line (the page's note is too long for an image).
SAMPLED_PNG = "the best trials and a seeded sample of the others: report.html says which"
CHART_DIR = "charts"
ARTIFACT_DIR = "report"


# ---------------------------------------------------------------- the page

# Section key -> (title, how to read it); the page and the PNG names follow this order.
SECTIONS = {
    "history": ("Optimisation history",
                "Each dot is a trial's best score; the black line is the best score found so far. "
                "A line that keeps rising means more trials would still pay; a flat one that the "
                "search has converged."),
    "curves": ("Learning curves",
               "Every trial's validation metric and training loss per epoch. Dotted grey curves were "
               "stopped early by the scheduler (pruned); red curves ending in a cross diverged."),
    "importance": ("Hyperparameter importance",
                   "How much of the variation in the score each searched hyperparameter explains "
                   "(Optuna's fANOVA over the trials that ran to the end; over every scored "
                   "trial, early-stopped ones at their early scores, when fewer than two did). "
                   "Long bars matter."),
    "parallel": ("Parallel coordinates",
                 "One line per trial through its hyperparameter values, coloured by its score: "
                 "follow the dark lines to see which combinations won."),
    "slices": ("Per-parameter slices",
               "The score against each hyperparameter on its own; darker dots are later trials."),
    "cost": ("Accuracy against cost",
             "Score against multiply-adds per image and against parameter count. The dashed Pareto "
             "front joins the trials that no cheaper trial beats: pick from it when cost matters."),
    "groups": ("Grouped comparison",
               "The seed's questions: plain vs residual families, basic vs bottleneck blocks, batch "
               "norm before or after the addition (post-activation ResNet only), and the optimizers. "
               "Bars are the mean score with one standard deviation; diamonds the best trial "
               "(of the trials that ran to the end; of every scored trial when fewer than two "
               "did)."),
}


@dataclass
class ReportCharts:
    """The report's charts in page order, the grouped-comparison rows, the page's notes, and
    per chart which trials it shows where it does not show every one (a big study's)."""

    figures: dict[str, go.Figure] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sampled: dict[str, str] = field(default_factory=dict)


def build_figures(study: StudyRecord) -> ReportCharts:
    """Every chart of the report, in page order, with what it shows of a big study."""
    if not study.scored():
        return ReportCharts(notes=["no trial has a score yet: nothing to chart"])
    charts = ReportCharts()
    figures = charts.figures
    dots, dots_note = marker_trials(study)
    figures["history"] = history_figure(study, dots)
    figures["curves"] = curves_figure(study)
    if study.curves_note:
        charts.sampled["curves"] = study.curves_note
    chosen, optuna_note = optuna_trials(study)
    extra, extra_notes = optuna_figures(study, chosen)
    figures.update(extra)
    charts.notes += extra_notes
    if optuna_note:
        charts.sampled.update({key: optuna_note for key in extra})
    figures["cost"] = cost_figure(study, dots)
    if dots_note:
        charts.sampled.update(history=dots_note, cost=dots_note)
    charts.rows = group_rows(study)
    if charts.rows:
        figures["groups"] = groups_figure(study, charts.rows)
    for fig in figures.values():
        # Optuna's slices fix a width per parameter; the page's column decides instead.
        fig.update_layout(template="plotly_white", height=440, title=None, width=None, autosize=True,
                          margin={"t": 50, "l": 60, "r": 30, "b": 60})
    charts.figures = {k: figures[k] for k in SECTIONS if k in figures}
    return charts


def write_report(study: StudyRecord, out_dir: Path, png: bool = True) -> list[Path]:
    """report.html (and charts/*.png) under out_dir; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = build_figures(study)
    figures, notes = charts.figures, charts.notes
    written: list[Path] = []
    if png and figures:
        written += _write_pngs(figures, charts.sampled, out_dir / CHART_DIR, notes)
    sections = [_section(key, charts.sampled.get(key)) for key in figures]
    if charts.rows:
        sections.append(_group_table(charts.rows))
    if study.classes:
        sections.append(_class_table(study.classes))
    page = PAGE.format(title=html.escape(f"Study {study.name}: report"), plotly=get_plotlyjs(),
                       charts=_chart_data(figures),
                       summary=_summary(study), best=_best_table(study), body="\n".join(sections),
                       notes="".join(f"<li>{html.escape(n)}</li>" for n in notes + study.notes),
                       generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    path = out_dir / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return [path, *written]


def chrome_for_charts() -> str | None:
    """The Chrome/Chromium kaleido would drive (on PATH or kaleido's own download), or None.

    Asked first because kaleido without a browser fails only after starting threads that
    hold the process open for seconds at exit (3 s of every `run` on a machine without one).
    """
    try:  # kaleido's browser finder: a module of kaleido's own dependency, which may change
        from choreographer.browsers.chromium import Chromium

        return Chromium.find_browser(skip_local=False)
    except Exception:  # noqa: BLE001 - a changed kaleido/choreographer: let kaleido try and say
        return "unknown"


def png_figures(figures: dict[str, go.Figure], sampled: dict[str, str]) -> list[go.Figure]:
    """The charts as their PNGs show them. On the page each chart sits under its heading and
    its note; a PNG alone (MLflow's preview) needs its own title, and a line saying that a
    sampled chart is one."""
    titled = []
    for key, fig in figures.items():
        title: dict[str, Any] = {"text": SECTIONS[key][0]}
        if key in sampled:
            title["subtitle"] = {"text": SAMPLED_PNG}
        titled.append(go.Figure(fig).update_layout(title=title, margin={"t": 100 if key in sampled else 80}))
    return titled


def _write_pngs(figures: dict[str, go.Figure], sampled: dict[str, str], directory: Path,
                notes: list[str]) -> list[Path]:
    """PNG copies through kaleido (a headless Chrome); the HTML page does not need them."""
    if chrome_for_charts() is None:
        notes.append("PNG charts not written: no Chrome/Chromium on this machine "
                     "(apt-get install chromium)")
        return []
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{i:02d}-{key}.png" for i, key in enumerate(figures, start=1)]
    titled = png_figures(figures, sampled)
    try:
        pio.write_images(titled, paths, width=1200, height=480, scale=1)
    except Exception as error:  # kaleido without a Chrome/Chromium: the page still works
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        notes.append(f"PNG charts not written: {first} (install chromium)")
        return []
    return [p for p in paths if p.is_file()]


def _section(key: str, sampled: str | None = None) -> str:
    """A chart's heading, how to read it (and which trials it shows, where not every one), and
    the empty div the page's last script draws into."""
    title, how = SECTIONS[key]
    return (f'<section id="{key}"><h2>{html.escape(title)}</h2>'
            f'<p class="how">{html.escape(how)}</p>'
            + (f'<p class="how sampled">{html.escape(sampled)}</p>' if sampled else "") +
            f'<div id="chart-{key}" class="plotly-graph-div" style="height:440px"></div></section>')


def _chart_data(figures: dict[str, go.Figure]) -> str:
    """The figures as one JSON object (div id -> figure), safe inside a <script> element."""
    body = ",".join(f'"chart-{key}":{fig.to_json()}' for key, fig in figures.items())
    return "{" + body.replace("</", "<\\/") + "}"


def _summary(study: StudyRecord) -> str:
    counts = study.outcome_counts()
    ends = [t.end_ms for t in study.trials if t.end_ms]
    facts = [("status", study.status), ("dataset", study.dataset),
             ("ranked by", f"{study.value_name} ({'higher' if study.mode == 'max' else 'lower'} "
                           f"is better, on the validation split)"),
             ("trials", f"{len(study.trials)}: " + ", ".join(f"{n} {s}" for s, n in
                                                            counts.items())),
             ("started", time.strftime("%Y-%m-%d %H:%M", time.localtime(study.start_ms / 1000))),
             ("wall time", f"{(max(ends) - study.start_ms) / 60000:.1f} min" if ends else "-")]
    best = study.best()
    if best is not None:
        facts.append(("best trial", f"#{best.number} {best.label}, {_recipe(best)}: "
                                    f"{study.value_name} {best.value:.4f}"))
    if study.champion and study.test_accuracy is not None:
        alias = f" (models:/{study.champion['model']}@{tags.CHAMPION_ALIAS})" \
            if study.champion["is_alias"] else ""
        facts.append(("champion", f"{study.champion['uri']}{alias}, "
                                  f"test accuracy {study.test_accuracy:.4f} (test split used once)"))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return f'<table class="facts">{rows}</table>'


def _recipe(trial: TrialRecord) -> str:
    lr = math.nan if trial.lr is None else trial.lr
    parts = [trial.optimizer or "?", f"lr {lr:.3g}"]
    if trial.dropout:
        parts.append(f"dropout {trial.dropout:.2g}")
    return " ".join(parts)


def _best_table(study: StudyRecord, top: int = 5) -> str:
    scored = study.ranked()[:top]
    if not scored:
        return "<p>No trial has a score yet.</p>"
    head = ("<tr><th>rank</th><th>trial</th><th>model</th><th>recipe</th><th>status</th>"
            f"<th>best epoch of</th><th>{html.escape(study.value_name)}</th></tr>")
    body = "".join(
        f"<tr><td>{i}</td><td>#{t.number}</td><td>{html.escape(t.label)}</td>"
        f"<td>{html.escape(_recipe(t))}</td><td>{html.escape(t.status)}</td>"
        f"<td>{t.best_epoch} of {len(t.history.get('val_loss') or t.history.get('val_accuracy') or [])}</td>"
        f"<td>{t.value:.4f}</td></tr>" for i, t in enumerate(scored, start=1))
    return f'<table class="grid">{head}{body}</table>'


def _group_table(rows: list[dict[str, Any]]) -> str:
    head = "<tr><th>factor</th><th>choice</th><th>trials</th><th>mean</th><th>std</th><th>best</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(r['factor'])}</td><td>{html.escape(r['value'])}</td><td>{r['n']}</td>"
        f"<td>{r['mean']:.4f}</td><td>{r['std']:.4f}</td><td>{r['best']:.4f}</td></tr>" for r in rows)
    return f'<section id="groups-table"><table class="grid">{head}{body}</table></section>'


def _class_table(classes: dict[str, Any], confused_shown: int = 20) -> str:
    """The champion on the test split by class: images, accuracy, and what each class is
    mistaken for most; the whole confusion matrix for up to `confused_shown` classes."""
    names, matrix = classes["class_names"], classes["confusion"]
    rows = []
    for i, name in enumerate(names):
        total = sum(matrix[i])
        errors = sorted(((count, j) for j, count in enumerate(matrix[i]) if j != i and count),
                        reverse=True)
        worst = f"{html.escape(names[errors[0][1]])} ({errors[0][0]})" if errors else "-"
        accuracy = f"{matrix[i][i] / total:.4f}" if total else "-"
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{total}</td><td>{accuracy}</td>"
                    f"<td>{worst}</td></tr>")
    table = ('<table class="grid"><tr><th>class</th><th>test images</th><th>accuracy</th>'
             f'<th>most often taken for</th></tr>{"".join(rows)}</table>')
    if len(names) <= confused_shown:
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        body = "".join(f"<tr><th>{html.escape(n)}</th>" + "".join(f"<td>{c}</td>" for c in row)
                       + "</tr>" for n, row in zip(names, matrix, strict=True))
        table += ('<p class="how">Confusion matrix: a row is the true class, a column the '
                  f'predicted one.</p><table class="grid"><tr><th></th>{head}</tr>{body}</table>')
    return ('<section id="classes"><h2>The champion on the test split, by class</h2>'
            f"{table}</section>")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; color: #222; margin: 0; background: #fafafa; }}
main {{ max-width: 1240px; margin: 0 auto; padding: 24px; }}
h1 {{ margin-bottom: 4px; }} h2 {{ margin: 36px 0 4px; border-bottom: 1px solid #ddd; }}
p.how {{ color: #555; max-width: 900px; margin: 4px 0 8px; }}
table {{ border-collapse: collapse; margin: 8px 0; background: #fff; }}
th, td {{ padding: 4px 10px; border: 1px solid #e3e3e3; text-align: left; }}
table.facts th {{ background: #f0f0f0; width: 110px; }} table.grid th {{ background: #f0f0f0; }}
section {{ background: #fff; padding: 4px 16px 12px; margin-top: 16px; border-radius: 6px; }}
footer {{ color: #777; font-size: 13px; margin-top: 32px; }}
</style>
</head><body><main>
<h1>{title}</h1>
<p>What the search tried, what won and which choices mattered. Charts are interactive: hover for
details, drag to zoom, double-click to reset; click a legend entry to hide it.</p>
{summary}
<h2>Best trials</h2>
{best}
{body}
<footer><ul>{notes}</ul>Made by <code>resnet-search report</code> from the MLflow tracking store
on {generated}.</footer>
</main>
<!-- plotly.js (megabytes) comes last: the headings and tables show while the browser parses it. -->
<script type="text/javascript">{plotly}</script>
<script type="text/javascript">
const charts = {charts};
for (const [id, figure] of Object.entries(charts)) {{
  Plotly.newPlot(id, figure.data, figure.layout, {{displaylogo: false, responsive: true}});
}}
</script>
</body></html>
"""


# ---------------------------------------------------------------- entry points


def build_report(name: str, out_dir: Path, tracking_uri: str | None = None,
                 png: bool = True, log: bool = False) -> list[Path]:
    """`resnet-search report NAME`: the study's report.html and PNGs under out_dir.

    `log=True` also attaches them to the study run (report/), where MLflow's artifact view
    previews the PNGs as images; a store that refuses the write costs only that line.
    """
    _, client, study_run = open_study(name, tracking_uri)
    files = write_report(collect_study(client, study_run), Path(out_dir), png=png)
    if log:
        try:
            attach_to_study_run(client, study_run.info.run_id, files, Path(out_dir))
        except Exception as error:  # noqa: BLE001 - the files on disk are the report's result
            print(f"resnet-search: report not logged to the study run "
                  f"({type(error).__name__}: {error})", file=sys.stderr)
    return files


def attach_to_study_run(client: Any, study_run_id: str, files: list[Path], root: Path) -> list[str]:
    """Log report files written under root as artifacts of the study run, under report/.

    File by file: a folder given to `report --out` may hold more than the report.
    Returns the artifact paths (report/report.html, report/charts/NN-name.png).
    """
    logged = []
    for file in files:
        folder = file.parent.relative_to(root).as_posix()
        artifact_dir = ARTIFACT_DIR if folder == "." else f"{ARTIFACT_DIR}/{folder}"
        client.log_artifact(study_run_id, str(file), artifact_dir)
        logged.append(f"{artifact_dir}/{file.name}")
    return logged


def log_report(client: Any, study_run_id: str, png: bool = True) -> list[str]:
    """Write the report of a study run and log it as its artifacts under report/.

    Returns the artifact paths (report/report.html, report/charts/NN-name.png).
    """
    study = collect_study(client, client.get_run(study_run_id))
    with tempfile.TemporaryDirectory(prefix="resnet-search-report-") as scratch:
        root = Path(scratch)
        return attach_to_study_run(client, study_run_id, write_report(study, root, png=png), root)
