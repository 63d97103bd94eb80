"""`payfm demo`: the main job end to end on the embedded default."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click
import pyarrow.parquet as pq
from rich.text import Text

from payfm.cli.events import world_config, write_world
from payfm.cli.render import (
    console,
    plain_path,
    print_feature_sample,
    print_summary,
    progress_bar,
    stage_progress,
)
from payfm.errors import ConfigError
from payfm.events.cards import shown_text
from payfm.events.summary import summarize
from payfm.events.workspace import Workspace, atomic_write_bytes
from payfm.features.catalog import default_set
from payfm.features.definitions import FeatureSet
from payfm.features.offline import backfill

if TYPE_CHECKING:
    from payfm.training.trainer import TrainResult


def _title(text: str) -> Text:
    """A section's title for ``console.rule``: bold text, never markup."""
    return Text(text, style="bold")


# A workspace whose event log payfm demo wrote (replaced again by the next demo without --replace): the
# manifest version its write committed. Any later write of the log (an import, a generate, an append of the
# decision service, a compaction) commits a later version, so the log is no longer the demo's alone.
DEMO_MARKER = "demo.json"
# The demo's training: a 60-day label horizon (the world is 120 days), so a world needs more days than the
# horizon, the 14-day validation and test periods and their two 7-day gaps (training.splits).
DEMO_HORIZON_DAYS = 60
DEMO_SPLIT_DAYS = DEMO_HORIZON_DAYS + 14 + 14 + 2 * 7


@click.command()
@click.option("--charges", default=1_000_000, show_default=True, help="Approximate number of charges.")
@click.option(
    "--days",
    default=120,
    show_default=True,
    help=f"Days of history: more than {DEMO_SPLIT_DAYS} for the models (a {DEMO_HORIZON_DAYS}-day label "
    "horizon, validation and test periods and their gaps), or 1 to 3660 with --skip-models.",
)
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@click.option("--skip-models", is_flag=True, help="Stop after the features (no training or evaluation).")
@click.option(
    "--replace",
    is_flag=True,
    help="Replace the event log of a workspace that holds events not written by payfm demo.",
)
@click.pass_context
def demo(ctx: click.Context, charges: int, days: int, seed: int, skip_models: bool, replace: bool) -> None:
    """Run the main job end to end: generate the default world (replacing the workspace's event log: a
    workspace another command filled needs --replace), summarize it, backfill the default feature set, train
    LR / RF / GBDT, evaluate them, promote the best, apply starter rules and replay the last day through the
    decision service (latency and decision mix)."""
    # the option values first (nothing created or read yet), then the workspace
    config = world_config(charges, days, seed, datetime(2026, 1, 1, tzinfo=UTC), 0.003, None)
    if not skip_models and days <= DEMO_SPLIT_DAYS:  # refused before anything is generated
        raise ConfigError(
            f"--days must be more than {DEMO_SPLIT_DAYS} for the demo's models: they train with a "
            f"{DEMO_HORIZON_DAYS}-day label horizon, validation and test periods of 14 days and gaps of 7 "
            f"days. Got {days}. Use --days 120 (the default), or --skip-models to stop after the features."
        )
    ws = Workspace.open(ctx.obj["workspace"], create=True)
    marker = ws.root / DEMO_MARKER
    held = ws.count("charges")
    if held and not replace and not demo_wrote_log(ws):
        shown = shown_text(str(ws.root), 4096, times=True)
        why = (
            "that a demo of an earlier payfm wrote, whose marker records no version (it cannot tell them "
            "from a later import's)"
            if marker.exists() and _recorded_version(ws) is None
            else "that payfm demo did not write (or that another command changed since: an import, a "
            "generate, a compaction)"
        )
        raise ConfigError(
            f"Workspace '{shown}' already holds {held:,} charges {why}; the demo replaces the event log. "
            "Pass --replace (make demo DEMO_ARGS=--replace) to replace them, or choose another --workspace."
        )
    console.rule(_title("1. Synthetic payments world"))
    t0 = time.perf_counter()
    rows = write_world(ws, config)
    # the version the demo's write committed: a later write of the log (by anything) moves the manifest on
    record = {"written_by": "payfm demo", "seed": seed, "log_version": ws.written_version}
    atomic_write_bytes(marker, json.dumps(record).encode())  # (a refused write: payfm.cli.main says which)
    console.print(
        f"{rows.get('charges', 0):,} charges written to {plain_path(ws.root)} in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    console.rule(_title("2. Event log summary"))
    print_summary(summarize(ws))
    console.rule(_title("3. Point-in-time features (default set)"))
    fs = default_set()
    t0 = time.perf_counter()
    with progress_bar("feature groups", 1) as update:
        path, n = backfill(ws, fs, progress=update)
    elapsed = time.perf_counter() - t0
    console.print(
        f"Backfilled {len(fs.features)} features x {n:,} charges in {elapsed:.1f} s "
        f"({n / max(elapsed, 1e-9):,.0f} charges/s) -> {plain_path(path)}"
    )
    sample = ["card.count_charges_1h", "ip.distinct_card_fingerprint_1d", "card.amount_zscore"]
    print_feature_sample(pq.read_table(path, columns=sample), sample)
    if skip_models:
        return
    _models(ws, fs)
    _replay_last_day(ws)


def demo_wrote_log(ws: Workspace) -> bool:
    """Whether the event log of ``ws`` is as payfm demo wrote it: its marker records the manifest version the
    demo's write committed, and the manifest is still at that version (the demo's own later steps, features,
    models, rules and the replay, write no event: the version stays). A marker without a version (of an older
    payfm) or unreadable proves nothing: False."""
    recorded = _recorded_version(ws)
    return recorded is not None and recorded == ws.manifest()["version"]


def _recorded_version(ws: Workspace) -> int | None:
    """The manifest version the demo's marker records (None: no marker, unreadable, or of an older payfm)."""
    try:
        recorded = json.loads((ws.root / DEMO_MARKER).read_text()).get("log_version")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, int) and not isinstance(recorded, bool) else None


# Radar-style starter rules on the default feature set and the risk score (`payfm rules apply` replaces them).
# Measured with `payfm rules backtest --horizon-days 30 --model fraud-gbdt@1 --from 2026-03-01` on the default
# world (2026-12-06): a card with a fraud dispute or EFW, blocked on that alone, matched 16,311 charges of
# March-April at 0.3% precision over the final labels (its genuine holder goes on using it; declined and
# blocked charges left out: no dispute can follow them); with the model's agreement too (risk >= 50), 213 at
# 16%.
DEMO_RULES = """\
elevated_3ds: request_3ds if :risk_level: = 'elevated' and :channel: = 'ecommerce'
known_fraud_card: block if :risk_score: >= 50 and :card.count_fraud_disputes_all: + :card.count_efws_all: > 0
card_testing: block if :card.count_declined_1h: >= 3 or :ip.count_declined_1h: >= 5
highest_risk: block if :risk_score: >= 90
high_risk_review: review if :risk_level: = 'highest'
new_card_large: review if :card.first_seen: = 1 and :amount_usd: > 1000
"""


def _replay_last_day(ws: Workspace) -> None:
    """Step 6: apply the starter rules and replay the log's last day through the scorer, in process, as
    production sends it: each charge before authorization, then the processor's answer (its logged outcome).

    The state is warmed with the charges before that day only (the replayed charges must not be in it)."""
    from payfm.cli.serve import print_replay
    from payfm.rules import rulesets
    from payfm.serving.replay import replay_in_process

    console.rule(_title("6. Decision service: replay of the last day"))
    rules = DEMO_RULES.count(chr(10))
    version = rulesets.active(ws)
    if version is not None and version.text == DEMO_RULES:  # a demo run again: no new identical version
        console.print(f"The starter ruleset is active (version {version.version}, {rules} rules).")
    else:
        version = rulesets.save(ws, DEMO_RULES, activate=True, author="payfm demo", note="demo starter rules")
        console.print(f"Applied the starter ruleset (version {version.version}, {rules} rules).")
    con = ws.connect()
    try:
        row = con.execute("SELECT max(created) FROM charges").fetchone()
        if row is None or row[0] is None:
            return
        end = row[0].astimezone(UTC)
        start = datetime(end.year, end.month, end.day, tzinfo=UTC)
        [(day,)] = con.execute("SELECT count(*) FROM charges WHERE created >= ?", [start]).fetchall()
    finally:
        con.close()
    with stage_progress() as update:
        rep = replay_in_process(
            ws,
            start,
            None,
            warm_progress=lambda d, n: update("warming the online state (days before)", d, n),
            progress=lambda n: update("replaying the last day", n, int(day)),  # (of the day's charges)
            authorize_after=True,
        )
    print_replay(rep, f"Replay of {start:%Y-%m-%d}")


def _models(ws: Workspace, fs: FeatureSet) -> None:
    """Steps 4-5: train LR, RF and GBDT, evaluate them on the held-out window, promote the best."""
    from payfm.cli.evaluate import comparison_table
    from payfm.evaluation.pipeline import evaluate_models
    from payfm.registry.store import Registry
    from payfm.training.tasks import task
    from payfm.training.trainer import TrainConfig, register_result
    from payfm.training.trainer import train as run_train

    console.rule(_title("4. Models: logistic regression, random forest, gradient boosting"))
    # The demo world is 120 days: a 60-day label horizon leaves mature labels for training and test.
    # Negatives are downsampled to 10% (and weighted back) so the three models train in about two minutes.
    cfg = TrainConfig(horizon_days=DEMO_HORIZON_DAYS, downsample=0.1)
    t0 = time.perf_counter()
    try:
        with progress_bar("training", 1) as update:
            results = run_train(
                ws, ["lr", "rf", "gbdt"], task("fraud"), fs, cfg, lambda _s, d, n: update(d, n)
            )
    except ConfigError as e:  # its advice names payfm train's options, which the demo does not take
        raise ConfigError(
            f"The demo's models (a {DEMO_HORIZON_DAYS}-day label horizon, 14-day validation and test "
            f"periods) cannot train on this world. payfm train said: {e} Run the demo on the default world "
            "(--charges 1000000 --days 120), or train on this one yourself, e.g. with a shorter horizon: "
            "payfm train --horizon-days 20 --val-days 7 --test-days 7."
        ) from None
    reg = Registry(ws)
    refs = [register_result(reg, r, fs).ref for r in results]
    console.print(f"Trained and registered {', '.join(refs)} in {time.perf_counter() - t0:.1f} s")
    console.rule(_title("5. Evaluation on the held-out test window (labels mature)"))
    window = results[0].window
    start, end = datetime.fromisoformat(window["test_start"]), datetime.fromisoformat(window["test_end"])
    paths, evals = evaluate_models(ws, refs, start, end, bootstrap=100)
    console.print(comparison_table(evals, f"Test window {_when(start)} .. {_when(end)}"))
    for d in paths.drift:
        said = f"Feature drift ({d.window_text()}): {d.summary()}"
        console.print(said, markup=False, highlight=False, soft_wrap=True)
    best = chosen_on_validation(results, refs)
    reg.promote(best)
    console.print(
        Text.assemble(
            "Promoted ",
            (best, "bold"),
            " to production (the best average precision on the validation period: the test window reports, "
            "it does not choose). Report: ",
            (plain_path(paths.html), "bold"),
        )
    )


def chosen_on_validation(results: Sequence[TrainResult], refs: Sequence[str]) -> str:
    """The reference (of ``refs``, one per result) of the model with the highest validation AP: what the demo
    promotes. Choosing on the test window would make its figure of the chosen model a biased one (a review).

    >>> from types import SimpleNamespace as R
    >>> a, b = R(metrics={"val_ap": 0.2, "test_ap": 0.4}), R(metrics={"val_ap": 0.3, "test_ap": 0.1})
    >>> chosen_on_validation([a, b], ["lr@1", "gbdt@1"])  # type: ignore[list-item]
    'gbdt@1'
    """

    def val_ap(i: int) -> float:
        ap = float(results[i].metrics.get("val_ap", float("nan")))
        return ap if math.isfinite(ap) else float("-inf")

    return refs[max(range(len(refs)), key=val_ap)]


def _when(t: datetime) -> str:
    """A window bound as the demo prints it: its date at midnight UTC, else to the second (a test period
    starts where the data's last charge before it left off: 2026-02-15T23:59:34, not "2026-02-15").

    >>> _when(datetime(2026, 2, 15, 23, 59, 34, 5, tzinfo=UTC)), _when(datetime(2026, 3, 1, tzinfo=UTC))
    ('2026-02-15T23:59:34', '2026-03-01')
    """
    t = t.astimezone(UTC) if t.tzinfo is not None else t
    return (
        f"{t:%Y-%m-%d}"
        if (t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0)
        else f"{t:%Y-%m-%dT%H:%M:%S}"
    )
