"""`payfm demo`: the main job end to end on the embedded default."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click
import pyarrow.parquet as pq

from payfm.cli.events import generate_into
from payfm.cli.render import console, print_feature_sample, print_summary, progress_bar
from payfm.events.summary import summarize
from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.features.offline import backfill


@click.command()
@click.option("--charges", default=1_000_000, show_default=True, help="Approximate number of charges.")
@click.option("--days", default=120, show_default=True, help="Days of history.")
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@click.pass_context
def demo(ctx: click.Context, charges: int, days: int, seed: int) -> None:
    """Run the main job end to end: generate the default world (replacing the workspace), summarize it,
    and backfill the default feature set."""
    ws = Workspace.open(ctx.obj["workspace"], create=True)
    console.rule("[bold]1. Synthetic payments world")
    t0 = time.perf_counter()
    rows = generate_into(ws, charges, days, seed, datetime(2026, 1, 1, tzinfo=UTC), 0.003, None)
    console.print(
        f"{rows.get('charges', 0):,} charges written to {ws.root} in {time.perf_counter() - t0:.1f} s"
    )
    console.rule("[bold]2. Event log summary")
    print_summary(summarize(ws))
    console.rule("[bold]3. Point-in-time features (default set)")
    fs = default_set()
    t0 = time.perf_counter()
    with progress_bar("feature groups", 1) as update:
        path, n = backfill(ws, fs, progress=update)
    elapsed = time.perf_counter() - t0
    console.print(
        f"Backfilled {len(fs.features)} features x {n:,} charges in {elapsed:.1f} s "
        f"({n / max(elapsed, 1e-9):,.0f} charges/s) -> {path}"
    )
    sample = ["card.count_charges_1h", "ip.distinct_card_fingerprint_1d", "card.amount_zscore"]
    print_feature_sample(pq.read_table(path, columns=sample), sample)
