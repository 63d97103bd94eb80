"""`payfm fm pretrain|embed|parity|evaluate`: the payments foundation model (thin commands over payfm.fm).

Under torchrun, `payfm fm pretrain` trains with DistributedDataParallel::

    torchrun --nproc_per_node 2 .venv/bin/payfm fm pretrain --epochs 1
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from payfm.cli.options import FiniteFloatRange
from payfm.cli.render import cell, console, err_console, parquet_path, plain_path
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace


class _FmGroup(click.Group):
    """`payfm fm pretrain --threads 1`: says that the group's option goes before the subcommand."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as e:
            if e.option_name != "--threads" or e.ctx is None or e.ctx.parent is not ctx:
                raise
            hint = f"--threads goes before the subcommand: payfm fm --threads N {e.ctx.info_name} ..."
            raise click.NoSuchOption(e.option_name, f"{e.message} {hint}", ctx=e.ctx) from None


def _checkpoint_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A --name checked before any work (payfm.fm.identity.check_name): '' or '..' would name fm/ itself or
    a folder outside it. A checkpoint of the workspace named before the rule keeps its name."""
    from payfm.events.cards import name_holds_card_number
    from payfm.fm.identity import NAME_RULE, check_name, one_folder

    if name_holds_card_number(value):  # the reason, not the rule it would otherwise fit
        raise click.BadParameter("must not hold a card number (PAN).")
    root = Path((ctx.find_root().obj or {}).get("workspace") or ".")
    exists = one_folder(value) and (root / "fm" / value / "config.json").is_file()
    try:
        return check_name(value, exists=exists)
    except ConfigError:
        raise click.BadParameter(f"expected {NAME_RULE}. Got {value!r}.") from None


NAME = click.option(
    "--name", default="default", show_default=True, callback=_checkpoint_name, help="Checkpoint name."
)


@click.group(cls=_FmGroup)
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),  # (torch refuses more than its limit with a traceback)
    default=None,
    help="CPU threads for torch (default: torch's choice).",
)
def fm(threads: int | None) -> None:
    """The payments foundation model: a transformer over card and merchant charge sequences."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _checkpoint(ws: Workspace, name: str) -> Path:
    from payfm.fm.pretrain import checkpoint_dir

    return checkpoint_dir(ws, name)


