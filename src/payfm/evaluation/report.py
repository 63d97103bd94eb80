"""The evaluation report: one self-contained HTML page (inline SVG figures) and a JSON file with the same
numbers, written as one set: an interrupted write leaves the old report or the new one.

Example:
    >>> import tempfile
    >>> from payfm.evaluation.evaluate import evaluate_predictions
    >>> from payfm.evaluation.synthetic import synthetic_predictions
    >>> r = evaluate_predictions(synthetic_predictions(2000, seed=1), name="m", bootstrap=10)
    >>> paths = write_report([r], tempfile.mkdtemp())
    >>> paths.html.name, paths.json.name
    ('report.html', 'report.json')
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payfm import __version__, interrupts
from payfm.errors import ConfigError
from payfm.evaluation.checks import EvaluationError
from payfm.evaluation.drift import DriftReport
from payfm.evaluation.evaluate import EvaluationResult, compare, resamples_text
from payfm.evaluation.slices import NONE_GROUP, SliceRow
from payfm.evaluation.template import PAGE
from payfm.events.workspace import fsync_dir, json_ready, synced_temp


@dataclass(frozen=True)
class EvaluationReport:
    """Where a report was written, and the feature drift it holds."""

    html: Path
    json: Path
    drift: tuple[DriftReport, ...] = ()


def report_json(
    results: Sequence[EvaluationResult], population: str = "all", drift: Sequence[DriftReport] = ()
) -> dict[str, Any]:
    """The report's numbers: the population (``all`` charges or the ``authorized`` ones), the warnings of
    every result (:func:`report_warnings`), the comparison, every result in full and the feature drift from
    the models' training windows (every feature)."""
    return {
        "payfm_version": __version__,
        "population": population,
        "warnings": report_warnings(results),
        "comparison": json_ready(compare(results)),
        "results": [json_ready(r) for r in results],
        "drift": [d.to_json() for d in drift],
    }


def report_warnings(results: Sequence[EvaluationResult]) -> list[str]:
    """The results' warnings (``EvaluationResult.warnings``: figures in-sample for a model), each once, in
    the order of the results."""
    return list(dict.fromkeys(w for r in results for w in r.warnings))


def _warnings(results: Sequence[EvaluationResult]) -> str:
    """The page's warnings, under its description (nothing when there are none)."""
    said = "".join(f"<li>{html.escape(w[:1].upper() + w[1:])}.</li>" for w in report_warnings(results))
    return f'<ul class="warning">{said}</ul>' if said else ""


def _minute(iso: str | None) -> str:
    return "-" if iso is None else iso[:16].replace("T", " ")


def evaluated_span(r: EvaluationResult) -> str:
    """What the metrics cover, as the report's description and ``payfm evaluate``'s table say it: the span
    of the charges with a mature label (shorter than the window when the last labels are immature) and the
    UTC days card precision@k averages over (whole days only, before the first immature label)."""
    days = f"{r.card_precision_first_day or '-'} .. {r.card_precision_last_day or '-'}"
    return (
        f"Metrics on the charges of {_minute(r.evaluated_start)} .. {_minute(r.evaluated_end)} (UTC); "
        f"card precision@{r.card_precision.k} on the UTC days {days}"
    )


def _f(x: float, fmt: str = ".3f") -> str:
    return "-" if not math.isfinite(x) else format(x, fmt)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], best: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr{' class=best' if i == best else ''}>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _comparison(results: Sequence[EvaluationResult]) -> str:
    rows = [
        [
            c.name,
            f"{_f(c.average_precision)} [{_f(c.ap_low)}, {_f(c.ap_high)}]",
            _f(c.roc_auc),
            _f(c.recall_at_1pct_fpr),
            c.at_1pct_block(_f),
            _f(c.card_precision_at_k),
            _f(c.ece, ".4f"),
            f"{c.evaluated:,}",
            f"{c.immature:,}",
        ]
        for c in compare(results)
    ]
    k, best = results[0].card_precision.k, results[0].card_precision.best  # (one window: one best)
    header = ["model", "AP [95% CI]", "ROC AUC", "recall@1% FPR", "precision@1% block",
              f"card prec@{k} (best {_f(best)})", "ECE", "charges", "immature"]  # fmt: skip
    return _table(header, rows, best=0)


