"""A review of the CLI: an output option pointed into the workspace's own folder replaced its files
(`rules backtest --matches-out ws/manifest.json` exited 0 and destroyed it); `payfm replay` showed no
progress while it replayed (39.7 s for 47,598 charges in process, nothing at all over --http); a --scores
file of 0-1 floats was refused naming its largest value as "0.[card number removed]"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.cards import mask_long_numbers
from payfm.events.outputs import output_file
from payfm.events.workspace import Workspace
from payfm.rules.limits import RuleError
from payfm.rules.scores import check_scores
from payfm.synth import WorldConfig, generate_world
from test_replay_http_retries import _service
from test_rules_activate import one_line_error, run, two, world

__all__ = ["two", "world"]  # (fixtures, imported to be used)

VEL = "vel9: block if :card.count_charges_1h: >= 1"


# ---- 1. an output is never written into the workspace's own folder -----------------------------------------


def test_an_output_inside_the_workspace_is_refused_naming_the_option_and_why(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    for inside in (ws.root / "manifest.json", ws.root / "secret.key", ws.root / "charges" / "new" / "x.csv"):
        with pytest.raises(ConfigError) as e:
            output_file(inside, "--matches-out", workspace=ws.root)
        assert str(e.value) == (
            f"--matches-out: '{inside}' is inside the workspace '{ws.root}': writing there could replace "
            "the workspace's own files (its manifest, secret key, event log or rules.db) and destroy it. "
            "Expected a path outside the workspace's folders (a .parquet or .csv file at its top)."
        )
    # the same folder by another name: relative, through a link
    (tmp_path / "link").symlink_to(ws.root)
    for other in (tmp_path / "link" / "manifest.json", tmp_path / "ws" / ".." / "ws" / "charges" / "m.csv"):
        with pytest.raises(ConfigError, match="is inside the workspace"):
            output_file(other, "--out", workspace=tmp_path / "link")
    # outside it, beside it (a name that merely starts the same), or the output's own subfolder: allowed
    assert output_file(tmp_path / "out.csv", "--out", workspace=ws.root) == tmp_path / "out.csv"
    assert output_file(tmp_path / "ws2" / "x.csv", "--out", workspace=ws.root) == tmp_path / "ws2" / "x.csv"
    own, within = ws.root / "fm" / "x.embeddings.parquet", "fm/*.embeddings.parquet"
    assert output_file(own, "--out", workspace=ws.root, within=within) == own
    with pytest.raises(
        ConfigError, match=r"\(a \.parquet or \.csv file at its top, or a file fm/\*\.embeddings\.parquet\)"
    ):
        output_file(ws.root / "manifest.json", "--out", workspace=ws.root, within=within)
    # in that folder, only a file of that kind directly in it: not a checkpoint's, nor one of another name
    for other in ("v3/model.safetensors", "v3/x.embeddings.parquet", "x.parquet", ".embeddings.parquet"):
        with pytest.raises(ConfigError, match="is inside the workspace"):
            output_file(ws.root / "fm" / other, "--out", workspace=ws.root, within=within)
    top = ws.root / "check.parquet"  # a file at its top, of a kind the workspace keeps none of there
    assert output_file(top, "--out", workspace=ws.root, within=within) == top
    assert (
        output_file(ws.root / "manifest.json", "--out") == ws.root / "manifest.json"
    )  # (no workspace: as was)


def test_backtest_matches_out_into_the_workspace_is_refused_and_the_workspace_stays_whole(
    two: tuple[Workspace, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, _ = two
    before = {p: p.read_bytes() for p in ws.root.rglob("*") if p.is_file()}
    base = ["rules", "backtest", "--rule", VEL, "--matches", "vel9", "--matches-out"]
    for inside in (ws.root / "models" / "rules.csv", ws.root / "charges" / "vel.csv"):
        code, out = run(ws, *base, str(inside))
        one_line_error(code, out, f"Error: --matches-out: '{inside}' is inside the workspace '{ws.root}'")
    monkeypatch.chdir(ws.root / "charges")  # a relative path, from inside the workspace
    code, out = run(ws, *base, "vel.csv")
    one_line_error(code, out, f"Error: --matches-out: 'vel.csv' is inside the workspace '{ws.root}'")
    # a file that is not CSV (the reviewer's manifest.json): refused by its name, before anything
    code, out = run(ws, *base, str(ws.root / "manifest.json"))
    assert code == 2 and "Invalid value for '--matches-out': expected a file path ending in .csv." in out, out
    after = {p: p.read_bytes() for p in ws.root.rglob("*") if p.is_file()}
    assert after == before
    monkeypatch.chdir(tmp_path)
    code, out = run(ws, *base, str(tmp_path / "VEL.CSV"))  # outside: written
    assert code == 0 and (tmp_path / "VEL.CSV").stat().st_size > 0, out


# ---- 2. payfm replay shows its progress over the replayed charges ------------------------------------------


@pytest.fixture(scope="module")
def replay_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    w = Workspace.open(tmp_path_factory.mktemp("replay_progress") / "ws", create=True)
    w.write_stream(generate_world(WorldConfig(charges=3000, days=2, seed=4)), "replace")
    return w


Updates = list[tuple[str, int, int]]


@pytest.fixture
def updates(monkeypatch: pytest.MonkeyPatch) -> Updates:
    """Every ``update(stage, done, total)`` the command's progress bars receive."""
    seen: Updates = []

    @contextmanager
    def recorded() -> Iterator[Callable[[str, int, int], None]]:
        yield lambda stage, done, total: seen.append((stage, done, total))

    monkeypatch.setattr("payfm.cli.render.stage_progress", recorded)
    return seen