@fm.command()
@click.option(
    "--epochs",
    type=FiniteFloatRange(0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Passes over the training charges.",
)
@click.option(
    "--steps",
    type=click.IntRange(1),
    default=None,
    help="Total optimizer steps, counted from the checkpoint's first (overrides --epochs).",
)
@click.option(
    "--max-charges", type=click.IntRange(1), default=None, help="Pretrain on the first N charges only."
)
@click.option(
    "--until-frac",
    type=FiniteFloatRange(0.0, 1.0, min_open=True),
    default=0.7,
    show_default=True,
    help="Pretrain on the first fraction of the log (keep the rest for `fm evaluate`); 1 = all.",
)
@click.option(
    "--seq-len",
    type=click.IntRange(2),
    default=16,
    show_default=True,
    help="Charges per card / merchant view (the charge and its K-1 predecessors).",
)
@click.option("--n-layer", type=click.IntRange(1), default=2, show_default=True, help="Transformer blocks.")
@click.option("--n-head", type=click.IntRange(1), default=4, show_default=True, help="Attention heads.")
@click.option(
    "--n-embd",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Channels per view (x2 = embedding).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="Global batch (all processes).",
)
@click.option(
    "--lr",
    type=FiniteFloatRange(0.0, min_open=True),
    default=3e-3,  # PretrainConfig.lr (the CLI does not import torch to start)
    show_default=True,
    help="AdamW learning rate (constant after the warm-up). A batch 8x larger takes about 2-3x this.",
)
@click.option(
    "--warmup",
    type=click.IntRange(1),
    default=20,  # PretrainConfig.warmup
    show_default=True,
    help="Steps of linear learning-rate warm-up.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**64 - 1),  # what torch.manual_seed takes (PretrainConfig's range)
    default=0,
    show_default=True,
    help="Seed of the weights, rows and masks.",
)
@click.option(
    "--name",
    default="default",
    show_default=True,
    callback=_checkpoint_name,
    help="Checkpoint name (workspace fm/<name>): lower-case letters, digits, '_' or '-'.",
)
@click.option("--fresh", is_flag=True, help="Start over instead of resuming an existing checkpoint.")
@click.pass_context
def pretrain(
    ctx: click.Context,
    epochs: float,
    steps: int | None,
    max_charges: int | None,
    until_frac: float,
    seq_len: int,
    n_layer: int,
    n_head: int,
    n_embd: int,
    batch_size: int,
    lr: float,
    warmup: int,
    seed: int,
    name: str,
    fresh: bool,
) -> None:
    """Pretrain (or resume) the foundation model with masked field and next-charge prediction.

    Takes CUDA with bfloat16 autocast when a GPU is present; under torchrun, one process per GPU (or CPU
    processes on gloo). Checkpoints every 200 steps; run it again to resume.
    """
    from payfm.cli.render import loss_progress
    from payfm.fm.pretrain import PretrainConfig
    from payfm.fm.pretrain import pretrain as run
    from payfm.fm.sequences import time_cut

    if n_embd % n_head:
        raise click.BadParameter(
            f"must be divisible by --n-head ({n_head}). Got {n_embd}.", param_hint="'--n-embd'"
        )
    ws = Workspace.open(ctx.obj["workspace"])
    until = time_cut(ws, until_frac) if until_frac < 1.0 else None
    cfg = PretrainConfig(
        epochs=epochs,
        steps=steps,
        max_charges=max_charges,
        until_us=until,
        seq_len=seq_len,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        seed=seed,
    )
    first = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for all

    def warn(message: str) -> None:
        err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)

    with loss_progress("pretraining", show=first) as update:
        result = run(ws, cfg, out=_checkpoint(ws, name), resume=not fresh, progress=update, warn=warn)
    if not first:
        return
    if not result.trained:
        console.print(
            f"Checkpoint {name} is at step {result.step} already, at or past the end of this run: nothing "
            "to train. Ask for more --steps or --epochs to go on, or pass --fresh to start over (or a new "
            "--name, if a registered model takes this checkpoint)."
        )
        return
    console.print(  # the loss of the last 20 steps (under torchrun: of the whole batch, every rank's)
        f"Pretrained to step {result.step} ({result.charges_per_s:,.0f} charges/s, loss {cell(result.loss)}) "
        f"-> {plain_path(result.path)}"
    )


WORKERS = click.option(
    "--workers", type=click.IntRange(1), default=1, show_default=True, help="Threads for batch embedding."
)


@fm.command()
@NAME
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    callback=parquet_path,
    help="Parquet path; a relative path is relative to the current directory. In the workspace only the "
    "checkpoint's own fm/<name>.embeddings.parquet (not another's, nor in a checkpoint) or a .parquet file "
    "at its top "
    "[default: <workspace>/fm/<name>.embeddings.parquet].",
)
@click.option(
    "--surprise",
    is_flag=True,
    help="Also write each charge's surprise: -log p(field | card's / merchant's history) per field and view.",
)
@WORKERS
@click.pass_context
def embed(ctx: click.Context, name: str, out: str | None, surprise: bool, workers: int) -> None:
    """Embed every charge of the workspace in batch (Parquet: charge_id, created, embedding[, surprise])."""
    from payfm.cli.render import stage_progress
    from payfm.fm.embed import embed as run

    ws = Workspace.open(ctx.obj["workspace"])
    outputs = ("embedding", "surprise") if surprise else ("embedding",)
    t0 = time.perf_counter()
    with stage_progress() as update:  # per output, the card and merchant sequences done (2 per charge)
        path, table = run(
            ws,
            _checkpoint(ws, name),
            out=out,
            workers=workers,
            outputs=outputs,
            progress=lambda output, done, total: update(f"{output} (sequences)", done, total),
        )
    took = time.perf_counter() - t0
    console.print(
        f"Embedded {table.num_rows:,} charges in {took:.1f} s ({table.num_rows / max(took, 1e-9):,.0f} "
        f"charges/s) -> {plain_path(path)}"
    )


