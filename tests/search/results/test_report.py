"""`resnet-search report`: the page and PNGs from a real study's MLflow store, drawn in a real browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import replace

import pytest
from common import cli
from reported_study import STUDY_NAME
from study_helpers import Studies

from search.results import charts as report_charts
from search.results import report
from search.tracking import records, tags
from search.tracking.records import StudyRecord, TrialRecord

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
SECTION_KEYS = list(report.SECTIONS)


# ---------------------------------------------------------------- the files


@pytest.mark.slow
def test_the_page_is_self_contained_and_has_every_chart(report_dir):
    page = (report_dir / report.REPORT_FILE).read_text()
    # Offline: plotly.js inlined, no script or stylesheet fetched (the browser test below also
    # runs the page with every host unresolvable).
    assert not re.search(r"<script[^>]+src=", page) and "<link" not in page
    assert "Plotly.newPlot" in page and "plotly.js v" in page
    assert len(page) > 1_000_000  # plotly.js itself is megabytes
    # ... and comes after every heading, table and chart's place: they show while the browser
    # parses it (MLflow's artifact view showed an empty pane for seconds while it did).
    assert page.index("<script") > page.rindex("</section>")
    for key in SECTION_KEYS:
        assert f'id="chart-{key}"' in page, key
    assert "models:/reported-model/1 (models:/reported-model@champion)" in page
    assert "4: 4 completed" in page


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="PNG export needs Chromium (kaleido drives it); "
                                            "apt-get install chromium")
def test_every_chart_is_also_a_png(report_dir):
    pngs = sorted((report_dir / report.CHART_DIR).glob("*.png"))
    assert [p.stem.split("-", 1)[1] for p in pngs] == SECTION_KEYS
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png


@pytest.mark.slow
def test_log_report_attaches_page_and_charts_to_the_study_run(report_study):
    from search.tracking.store import find_study_run

    client = report_study.client()
    study_run = find_study_run(client, STUDY_NAME)
    logged = report.log_report(client, study_run.info.run_id, png=CHROMIUM is not None)
    stored = {a.path for a in client.list_artifacts(study_run.info.run_id, report.ARTIFACT_DIR)}
    assert f"{report.ARTIFACT_DIR}/{report.REPORT_FILE}" in stored
    assert set(logged) >= {f"{report.ARTIFACT_DIR}/{report.REPORT_FILE}"}
    charts = {a.path for a in client.list_artifacts(study_run.info.run_id,
                                                    f"{report.ARTIFACT_DIR}/{report.CHART_DIR}")}
    assert len(charts) == (len(SECTION_KEYS) if CHROMIUM else 0)


# ---------------------------------------------------------------- what the charts hold


@pytest.mark.slow
def test_record_matches_the_store_and_costs_match_resnet_core(report_study):
    from resnet_core.models import architecture_cost
    from search.tracking.store import find_study_run

    client = report_study.client()
    study = records.collect_study(client, find_study_run(client, STUDY_NAME))
    status = json.loads(report_study.cli("status", STUDY_NAME, "--tracking-uri",
                                         report_study.tracking_uri, "--json").stdout)
    assert len(study.trials) == 4 and study.best().value == pytest.approx(status["best"]["value"])
    expected = []
    for trial in study.trials:
        assert [e for e, _ in trial.history["val_accuracy"]] == [1, 2]
        model = {k[6:]: v for k, v in trial.params.items() if k.startswith("model.") and k[6:]
                 in ("family", "depth", "width", "block", "shortcut", "bn_position", "dropout")}
        model = {k: (float(v) if k == "dropout" else int(v) if v.isdigit() else
                     None if v == "None" else v) for k, v in model.items()}
        expected.append(architecture_cost({**model, "in_channels": 1}, (8, 8)))  # digits: 1x8x8
    # Without a cost on the trial runs the report computes it from the model params ...
    bare = [replace(t, parameters=None, flops=None) for t in study.trials]
    records._fill_costs(replace(study, trials=bare))
    assert [(t.parameters, t.flops) for t in bare] == expected
    # ... and the cost the trial runs carry is the same network's.
    assert [(t.parameters, t.flops) for t in study.trials] == expected
    # Optuna's importance sees every searched dimension that varied, one trial per trial run.
    in_memory = report_charts.optuna_study(study)
    assert len(in_memory.trials) == 4
    assert "lr" in in_memory.trials[0].distributions


@pytest.mark.slow
def test_grouped_comparison_answers_the_seed_questions(report_study):
    from search.tracking.store import find_study_run

    client = report_study.client()
    study = records.collect_study(client, find_study_run(client, STUDY_NAME))
    rows = report_charts.group_rows(study)
    families = {t.params["model.family"] for t in study.trials}
    assert {r["value"] for r in rows if r["factor"] == "family"} == families
    for row in rows:
        if row["factor"] == "optimizer":
            scores = [t.value for t in study.trials if t.params["train.optimizer"] == row["value"]]
            assert row["n"] == len(scores) and row["best"] == max(scores)
            assert row["mean"] == pytest.approx(sum(scores) / len(scores))


def _trial(number: int, status: str, value: float | None, losses: list[float], **params: str
           ) -> TrialRecord:
    return TrialRecord(
        number=number, run_id=f"r{number}", status=status, value=value,
        rank=None if value is None else number, best_epoch=len(losses), start_ms=0,
        end_ms=60_000 * (number + 1),
        params={"model.family": "resnet", "model.depth": "8", "model.block": "basic",
                "model.bn_position": "before_add", "model.dropout": "0.0",
                "train.optimizer": "sgd", "train.lr": "0.1", **params},
        history={"val_accuracy": [(e + 1, 0.5) for e in range(len(losses))],
                 "train_loss": [(e + 1, v) for e, v in enumerate(losses)]},
    )


def test_pruned_and_diverged_curves_are_marked():
    study = StudyRecord(name="s", run_id="r", status="completed", metric="val_accuracy", mode="max",
                        dataset="digits", start_ms=0, searched={}, trials=[
                            _trial(0, tags.COMPLETED, 0.9, [1.0, 0.5, 0.3]),
                            _trial(1, tags.PRUNED, 0.6, [1.2]),
                            _trial(2, tags.DIVERGED, None, [2.0, 9.0])])
    traces = report_charts.curves_figure(study).data
    by_status = {t.name: t for t in traces if t.xaxis == "x2"}
    assert by_status[tags.PRUNED].line.dash == "dot"
    assert by_status[tags.COMPLETED].line.dash == "solid"
    assert list(by_status[tags.DIVERGED].marker.symbol)[-1] == "x"
    assert list(by_status[tags.COMPLETED].marker.symbol)[-1] == "circle"
    # Costs come from resnet_core when the trial runs do not carry them.
    records._fill_costs(study)
    assert all(t.parameters and t.flops for t in study.trials)


def test_a_conditional_key_is_charted_only_for_the_trials_that_sampled_it():
    """Adam trials never sample momentum: their params hold its default (0.9), which is no
    choice of the search and must not pose as one in importance, parallel coordinates, slices."""
    sgd = [_trial(n, tags.COMPLETED, value, [1.0], **{"train.momentum": m, "train.lr": lr})
           for n, value, m, lr in ((0, 0.90, "0.85", "0.1"), (1, 0.80, "0.95", "0.05"))]
    adam = [_trial(n, tags.COMPLETED, value, [1.0], **{"train.optimizer": "adam",
                                                       "train.momentum": "0.9", "train.lr": lr})
            for n, value, lr in ((2, 0.95, "0.003"), (3, 0.70, "0.001"))]
    study = StudyRecord(name="s", run_id="r", status="completed", metric="val_accuracy", mode="max",
                        dataset="digits", start_ms=0, trials=sgd + adam, searched={
                            "optimizer": "['sgd', 'adam']", "lr": "[0.001, 0.3] log",
                            "momentum": "[0.8, 0.99]"})
    figures, notes = report_charts.optuna_figures(study)
    (bars,) = figures["importance"].data
    assert set(bars.y) == {"lr", "optimizer"}
    assert any(note.startswith("importance leaves out momentum") for note in notes), notes
    # Parallel coordinates: one line per trial; an adam trial's momentum is Optuna's missing mark.
    lines = [dict(map(tuple, t.customdata)) for t in figures["parallel"].data if t.customdata]
    lines = {line["optimizer"] + line["lr"]: line["momentum"] for line in lines}
    assert lines == {"sgd0.1": "0.85", "sgd0.05": "0.95", "adam0.003": "None", "adam0.001": "None"}
    # Slices: the momentum panel holds the sgd trials' points only.
    momentum = next(t for t in figures["slices"].data if set(t.x) & {0.85, 0.95})
    assert sorted(momentum.x) == [0.85, 0.95]


def test_pareto_front_keeps_only_unbeaten_trials():
    points = [(1.0, 0.80), (2.0, 0.90), (3.0, 0.85), (4.0, 0.95), (0.5, 0.70), (2.0, 0.88)]
    assert report_charts.pareto_front(points, "max") == [(0.5, 0.70), (1.0, 0.80), (2.0, 0.90), (4.0, 0.95)]
    assert report_charts.pareto_front([(1.0, 0.3), (2.0, 0.2), (3.0, 0.4)], "min") == [(1.0, 0.3),
                                                                               (2.0, 0.2)]


@pytest.mark.slow
def test_report_without_out_writes_under_reports_and_open_shows_the_page(report_study, tmp_path):
    # $BROWSER is the browser Python's webbrowser (what --open uses) runs: here, one that
    # writes down the address it was given.
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {opened}\n')
    browser.chmod(0o755)
    result = cli("report", STUDY_NAME, "--tracking-uri", report_study.tracking_uri, "--open",
                 cwd=tmp_path, env={**report_study.env, "BROWSER": str(browser)})
    assert result.returncode == 0, result.stderr[-3000:]
    page = tmp_path / "reports" / STUDY_NAME / report.REPORT_FILE
    assert page.is_file() and str(page.relative_to(tmp_path)) in result.stdout
    assert opened.read_text().split() == [page.as_uri()]


def test_report_of_an_unknown_study_is_one_line_and_exit_2(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result = Studies(home).cli("report", "nothing-here", "--tracking-uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}", timeout=120)
    assert result.returncode == 2
    # (MLflow may log that it created the empty store's tables; the error itself is one line.)
    errors = [line for line in result.stderr.splitlines() if line.startswith("resnet-search:")]
    assert len(errors) == 1 and "no study named 'nothing-here'" in errors[0]


# ---------------------------------------------------------------- in a real browser

# Injected before anything else on the page: records every script error, then, once the
# page has loaded, counts what each chart drew into a data attribute that --dump-dom shows.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message)));
window.addEventListener("unhandledrejection", e => window.__errors.push(String(e.reason)));
window.addEventListener("load", () => setTimeout(() => {
  const charts = {};
  document.querySelectorAll(".plotly-graph-div").forEach(div => {
    charts[div.id] = {svg: div.querySelectorAll(".main-svg").length,
                      marks: div.querySelectorAll(".main-svg path, .main-svg text").length,
                      canvas: div.querySelectorAll("canvas").length};
  });
  document.body.setAttribute("data-probe", JSON.stringify({errors: window.__errors, charts}));
}, 2000));
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)")
def test_headless_chromium_draws_every_chart_without_a_script_error(report_dir, tmp_path):
    page = (report_dir / report.REPORT_FILE).read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
         "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no host resolves
         "--virtual-time-budget=20000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=180).stdout
    match = re.search(r'data-probe="([^"]*)"', dom)
    assert match, "the page never finished loading: " + dom[-500:]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == []
    assert sorted(probe["charts"]) == sorted(f"chart-{k}" for k in SECTION_KEYS)
    for chart, drawn in probe["charts"].items():
        assert drawn["svg"] >= 1 and drawn["marks"] > 20, (chart, drawn)


def test_a_big_study_draws_the_best_curves_and_a_seeded_sample_and_the_page_says_so(tmp_path):
    """300 trials: the curves are the best 50 and 150 of the others, the same ones on every
    report of the study; the page names what was sampled. Every trial stays in the other charts."""
    trials = [_trial(n, tags.PRUNED if n % 10 else tags.COMPLETED, 0.5 + n / 1000, [1.0])
              for n in range(300)]
    for rank, trial in enumerate(sorted(trials, key=lambda t: -t.value)):
        trial.rank = rank
    study = StudyRecord(name="s", run_id="r", status="completed", metric="val_accuracy", mode="max",
                        dataset="digits", start_ms=0, searched={}, trials=trials)
    chosen, note = records.curve_trials(study)
    assert [t.number for t in chosen[:50]] == list(range(299, 249, -1))  # the best 50, in full
    assert len(chosen) == 200 and len({t.number for t in chosen}) == 200
    assert [t.number for t in records.curve_trials(study)[0]] == [t.number for t in chosen]
    assert note.startswith("Learning curves of the best 50 trials and of 150 of the other 250 (")
    study.curves_note = note
    page = report.write_report(study, tmp_path, png=False)[0].read_text()
    assert html.escape(note) in page
    assert records.curve_trials(replace(study, trials=trials[:200]))[1] is None  # all drawn


# ---------------------------------------------------------------- a big study's page

BIG = 2_500  # over sampling.MARKERS_MAX scored trials; 500 completed: over Optuna's 300


def _big_study() -> StudyRecord:
    """2,500 trials, every 5th run to the end, each with its own lr and score; the best is #1235."""
    trials = []
    for n in range(BIG):
        value = 0.99 if n == 1235 else 0.5 + ((n * 7919) % BIG) / 10_000
        trial = _trial(n, tags.COMPLETED if n % 5 == 0 else tags.PRUNED, value,
                       [1.0, 0.8] if n % 5 == 0 else [1.0], **{"train.lr": f"{0.001 + n * 1e-5:.5f}"})
        trial.parameters, trial.flops = 700_000 + n, 100_000_000 + 1000 * n
        trials.append(trial)
    for rank, trial in enumerate(sorted(trials, key=lambda t: -t.value)):
        trial.rank = rank
    return StudyRecord(name="big", run_id="r", status="completed", metric="val_accuracy",
                       mode="max", dataset="digits", start_ms=0, trials=trials,
                       searched={"lr": "[0.001, 0.1] log"})


def _section_text(page: str, key: str) -> str:
    start = page.index(f'<section id="{key}">')
    return page[start:page.index("</section>", start)]


def test_a_big_study_charts_the_best_trials_and_the_page_says_what_was_sampled(tmp_path):
    from search.results import sampling

    study = _big_study()
    ranked = study.ranked()
    charts = report.build_figures(study)
    # History and cost: a dot for the best trials and every completed one, 2,000 in all; the
    # best-so-far line still reaches the best score.
    for key in ("history", "cost"):
        dots = [t for t in charts.figures[key].data if t.mode == "markers" and t.xaxis == "x"]
        assert sum(len(t.x) for t in dots) == sampling.MARKERS_MAX, key
    assert any(text.startswith("trial 1235:") for t in charts.figures["cost"].data
               if t.mode == "markers" for text in t.text)
    history_dots = [t for t in charts.figures["history"].data if t.mode == "markers"
                    and t.xaxis == "x"]
    numbers = {int(x) for t in history_dots for x in t.x}
    assert {t.number for t in ranked[:sampling.MARKERS_BEST]} <= numbers
    assert {t.number for t in study.trials if t.status == tags.COMPLETED} <= numbers
    (line,) = [t for t in charts.figures["history"].data if t.name == "best so far" and t.xaxis == "x"]
    assert max(line.y) == 0.99 and len(line.x) < 100  # the steps only, not 2,500 points
    # Optuna's charts: 300 of the 500 completed trials, the best 100 among them.
    lrs = sorted(x for t in charts.figures["slices"].data if t.x is not None for x in t.x)
    assert len(lrs) == sampling.OPTUNA_BEST + sampling.OPTUNA_SAMPLED
    best_completed = [t for t in ranked if t.status == tags.COMPLETED][:sampling.OPTUNA_BEST]
    assert {float(t.setting("lr")) for t in best_completed} <= set(lrs)
    # The page says, under each chart, what it shows.
    page = report.write_report(study, tmp_path, png=False)[0].read_text()
    dots_note = html.escape(charts.sampled["history"])
    assert dots_note.startswith("Dots for 2,000 of the 2,500 scored trials (500 of 500 completed, "
                                "1,500 of 2,000 pruned)")
    for key in ("history", "cost"):
        assert dots_note in _section_text(page, key), key
    for key in ("importance", "parallel", "slices"):
        assert ("Over 300 of the 500 trials that ran to the end: the best 100 and 200 of the other "
                "400, drawn at random with seed 0.") in _section_text(page, key), key
    # A PNG alone (MLflow's preview) says it is a sample; an unsampled one does not.
    titles = {key: fig.layout.title for key, fig in
              zip(charts.figures, report.png_figures(charts.figures, charts.sampled), strict=True)}
    assert {key for key, t in titles.items() if t.subtitle.text == report.SAMPLED_PNG} == {
        "history", "cost", "importance", "parallel", "slices"}
    assert titles["groups"].text == "Grouped comparison" and not titles["groups"].subtitle.text
    # ... and the same trials on every report of the study.
    assert report.build_figures(study).sampled == charts.sampled
    # A study under the bounds: every trial, no note.
    small = replace(study, trials=study.trials[:300])
    assert not report.build_figures(small).sampled


