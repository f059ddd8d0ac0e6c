"""The charts of the study report (search.results.report): plotly figures and Optuna's views.

Each function takes the StudyRecord (search.tracking.records) that the report reads and
returns a plotly figure; colours mean the same outcome on every chart.
"""

from __future__ import annotations

import html
import itertools
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from search.results.sampling import comparable_trials
from search.studyfile.space_rules import CONDITIONS, sampled_when
from search.tracking import tags
from search.tracking.records import StudyRecord, TrialRecord, parse_param

# Colours by outcome, the same on every chart, so a pruned trial looks pruned everywhere.
STATUS_COLOURS = {tags.COMPLETED: "#1f77b4", tags.PRUNED: "#9e9e9e", tags.DIVERGED: "#d62728",
                  tags.FAILED: "#ff7f0e", tags.RUNNING: "#2ca02c", tags.INTERRUPTED: "#8c564b"}


def _block(trial: TrialRecord) -> str | None:
    network = trial.network_family
    return trial.setting("block") if network is not None and network.has_block_choice else None


def _bn_position(trial: TrialRecord) -> str | None:
    network = trial.network_family
    return trial.setting("bn_position") if network is not None and network.has_bn_position else None


# The seed's questions: each factor, and a trial's choice of it (None: no choice it has).
GROUPS: tuple[tuple[str, Callable[[TrialRecord], str | None]], ...] = (
    ("family", lambda t: t.family), ("block", _block), ("BN position", _bn_position),
    ("optimizer", lambda t: t.optimizer))

# ---------------------------------------------------------------- charts


def _minutes(study: StudyRecord, trial: TrialRecord) -> float | None:
    return None if trial.end_ms is None else (trial.end_ms - study.start_ms) / 60000


def _status_markers(fig: go.Figure, trials: list[TrialRecord], xs: list[float], ys: list[float],
                    col: int, shown: set[str], text: list[str] | None = None) -> None:
    """One marker trace per outcome, so the legend names each outcome once."""
    text = text or [t.label for t in trials]  # once: a study may have 10,000 trials
    # Pruned first: the finished and the best trials are drawn over them.
    for status in sorted({t.status for t in trials}, key=lambda s: (s != tags.PRUNED, s)):
        pick = [i for i, t in enumerate(trials) if t.status == status]
        fig.add_trace(go.Scatter(
            x=np.array([xs[i] for i in pick], dtype=float),
            y=np.array([ys[i] for i in pick], dtype=float), mode="markers", name=status,
            legendgroup=status, showlegend=status not in shown,
            marker={"color": STATUS_COLOURS.get(status, "#555"), "size": 9},
            text=np.array([text[i] for i in pick], dtype=object),
            hovertemplate="%{text}<br>x=%{x}<br>y=%{y:.4f}<extra>" + status + "</extra>",
        ), row=1, col=col)
        shown.add(status)


def history_figure(study: StudyRecord, dots: list[TrialRecord] | None = None) -> go.Figure:
    """Each trial's score (a dot per trial of `dots`: sampling.marker_trials; every scored
    one by default) and the best so far over every trial, by trial number and by wall time."""
    dotted = {id(t) for t in (study.scored() if dots is None else dots)}
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "by trial number", "by wall time (minutes since the study started)"))
    shown: set[str] = set()
    for col, key in ((1, lambda t: t.number), (2, lambda t: _minutes(study, t))):
        trials = sorted((t for t in study.scored() if key(t) is not None), key=key)
        xs, ys = [key(t) for t in trials], [t.value for t in trials]
        best = list(itertools.accumulate(ys, lambda so_far, y: study.better((so_far, y))))
        steps = _steps(best)
        fig.add_trace(go.Scatter(x=[xs[i] for i in steps], y=[best[i] for i in steps],
                                 mode="lines", line={"shape": "hv", "color": "black"},
                                 name="best so far", legendgroup="best", showlegend=col == 1),
                      row=1, col=col)
        pick = [i for i, t in enumerate(trials) if id(t) in dotted]
        _status_markers(fig, [trials[i] for i in pick], [xs[i] for i in pick],
                        [ys[i] for i in pick], col, shown)
    fig.update_xaxes(title_text="trial number", row=1, col=1)
    fig.update_xaxes(title_text="minutes", row=1, col=2)
    fig.update_yaxes(title_text=study.value_name)
    return fig