@fm.command()
@NAME
@click.option(
    "--charges",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    help="Replay the last N charges one by one (the ones before are learned in batch, as a server starts).",
)
@click.option(
    "--surprise", is_flag=True, help="Compare the surprise too (the outputs a model on both takes)."
)
@click.option(
    "--tolerance",
    type=FiniteFloatRange(0.0),
    default=1e-5,
    show_default=True,
    help="Largest |online - offline| allowed.",
)
@click.option(
    "--state",
    envvar="PAYFM_STATE",
    default="memory",
    show_default=True,
    help="The online state replayed through: memory, or redis://... (a namespace of its own, deleted after; "
    "or PAYFM_STATE).",
)
@click.option(
    "--authorize-after",
    type=click.IntRange(0),
    default=None,
    help="Send each charge without its outcome, as production does, and report its result N charges later "
    "(0: before the next charge). Default: each charge carries its outcome.",
)
@click.pass_context
def parity(
    ctx: click.Context,
    name: str,
    charges: int,
    surprise: bool,
    tolerance: float,
    state: str,
    authorize_after: int | None,
) -> None:
    """Replay charges through the online embedder and compare with the batch job, charge by charge.

    Checks that every replayed charge's model input (the card's and merchant's recent charges, from the
    online state) equals the offline window exactly, and that its embedding (and surprise) equals the batch
    job's within the tolerance, through batched passes and, for every 100th charge, the one-charge call a
    decision makes. Exits 1 on any difference. With --state redis://..., the state lives in Redis as with
    `payfm serve --state redis://...`: the warm start is written there and every replayed charge is read
    from and learned into it. With --authorize-after N, each charge is learned without its outcome and its
    result reported N charges later, as the decision service gets it (POST /v1/charges/{id}/authorization):
    with 0 the inputs are exact; with more, the charges decided while an earlier charge's result was
    outstanding read it as null, and the mismatches count them.

    \b
    Example:
      payfm fm parity --name v3 --charges 100000 --surprise
      payfm fm parity --name v3 --charges 20000 --state redis://127.0.0.1:6379/0
      payfm fm parity --name v3 --charges 20000 --authorize-after 0
    """
    from payfm.cli.render import progress_bar
    from payfm.fm.parity import fm_parity

    ws = Workspace.open(ctx.obj["workspace"])
    outputs = ("embedding", "surprise") if surprise else ("embedding",)
    with progress_bar("replaying charges", charges) as update:
        report = fm_parity(
            ws,
            _checkpoint(ws, name),
            charges=charges,
            outputs=outputs,
            tolerance=tolerance,
            progress=update,
            state=state,
            authorize_after=authorize_after,
        )
    console.print(f"{report.summary()} in {report.seconds:.1f} s")
    if report.first_input_mismatch is not None:
        console.print(f"first differing input: {report.first_input_mismatch}")
    if not report.ok:
        console.print("online and offline differ", style="red")
        ctx.exit(1)


