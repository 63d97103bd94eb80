"""`payfm train` and `payfm models list|show|promote|rollback`: thin commands over training and registry."""

from __future__ import annotations

import math

import click
from rich.table import Table

from payfm.cli.options import DAYS, GAP_DAYS, SHARE
from payfm.cli.render import console, err_console, iso_time, stage_progress
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features.catalog import FEATURE_SETS, feature_set
from payfm.features.definitions import FeatureSet
from payfm.registry import STAGES, Registry
from payfm.registry.store import entry_json
from payfm.training.models import MODEL_KINDS, model_class
from payfm.training.models.base import MAX_TRAIN_SEED
from payfm.training.models.params import parse_assignment
from payfm.training.tasks import TASKS, task
from payfm.training.trainer import TrainConfig, checked_params, register_result
from payfm.training.trainer import train as run_train


def _fmt(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.4f}"


@click.command()
@click.option(
    "--model",
    "model",
    default="gbdt",
    show_default=True,
    type=click.Choice([*MODEL_KINDS, "all"]),
    help="Model kind to train (all: every kind).",
)
@click.option(
    "--set",
    "set_name",
    default="default",
    show_default=True,
    help=f"Feature set to train on ({', '.join(sorted(FEATURE_SETS))}, or one this workspace defines); its "
    "backfill is computed first if missing or older than the event log.",
)
@click.option(
    "--task",
    "task_name",
    default="fraud",
    show_default=True,
    type=click.Choice(sorted(TASKS)),
    help="What to predict. fraud: a fraudulent dispute, early fraud warning or review closed as "
    "refunded_as_fraud within the horizon; retry_success: an issuer-declined charge is retried and the "
    "retry authorized.",
)
@click.option(
    "--horizon-days",
    type=DAYS,
    default=None,
    help="Label horizon (default: the task's, 120 d for fraud; use 60 on the 120-day demo world).",
)
@click.option(
    "--trials",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Optuna trials on the validation period.",
)
@click.option("--val-days", default=14.0, show_default=True, type=DAYS, help="Validation period length.")
@click.option(
    "--test-days", default=14.0, show_default=True, type=DAYS, help="Test period length (held out)."
)
@click.option(
    "--gap-days",
    default=7.0,
    show_default=True,
    type=GAP_DAYS,
    help="Label-delay gap before validation and test.",
)
@click.option(
    "--warm-up-days",
    default=0.0,
    show_default=True,
    type=GAP_DAYS,
    help="Leave the log's first days out of training: there every card and merchant is new to the log and "
    "30-day windows are not full, which teaches a model that a card's first charge is commoner among genuine "
    "charges than it is later (docs/models.md). 30 matches the default set's longest window.",
)
@click.option(
    "--downsample",
    default=1.0,
    show_default=True,
    type=SHARE,
    help="Share of training negatives kept.",
)
@click.option(
    "--calibration",
    default="isotonic",
    show_default=True,
    type=click.Choice(["isotonic", "platt", "none"]),
    help="How raw scores become probabilities, fitted on the validation period: isotonic (centred isotonic "
    "regression: keeps the raw scores' order), platt (a logistic on the logit) or none.",
)
@click.option(
    "--recent-test",
    is_flag=True,
    help="Test on the latest period (labels mostly immature) instead of ending one horizon before now.",
)
@click.option(
    "--as-of",
    "as_of",
    default=None,
    help="Read the labels, and place the split, as of this time (UTC), e.g. 2026-04-01T00:00 [default: now, "
    "the log's latest event]. A model's entry records the one it was trained at (`payfm models show`: "
    "training.as_of): the same command with it rebuilds the model after the log has grown.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0, MAX_TRAIN_SEED),
    help="Random seed of the negative downsampling, the models' own randomness and the --trials search "
    "(at most 2**31 - 1: LightGBM's seed is a 32-bit signed integer).",
)
@click.option(
    "--fm",
    "fm_name",
    default=None,
    help="Also take this foundation-model checkpoint's outputs (workspace fm/<name>, pretrained on charges "
    "before the validation period); the model is registered with it as <task>-<kind>-fm.",
)
@click.option(
    "--fm-inputs",
    default=("embedding",),
    show_default=True,
    multiple=True,  # (to refuse a repeat: without it the last one given was taken, silently)
    type=click.Choice(["embedding", "surprise", "embedding+surprise"]),
    help="Which outputs of --fm the model takes after the features (once: both are embedding+surprise).",
)
@click.option("--fm-workers", default=1, show_default=True, type=click.IntRange(1), help="Threads for --fm.")
@click.option(
    "--train-on",
    default="all",
    show_default=True,
    type=click.Choice(["all", "authorized"]),
    help="Fit on every charge, or on authorized ones only: declined and blocked charges never get a dispute, "
    "so their 0 is unknown, not genuine (docs/models.md). Test rows are every charge either way.",
)
@click.option(
    "--param",
    "param_texts",
    multiple=True,
    metavar="[KIND.]NAME=VALUE",
    help="A model parameter, repeatable: n_estimators=200, gbdt.num_leaves=31, rf.max_depth=12, or any "
    "LightGBM parameter for the GBDT (gbdt.max_bin=63). Without KIND it goes to the trained kinds that take "
    "it. "
    "Checked before any work; recorded with the model; kept fixed by --trials. Names: docs/models.md.",
)
@click.pass_context
def train(
    ctx: click.Context,
    model: str,
    set_name: str,
    task_name: str,
    horizon_days: float | None,
    trials: int,
    val_days: float,
    test_days: float,
    gap_days: float,
    warm_up_days: float,
    downsample: float,
    calibration: str,
    recent_test: bool,
    as_of: str | None,
    seed: int,
    fm_name: str | None,
    fm_inputs: tuple[str, ...],
    fm_workers: int,
    train_on: str,
    param_texts: tuple[str, ...],
) -> None:
    """Train models on the backfilled features, compare them on validation, register each as a candidate.

    \b
    Example:
      payfm generate --charges 100000 --days 60
      payfm features backfill
      payfm train --model all --horizon-days 20 --val-days 7 --test-days 7 --gap-days 3
      payfm train --horizon-days 20 --val-days 7 --test-days 7 --gap-days 3 \\
        --param n_estimators=200 --param num_leaves=31

    \b
    On foundation-model inputs (docs/fm.md), on the 120-day default world:
      payfm fm pretrain --until-frac 0.2 --name early
      payfm train --horizon-days 60 --fm early --fm-inputs embedding+surprise
      payfm models promote fraud-gbdt-fm@1       # served with its checkpoint by payfm serve
    """
    ws = Workspace.open(ctx.obj["workspace"])
    checkpoint = None
    if len(fm_inputs) > 1:  # (fm evaluate's --fm-inputs repeats to compare models; a model takes one)
        raise click.BadParameter(
            f"one model takes one set of inputs: give it once (both: embedding+surprise). Got "
            f"{', '.join(fm_inputs)}.",
            param_hint="'--fm-inputs'",
        )
    for param, flag in (("fm_inputs", "--fm-inputs"), ("fm_workers", "--fm-workers")):
        if fm_name is None and ctx.get_parameter_source(param) == click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(f"{flag} applies to a foundation model's outputs: give --fm NAME too.")
    if fm_name is not None:
        from payfm.fm.identity import checkpoint_meta
        from payfm.fm.pretrain import checkpoint_dir

        checkpoint = str(checkpoint_dir(ws, fm_name, "--fm"))  # a name: never fm/ itself or outside it
        checkpoint_meta(checkpoint)  # a clear error before any work when there is no such checkpoint
    fs, t = feature_set(set_name, ws.root), task(task_name)
    kinds = list(MODEL_KINDS) if model == "all" else [model]
    cfg = TrainConfig(
        horizon_days=horizon_days,
        val_days=val_days,
        test_days=test_days,
        gap_days=gap_days,
        warm_up_days=warm_up_days,
        downsample=downsample,
        trials=trials,
        calibration=calibration,
        seed=seed,
        mature_test=not recent_test,
        as_of=iso_time(as_of, "--as-of"),
        foundation_model=checkpoint,
        fm_outputs=tuple(fm_inputs[0].split("+")),
        fm_workers=fm_workers,
        train_on=train_on,
        params=_params(param_texts, kinds, fs),
    )
    with stage_progress() as update:
        results = run_train(ws, kinds, t, fs, cfg, update)
    reg = Registry(ws)
    table = Table(title=f"Task '{t.name}', feature set '{fs.name}' ({fs.version}): validation and test")
    for col in ("model", "version", "val AP", "val AUC", "test AP", "test AUC", "test immature", "fit s"):
        table.add_column(col, justify="left" if col in ("model", "version") else "right", overflow="fold")
    for r in results:
        mv = register_result(reg, r, fs)
        m = r.metrics
        table.add_row(
            r.kind,
            mv.ref,
            _fmt(m["val_ap"]),
            _fmt(m["val_auc"]),
            _fmt(m["test_ap"]),
            _fmt(m["test_auc"]),
            f"{int(m['test_immature']):,}",
            f"{r.seconds:.1f}",
        )
    console.print(table)
    s = results[0].split
    console.print(
        f"rows train/val/test {s['rows']['train']:,}/{s['rows']['val']:,}/{s['rows']['test']:,}; "
        f"immature labels left out of train {s['immature_dropped']['train']:,}, "
        f"val {s['immature_dropped']['val']:,}; {s['too_recent']:,} too recent to label; "
        + (f"{s['warm_up']:,} in the {warm_up_days:g}-day warm-up; " if warm_up_days else "")
        + f"horizon {results[0].horizon_days:g} d; fitted on {s['fitted']:,} "
        f"{'authorized charges' if train_on == 'authorized' else 'charges'}"
        + (f" (negatives downsampled to {downsample:.0%}, weighted back)" if downsample < 1 else "")
    )
    if said := _hindsight(s.get("hindsight")):
        console.print(said)


def _hindsight(late: dict[str, list[int]] | None) -> str:
    """What the labels read as of the end of the log gave the models that a fit at the time would not have
    had (:func:`payfm.training.trainer.hindsight`), or nothing when none came late.

    >>> _hindsight({"train": [13, 48], "val": [0, 36]}).split(": ")[1].split(" (docs")[0]
    '13 of 48 training positives (27%) came only after validation began'
    >>> _hindsight({"train": [0, 48], "val": [0, 36]})
    ''
    """
    if not late:
        return ""
    parts = [
        f"{n} of {of} {what} positives ({n / of:.0%}) came only after {following} began"
        for (n, of), what, following in (
            (late["train"], "training", "validation"),
            (late["val"], "validation", "the test"),
        )
        if n
    ]
    if not parts:
        return ""
    return (
        f'labels read as of the end of the log: {"; ".join(parts)} (docs/models.md, "Not modelled"; a gap '
        "as long as the horizon removes it)"
    )


def _params(texts: tuple[str, ...], kinds: list[str], fset: FeatureSet) -> dict[str, dict[str, str]]:
    """``--param`` values by model kind (as text: the trainer reads them in each parameter's type), each
    checked here: any wrong one is a usage error of ``--param`` (exit status 2), as a wrong value of any
    other option is."""
    out: dict[str, dict[str, str]] = {}
    for text in texts:
        try:
            kind, name, value = parse_assignment(text)
        except ConfigError as e:
            raise click.BadParameter(str(e).removeprefix("--param: "), param_hint="'--param'") from None
        if kind is not None and kind not in kinds:
            raise click.BadParameter(
                f"expected a kind this run trains ({', '.join(kinds)}). Got {kind!r} in {text!r}.",
                param_hint="'--param'",
            )
        takers = [kind] if kind is not None else kinds if len(kinds) == 1 else []
        takers = takers or [k for k in kinds if name in model_class(k).PARAMS]
        if not takers:
            raise click.BadParameter(
                f"no model kind of this run takes {name!r} as payfm names it: write KIND.{name}={value} "
                f"(gbdt.{name} for a LightGBM parameter). Got {text!r}.",
                param_hint="'--param'",
            )
        for k in takers:
            if name in out.get(k, {}) and out[k][name] != value:  # (the last one won, silently)
                raise click.BadParameter(
                    f"{k}.{name} is given twice: {out[k][name]!r} and {value!r}. Expected one value.",
                    param_hint="'--param'",
                )
            out.setdefault(k, {})[name] = value
    try:
        checked_params(dict(out), fset)  # (lr.categorical's indices against the feature set's columns too)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="'--param'") from None
    return out


@click.group()
def models() -> None:
    """Registered model versions: list, show, promote, rollback."""


@models.command(name="list")
@click.option("--name", default=None, help="Only versions of this model name.")
@click.pass_context
def list_(ctx: click.Context, name: str | None) -> None:
    """List every registered version with its stage, what it fits on and its validation and test AP (test:
    its held-out test period, "-" when it was trained with --recent-test on immature labels)."""
    reg = Registry(Workspace.open(ctx.obj["workspace"]))
    if name is not None and "@" in name:
        raise ConfigError(f"--name takes a model name, not a version's reference. Got '{name}'.")
    if name is not None and not reg.list(name):  # as `models show NAME` says it: with the names there are
        reg.get(name)
    versions = reg.list(name)
    if not versions:  # (a name given has versions: checked above)
        console.print(
            "No model is registered in this workspace: train one with `payfm train` (e.g. `payfm train "
            "--model gbdt`), then promote it with `payfm models promote REF`.",
            markup=False,
            highlight=False,
        )
        return
    table = Table(title="Registered models")
    for col in ("model", "stage", "kind", "task", "feature set", "fits on", "val AP", "test AP", "created"):
        table.add_column(col)
    for v in versions:
        metrics = v.entry.get("metrics", {})
        training = v.entry.get("training", {})
        table.add_row(
            v.ref,
            v.stage,
            v.kind,
            v.task,
            f"{v.feature_set} {v.feature_set_version}",
            str(training.get("train_on", "-")),
            _fmt(float(metrics.get("val_ap", float("nan")))),
            _fmt(float(metrics.get("test_ap", float("nan")))),
            v.created_at[:19],
        )
    console.print(table)


@models.command()
@click.argument("ref")
@click.pass_context
def show(ctx: click.Context, ref: str) -> None:
    """Show one version's registry entry as JSON (REF: name, name@<version> or name@<stage>), then check its
    files against the entry's content hash: an error (exit 1) when they were changed, as at any load."""
    reg = Registry(Workspace.open(ctx.obj["workspace"]))
    mv = reg.get(ref)
    click.echo(entry_json(mv.to_json(), indent=2))  # standard JSON: a metric without a value is null
    reg.check_artifact(mv)  # (after the entry: what it says is what one needs to find what changed)


@models.command()
@click.argument("ref")
@click.option(
    "--stage",
    default="production",
    show_default=True,
    type=click.Choice(STAGES),
    help="production: decides (the production version, of any name, is archived); shadow: scored beside "
    "production and logged, never decides (the shadow version, of any name, is archived); candidate, "
    "archived: not served. A running server serves the change within a second (one started with "
    "--no-follow: at POST /v1/admin/reload).",
)
@click.pass_context
def promote(ctx: click.Context, ref: str, stage: str) -> None:
    """Move a version to a stage. A workspace has one production version, the one the decision service
    decides with: promoting another (of any name) archives it, and `payfm models rollback` restores it."""
    reg = Registry(Workspace.open(ctx.obj["workspace"]))
    before = {v.ref for v in reg.list() if v.stage == "production"}
    replaced = before | {v.ref for v in reg.list() if v.stage == "shadow" and stage == "shadow"}
    mv = reg.set_stage(ref, stage)
    if stage == "production" and before == {mv.ref}:
        said = f"{mv.ref} is production already; nothing changed."
        newest = max(v.version for v in reg.list() if v.name == mv.name)
        if "@" not in ref and newest != mv.version:  # a bare name is its production version, not the newest
            said += f" A bare name is its production version: promote {mv.name}@{newest} (the newest)."
        console.print(said, markup=False, highlight=False)
        return
    archived = sorted(v.ref for v in reg.list() if v.ref in replaced - {mv.ref} and v.stage == "archived")
    console.print(f"{mv.ref} is now {mv.stage}" + (f" ({', '.join(archived)} archived)" if archived else ""))
    if stage == "production" and (disagree := reg.ruleset_disagrees(mv)) is not None:
        err_console.print(f"warning: {disagree}.", markup=False, highlight=False, soft_wrap=True)
    if mv.ref in before and stage != "production":  # the production version taken out: none decides now
        err_console.print(
            f"warning: the workspace has no production model now ({mv.ref} was it): a decision service that "
            "loads the registry (a start, a reload) decides with rules alone, or refuses when given --model. "
            "`payfm models promote REF` makes one production.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@models.command()
@click.argument("name")
@click.pass_context
def rollback(ctx: click.Context, name: str) -> None:
    """Archive the production version of NAME and restore the one it replaced (of whatever name)."""
    reg = Registry(Workspace.open(ctx.obj["workspace"]))
    mv = reg.rollback(name)
    console.print(f"{mv.ref} is production again")
    if (disagree := reg.ruleset_disagrees(mv)) is not None:
        err_console.print(f"warning: {disagree}.", markup=False, highlight=False, soft_wrap=True)
