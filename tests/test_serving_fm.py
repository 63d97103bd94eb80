"""Serving a GBDT on hand-made features + foundation-model embeddings: the served probability is the offline
one (backfilled features + batch embedding), across a restart; a changed checkpoint is refused at open."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.features.training_set import load_backfill
from payfm.fm.embed import OnlineEmbedder, embed, embedding_matrix
from payfm.fm.identity import checkpoint_hash, checkpoint_meta, embedding_names, surprise_names
from payfm.fm.online_state import MemoryState
from payfm.fm.pretrain import PretrainConfig, pretrain
from payfm.fm.sequences import build_sequences, read_charges
from payfm.redis_load import live_servers
from payfm.registry.store import FoundationModelMismatchError, Registry
from payfm.serving.fm_embeddings import EMBEDDING_REASON, explain
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world
from payfm.training.models.gbdt import GBDTModel
from payfm.training.scores import risk_score
from services import REDIS_SCRATCH_URL

TINY = PretrainConfig(seq_len=4, n_layer=1, n_head=2, n_embd=8, batch_size=64, steps=4, seed=1)
HELD_OUT = 40  # the log's last charges: scored live, compared with the offline values of the full log
OUTCOME_TABLES = ("disputes", "early_fraud_warnings", "refunds")


@dataclass
class Served:
    """A checkpoint, the offline inputs of every charge (features + its embeddings) and a GBDT on them."""

    ckpt: Path
    X: np.ndarray  # (n, features + D) in (created, charge_id) order
    model: GBDTModel


@dataclass
class World:
    full: Workspace  # every charge: the offline reference
    serve: Workspace  # without the held-out charges: what the server starts from
    ids: list[str]
    live: list[dict[str, Any]]  # the held-out charges as sent to the server (with their processor outcome)
    fm: Served
    fm2: Served  # another checkpoint (pretrained with another seed) and its model
    y: np.ndarray  # fraud (synthetic truth) of every charge, in (created, charge_id) order


def _served(ws: Workspace, ckpt: Path, hand: np.ndarray, y: np.ndarray, ids: list[str]) -> Served:
    _, emb_table = embed(ws, ckpt)
    assert emb_table["charge_id"].to_pylist() == ids
    X = np.hstack([hand, embedding_matrix(emb_table).astype(np.float64)])
    names = [*tiny_set().names, *embedding_names(emb_table["embedding"].type.list_size)]
    model = GBDTModel(n_estimators=30, num_threads=1, calibration="none").fit(X, y, feature_names=names)
    return Served(ckpt, X, model)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    torch.set_num_threads(1)
    root = Path(tmp_path_factory.mktemp("servefm"))
    gen = Workspace.open(root / "gen", create=True)
    gen.write_stream(generate_world(WorldConfig(charges=3_000, days=6, seed=11, fraud_rate=0.05)), "replace")
    ids = read_charges(gen)["charge_id"].to_pylist()
    cut = int(read_charges(gen)["created_us"][len(ids) - HELD_OUT].as_py())
    # Both workspaces lack the outcomes from the cut on (the server would get them live, in time order);
    # the serving one also lacks the held-out charges.
    full = Workspace.open(root / "full", create=True)
    serve = Workspace.open(root / "serve", create=True)
    for ws, keep_charges in ((full, False), (serve, True)):
        with ws.writer("replace") as w:
            for t in ("charges", *OUTCOME_TABLES):
                if gen.files(t):
                    table = gen.read(t)
                    if t != "charges" or keep_charges:
                        table = table.filter(pc.less(pc.cast(table["created"], pa.int64()), cut))
                    w.write(t, table)
    fset = tiny_set()
    feats = load_backfill(full, fset)
    position = {cid: i for i, cid in enumerate(ids)}
    rows = np.argsort([position[c] for c in feats["charge_id"].to_pylist()])
    hand = np.column_stack([feats[n].to_numpy(zero_copy_only=False)[rows] for n in fset.names])
    truth = full.read("charges", ["charge_id", "scenario"])
    fraud = dict(zip(truth["charge_id"].to_pylist(), truth["scenario"].is_valid().to_pylist(), strict=True))
    y = np.array([fraud[i] for i in ids], dtype=int)
    fm = _served(full, pretrain(full, TINY, out=root / "fm").path, hand.astype(np.float64), y, ids)
    fm2 = _served(full, pretrain(full, replace(TINY, seed=2), out=root / "fm2").path, hand, y, ids)
    held = [r for r in full.read("charges").to_pylist() if position[r["charge_id"]] >= len(ids) - HELD_OUT]
    held.sort(key=lambda r: position[r["charge_id"]])
    live = [{k: v for k, v in r.items() if k != "scenario"} for r in held]
    # precondition: later held-out charges share merchants with earlier ones (their history is live-learned)
    half = {r["merchant_id"] for r in live[: HELD_OUT // 2]}
    assert sum(r["merchant_id"] in half for r in live[HELD_OUT // 2 :]) >= 3
    reg = Registry(serve)
    prod = reg.register(fm.model, name="fraud-fm", task="fraud", fset=fset, foundation_model=fm.ckpt)
    reg.promote(prod.ref)
    shadow = reg.register(fm.model, name="fraud-fm", task="fraud", fset=fset, foundation_model=fm.ckpt)
    reg.set_stage(shadow.ref, "shadow")  # the same model as shadow: its probability is logged exactly
    return World(full, serve, ids, live, fm, fm2, y)


def _check(world: World, decision: Any, prod: Served) -> None:
    """The decision's features, embedding and probabilities against the offline values of its charge."""
    i = world.ids.index(decision.charge_id)
    n = len(tiny_set().names)
    got_features = [decision.features[name] for name in tiny_set().names]
    assert np.allclose(np.array(got_features, dtype=np.float64), prod.X[i, :n], rtol=1e-9, atol=0)
    assert decision.embedding is not None and len(decision.embedding) == prod.X.shape[1] - n
    assert np.abs(np.array(decision.embedding) - prod.X[i, n:]).max() < 1e-5
    assert decision.risk_score == risk_score(float(prod.model.predict_proba(prod.X[i : i + 1])[0]))
    p_shadow = float(world.fm.model.predict_proba(world.fm.X[i : i + 1])[0])  # the shadow: fm's model
    assert decision.shadow["probability"] == pytest.approx(p_shadow, abs=1e-6)
    for reason in decision.reasons:
        assert not reason["feature"].startswith("fm.emb_") and "fm.emb_" not in reason["text"]