@fm.command()
@NAME
@click.option(
    "--train-frac",
    type=FiniteFloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.7,
    show_default=True,
    help="Training window share.",
)
@click.option(
    "--resamples",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Bootstrap resamples (of incidents).",
)
@click.option(
    "--gbdt-seeds",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="LightGBM fits averaged per GBDT.",
)
@click.option(
    "--finetune-steps", type=click.IntRange(0), default=300, show_default=True, help="fm-head steps."
)
@click.option(
    "--detector-steps",
    type=click.IntRange(0),
    default=300,
    show_default=True,
    help="ct-detector steps; its control ct-hand (a GBDT on the hand-made features, same labels) comes with "
    "it; 0 skips both.",
)
@click.option(
    "--train-on",
    type=click.Choice(["authorized", "all"]),
    default="authorized",
    show_default=True,
    help="Fit the GBDTs on authorized charges only (declined ones never get a label) or on all.",
)
@click.option(
    "--fm-inputs",
    "fm_inputs",
    multiple=True,
    default=("embedding", "surprise"),
    show_default=True,
    help="Foundation-model inputs of one GBDT + FM model (repeatable, one model each, each value once): "
    "embedding, surprise or embedding+surprise.",
)
@WORKERS
@click.pass_context
def evaluate(
    ctx: click.Context,
    name: str,
    train_frac: float,
    resamples: int,
    gbdt_seeds: int,
    finetune_steps: int,
    detector_steps: int,
    train_on: str,
    fm_inputs: tuple[str, ...],
    workers: int,
) -> None:
    """Compare GBDT on hand-made features with GBDT + foundation-model inputs on the later time window.

    Each GBDT + FM model takes the hand-made features plus the charge's embedding (gbdt+fm), its surprise
    (gbdt+surprise: how unexpected each field of the charge is given its card's and merchant's history) or
    both; the relative gains over gbdt come with paired 95% bootstrap intervals.
    """
    from payfm.fm.downstream import MIN_INCIDENTS, DownstreamConfig, evaluate_embeddings
    from payfm.fm.identity import check_outputs

    try:
        variants = tuple(check_outputs(v.split("+")) for v in fm_inputs)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--fm-inputs") from None
    for value, parts in zip(fm_inputs, variants, strict=True):
        if value != "+".join(parts):  # one spelling of each, as `payfm train --fm-inputs` takes
            raise click.BadParameter(
                f"expected {'+'.join(parts)} (the outputs in the order embedding, surprise). Got {value}.",
                param_hint="--fm-inputs",
            )
    twice = [v for i, v in enumerate(fm_inputs) if variants[i] in variants[:i]]
    if twice:
        raise click.BadParameter(
            f"expected each value once (one model each). Got {twice[0]} more than once.",
            param_hint="--fm-inputs",
        )

    ws = Workspace.open(ctx.obj["workspace"])
    cfg = DownstreamConfig(
        train_frac=train_frac,
        resamples=resamples,
        gbdt_seeds=gbdt_seeds,
        finetune_steps=finetune_steps,
        detector_steps=detector_steps,
        train_on=train_on,
        workers=workers,
        fm_inputs=variants,
    )
    from payfm.cli.render import stage_progress

    with stage_progress() as update:
        report = evaluate_embeddings(ws, _checkpoint(ws, name), cfg, progress=update)
    # Two tables narrow enough for a terminal: APs, then the GBDT + FM models' gains with their intervals.
    # A slice without positives in the test window has no AP: one line names them instead of rows of "-".
    shown = [s for s in report.scores["gbdt"] if report.scores["gbdt"][s].positives > 0]
    table = Table(title=f"Average precision after {report.cut} ({report.test_rows:,} test charges)")
    table.add_column("slice (positives; incidents)")
    for model in report.scores:
        table.add_column(model, justify="right")
    for slice_ in shown:
        base = report.scores["gbdt"][slice_]
        count = f"{slice_} ({base.positives}; {base.incidents})"
        table.add_row(count, *(cell(report.scores[m][slice_].ap) for m in report.scores))
    console.print(table)
    gains = Table(
        title="Relative AP gain over gbdt, paired 95% bootstrap interval over incidents (none with fewer "
        f"than {MIN_INCIDENTS} incidents: '[-, -]')"
    )
    gains.add_column("slice")
    for model in report.gain_intervals:
        gains.add_column(model, justify="right")
    for slice_ in shown:
        cells = []
        for model, intervals in report.gain_intervals.items():
            low, high = intervals[slice_]
            gain = report.relative_gain(slice_, model)  # NaN over a gbdt AP of 0: "-"
            interval = f" [{cell(low, '+.1%')}, {cell(high, '+.1%')}]" if math.isfinite(gain) else ""
            cells.append(cell(gain, "+.1%") + interval)
        gains.add_row(slice_, *cells)
    console.print(gains)
    empty = [s for s in report.scores["gbdt"] if s not in shown]
    if empty and not report.scenario_labels:
        console.print(
            "The log names no fraud scenario (an import): the per-scenario slices hold no positive and are "
            f"left out ({', '.join(empty)}); an incident is a card's frauds.",
            soft_wrap=True,
        )
    elif empty:
        console.print(f"No positives in the test window (no AP) for: {', '.join(empty)}.")
    for what in report.skipped:
        console.print(f"Not evaluated: {what}.", soft_wrap=True)
    ckpt = _checkpoint(ws, name)
    console.print(f"Every AP with its interval: {plain_path(ckpt.with_name(ckpt.name + '.evaluation.json'))}")