def _presets(results: Sequence[EvaluationResult]) -> str:
    rows = [
        [
            r.name,
            tp.preset.name,
            _f(tp.point.threshold, ".4f"),
            _f(tp.point.block_rate, ".3%"),
            _f(tp.point.precision),
            _f(tp.point.recall),
            f"{tp.fraud_caught_usd:,.0f}",
            f"{tp.legit_blocked_usd:,.0f}",
        ]
        for r in results
        for tp in r.operating_points
    ]
    header = ["model", "preset", "threshold", "block rate", "precision", "recall", "fraud $ caught",
              "legit $ blocked"]  # fmt: skip
    notes = [f"{r.name}, {p.preset.name}: {p.note}." for r in results for p in r.operating_points if p.note]
    listed = "".join(f"<br>{html.escape(n)}" for n in notes)
    return _table(header, rows) + (f'<p class="note">Notes:{listed}</p>' if notes else "")


def _slice_rows(rows: Sequence[SliceRow]) -> list[list[str]]:
    return [
        [
            s.group,
            f"{s.charges:,}",
            f"{s.fraud:,}",
            f"{_f(s.recall)} [{_f(s.recall_low)}, {_f(s.recall_high)}]",
            _f(s.precision),
            _f(s.block_rate, ".2%"),
        ]
        for s in rows
    ]


_SLICE_HEADER = ["group", "charges", "fraud", "recall [95% CI]", "precision", "block rate"]


def _slices(results: Sequence[EvaluationResult], dims: Sequence[str]) -> str:
    parts = []
    for dim in dims:
        for r in results:
            t = r.slice_threshold
            # never a bare "threshold -": say why nothing, or more than the preset asks, is flagged
            why = f"; {t.note}" if t.note else ""
            where = f"{t.preset.name} (threshold {_f(t.point.threshold, '.4f')}{why})"
            title = f"{dim.replace('_', ' ')}: {r.name} at {where}"
            parts.append(f"<h3>{html.escape(title)}</h3>" + _table(_SLICE_HEADER, _slice_rows(r.slices[dim])))
    return "\n".join(parts)


def _scenarios(
    results: Sequence[EvaluationResult], figure: Callable[[Sequence[EvaluationResult]], str]
) -> str:
    """The scenario section's figure and tables, or why there are none: an event log that names no fraud
    scenario (an import; the synthetic world names them) has one group, "(none)", which means genuine."""
    if all(row.group == NONE_GROUP for row in results[0].slices["scenario"]):
        return (
            '<p class="note">The evaluated charges name no fraud scenario (the <code>scenario</code> column '
            "is empty, as in an import: the synthetic world fills it), so there is no breakdown by "
            "scenario.</p>"
        )
    return f"<figure>{figure(results)}</figure>\n" + _slices(results, ["scenario"])


DRIFT_SHOWN = 15  # features of each drift table on the page (report.json holds every one)


def _median(x: float | None) -> str:
    return "-" if x is None else _f(x, ".4g")


def _drift(reports: Sequence[DriftReport]) -> str:
    if not reports:
        return (
            '<p class="note">Not computed: no model of the report records a training window (or drift was '
            "turned off).</p>"
        )
    parts = []
    for d in reports:
        rows = [
            [
                f.feature,
                _f(f.psi),
                f.level,
                _f(f.beyond, ".1%"),
                f"{_f(f.reference_missing, '.1%')} -> {_f(f.current_missing, '.1%')}",
                f"{_median(f.reference_median)} -> {_median(f.current_median)}",
            ]
            for f in d.features[:DRIFT_SHOWN]
        ]
        header = ["feature", "PSI", "level", "beyond reference", "missing ref -> cur", "median ref -> cur"]
        title = f"{d.against or d.feature_set}: training window -> this window ({d.window_text()})"
        parts.append(
            f"<h3>{html.escape(title)}</h3><p>{html.escape(d.summary())}. {html.escape(d.rows_text())}.</p>"
            + _table(header, rows)
        )
    return "\n".join(parts)