def test_served_probability_equals_offline_across_a_restart(world: World, tmp_path: Path) -> None:
    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    scorer = Scorer.open(ws)
    try:
        assert "embedding, 16 inputs" in scorer.bundle.describe()["foundation_model"]
        assert len(scorer.bundle.embedders) == 1  # model and shadow share one checkpoint: one embedder
        for charge in world.live[: HELD_OUT // 2]:
            _check(world, scorer.score(charge), world.fm)
    finally:
        scorer.close()
    # After a restart the embedder is the event log + the charges decided before (in the decision log only).
    scorer = Scorer.open(ws)
    try:
        for charge in world.live[HELD_OUT // 2 :]:
            _check(world, scorer.score(charge), world.fm)
        assert "embedding" not in scorer.score(world.live[-1]).response()  # idempotent, and not in the API
    finally:
        scorer.close()


RESULT = ("outcome", "decline_code")  # what the processor reports after the decision


def _without_result(charge: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in charge.items() if k not in RESULT}


def test_results_reported_after_the_decisions_reach_the_histories(world: World, tmp_path: Path) -> None:
    # As production sends them: each charge before authorization, its result afterwards. Later charges of
    # the same card or merchant must read the result in their history, as the offline embedding does; one
    # result comes only after a restart (the charge is pending in the warmed state), one before it.
    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    first, second = world.live[: HELD_OUT // 2], world.live[HELD_OUT // 2 :]
    late = _in_a_later_history(first, second)
    scorer = Scorer.open(ws)
    try:
        for charge in first:
            _check(world, scorer.score(_without_result(charge)), world.fm)
            if charge is not late:
                scorer.record_authorization(charge["charge_id"], *(charge[k] for k in RESULT))
    finally:
        scorer.close()
    scorer = Scorer.open(ws)
    try:
        (embedder,) = scorer.bundle.embedders.values()
        assert late["charge_id"] in embedder.store.pending  # warmed from the decision log without a result
        assert scorer.record_authorization(late["charge_id"], *(late[k] for k in RESULT))["applied"]
        assert embedder.set_outcome({**late, "outcome": "authorized"}) == 0  # set once, then not pending
        for charge in second:
            _check(world, scorer.score(_without_result(charge)), world.fm)
            scorer.record_authorization(charge["charge_id"], *(charge[k] for k in RESULT))
    finally:
        scorer.close()


def test_a_blocked_charge_is_blocked_in_the_histories(world: World, tmp_path: Path) -> None:
    # The service blocks the live charges of one merchant: never authorized, their outcome is 'blocked'
    # (as `payfm serve export` writes them), and the merchant's later charges read it in their history.
    from payfm.rules import rulesets

    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    merchants = [c["merchant_id"] for c in world.live]
    merchant = next(m for m in merchants if merchants.count(m) >= 2)
    rule = f"one: block if :merchant_id: = '{merchant}'\n"
    rulesets.save(ws, rule, activate=True, set_name=tiny_set().name, author="test")
    charges = read_charges(world.full)
    n = charges.num_rows - HELD_OUT
    reference = OnlineEmbedder.load(world.fm.ckpt)  # the log as exported: blocked charges are 'blocked'
    reference.warm(charges.slice(0, n))
    scorer = Scorer.open(ws)
    try:
        outcomes = []
        for charge in world.live:
            d = scorer.score(_without_result(charge))
            outcomes.append(d.outcome)
            blocked = charge["merchant_id"] == merchant
            sent = {**charge, "outcome": "blocked", "decline_code": None} if blocked else charge
            x = reference.inputs_then_learn(sent)
            assert d.embedding is not None
            assert np.abs(np.array(d.embedding) - reference.fm_inputs(x)).max() < 1e-5
            if not blocked:
                scorer.record_authorization(charge["charge_id"], *(charge[k] for k in RESULT))
        assert outcomes.count("blocked") == merchants.count(merchant)
    finally:
        scorer.close()


def _serve_only(ws: Workspace, served: Served, name: str) -> None:
    """Production on ``served``'s checkpoint, no shadow: the only checkpoint a reload serves."""
    reg = Registry(ws)
    for mv in reg.list():
        if mv.stage == "shadow":
            reg.set_stage(mv.ref, "archived")
    reg.promote(
        reg.register(served.model, name=name, task="fraud", fset=tiny_set(), foundation_model=served.ckpt).ref
    )


@pytest.mark.parametrize("state", ["memory", "redis"])
def test_results_reported_while_the_checkpoint_is_not_served_reach_it(
    world: World, tmp_path: Path, state: str, redis_scratch: Any
) -> None:
    # Charges decided on fm, a reload onto fm2, their results, a reload back onto fm: fm's embedder must
    # hold the results (its shared Redis state, up to date for the charges, was not for the results).
    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    first, second = world.live[: HELD_OUT // 2], world.live[HELD_OUT // 2 :]
    scorer = Scorer.open(ws, state=REDIS_URL if state == "redis" else "memory")
    try:
        for charge in first:
            scorer.score(_without_result(charge))
        _serve_only(ws, world.fm2, "fraud-fm2")
        scorer.reload()
        assert list(scorer.bundle.embedders) == [checkpoint_hash(world.fm2.ckpt)]
        for charge in first:
            scorer.record_authorization(charge["charge_id"], *(charge[k] for k in RESULT))
        _serve_only(ws, world.fm, "fraud-fm")
        scorer.reload()
        for charge in second:
            assert _gap(world, scorer.score(_without_result(charge)), world.fm) < 1e-5
            scorer.record_authorization(charge["charge_id"], *(charge[k] for k in RESULT))
    finally:
        scorer.close(snapshot=False)


def test_a_reload_takes_a_result_logged_before_its_charge(world: World, tmp_path: Path) -> None:
    # Two servers on one PostgreSQL log number their events each from its own count: b decides charges
    # (its seqs 1..20), a records results of some (its seqs 1..5, before their charges), then a reloads onto
    # another checkpoint: the fresh embedder learns those charges after its warm, with their results.
    import uuid

    import psycopg

    from payfm.serving.postgres_log import PostgresDecisionLog
    from services import POSTGRES_URL, require_postgres

    require_postgres(POSTGRES_URL)
    schema = f"payfm_test_{uuid.uuid4().hex[:8]}"
    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    first, second = world.live[: HELD_OUT // 2], world.live[HELD_OUT // 2 :]
    try:
        a = Scorer.open(ws, decision_log=PostgresDecisionLog(POSTGRES_URL, schema=schema))
        b = Scorer.open(ws, decision_log=PostgresDecisionLog(POSTGRES_URL, schema=schema))
        try:
            for charge in first:
                b.score(_without_result(charge))
            early = first[-5:]  # a's seqs 1..5 come before these charges' seqs 16..20
            for charge in first:
                (a if charge in early else b).record_authorization(
                    charge["charge_id"], *(charge[k] for k in RESULT)
                )
            _serve_only(ws, world.fm2, "fraud-fm2")
            a.reload()
            fresh = a.bundle.embedders[checkpoint_hash(world.fm2.ckpt)]
            assert not [c["charge_id"] for c in early if c["charge_id"] in fresh.store.pending]
            for charge in second:
                assert _gap(world, a.score(_without_result(charge)), world.fm2) < 1e-5
                a.record_authorization(charge["charge_id"], *(charge[k] for k in RESULT))
        finally:
            a.close(snapshot=False)
            b.close(snapshot=False)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _in_a_later_history(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> dict[str, Any]:
    """The last charge of ``first`` that a charge of ``second`` has among its card's or merchant's last K-1
    charges (what its embedding reads)."""
    live = first + second
    for i in range(len(first) - 1, -1, -1):
        for col in ("merchant_id", "card_fingerprint"):
            same = [j for j in range(i + 1, len(live)) if live[j][col] == live[i][col]]
            if any(j >= len(first) for j in same[: TINY.seq_len - 1]):
                return first[i]
    raise AssertionError("precondition: no charge of the first half is in a later charge's history")


def test_promoting_a_model_on_another_checkpoint_swaps_the_embedder(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    half = HELD_OUT // 2
    rest = world.live[half:]
    # One charge is decided while the new checkpoint's embedder warms (by the old bundle): one whose
    # merchant comes again later, so the new embedder must catch it up to serve those right.
    during = next(
        i for i, c in enumerate(rest) if any(o["merchant_id"] == c["merchant_id"] for o in rest[i + 1 :])
    )
    warm = Scorer._warm_embedders

    def warm_while_deciding(self: Scorer, fresh: Any, upto: int | None) -> Any:
        _check(world, self.score(rest[during]), world.fm)
        return warm(self, fresh, upto)

    scorer = Scorer.open(ws)
    try:
        for charge in world.live[:half]:
            _check(world, scorer.score(charge), world.fm)
        for charge in rest[:during]:
            _check(world, scorer.score(charge), world.fm)
        reg = Registry(ws)
        mv = reg.register(
            world.fm2.model, name="fraud-fm2", task="fraud", fset=tiny_set(), foundation_model=world.fm2.ckpt
        )
        reg.promote(mv.ref)
        monkeypatch.setattr(Scorer, "_warm_embedders", warm_while_deciding)
        scorer.reload()
        assert scorer.bundle.model_version is not None and scorer.bundle.model_version.ref == mv.ref
        assert len(scorer.bundle.embedders) == 2  # the shadow stays on the first checkpoint
        for charge in rest[during + 1 :]:
            _check(world, scorer.score(charge), world.fm2)
    finally:
        scorer.close()


def test_embedding_reason_groups_the_dimensions(world: World) -> None:
    from payfm.serving.fm_embeddings import explain

    contributions = world.fm.model._contributions(world.fm.X)  # (n, features)
    n = len(tiny_set().names)
    emb_net = contributions[:, n : world.fm.X.shape[1]].sum(axis=1)
    i = int(np.argmax(emb_net))
    assert emb_net[i] > 0
    reasons = explain(world.fm.model, world.fm.X[i].tolist(), top_k=world.fm.X.shape[1])
    fm = [r for r in reasons if r["feature"] == EMBEDDING_REASON]
    assert len(fm) == 1 and fm[0]["contribution"] == pytest.approx(emb_net[i])
    assert [r["contribution"] for r in reasons] == sorted((r["contribution"] for r in reasons), reverse=True)
    # the texts are built for the top k only: the same reasons as the first k of the whole list
    for k in (1, 3):
        assert explain(world.fm.model, world.fm.X[i].tolist(), top_k=k) == reasons[:k]


def test_warm_equals_learning_one_by_one(world: World) -> None:
    charges = read_charges(world.full)
    n = charges.num_rows - 40
    warmed, learned = OnlineEmbedder.load(world.fm.ckpt), OnlineEmbedder.load(world.fm.ckpt)
    assert warmed.warm(charges.slice(0, n)) == n
    for charge in charges.slice(0, n).to_pylist():
        learned.learn_one(charge)
    assert warmed.counts == learned.counts
    for charge in charges.slice(n).to_pylist():
        pre = {k: v for k, v in charge.items() if k not in ("outcome", "decline_code")}
        assert np.array_equal(warmed.inputs_one(pre), learned.inputs_one(pre))
        warmed.learn_one(charge)
        learned.learn_one(charge)
    with pytest.raises(ValueError, match="fresh embedder"):
        warmed.warm(charges)


def test_a_pretrained_again_checkpoint_is_refused_at_open(world: World, tmp_path: Path) -> None:
    ckpt = shutil.copytree(world.fm.ckpt, tmp_path / "fm")
    ws = Workspace.open(tmp_path / "ws", create=True)
    reg = Registry(ws)
    mv = reg.register(world.fm.model, name="fraud-fm", task="fraud", fset=tiny_set(), foundation_model=ckpt)
    reg.promote(mv.ref)
    shutil.rmtree(ckpt)
    shutil.copytree(world.fm2.ckpt, ckpt)  # the same path, pretrained again (another seed)
    with pytest.raises(FoundationModelMismatchError, match="pretrained again"):
        Scorer.open(ws)


def test_a_charge_of_the_event_log_is_learned_once(world: World, tmp_path: Path) -> None:
    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    known = ws.read("charges").to_pylist()[-1]  # in the log the server warmed from, decided (again) now
    scorer = Scorer.open(ws)
    try:
        (embedder,) = scorer.bundle.embedders.values()
        before = {name: dict(counts) for name, counts in embedder.counts.items()}
        scorer.score({k: v for k, v in known.items() if k != "scenario"})
        assert embedder.counts == before
        assert embedder.counts["card_n"][known["card_fingerprint"]] >= 1
    finally:
        scorer.close()


def test_a_caller_managed_state_warms_the_embedders_itself(world: World, tmp_path: Path) -> None:
    from payfm.features.stores import MemoryStore

    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    scorer = Scorer.open(ws, state=MemoryStore())  # as a replay opens it: it warms with its own history
    try:
        (embedder,) = scorer.bundle.embedders.values()
        assert not any(embedder.counts.values())
        assert scorer.warm_embedders(ws) == ws.count("charges") == len(world.ids) - HELD_OUT
        assert sum(embedder.counts["card_n"].values()) == ws.count("charges")
    finally:
        scorer.close(snapshot=False)


def test_a_replay_serves_the_fm_model_with_the_history_before_it(world: World, tmp_path: Path) -> None:
    from payfm.serving.replay import replay_in_process

    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    created = sorted(ws.read("charges")["created"].to_pylist())
    start = created[-15]
    decisions: list[Any] = []
    rep = replay_in_process(ws, start, None, on_decision=decisions.append)
    assert len(decisions) == sum(c >= start for c in created) >= 15
    for d in decisions:  # each as the offline values of the full log: the embedders saw the same history
        _check(world, d, world.fm)
    assert rep.warmed == sum(c < start for c in created)


def test_a_model_on_embedding_and_surprise_is_served_as_offline(world: World, tmp_path: Path) -> None:
    """A shadow taking the embedding and the surprise, beside the production model taking the embedding
    only (one embedder computes both): its logged probability is the offline one, charge by charge."""
    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    _, table = embed(world.full, world.fm.ckpt, outputs=("embedding", "surprise"))
    X = np.hstack([world.fm.X, embedding_matrix(table, "surprise").astype(np.float64)])
    names = [*world.fm.model.feature_names_, *surprise_names(checkpoint_meta(world.fm.ckpt))]
    model = GBDTModel(n_estimators=30, num_threads=1, calibration="none").fit(X, world.y, feature_names=names)
    reg = Registry(ws)
    with pytest.raises(Exception, match="foundation-model inputs"):  # registered without the surprise
        reg.register(model, name="fraud-fms", task="fraud", fset=tiny_set(), foundation_model=world.fm.ckpt)
    with pytest.raises(Exception, match="embedding, surprise"):
        reg.register(
            model, name="fraud-fms", task="fraud", fset=tiny_set(), foundation_model=world.fm.ckpt,
            fm_outputs=("embedding", "novelty"),
        )  # fmt: skip
    mv = reg.register(
        model,
        name="fraud-fms",
        task="fraud",
        fset=tiny_set(),
        foundation_model=world.fm.ckpt,
        fm_outputs=("embedding", "surprise"),
    )
    assert mv.entry["foundation_model"]["outputs"] == ["embedding", "surprise"]
    reg.set_stage(mv.ref, "shadow")
    scorer = Scorer.open(ws)
    try:
        assert scorer.bundle.shadow_version is not None and scorer.bundle.shadow_version.ref == mv.ref
        assert len(scorer.bundle.embedders) == 1
        for charge in world.live:
            d = scorer.score(charge)
            i = world.ids.index(d.charge_id)
            assert d.shadow["probability"] == pytest.approx(
                float(model.predict_proba(X[i : i + 1])[0]), abs=1e-6
            )
            p_prod = float(world.fm.model.predict_proba(world.fm.X[i : i + 1])[0])  # embedding only
            assert d.risk_score == risk_score(p_prod)
    finally:
        scorer.close()
    # Surprise inputs explain one by one, in words naming the field and the view.
    surprising = [
        r
        for row in X[-200:]
        for r in explain(model, list(row), top_k=len(names))
        if r["feature"].startswith("fm.surprise_")
    ]
    assert surprising  # the model uses the surprise: some charges have it among their reasons
    for r in surprising:
        view, field = r["feature"].removeprefix("fm.surprise_").split("_", 1)
        typical = float(r["text"].rsplit("typical: ", 1)[1][:-1])
        usual = r["value"] is not None and round(r["value"], 1) <= typical  # (no higher than typical)
        said = "as usual" if usual else "unexpected"
        assert f"{field} {said} for this {view}'s recent charges" in r["text"], r


REDIS_URL = REDIS_SCRATCH_URL  # a database of its own, emptied before and after each test (redis_scratch)


def _gap(world: World, decision: Any, served: Served) -> float:
    """The largest difference between a decision's embedding and the offline one of its charge."""
    assert decision.embedding is not None
    offline = served.X[world.ids.index(decision.charge_id), len(tiny_set().names) :]
    return float(np.abs(np.array(decision.embedding) - offline).max())


def _alternate(world: World, tmp_path: Path, state: str, authorize_after: bool = False) -> list[float]:
    """Two scorers (two serving processes) decide the held-out charges in turn; each decision's embedding's
    largest difference from the offline embedding of its charge (the full log, in order). With
    ``authorize_after``, each charge is sent without its outcome, then its result is reported."""
    scorers = [Scorer.open(Workspace.open(shutil.copytree(world.serve.root, tmp_path / n))) for n in "ab"]
    for s in scorers:  # reopen on the state under test (copies first: each has its own decision log)
        s.close(snapshot=False)
    scorers = [Scorer.open(Workspace.open(tmp_path / n), state=state) for n in "ab"]
    diffs = []
    try:
        for i, charge in enumerate(world.live):
            scorer = scorers[i % 2]
            sent = {k: v for k, v in charge.items() if k not in RESULT} if authorize_after else charge
            diffs.append(_gap(world, scorer.score(sent), world.fm))
            if authorize_after:
                scorer.record_authorization(charge["charge_id"], *(charge[k] for k in RESULT))
    finally:
        for s in scorers:
            s.close(snapshot=False)
    return diffs


def test_two_serving_processes_on_redis_embed_as_one(
    world: World, tmp_path: Path, redis_scratch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from payfm.fm.online_state import RedisState
    from payfm.serving.decision_log import DecisionLog

    shared = _alternate(world, tmp_path / "redis", REDIS_URL)
    assert max(shared) < 1e-5  # each saw the other's charges: the offline history of every charge
    assert redis_scratch.exists(*[k for k in redis_scratch.scan_iter("payfm:fm:*:warm")]) == 1  # loaded once
    # in process, each learns only its own charges: the later charges' histories miss the other's
    apart = _alternate(world, tmp_path / "memory", "memory")
    assert sum(d > 1e-5 for d in apart) >= 3
    # a restart on the shared, up-to-date state checks the last decided ids; it reads no logged payload
    reads: list[int] = []
    monkeypatch.setattr(DecisionLog, "events_after", lambda log, seq, *a, **k: reads.append(seq) or [])
    scorer = Scorer.open(Workspace.open(tmp_path / "redis" / "a"), state=REDIS_URL)
    try:
        (embedder,) = scorer.bundle.embedders.values()
        assert isinstance(embedder.store, RedisState)
        assert reads == []
    finally:
        scorer.close(snapshot=False)


def test_healthz_says_when_an_embedders_shared_state_is_gone(
    world: World, tmp_path: Path, redis_scratch: Any
) -> None:
    """Found by an SRE audit: /healthz checked the features' Redis state only; with the embedder's gone (its
    load marker deleted), servers embedded from empty histories and said "ok"."""
    scorer = Scorer.open(Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws")), state=REDIS_URL)
    try:
        assert scorer.health() == []
        [h] = scorer.bundle.embedders
        redis_scratch.delete(*redis_scratch.scan_iter("payfm:fm:*:warm"))
        assert scorer.health() == [
            f"the embedder state of {h} in Redis is gone (its load marker is missing: Redis restarted empty "
            "or was flushed); restart the servers to load it from the logs again"
        ]
    finally:
        scorer.close(snapshot=False)


def test_results_reported_after_the_decisions_reach_a_shared_state(
    world: World, tmp_path: Path, redis_scratch: Any
) -> None:
    # each server's result rewrites the pending charge's rows in Redis: the other reads them set
    assert max(_alternate(world, tmp_path, REDIS_URL, authorize_after=True)) < 1e-5


@pytest.mark.parametrize("state", ["memory", "redis"])
def test_a_warmed_pending_charge_takes_its_result(world: World, state: str, redis_scratch: Any) -> None:
    # Warmed from charges of which the last ones were decided without outcome (no result yet): their
    # results set them in the warmed histories, after which the state is the one warmed with the outcomes.
    charges = read_charges(world.full)
    n = charges.num_rows - HELD_OUT
    known = charges.slice(0, n)
    pending_at = np.arange(n - 60, n)  # the last 60 charges: every recent history holds some
    nulled = [
        pa.array([None if i >= n - 60 else v for i, v in enumerate(known[c].to_pylist())], known[c].type)
        for c in RESULT
    ]
    unknown = known.set_column(known.schema.get_field_index("outcome"), "outcome", nulled[0])
    unknown = unknown.set_column(unknown.schema.get_field_index("decline_code"), "decline_code", nulled[1])
    where = REDIS_URL if state == "redis" else "memory"
    reference, warmed = OnlineEmbedder.load(world.fm.ckpt), OnlineEmbedder.load(world.fm.ckpt, where, "t-p")
    assert reference.warm(known) == warmed.warm(unknown) == n
    later = [_without_result(c) for c in charges.slice(n).to_pylist()]
    assert any(not np.array_equal(reference.inputs_one(c), warmed.inputs_one(c)) for c in later)
    rows = [warmed.set_outcome(c) for c in known.take(pa.array(pending_at)).to_pylist()]
    assert sum(rows) > 0 and all(r <= 2 for r in rows)  # at most one row per view
    for charge in later:
        assert np.array_equal(reference.inputs_one(charge), warmed.inputs_one(charge))


@pytest.mark.parametrize("state", ["memory", "redis"])
def test_the_first_result_wins_and_pending_rows_leave_with_their_histories(
    world: World, state: str, redis_scratch: Any
) -> None:
    charges = read_charges(world.full).to_pylist()
    embedder = OnlineEmbedder.load(world.fm.ckpt, REDIS_URL if state == "redis" else "memory", "t-first")
    for charge in charges:  # every charge decided without its outcome, no result ever reported
        embedder.learn_one(_without_result(charge))
    last = charges[-1]
    probe = {**last, "charge_id": "probe", "created_us": last["created_us"] + 1}
    before = embedder.inputs_one(probe)
    assert embedder.set_outcome({**last, "outcome": "authorized"}) == 2  # its card's and merchant's rows
    after = embedder.inputs_one(probe)
    assert not np.array_equal(before, after)
    declined = {**last, "outcome": "issuer_declined", "decline_code": "stolen_card"}
    assert embedder.set_outcome(declined) == 0 and np.array_equal(embedder.inputs_one(probe), after)
    if state == "memory":  # what is remembered is what the histories still hold, not every charge
        store = embedder.store
        assert isinstance(store, MemoryState)
        held = sum(len(e.rows) for view in store.views for e in view.values())
        assert held < 2 * len(charges)  # precondition: the histories dropped rows
        assert sum(len(rows) for rows in store.pending.values()) == held - 2  # less the two set


def test_redis_state_learns_a_charge_once_and_reads_as_memory(world: World, redis_scratch: Any) -> None:
    from payfm.fm.online_state import RedisState

    charges = read_charges(world.full)
    n = charges.num_rows - HELD_OUT
    mem = OnlineEmbedder.load(world.fm.ckpt)
    shared = OnlineEmbedder.load(world.fm.ckpt, REDIS_URL, namespace="t-once")
    other = OnlineEmbedder.load(world.fm.ckpt, REDIS_URL, namespace="t-once")  # a second process
    assert mem.warm(charges.slice(0, n)) == shared.warm(charges.slice(0, n)) == n
    assert other.warm(charges.slice(0, n)) == 0  # loaded by the first: not loaded twice
    for i, charge in enumerate(charges.slice(n).to_pylist()):
        pre = {k: v for k, v in charge.items() if k not in ("outcome", "decline_code")}
        on = shared if i % 2 else other
        assert np.array_equal(on.inputs_then_learn(charge), mem.inputs_then_learn(charge))
        assert np.array_equal(shared.inputs_one(pre), other.inputs_one(pre))
    # the same charge again (a retry, or both processes): learned once
    last = charges.slice(charges.num_rows - 1).to_pylist()[0]
    before = shared.inputs_one(last)
    assert isinstance(other.store, RedisState)
    assert not other.store.learn(_learned(other, last))
    assert np.array_equal(shared.inputs_one(last), before)


def _learned(embedder: OnlineEmbedder, charge: dict[str, Any]) -> Any:
    from payfm.fm.online_state import Learned

    created, rows, _ = embedder._rows(charge)
    return Learned(
        str(charge["charge_id"]),
        (charge["card_fingerprint"], charge["merchant_id"]),
        tuple(rows),
        created,
        charge.get("ip_address"),
        charge.get("device_id"),
        (charge["merchant_id"], charge["card_fingerprint"]),
        {"card_n": charge["card_fingerprint"]},
    )


def test_redis_state_errors_name_the_server_and_the_namespace(world: World, redis_scratch: Any) -> None:
    from payfm.errors import ConfigError
    from payfm.fm.online_state import RedisState

    with pytest.raises(ConfigError, match=r"redis://127\.0\.0\.1:1/0.*not reachable"):
        OnlineEmbedder.load(world.fm.ckpt, "redis://127.0.0.1:1/0")
    with pytest.raises(ConfigError, match="must be 'memory' or a redis://, rediss:// or unix:// URL"):
        OnlineEmbedder.load(world.fm.ckpt, "postgres://x")
    state = RedisState(REDIS_URL, "t-lock", keep=3, n_fields=20)
    redis_scratch.set("payfm:fm:t-lock:warming", b"1")  # another process is loading it
    with pytest.raises(ConfigError, match=r"payfm:fm:t-lock.*being loaded by another process"):
        state.begin_load(timeout_s=0.5)


def _promote_on(reg: Registry, fm: Served, name: str) -> None:
    """Register ``fm``'s model (on the tiny set, with its checkpoint) as ``name`` and promote it."""
    mv = reg.register(fm.model, name=name, task="fraud", fset=tiny_set(), foundation_model=fm.ckpt)
    reg.promote(mv.ref)


def test_a_promotion_on_redis_loads_the_new_checkpoints_state(
    world: World, tmp_path: Path, redis_scratch: Any
) -> None:
    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    half = HELD_OUT // 2
    scorer = Scorer.open(ws, state=REDIS_URL)
    try:
        for charge in world.live[:half]:
            assert _gap(world, scorer.score(charge), world.fm) < 1e-5
        fm_ns = f"payfm:fm:{checkpoint_hash(world.fm.ckpt)[:16]}"
        fm2_ns = f"payfm:fm:{checkpoint_hash(world.fm2.ckpt)[:16]}"
        assert live_servers(redis_scratch, fm_ns) and not live_servers(redis_scratch, fm2_ns)
        _promote_on(Registry(ws), world.fm2, "fraud-fm2")
        scorer.reload()  # the new checkpoint's state: loaded into Redis from the log and the decisions
        assert len(list(redis_scratch.scan_iter("payfm:fm:*:warm"))) == 2
        assert live_servers(redis_scratch, fm2_ns)  # `serve state drop` now refuses it
        for charge in world.live[half:]:
            assert _gap(world, scorer.score(charge), world.fm2) < 1e-5
    finally:
        scorer.close(snapshot=False)


def test_a_shared_state_nobody_fed_is_loaded_again(world: World, tmp_path: Path, redis_scratch: Any) -> None:
    """Serve checkpoint fm on Redis, move to fm2 (fm no longer served, its state no longer fed), then back:
    fm's state in Redis misses the charges decided meanwhile, so it is loaded again from the logs."""
    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    reg = Registry(ws)
    for mv in reg.list("fraud-fm"):
        if mv.stage == "shadow":
            reg.set_stage(mv.ref, "archived")  # else the shadow keeps fm's embedder fed
    third = HELD_OUT // 3
    scorer = Scorer.open(ws, state=REDIS_URL)
    try:
        for charge in world.live[:third]:
            scorer.score(charge)
        _promote_on(reg, world.fm2, "fraud-fm2")
        scorer.reload()
        for charge in world.live[third : 2 * third]:
            scorer.score(charge)
        _promote_on(reg, world.fm, "fraud-fm")
        scorer.reload()
        for charge in world.live[2 * third :]:
            assert _gap(world, scorer.score(charge), world.fm) < 1e-5
    finally:
        scorer.close(snapshot=False)


def test_a_charge_of_the_event_log_decided_again_on_redis_is_learned_once(
    world: World, tmp_path: Path, redis_scratch: Any
) -> None:
    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    known = ws.read("charges").to_pylist()[-1]  # loaded into Redis at start, decided (again) now
    scorer = Scorer.open(ws, state=REDIS_URL)
    try:
        (embedder,) = scorer.bundle.embedders.values()
        keys, values = (
            [known["card_fingerprint"], known["merchant_id"]],
            {"card_n": known["card_fingerprint"]},
        )
        before = embedder.store.read(keys, values)
        assert before[1]["card_n"] >= 1
        scorer.score({k: v for k, v in known.items() if k != "scenario"})
        # the features' state knows the charge (loaded with the log), so the embedder does not learn it
        assert embedder.store.read(keys, values)[1] == before[1]
        for now, then in zip(embedder.store.read(keys, values)[0], before[0], strict=True):
            assert now is not None and then is not None  # the card and the merchant: their histories
            assert np.array_equal(np.stack(list(now.rows)), np.stack(list(then.rows)))
    finally:
        scorer.close(snapshot=False)


def test_a_failed_load_releases_the_lock_and_decided_charges_are_claimed(
    world: World, redis_scratch: Any
) -> None:
    from payfm.fm.online_state import RedisState

    charges = read_charges(world.full)
    first = OnlineEmbedder.load(world.fm.ckpt, REDIS_URL, namespace="t-fail")
    with pytest.raises(ValueError, match="sequences of 1 charges"):
        first.warm(charges, sequences=build_sequences(charges.slice(0, 1), first.tokenizer, first.k))
    assert not redis_scratch.exists("payfm:fm:t-fail:warming")  # released: another process may load it
    second = OnlineEmbedder.load(world.fm.ckpt, REDIS_URL, namespace="t-fail")
    decided = charges.slice(charges.num_rows - 5).to_pylist()
    assert second.warm(charges, claims=[c["charge_id"] for c in decided]) == charges.num_rows
    assert isinstance(second.store, RedisState) and second.store.learned_all(
        [c["charge_id"] for c in decided]
    )
    before = second.inputs_one(decided[-1])
    second.learn_one(decided[-1])  # a late copy of a decided charge the load holds: not learned again
    assert np.array_equal(second.inputs_one(decided[-1]), before)