def test_curves_are_one_trace_per_outcome_with_a_gap_between_trials():
    trials = [_trial(n, tags.PRUNED if n % 3 else tags.COMPLETED, 0.5 + n / 100,
                     [1.0, 0.9, 0.8] if n % 3 == 0 else [1.2]) for n in range(30)]
    study = StudyRecord(name="s", run_id="r", status="completed", metric="val_accuracy", mode="max",
                        dataset="digits", start_ms=0, searched={}, trials=trials)
    traces = report_charts.curves_figure(study).data
    assert sorted((t.name, t.xaxis) for t in traces) == sorted(
        (s, axis) for s in (tags.COMPLETED, tags.PRUNED) for axis in ("x", "x2"))
    completed = next(t for t in traces if t.name == tags.COMPLETED and t.xaxis == "x2")
    # 10 trials of 3 epochs: 30 points and 9 gaps, so no line joins two trials.
    assert len(completed.x) == 39 and sum(1 for x in completed.x if x != x) == 9
    assert {text for text in completed.text if text} == {
        f"trial {n}: {trials[n].label}" for n in range(0, 30, 3)}


def test_the_report_reads_each_curve_as_mlflow_holds_it(tmp_path):
    """A real SQLite store of 260 trials (2 still running): the curves the report draws (read in
    one query per metric) are each trial's metric history as MLflow's client returns it."""
    from scale_store import write_scale_study

    from search.tracking.store import client_for, find_study_run

    uri, _ = write_scale_study(tmp_path, trials=260, epochs=3, best=250, running=2)
    client = client_for(uri)
    study = records.collect_study(client, find_study_run(client, "scale"))
    drawn = [t for t in study.trials if t.history]
    assert len(drawn) == records.CURVES_BEST + records.CURVES_SAMPLED
    assert any(len(t.history["val_accuracy"]) == 3 for t in drawn)
    for trial in drawn:
        for key in records.HISTORY_KEYS:
            held = client.get_metric_history(trial.run_id, key)
            assert trial.history[key] == sorted({m.step: m.value for m in held}.items()), key
    running = [t for t in drawn if t.status == tags.RUNNING]
    assert all(t.end_ms for t in running)
    page = report.write_report(study, tmp_path / "report", png=False)[0].read_text()
    assert html.escape(study.curves_note) in _section_text(page, "curves")