def render_html(
    results: Sequence[EvaluationResult],
    title: str = "payfm evaluation report",
    positives: str = "fraud",
    drift: Sequence[DriftReport] = (),
) -> str:
    """The report page for ``results`` (the first result's window and population describe the page).
    ``positives``: the task the models predict; for another than ``fraud`` (``retry_success``) the page says
    that its "fraud" columns count that task's positive labels."""
    from payfm.evaluation import plots

    r0 = results[0]
    counted = f"{r0.fraud:,} fraudulent"
    money = f"${r0.fraud_usd:,.0f} of fraud vs ${r0.legit_usd:,.0f} legitimate"
    if positives != "fraud":  # another task: the page's "fraud" columns count its positive labels
        counted = f"{r0.fraud:,} positive for task '{positives}' (the tables' \"fraud\" counts them)"
        money = f"${r0.fraud_usd:,.0f} positive vs ${r0.legit_usd:,.0f} negative"
    meta = (
        f"Window {_minute(r0.window_start)} .. {_minute(r0.window_end)} (UTC). "
        f"{r0.charges:,} charges scored, "
        f"{r0.evaluated:,} with a mature label ({r0.immature:,} immature, excluded), {counted} "
        f"(base rate {r0.base_rate:.3%}; {money}). {evaluated_span(r0)}."
    )
    return PAGE.substitute(
        title=html.escape(title),
        meta=html.escape(meta),
        warnings=_warnings(results),
        comparison=_comparison(results),
        resamples=resamples_text(results),
        card_k=r0.card_precision.k,
        presets=_presets(results),
        fig_pr_roc=plots.pr_and_roc(results),
        fig_scores=plots.score_distributions(results),
        fig_reliability=plots.reliability(results),
        fig_dollars=plots.dollars(results),
        scenarios=_scenarios(results, plots.scenario_recall),
        breakdowns=_slices(results, ["channel", "merchant_size", "merchant_country"]),
        drift=_drift(drift),
        version=__version__,
    )


def write_report(
    results: Sequence[EvaluationResult],
    out_dir: str | os.PathLike[str],
    title: str = "payfm evaluation report",
    positives: str = "fraud",
    population: str = "all",
    drift: Sequence[DriftReport] = (),
) -> EvaluationReport:
    """Write ``report.html`` and ``report.json`` under ``out_dir`` (created if needed), as one set: both are
    rendered and written to temporary files first, then replace the old ones together, so an interrupted
    write (Ctrl-C, a full disk) leaves the old report or the new one, never a new JSON beside an old page.
    ``positives``: the task the models predict (:func:`render_html`); ``drift``: the feature drift from the
    models' training windows (:func:`payfm.evaluation.pipeline.training_drift`)."""
    if not results:
        raise EvaluationError("The report needs at least one evaluation result. Got none.")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"The report directory '{out}' cannot be created: {e.strerror or e}.") from None
    paths = EvaluationReport(out / "report.html", out / "report.json", tuple(drift))
    contents = {
        paths.json: json.dumps(report_json(results, population, drift), indent=1, allow_nan=False).encode(),
        paths.html: render_html(results, title, positives, drift).encode(),
    }
    replace_together(contents)
    return paths


def replace_together(contents: dict[Path, bytes]) -> None:
    """Replace the files ``contents`` maps to their new bytes (in one directory) as a set.

    Each is written to a temporary file beside it and flushed to disk first (the slow part: an interruption
    there leaves the old files untouched). Then each old file is kept as a hard link (a copy where links are
    not supported) and the temporaries are renamed over the targets, with Ctrl-C held off for those few
    renames; if one fails the targets already replaced get their old content back (or are removed when they
    did not exist), and the error is raised. The kept old files are removed once every target is new.
    """
    tag = uuid.uuid4().hex
    temps: dict[Path, Path] = {}
    kept: dict[Path, Path | None] = {}
    try:
        for path, data in contents.items():
            temps[path] = synced_temp(path, data)
        for path in contents:
            kept[path] = _keep(path, path.with_name(f".{path.name}.{tag}.old"))
        interrupts.check()
        with _interrupts_held():
            done: list[Path] = []
            try:
                for path, tmp in temps.items():
                    os.replace(tmp, path)
                    done.append(path)
            except BaseException:
                for path in done:  # put the old set back
                    old = kept[path]
                    if old is None:
                        path.unlink(missing_ok=True)
                    else:
                        os.replace(old, path)
                raise
    except OSError as e:
        where = next(iter(contents)).parent
        raise ConfigError(f"The report cannot be written to '{where}': {e.strerror or e}.") from None
    finally:
        for p in [*temps.values(), *(k for k in kept.values() if k is not None)]:
            p.unlink(missing_ok=True)
    fsync_dir(next(iter(contents)).parent)


def _keep(path: Path, old: Path) -> Path | None:
    """``old`` holding ``path``'s current content (None when ``path`` does not exist)."""
    if not path.exists():
        return None
    try:
        os.link(path, old)
    except OSError:  # a file system without hard links
        shutil.copy2(path, old)
    return old


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold off SIGINT (Ctrl-C) for the block, then deliver it: the renames of a set are not split by it.
    Signal handlers can only be set from the main thread; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt
