"""Model versions as files under ``models/<name>/<version>/`` plus a SQLite index ``models/registry.db``.

A version holds the model's artifact (``model.json`` + safetensors / LightGBM text, never pickle) and an
``entry.json`` with what rebuilds it: task, feature set name and version, data window, parameters, code
version and metrics. Its content hash (sha256 over the artifact files) is recorded at registration and
checked at every load: a changed byte is refused. Stages: candidate -> shadow -> production -> archived.
A workspace has one production version, whatever its name: the one the decision service decides with.
Promoting a version archives the production one (of any name); rollback restores it.

A model that takes foundation-model embeddings as inputs (features ``fset.names`` + ``fm.emb_0..D-1``) is
registered with ``foundation_model=<checkpoint>``: the entry records the checkpoint's path and content hash
(:func:`payfm.fm.identity.checkpoint_hash`), and promote and load refuse it when that checkpoint (or the one
passed to ``load``) has another hash: the GBDT and the embeddings it was trained on move together.

Example:
    >>> import tempfile
    >>> from payfm.events.workspace import Workspace
    >>> Registry(Workspace.open(tempfile.mkdtemp(), create=True)).list()
    []
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payfm import interrupts
from payfm.errors import ConfigError, PayfmError, sqlite_file
from payfm.events.cards import name_holds_card_number
from payfm.events.workspace import Workspace, atomic_write_bytes, json_ready, opened
from payfm.features.definitions import FeatureSet, refuse_card_numbers
from payfm.fm.identity import check_outputs, checkpoint_hash, checkpoint_meta, embedding_dims, input_names
from payfm.training.models import Model, load_model

STAGES = ("candidate", "shadow", "production", "archived")
_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]*")  # (fullmatch: no trailing line break)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, stage TEXT NOT NULL, kind TEXT NOT NULL, task TEXT NOT NULL,
    feature_set TEXT NOT NULL, feature_set_version TEXT NOT NULL, created_at TEXT NOT NULL,
    content_hash TEXT NOT NULL, entry TEXT NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS stage_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, version INTEGER NOT NULL, action TEXT NOT NULL,
    previous INTEGER, at TEXT NOT NULL);
"""
# Added later: the name of the version a promotion replaced (NULL: the same name, as in older registries).
_PREVIOUS_NAME = "ALTER TABLE stage_log ADD COLUMN previous_name TEXT"


FRAUD_TASK = "fraud"  # what the production and shadow models predict: the decision service's risk


class RegistryError(PayfmError):
    """The registry cannot do what was asked."""


class UnknownModelError(RegistryError):
    """No such model name or version."""


class ArtifactIntegrityError(RegistryError):
    """A model's files do not match the content hash recorded at registration."""


class FeatureSetMismatchError(RegistryError):
    """A model was loaded against a feature set other than the one it was trained on."""


class FoundationModelMismatchError(RegistryError):
    """A model trained on embeddings met another foundation-model checkpoint than the one it was fitted on."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version (``entry`` holds window, params, metrics, code version...)."""

    name: str
    version: int
    stage: str
    kind: str
    task: str
    feature_set: str
    feature_set_version: str
    created_at: str
    content_hash: str
    entry: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def entry_json(value: Any, indent: int | None = None) -> str:
    """``value`` (an entry, a :meth:`ModelVersion.to_json`) as standard JSON, as ``entry.json``, the index
    and ``payfm models show`` hold it: NaN and infinities as null (a test AP without a test fraud is NaN,
    and a bare ``NaN`` is no JSON: other readers refuse it), other values JSON has no type for as text.

    >>> entry_json({"metrics": {"test_ap": float("nan")}, "at": datetime(2026, 3, 1)})
    '{"metrics": {"test_ap": null}, "at": "2026-03-01 00:00:00"}'
    """
    return json.dumps(json_ready(value), indent=indent, default=str, allow_nan=False)


def read_entry(text: str | bytes) -> dict[str, Any]:
    """An entry as written by :func:`entry_json`, or by payfm before it, with bare ``NaN`` (Python's json
    reads it): its ``metrics`` without a value (null) read back as NaN, as they were registered, so that
    ``entry["metrics"]`` holds floats whenever it was written."""
    entry: dict[str, Any] = json.loads(text)
    metrics = entry.get("metrics")
    if isinstance(metrics, dict):
        entry["metrics"] = {k: float("nan") if v is None else v for k, v in metrics.items()}
    return entry


def code_version() -> str:
    """``git describe`` of the source tree when it is a checkout, else the package version."""
    from payfm import __version__

    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return f"{__version__}+git.{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return __version__


STALE_TMP_S = 3600.0  # a registration writes its files in seconds: an older .tmp-* was left by a kill


def _sweep_stale_tmp(folder: Path, keep: Path) -> None:
    """Remove the ``.tmp-*`` folders a killed registration left (kill -9 skips its cleanup). Only those
    untouched for an hour: another process may be writing a fresh one, outside the index's lock."""
    now = time.time()
    for old in folder.glob(".tmp-*"):
        try:
            if old != keep and now - old.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # (gone already: another registration swept it)
            continue


def content_hash(path: Path) -> str:
    """sha256 over the artifact files of a version directory (names and bytes, sorted; not entry.json)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != "entry.json"):
        rel = f.relative_to(path).as_posix()
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _text(value: object, what: str) -> str:
    """``value`` when it is a text; otherwise an :class:`UnknownModelError` naming ``what`` (a reference,
    a name) and what came, rather than an AttributeError from deep inside the registry."""
    if isinstance(value, str):
        return value
    raise UnknownModelError(f"{what} must be a text. Got {value!r} ({type(value).__name__}).")


_REF = f"The model reference (name, name@<version> or name@<stage>: {', '.join(STAGES)})"


def newest(versions: Iterable[ModelVersion]) -> ModelVersion | None:
    """The newest of ``versions`` (None: none): of production versions, the one the decision service
    decides with (registries older than one production version per workspace may hold several)."""
    return max(versions, key=lambda v: (v.created_at, v.version), default=None)


class Registry:
    """The registry of a workspace (``<workspace>/models``)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = opened(ws, "Registry")
        self.root = self.ws.root / "models"

    def __repr__(self) -> str:
        """``Registry('<workspace>', 3 versions)``: read only (a registry not written yet holds none; one
        that cannot be read says so rather than failing a notebook's print)."""
        path = self.root / "registry.db"
        count: str = "0"
        if path.is_file():
            try:
                con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
                try:
                    count = str(con.execute("SELECT count(*) FROM versions").fetchone()[0])
                finally:
                    con.close()
            except sqlite3.Error:
                count = "?"
        return f"Registry({str(self.ws.root)!r}, {count} version{'' if count == '1' else 's'})"

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "registry.db"
        # (in the whole block, a damaged file or a write the system refuses is one error naming the file)
        with sqlite_file(path, "The model registry"):
            con = sqlite3.connect(path, timeout=30, isolation_level=None)
            try:
                con.executescript(_SCHEMA)
                con.execute("BEGIN IMMEDIATE")
                if "previous_name" not in {r[1] for r in con.execute("PRAGMA table_info(stage_log)")}:
                    con.execute(_PREVIOUS_NAME)
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            finally:
                con.close()

    @staticmethod
    def _row(r: tuple[Any, ...]) -> ModelVersion:
        name, version, stage, kind, task, fs, fsv, created, digest, entry = r
        entry = read_entry(entry)
        return ModelVersion(name, int(version), stage, kind, task, fs, fsv, created, digest, entry)

    _COLS = (
        "name, version, stage, kind, task, feature_set, feature_set_version, created_at, content_hash, entry"
    )

    # ---- writing ------------------------------------------------------------------------------------------
    def register(
        self,
        model: Model,
        *,
        name: str,
        task: str,
        fset: FeatureSet,
        data_window: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        extra: dict[str, Any] | None = None,
        stage: str = "candidate",
        foundation_model: str | os.PathLike[str] | None = None,
        fm_outputs: Sequence[str] = ("embedding",),
        fm_hash: str | None = None,
    ) -> ModelVersion:
        """Save ``model`` as the next version of ``name`` and index it; returns the new version.

        ``foundation_model``: the checkpoint whose ``fm_outputs`` (``embedding``: inputs ``fm.emb_0..D-1``;
        ``surprise``: ``fm.surprise_<view>_<field>``) the model takes after the feature set's features;
        its path, content hash and the outputs are recorded. ``fm_hash``: its content hash when the model's
        inputs were computed (the trainer's): refused when the checkpoint holds other weights now (a
        pretraining saved it again while the model trained), as the model would be recorded with weights it
        never read.

        ``stage`` production or shadow: registered as a candidate, then moved there by :meth:`set_stage`, with
        the checks and the archiving of a promotion (a version registered straight into production skipped
        them: two production versions, a ``retry_success`` model deciding, no rollback); when a check
        refuses, the version stays a candidate.
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name_holds_card_number(name):
            pan = isinstance(name, str) and name_holds_card_number(name)
            got = "a name holding a card number (PAN)" if pan else repr(name)
            raise RegistryError(
                f"The registry name must be lower-case letters, digits, '_' or '-', and no card number. "
                f"Got {got}."
            )
        self._check_stage(stage)
        wanted, stage = stage, "candidate" if stage in ("production", "shadow") else stage
        refuse_card_numbers(fset)  # its names go into the model's files and every decision's reasons
        fm_entry: dict[str, Any] = {}
        expected = list(fset.names)
        if foundation_model is not None:
            fm_path = Path(foundation_model).resolve()
            meta = checkpoint_meta(fm_path)
            outputs = check_outputs(fm_outputs)
            expected += input_names(meta, outputs)
            digest = checkpoint_hash(fm_path)
            if fm_hash is not None and fm_hash != digest:
                raise RegistryError(
                    f"The foundation model '{fm_path}' changed since the model's inputs were computed from "
                    f"it (content hash {fm_hash[:16]} then, {digest[:16]} now: pretrained again while the "
                    "model trained): nothing registered; train again."
                )
            fm_entry = {
                "foundation_model": {
                    "checkpoint": self._recorded(fm_path),
                    "content_hash": digest,
                    "embedding_dims": embedding_dims(meta),
                    "outputs": list(outputs),
                    "input_dims": len(expected) - len(fset.names),
                    "tokenizer_version": meta.get("tokenizer_version"),
                }
            }
        if list(getattr(model, "feature_names_", [])) != expected:
            with_fm = (
                f" + {len(expected) - len(fset.names)} foundation-model inputs ({', '.join(outputs)})"
                if fm_entry
                else ""
            )
            raise FeatureSetMismatchError(
                f"Model '{name}' was fitted on {len(getattr(model, 'feature_names_', []))} features that are "
                f"not those of feature set '{fset.name}'{with_fm} "
                f"({len(expected)} features, version {fset.version})."
            )
        tmp = self.root / name / f".tmp-{uuid.uuid4().hex}"
        model.save(tmp)
        digest = content_hash(tmp)
        created = datetime.now(UTC).isoformat()
        entry = {
            "kind": model.kind,
            "task": task,
            "feature_set": fset.name,
            "feature_set_version": fset.version,
            "data_window": data_window or {},
            "params": params or model.params,  # as given (the defaults left out)
            # everything the fit used, defaults included: rebuilds the model after a later payfm's defaults
            # change (``Model(**effective_params)``), with the libraries' versions
            "effective_params": model.effective_params(),
            "libraries": model.library_versions(),
            "metrics": metrics or {},
            "code_version": code_version(),
            "content_hash": digest,
            "created_at": created,
            **fm_entry,
            **(extra or {}),
        }
        try:
            with self._db() as con:
                row = con.execute("SELECT max(version) FROM versions WHERE name = ?", (name,)).fetchone()
                version = int(row[0] or 0) + 1
                entry["version"] = version
                atomic_write_bytes(tmp / "entry.json", entry_json(entry, indent=1).encode())
                final = self.root / name / str(version)
                if final.exists():  # a leftover of a crashed registration that never reached the index
                    shutil.rmtree(final)
                _sweep_stale_tmp(self.root / name, keep=tmp)
                interrupts.check()
                os.replace(tmp, final)
                con.execute(
                    f"INSERT INTO versions ({self._COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        version,
                        stage,
                        model.kind,
                        task,
                        fset.name,
                        fset.version,
                        created,
                        digest,
                        entry_json(entry),
                    ),
                )
                con.execute(
                    "INSERT INTO stage_log (name, version, action, previous, at) VALUES (?, ?, ?, NULL, ?)",
                    (name, version, f"register:{stage}", created),
                )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return (
            self.get(f"{name}@{version}") if wanted == stage else self.set_stage(f"{name}@{version}", wanted)
        )

    _LOG_STAGE = "INSERT INTO stage_log (name, version, action, previous, at) VALUES (?, ?, ?, NULL, ?)"

    @staticmethod
    def _check_stage(stage: str) -> None:
        if stage not in STAGES:
            raise RegistryError(f"The stage must be one of {', '.join(STAGES)}. Got {stage!r}.")

    def set_stage(self, ref: str, stage: str) -> ModelVersion:
        """Move a version to ``stage``; to production goes through :meth:`promote`. A workspace has one
        shadow version too, as servers run one: making a version shadow archives the one that was."""
        self._check_stage(stage)
        if stage == "production":
            return self.promote(ref)
        mv = self.get(ref)
        if stage == "shadow":  # servers run it beside production
            self.check_decides_fraud(mv, stage)
        with self._db() as con:
            now = datetime.now(UTC).isoformat()
            if stage == "shadow":  # what promote checks, under the lock as it does: a server would refuse it
                self._check_servable(mv)
                shadows = con.execute(
                    "SELECT name, version FROM versions "
                    "WHERE stage = 'shadow' AND NOT (name = ? AND version = ?)",
                    (mv.name, mv.version),
                ).fetchall()
                for name, version in shadows:  # (servers ran the newest of several: one is what they run)
                    con.execute(
                        "UPDATE versions SET stage = 'archived' WHERE name = ? AND version = ?",
                        (name, version),
                    )
                    con.execute(self._LOG_STAGE, (name, version, "stage:archived", now))
            con.execute(
                "UPDATE versions SET stage = ? WHERE name = ? AND version = ?", (stage, mv.name, mv.version)
            )
            con.execute(self._LOG_STAGE, (mv.name, mv.version, f"stage:{stage}", now))
        return self.get(mv.ref)

    def promote(self, ref: str) -> ModelVersion:
        """Make ``ref`` the production version: the one the decision service decides with. Every other
        production version, of any name, is archived; :meth:`rollback` restores the one that decided (the
        newest, as the decision service picks).

        A model trained on embeddings is promoted only while its foundation-model checkpoint is unchanged,
        and any model only on a feature set the decision service can compute, at the version it was trained
        on (:meth:`check_servable_features`).
        """
        mv = self.get(ref)
        self.check_decides_fraud(mv, "production")
        with self._db() as con:
            self._check_servable(mv)
            prod = [
                self._row(r)
                for r in con.execute(f"SELECT {self._COLS} FROM versions WHERE stage = 'production'")
            ]
            if [(v.name, v.version) for v in prod] == [(mv.name, mv.version)]:
                return mv
            others = [v for v in prod if (v.name, v.version) != (mv.name, mv.version)]
            for v in others:
                con.execute(
                    "UPDATE versions SET stage = 'archived' WHERE name = ? AND version = ?",
                    (v.name, v.version),
                )
            deciding = newest(prod)
            # What rollback restores: the version that decided (in registries older than one production
            # version per workspace several were production, and the service took the newest); none when
            # ``mv`` itself decided.
            prev = (
                None
                if deciding is None or (deciding.name, deciding.version) == (mv.name, mv.version)
                else deciding
            )
            con.execute(
                "UPDATE versions SET stage = 'production' WHERE name = ? AND version = ?",
                (mv.name, mv.version),
            )
            con.execute(
                "INSERT INTO stage_log (name, version, action, previous, previous_name, at) "
                "VALUES (?, ?, 'promote', ?, ?, ?)",
                (
                    mv.name,
                    mv.version,
                    None if prev is None else prev.version,
                    None if prev is None else prev.name,
                    datetime.now(UTC).isoformat(),
                ),
            )
        return self.get(mv.ref)

    def _check_servable(self, mv: ModelVersion) -> None:
        """Raise unless a decision service would load ``mv``: its files, its foundation model and its feature
        set's definitions as it was trained. Called with the registry's lock held, which
        :func:`~payfm.features.catalog.define_set` holds too while it checks that no production or shadow
        model reads a set it replaces and writes it: of a promotion and a redefinition at once, the later
        sees what the earlier did (checked before the lock, a promotion could read the old definitions and
        a redefinition see no served model, and both go through)."""
        self.check_artifact(mv)  # servers would refuse it: refuse it here, before it serves
        self.check_foundation_model(mv)
        self.check_servable_features(mv)

    @staticmethod
    def check_decides_fraud(mv: ModelVersion, stage: str) -> None:
        """Raise :class:`RegistryError` unless ``mv`` predicts fraud: the production and shadow models give
        the decision service's risk score (a retry-success model promoted archived the fraud model, and the
        service then decided fraud with it)."""
        if mv.task != FRAUD_TASK:
            raise RegistryError(
                f"{mv.ref} predicts '{mv.task}', but the {stage} model gives the decision service's fraud "
                f"risk score: expected a model of task '{FRAUD_TASK}'. Keep {mv.ref} registered (a "
                "candidate) and score with it in Python (payfm.training.predict.score_window)."
            )

    def check_servable_features(self, mv: ModelVersion) -> None:
        """Raise :class:`FeatureSetMismatchError` unless the decision service can compute ``mv``'s features:
        its feature set is one this payfm bundles, at the version it was trained on."""
        from payfm.features.catalog import FEATURE_SETS, feature_set, workspace_sets

        try:
            current = feature_set(mv.feature_set, self.root.parent).version
        except ConfigError:
            sets = ", ".join([*FEATURE_SETS, *workspace_sets(self.root.parent)])
            raise FeatureSetMismatchError(
                f"Model {mv.ref} was trained on feature set '{mv.feature_set}', which neither this payfm nor "
                f"the workspace defines ({sets}): the decision service could not compute its features. "
                "Define it with the set's definitions (payfm features define FILE.json; in Python "
                "payfm.features.catalog.define_set(ws, fset)), or retrain it on one of those."
            ) from None
        if current != mv.feature_set_version:
            raise FeatureSetMismatchError(
                f"Model {mv.ref} was trained on feature set '{mv.feature_set}' version "
                f"{mv.feature_set_version}; this payfm computes version {current} (its definitions "
                "changed since): the decision service would refuse it. "
                f"Retrain it (payfm train --set {mv.feature_set})."
            )

    def ruleset_disagrees(self, mv: ModelVersion) -> str | None:
        """Why a decision service would refuse ``mv`` in production beside the active ruleset, written for
        another feature set (it computes one set's features: a reload answers 409 and a server does not
        start until they share one); None when they agree. `payfm models promote` and `rollback` warn with
        it, as `payfm rules apply` warns of the converse (found by an SRE: a promotion went through without
        a word, and the next restarted server did not start)."""
        from payfm.rules import rulesets

        active = rulesets.active(self.ws) if (self.root.parent / "rules.db").exists() else None
        if active is None or active.feature_set == mv.feature_set:
            return None
        return (
            f"{mv.ref} runs on feature set '{mv.feature_set}', and the active ruleset v{active.version} on "
            f"'{active.feature_set}': a decision service refuses them (409 on POST /v1/admin/reload, and it "
            f"does not start) until they share one. Apply the rules on '{mv.feature_set}' (`payfm rules "
            f"apply FILE --set {mv.feature_set}`), or promote a model trained on '{active.feature_set}'"
        )

    def rollback(self, name: str) -> ModelVersion:
        """Archive the production version (of ``name``) and restore the one it replaced, of whatever name
        (refused when that one can no longer be served, see :meth:`check_servable_features`)."""
        # a version's ref: what would it mean? Roll back is of a name's production version
        if "@" in _text(name, "The model name to roll back"):
            bare = name.partition("@")[0]
            raise RegistryError(
                f"Rollback takes a model name (its production version is archived and the one it replaced "
                f"restored), not a version's reference. Got '{name}': run `payfm models rollback {bare}`."
            )
        self.get(name)  # an unknown name: "No registered model", with the names there are
        with self._db() as con:
            cur = con.execute(
                "SELECT version FROM versions WHERE name = ? AND stage = 'production'", (name,)
            ).fetchone()
            if cur is None:
                serving = con.execute(
                    "SELECT name, version FROM versions WHERE stage = 'production' "
                    "ORDER BY created_at DESC, version DESC LIMIT 1"
                ).fetchone()
                now = f": the production version is {serving[0]}@{serving[1]}" if serving else ""
                raise RegistryError(f"Model '{name}' has no production version to roll back{now}.")
            row = con.execute(
                "SELECT previous, previous_name FROM stage_log WHERE name = ? AND version = ? "
                "AND action = 'promote' ORDER BY id DESC LIMIT 1",
                (name, cur[0]),
            ).fetchone()
            if row is None or row[0] is None:
                raise RegistryError(
                    f"Model '{name}' version {cur[0]} replaced no earlier production version: "
                    "nothing to restore."
                )
            back = row[1] or name  # NULL in registries written before names could differ: the same name
            restored = con.execute(
                f"SELECT {self._COLS} FROM versions WHERE name = ? AND version = ?", (back, row[0])
            ).fetchone()
            back_mv = self._row(restored)
            self.check_decides_fraud(back_mv, "production")  # (a registry of before the check promoted one)
            self._check_servable(back_mv)  # what promote checks: servers would refuse it
            con.execute(
                "UPDATE versions SET stage = 'archived' WHERE name = ? AND version = ?", (name, cur[0])
            )
            con.execute(
                "UPDATE versions SET stage = 'production' WHERE name = ? AND version = ?", (back, row[0])
            )
            con.execute(
                "INSERT INTO stage_log (name, version, action, previous, previous_name, at) "
                "VALUES (?, ?, 'rollback', ?, ?, ?)",
                (back, row[0], cur[0], name, datetime.now(UTC).isoformat()),
            )
        return self.get(f"{back}@{row[0]}")

    @contextmanager
    def locked(self) -> Iterator[list[ModelVersion]]:
        """Every version, with the registry's write lock held until the block ends: a promotion waits for
        it. :func:`~payfm.features.catalog.define_set` checks and writes a set it replaces within it."""
        with self._db() as con:
            rows = con.execute(f"SELECT {self._COLS} FROM versions ORDER BY name, version")
            yield [self._row(r) for r in rows]

    # ---- reading ------------------------------------------------------------------------------------------
    def list(self, name: str | None = None) -> list[ModelVersion]:
        """Every version (of ``name``), by name then version."""
        if name is not None:
            _text(name, "The model name")
        if not (self.root / "registry.db").exists():
            return []
        with self._db() as con:
            sql = f"SELECT {self._COLS} FROM versions"
            args: tuple[Any, ...] = ()
            if name is not None:
                sql, args = sql + " WHERE name = ?", (name,)
            return [self._row(r) for r in con.execute(sql + " ORDER BY name, version", args).fetchall()]

    def get(self, ref: str) -> ModelVersion:
        """Resolve ``name`` (production, else latest), ``name@<version>`` or ``name@<stage>``."""
        name, at, which = _text(ref, _REF).partition("@")
        if not name or (at and not which):  # "@1", "fraud-gbdt@": neither a name nor a version said
            stages = ", ".join(STAGES)
            raise UnknownModelError(
                f"Model reference {ref!r}: expected name, name@<version> or name@<stage> ({stages})."
            )
        versions = self.list(name)
        if not versions:
            known = sorted({v.name for v in self.list()})
            raise UnknownModelError(
                f"No registered model {name!r}. Expected one of: {', '.join(known) or '(none registered)'}."
            )
        if which == "":
            prod = [v for v in versions if v.stage == "production"]
            return prod[0] if prod else versions[-1]
        if which.isdigit():
            for v in versions:
                if v.version == int(which):
                    return v
            raise UnknownModelError(
                f"Model '{name}' has no version {which}. "
                f"Expected one of {', '.join(str(v.version) for v in versions)}."
            )
        if which in STAGES:
            staged = [v for v in versions if v.stage == which]
            if not staged:
                raise UnknownModelError(f"Model '{name}' has no version in stage '{which}'.")
            return staged[-1]
        raise UnknownModelError(
            f"Model reference {ref!r}: expected name, name@<version> or name@<stage> ({', '.join(STAGES)})."
        )

    def path(self, mv: ModelVersion) -> Path:
        return self.root / mv.name / str(mv.version)

    def _recorded(self, checkpoint: Path) -> str:
        """How an entry records a checkpoint: relative to the workspace when inside it (``fm/v1``), so a
        workspace copied or moved elsewhere checks and serves its own checkpoint; absolute otherwise."""
        try:
            return checkpoint.relative_to(self.root.parent.resolve()).as_posix()
        except ValueError:
            return str(checkpoint)

    def checkpoint_path(self, recorded: str) -> Path:
        """The checkpoint a registry entry records (:meth:`_recorded`): a relative path is the workspace's."""
        path = Path(recorded)
        return path if path.is_absolute() else self.root.parent / path

    def check_foundation_model(
        self, mv: ModelVersion, checkpoint: str | os.PathLike[str] | None = None
    ) -> Path | None:
        """The checkpoint ``mv`` takes embeddings from (None if it takes none), after checking its hash.

        ``checkpoint`` defaults to the path recorded at registration (relative to the workspace when it was
        inside it; entries of payfm before 2026-12-05 hold absolute paths); raises
        :class:`FoundationModelMismatchError` when it is missing or has another content hash.
        """
        fm = mv.entry.get("foundation_model")
        if fm is None:
            return None
        path = Path(checkpoint) if checkpoint is not None else self.checkpoint_path(fm["checkpoint"])
        if not (path / "config.json").is_file():
            raise FoundationModelMismatchError(
                f"Model {mv.ref} takes embeddings of the foundation model at '{path}', which is missing. "
                f"Expected the checkpoint with content hash {fm['content_hash'][:16]}..."
            )
        digest = checkpoint_hash(path)
        if digest != fm["content_hash"]:
            raise FoundationModelMismatchError(
                f"Model {mv.ref} was trained on embeddings of foundation model {fm['content_hash'][:16]}... "
                f"Got '{path}' with hash {digest[:16]}... (pretrained again or changed); retrain and "
                "register the model on this checkpoint's embeddings."
            )
        return path

    def check_artifact(self, mv: ModelVersion) -> None:
        """Raise :class:`ArtifactIntegrityError` unless ``mv``'s files are there with the registered hash."""
        path = self.path(mv)
        if not path.is_dir():
            raise ArtifactIntegrityError(f"Model {mv.ref}: its files are missing (expected '{path}').")
        digest = content_hash(path)
        if digest != mv.content_hash:
            raise ArtifactIntegrityError(
                f"Model {mv.ref}: the artifact's sha256 is {digest[:16]}..., "
                f"expected {mv.content_hash[:16]}... "
                "as registered. Its files were changed or corrupted; refusing to load it."
            )

    def load(
        self,
        ref: str,
        fset: FeatureSet | None = None,
        *,
        foundation_model: str | os.PathLike[str] | None = None,
    ) -> tuple[ModelVersion, Model]:
        """The version and its model, after checking the content hash, (if given) the feature set and, for a
        model trained on embeddings, the foundation-model checkpoint (``foundation_model`` or the recorded
        one, see :meth:`check_foundation_model`)."""
        if fset is not None and not isinstance(fset, FeatureSet):
            raise RegistryError(
                "The 'fset' of Registry.load must be a FeatureSet (payfm.features.catalog.feature_set(name)) "
                f"or None. Got {fset!r} ({type(fset).__name__})."
            )
        mv = self.get(ref)
        self.check_artifact(mv)
        path = self.path(mv)
        if fset is not None and (fset.name, fset.version) != (mv.feature_set, mv.feature_set_version):
            raise FeatureSetMismatchError(
                f"Model {mv.ref} was trained on feature set '{mv.feature_set}' "
                f"version {mv.feature_set_version}. "
                f"Got '{fset.name}' version {fset.version}."
                + (  # the set was redefined since (features define --replace): its features are others now
                    f" The set's definitions changed since it was trained: retrain it (payfm train --set "
                    f"{mv.feature_set})."
                    if fset.name == mv.feature_set
                    else ""
                )
            )
        self.check_foundation_model(mv, foundation_model)
        return mv, load_model(path)


def fm_outputs(entry: dict[str, Any]) -> tuple[str, ...]:
    """The outputs a registry entry's ``foundation_model`` records (entries from before: the embedding)."""
    fm = entry.get("foundation_model") or {}
    return tuple(fm.get("outputs", ("embedding",)))