def _window(ws: Workspace) -> tuple[str, int]:
    """The start of the log's second day, and how many charges are from it on."""
    created = ws.read("charges")["created"]
    first: datetime = pc.min(created).as_py()
    start = first.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return start.isoformat(), int(pc.sum(pc.greater_equal(created, pa.scalar(start, created.type))).as_py())


def _replayed(seen: Updates) -> list[tuple[int, int]]:
    return [(done, total) for stage, done, total in seen if stage == "replaying charges"]


def test_replay_in_process_reports_its_progress_over_the_replayed_charges(
    replay_ws: Workspace, updates: Updates
) -> None:
    start, n = _window(replay_ws)
    assert n > 1000
    r = CliRunner().invoke(cli, ["-w", str(replay_ws.root), "replay", "--from", start])
    assert r.exit_code == 0, r.output
    assert [(d, t) for d, t in _replayed(updates)] == [(k, n) for k in range(1000, n, 1000)] + [(n, n)]
    warm = [(d, t) for s, d, t in updates if s == "warming the state"]
    assert warm and warm[-1][0] == warm[-1][1] > 0  # the warm-up's own bar, before the replay's
    assert updates.index(("warming the state", *warm[-1])) < updates.index(("replaying charges", 1000, n))


def test_replay_over_http_reports_its_progress_over_the_replayed_charges(
    replay_ws: Workspace, updates: Updates
) -> None:
    start, n = _window(replay_ws)
    with _service() as seen:
        args = ["replay", "--from", start, "--http", seen.url]
        r = CliRunner().invoke(cli, ["-w", str(replay_ws.root), *args], env={"PAYFM_API_KEY": "k"})
    assert r.exit_code == 0, r.output
    assert _replayed(updates) == [(k, n) for k in range(1000, n, 1000)] + [(n, n)]


def test_replay_progress_is_a_plain_line_where_stderr_is_a_log(
    replay_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("payfm.cli.render.PLAIN_FIRST_S", 0.0)  # (a long replay's first line, at once)
    start, n = _window(replay_ws)
    r = CliRunner().invoke(cli, ["-w", str(replay_ws.root), "replay", "--from", start])
    assert r.exit_code == 0, r.output
    assert f"replaying charges: 1,000/{n:,} (" in r.output and f"replaying charges: {n:,}/{n:,} (" in r.output


# ---- 3. a --scores value is shown without 13 digits in a row (read as a card number) -----------------------


def test_probabilities_are_refused_naming_the_largest_without_a_card_number_mask() -> None:
    top = 0.9876543210123456  # 16 digits after the point, a Luhn-valid run
    assert "[card number removed]" in mask_long_numbers(repr(top))
    scores = pa.table(
        {"charge_id": ["ch_1", "ch_2"], "risk_score": [0.1234567890123456, top], "risk_level": [None, None]}
    )
    with pytest.raises(RuleError) as e:
        check_scores(scores, "the scores file 'p.parquet'")
    said = mask_long_numbers(str(e.value.detail))
    assert "looks like probabilities (0 to 1; the largest is 0.98765432...)" in said
    assert "Got 0.12345679... at row 1 (charge 'ch_1')" in said
    assert "card number removed" not in said
    with pytest.raises(RuleError) as e:  # out of the 0-100 scale, alike
        check_scores(
            pa.table({"charge_id": ["ch_1"], "risk_score": [100.00000000012345], "risk_level": [None]})
        )
    assert "Got 100.00000... at row 1" in mask_long_numbers(str(e.value.detail))


def test_training_set_and_embeddings_write_in_the_workspace_only_under_their_folders(tmp_path: Path) -> None:
    """The same guard for the other outputs with a default place inside the workspace: ``--out`` may name
    a file under features/ (a training set) or fm/ (embeddings), not one over the event log."""
    from payfm.features.catalog import tiny_set
    from payfm.features.training_set import build_training_set
    from payfm.fm.embed import embed

    ws = Workspace.open(tmp_path / "ws", create=True)
    over = ws.root / "events" / "charges" / "part-0.parquet"
    backfill = ws.root / "features" / f"{tiny_set().name}-{tiny_set().version}.parquet"
    for target in (over, backfill):  # (a training set written over the backfill it reads destroyed it)
        with pytest.raises(
            ConfigError,
            match=r"^--out: .* is inside the workspace .*or a file features/\*\.training\.parquet\)",
        ):
            build_training_set(ws, tiny_set(), out=target)
    # embeddings: only the checkpoint's own file under fm/ (another checkpoint's was replaced, silently)
    for target in (over, ws.root / "fm" / "v3" / "config.json", ws.root / "fm" / "v3.embeddings.parquet"):
        with pytest.raises(
            ConfigError,
            match=r"^--out: .* is inside the workspace .*or a file fm/no-checkpoint\.embeddings\.parquet\)",
        ):
            embed(ws, tmp_path / "no-checkpoint", out=target)