def _steps(best: list[float]) -> list[int]:
    """The places a best-so-far line changes, and its end: a step line ("hv") through them
    draws the same line as through every point, from a few points instead of 10,000."""
    return [i for i, y in enumerate(best) if i == 0 or i == len(best) - 1 or y != best[i - 1]]


def curves_figure(study: StudyRecord) -> go.Figure:
    """Per-epoch validation metric and training loss of the trials whose histories were read,
    coloured by outcome: one trace per outcome and panel, its trials' curves joined by gaps.

    A trace per trial made plotly build (and the browser lay out) hundreds of traces for a
    big study; a gap (None) between trials draws the same lines from a few traces.
    """
    val_key = "val_loss" if study.metric.endswith("loss") else "val_accuracy"
    fig = make_subplots(rows=1, cols=2, subplot_titles=(val_key, "train_loss"))
    by_status: dict[str, list[TrialRecord]] = {}
    for trial in study.trials:
        by_status.setdefault(trial.status, []).append(trial)
    # Pruned curves underneath: the completed and the best ones are drawn over them.
    shown: set[str] = set()
    for status in sorted(by_status, key=lambda s: (s != tags.PRUNED, s)):
        for col, key in ((1, val_key), (2, "train_loss")):
            curve = _joined_curves(by_status[status], key)
            if curve is None:
                continue
            fig.add_trace(go.Scatter(
                **curve, mode="lines+markers", name=status, legendgroup=status,
                showlegend=status not in shown,
                line={"color": STATUS_COLOURS.get(status, "#555"),
                      "dash": "dot" if status == tags.PRUNED else "solid"},
                hovertemplate="%{text}<br>epoch %{x}<br>%{y:.4f}<extra></extra>",
            ), row=1, col=col)
            shown.add(status)
    fig.update_xaxes(title_text="epoch")
    return fig


def _joined_curves(trials: list[TrialRecord], key: str) -> dict[str, list[Any]] | None:
    """x, y, text and per-point markers of the trials' curves, a None gap between two trials;
    None where no trial has this metric. A curve's last point is larger, and a cross where a
    diverged trial blew up."""
    xs: list[Any] = []
    ys: list[Any] = []
    text: list[str] = []
    symbols: list[str] = []
    sizes: list[int] = []
    for trial in trials:
        points = trial.history.get(key, [])
        if not points:
            continue
        if xs:  # a gap, so the line does not join one trial's last epoch to the next's first
            for column, gap in ((xs, None), (ys, None), (text, ""), (symbols, "circle"), (sizes, 0)):
                column.append(gap)
        label = f"trial {trial.number}: {html.escape(trial.label)}"
        xs += [p[0] for p in points]
        ys += [p[1] for p in points]
        text += [label] * len(points)
        symbols += ["circle"] * (len(points) - 1) + ["x" if trial.status == tags.DIVERGED else "circle"]
        sizes += [5] * (len(points) - 1) + [10]
    if not xs:
        return None
    # numpy arrays: plotly validates a list element by element (seconds for a big study's
    # curves), an array at once; NaN is written as null, a gap in the line.
    return {"x": np.array(xs, dtype=float), "y": np.array(ys, dtype=float),
            "text": np.array(text, dtype=object),
            "marker": {"symbol": np.array(symbols, dtype=object), "size": np.array(sizes)}}


def pareto_front(points: list[tuple[float, float]], mode: str) -> list[tuple[float, float]]:
    """The (cost, score) points no other point beats on both: cheaper and at least as good."""
    sign = 1 if mode == "max" else -1
    front: list[tuple[float, float]] = []
    for cost, score in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if not front or sign * score > sign * front[-1][1]:
            front.append((cost, score))
    return front


