"""A horizon shorter than the delay of every label: the refusal pointed at a shorter --horizon-days, the
wrong way (found by an ML engineer importing Sparkov, whose fraud labels arrive 30 days after the charge)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from payfm.cli.main import cli

SAMPLE = Path(__file__).parent / "data" / "sparkov_sample.parquet"


def test_labels_later_than_the_horizon_ask_for_a_longer_one(tmp_path: Path) -> None:
    def run(*args: str) -> tuple[int, str]:
        r = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), *args])
        return r.exit_code, " ".join(r.output.split())

    assert run("import", str(SAMPLE), "--mapping", "sparkov")[0] == 0
    assert run("features", "backfill")[0] == 0
    code, said = run("train", "--model", "lr", "--horizon-days", "20")
    assert code == 1 and "Got 0 positives" in said, said
    assert (
        "try a longer --horizon-days: 100% of the fraud labels arrive more than 20 days after their" in said
    )
    assert "(--horizon-days 30 counts 90% of them)" in said and "shorter --horizon-days" not in said