def cost_figure(study: StudyRecord, dots: list[TrialRecord] | None = None) -> go.Figure:
    """Score against multiply-adds and against parameters (a dot per trial of `dots`, every
    scored one by default), with the Pareto front over every scored trial."""
    dotted = {id(t) for t in (study.scored() if dots is None else dots)}
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "score vs multiply-adds per image (millions)", "score vs parameters (millions)"))
    shown: set[str] = set()
    for col, attribute in ((1, "flops"), (2, "parameters")):
        trials = [t for t in study.scored() if getattr(t, attribute) is not None]
        xs = [getattr(t, attribute) / 1e6 for t in trials]
        ys = [t.value for t in trials]
        pick = [i for i, t in enumerate(trials) if id(t) in dotted]
        _status_markers(fig, [trials[i] for i in pick], [xs[i] for i in pick],
                        [ys[i] for i in pick], col, shown,
                        text=[f"trial {trials[i].number}: {trials[i].label}" for i in pick])
        front = pareto_front(list(zip(xs, ys, strict=True)), study.mode)
        fig.add_trace(go.Scatter(x=[p[0] for p in front], y=[p[1] for p in front],
                                 mode="lines", line={"shape": "hv", "color": "black", "dash": "dash"},
                                 name="Pareto front", legendgroup="front", showlegend=col == 1),
                      row=1, col=col)
    fig.update_xaxes(type="log")
    fig.update_yaxes(title_text=study.value_name)
    return fig


def group_rows(study: StudyRecord) -> list[dict[str, Any]]:
    """Mean, spread and best score per value of each seed question's factor."""
    trials = comparable_trials(study)
    rows = []
    for factor, choice in GROUPS:
        values: dict[str, list[float]] = {}
        for t in trials:
            if choice(t) is not None:
                values.setdefault(choice(t), []).append(t.value)
        for value, scores in sorted(values.items()):
            rows.append({"factor": factor, "value": value, "n": len(scores),
                         "mean": statistics.fmean(scores),
                         "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                         "best": study.better(scores)})
    return rows


def groups_figure(study: StudyRecord, rows: list[dict[str, Any]]) -> go.Figure:
    """The seed's questions as bars: mean +- std per choice, and the best trial as a diamond."""
    factors = list(dict.fromkeys(r["factor"] for r in rows))
    fig = make_subplots(rows=1, cols=max(1, len(factors)), subplot_titles=factors, shared_yaxes=True)
    for col, factor in enumerate(factors, start=1):
        picked = [r for r in rows if r["factor"] == factor]
        labels = [f"{r['value']} (n={r['n']})" for r in picked]
        fig.add_trace(go.Bar(x=labels, y=[r["mean"] for r in picked], name="mean ± std",
                             legendgroup="mean", showlegend=col == 1, marker={"color": "#9ecae1"},
                             error_y={"type": "data", "array": [r["std"] for r in picked]}),
                      row=1, col=col)
        fig.add_trace(go.Scatter(x=labels, y=[r["best"] for r in picked], mode="markers",
                                 name="best", legendgroup="best", showlegend=col == 1,
                                 marker={"symbol": "diamond", "size": 11, "color": "#08306b"}),
                      row=1, col=col)
    fig.update_yaxes(title_text=study.value_name, row=1, col=1)
    return fig


# ---------------------------------------------------------------- Optuna's views


def optuna_study(study: StudyRecord, trials: list[TrialRecord] | None = None) -> Any:
    """An in-memory Optuna study of the scored trials (or of `trials`), for Optuna's importance
    and plots."""
    import optuna  # ~1 s: only a report with two or more scored trials asks Optuna

    trials = comparable_trials(study) if trials is None else trials
    distributions = _distributions(study, trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = optuna.create_study(study_name=study.name,
                                 direction="maximize" if study.mode == "max" else "minimize")
    for t in trials:
        params = {name: _optuna_value(t.setting(name), d) for name, d in distributions.items()
                  if sampled(name, t)}
        result.add_trial(optuna.trial.create_trial(
            params=params, distributions={n: d for n, d in distributions.items() if n in params},
            value=t.value, user_attrs={"model": t.label, "trial": t.number}))
    return result


def _distributions(study: StudyRecord, trials: list[TrialRecord]) -> dict[str, Any]:
    """Searched keys that vary among the trials, with the distribution their values span."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    # Every [space] key, a per-optimizer one ("sgd: [0.01, 0.3] log; adam: ...") included; a
    # fixed value is left out below, as its trials do not vary.
    for key, described in sorted(study.searched.items()):
        every = all(t.setting(key) is not None for t in trials)
        values = [parse_param(t.setting(key)) for t in trials if sampled(key, t)] if every else []
        if len(set(map(str, values))) < 2:
            continue
        log = " log" in described
        if all(isinstance(v, int) for v in values):
            out[key] = IntDistribution(min(values), max(values), log=log and min(values) > 0)
        elif all(isinstance(v, (int, float)) for v in values):
            low, high = float(min(values)), float(max(values))
            out[key] = FloatDistribution(low, high, log=log and low > 0)
        else:
            out[key] = CategoricalDistribution(sorted({str(v) for v in values}))
    return out


def sampled(key: str, trial: TrialRecord) -> bool:
    """Whether a trial sampled this [space] key. A conditional one (search.studyfile.space_rules.CONDITIONS:
    momentum only for the optimizers that use it, width only for wrn, ...) holds its default
    in the other trials' params, which is no choice of the search: charting it would show
    adam trials at momentum 0.9 and give momentum an importance it never had."""

    if key not in CONDITIONS:
        return True
    deciding = CONDITIONS[key][0]
    value = trial.setting(deciding)
    return value is None or sampled_when(key, {deciding: value})


def _optuna_value(text: str, distribution: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return str(parse_param(text))
    return int(parse_param(text)) if isinstance(distribution, IntDistribution) else float(parse_param(text))


def optuna_figures(study: StudyRecord, trials: list[TrialRecord] | None = None
                   ) -> tuple[dict[str, go.Figure], list[str]]:
    """Importance (fANOVA), parallel coordinates and slices over the comparable trials (or
    `trials`: optuna_trials); a note for each that cannot be drawn."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    figures: dict[str, go.Figure] = {}
    notes: list[str] = []
    in_memory = optuna_study(study, trials)
    if len(in_memory.trials) < 2 or not any(t.params for t in in_memory.trials):
        return figures, ["importance, parallel coordinates and slices need at least two scored "
                         "trials that differ in a searched hyperparameter"]
    target = study.value_name  # Optuna would say "Objective Value"
    makers = {
        "importance": lambda: optuna.visualization.plot_param_importances(
            in_memory, evaluator=FanovaImportanceEvaluator(seed=0), target_name=target),
        "parallel": lambda: optuna.visualization.plot_parallel_coordinate(in_memory,
                                                                          target_name=target),
        "slices": lambda: optuna.visualization.plot_slice(in_memory, target_name=target),
    }
    for key, make in makers.items():
        try:
            figures[key] = make()
        except (ValueError, RuntimeError) as error:  # e.g. too few trials for fANOVA's forest
            notes.append(f"{key} chart not drawn ({error})")
    # Optuna's importance compares trials on what all of them sampled (its intersection space).
    partial = sorted(_partial_keys(in_memory))
    if partial and "importance" in figures:
        notes.append(f"importance leaves out {', '.join(partial)}: sampled by some trials only "
                     f"(parallel coordinates and slices show them for those trials)")
    return figures, notes


def _partial_keys(in_memory: Any) -> set[str]:
    """Parameters that some trials of the study have and others do not."""
    every = [set(t.params) for t in in_memory.trials]
    return set().union(*every) - set.intersection(*every) if every else set()
