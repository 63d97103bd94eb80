"""What decides: the production (and shadow) model, the active ruleset and their feature set, loaded together
into one immutable :class:`Bundle` that the scorer swaps as one reference (:func:`load_bundle` at start and
reload; :func:`relisted` when a list the ruleset uses changes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from payfm.errors import ConfigError, PayfmError
from payfm.events.workspace import Workspace
from payfm.features.catalog import feature_set
from payfm.features.definitions import FeatureSet
from payfm.registry.store import ModelVersion, Registry, newest
from payfm.rules import rulesets as rs
from payfm.rules.compiler import Ruleset, compile_rules
from payfm.rules.lists import all_values, list_types
from payfm.serving.errors import Conflict
from payfm.serving.fm_embeddings import describe_fm, fm_needs, load_embedders
from payfm.training.models import Model

if TYPE_CHECKING:
    from payfm.fm.embed import OnlineEmbedder


log = logging.getLogger("payfm.serving")


@dataclass(frozen=True)
class Bundle:
    """What decides, loaded together and swapped as one reference (never mutated)."""

    fset: FeatureSet
    model_version: ModelVersion | None
    model: Model | None
    shadow_version: ModelVersion | None
    shadow: Model | None
    ruleset: Ruleset | None
    ruleset_version: int | None
    loaded_at: str
    # Foundation-model checkpoint hash -> its online embedder, for the models that take embeddings (one
    # embedder per checkpoint, shared by the model and the shadow; empty when no model takes embeddings).
    embedders: Mapping[str, OnlineEmbedder] = field(default_factory=dict)
    # lists the ruleset reads that were deleted while it was served: it keeps their last contents
    lists_deleted: tuple[str, ...] = ()
    # the type of each list the ruleset reads, at its load: one made again under its name with another type
    # is a deleted one (its contents would be of another kind)
    list_types: Mapping[str, str] = field(default_factory=dict)
    # the shadow version the registry selects but this bundle could not load (its files changed or missing,
    # another checkpoint than recorded) and why: a shadow decides nothing, so production is served without
    # it and the reason is said (/healthz warnings) instead of the server refusing to start or reload
    shadow_refused: tuple[str, str] | None = None

    @cached_property
    def fm_needs(self) -> dict[str, tuple[str, ...]]:
        """Checkpoint hash -> the outputs the model and the shadow on it take: computed once per charge."""
        return fm_needs((self.model_version, self.shadow_version))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "feature_set": f"{self.fset.name}@{self.fset.version}",
            "model": self.model_version.ref if self.model_version else None,
            "shadow_model": self.shadow_version.ref if self.shadow_version else None,
            "ruleset_version": self.ruleset_version,
            "loaded_at": self.loaded_at,
        }
        warnings = (
            [deleted_lists_warning(self.lists_deleted, self.ruleset_version)] if self.lists_deleted else []
        )
        if self.shadow_refused is not None:
            warnings.append(self.shadow_refused[1])
        if warnings:
            out["warnings"] = warnings
        for key, mv in (
            ("foundation_model", self.model_version),
            ("shadow_foundation_model", self.shadow_version),
        ):
            fm = describe_fm(mv) if mv is not None else None
            if fm is not None:
                out[key] = fm
        return out


def load_bundle(
    ws: Workspace,
    model: str | None = None,
    fset: FeatureSet | None = None,
    embedders: Mapping[str, OnlineEmbedder] | None = None,
    fm_state: str = "memory",
) -> Bundle:
    """Load the production (and shadow) model (of registry name ``model``; default the production version
    of any name, the newest in registries older than one production version per workspace) and the active
    ruleset; ``fset`` pins the feature set.

    A model that takes foundation-model embeddings gets the embedder of its checkpoint: the one of
    ``embedders`` with that checkpoint's hash (its state kept), else a fresh one the caller must warm, its
    state in this process (``fm_state`` "memory") or in Redis (a redis:// URL)."""
    reg = Registry(ws)
    versions = reg.list(model) if (ws.root / "models").exists() else []
    prod = [v for v in versions if v.stage == "production"]
    if model is not None and not prod:
        raise _no_production(reg, model, versions)
    shadow = [v for v in versions if v.stage == "shadow"]
    mv = newest(prod)
    for v, stage in ((mv, "production"), (newest(shadow), "shadow")):
        if v is not None:  # (a registry of before the check: a retry-success model promoted)
            reg.check_decides_fraud(v, stage)
    active = rs.active(ws) if (ws.root / "rules.db").exists() else None
    set_name = mv.feature_set if mv else (active.feature_set if active else "default")
    current = feature_set(set_name, ws.root)
    want = fset or current
    if (want.name, want.version) != (current.name, current.version):
        disagree = active is not None and mv is not None and active.feature_set != mv.feature_set
        raise Conflict(
            f"The production model {mv.ref} runs on feature set '{mv.feature_set}', the active ruleset "
            f"v{active.version} on '{active.feature_set}', and the server's online state is of "
            f"'{want.name}': make the model and the rules share one set (payfm rules apply FILE --set SET, "
            "or payfm models promote a model of the rules' set); a restarted server would not start "
            "meanwhile."
            if disagree and mv is not None and active is not None
            else f"The models and rules now select feature set '{set_name}'; the server's online state is of "
            f"'{want.name}' version {want.version}. Restart the server to change the feature set.",
            field="feature_set",
        )
    served = None
    if mv is not None:
        mv, served = reg.load(mv.ref, want)
    sv, shadow_model, shadow_refused = None, None, None
    same = [v for v in shadow if (v.feature_set, v.feature_set_version) == (want.name, want.version)]
    if (chosen := newest(same)) is not None:
        try:
            sv, shadow_model = reg.load(chosen.ref, want)
        except PayfmError as e:  # (production's own failure still refuses the load: it decides)
            shadow_refused = _shadow_refused(chosen.ref, e)
    ruleset = None
    if active is not None:
        if active.feature_set != want.name:
            raise Conflict(
                f"The active ruleset (version {active.version}) is written for feature set "
                f"'{active.feature_set}'; the server serves '{want.name}'"
                + (f", the production model {mv.ref}'s" if mv is not None else "")
                + f". Activate a ruleset version on '{want.name}' (`payfm rules activate VERSION`)"
                + (f", or promote a model trained on '{active.feature_set}'." if mv is not None else "."),
                field="ruleset",
            )
        ruleset = rs.compile_text(ws, active.text, active.feature_set, values=False)
    types = {n: t for n, t in list_types(ws).items() if n in ruleset.lists} if ruleset is not None else {}
    try:
        embedders_ = load_embedders(reg, (mv, sv), embedders or {}, fm_state)
    except PayfmError as e:  # the shadow's checkpoint (files missing, another one than it recorded)?
        if sv is None:
            raise
        embedders_ = load_embedders(reg, (mv, None), embedders or {}, fm_state)  # (production's: raises)
        shadow_refused, sv, shadow_model = _shadow_refused(sv.ref, e), None, None
    return Bundle(
        want,
        mv,
        served,
        sv,
        shadow_model,
        ruleset,
        active.version if active else None,
        datetime.now(UTC).isoformat(),
        embedders_,
        list_types=types,
        shadow_refused=shadow_refused,
    )


def _shadow_refused(ref: str, e: Exception) -> tuple[str, str]:
    """:attr:`Bundle.shadow_refused` of shadow ``ref`` that failed to load with ``e``."""
    return ref, f"The shadow model {ref} is not served (production and the rules are): {e}"


def _no_production(reg: Registry, name: str, versions: list[ModelVersion]) -> ConfigError:
    """The error of a server asked to serve model ``name`` that has no production version (a typo, a model
    not promoted): it refuses rather than deciding on rules alone."""
    if not versions:
        names = sorted({v.name for v in reg.list()})
        have = f"registered: {', '.join(names)}" if names else "none is registered"
        return ConfigError(f"--model: no registered model '{name}' ({have}).")
    return ConfigError(
        f"--model: '{name}' has no production version; promote one first "
        f"(payfm models promote {versions[-1].ref})."
    )


def relisted(ws: Workspace, b: Bundle) -> Bundle | None:
    """``b`` with its ruleset recompiled on the current contents of the lists it uses, None when they have not
    changed (or it uses none). A list deleted meanwhile (``payfm lists delete`` refuses only the lists of the
    active version, and a server serves the version of its last load), or made again with another type,
    keeps its last contents, named in ``lists_deleted``: a blocklist does not empty itself, and the other
    lists go on being refreshed."""
    if b.ruleset is None or not b.ruleset.lists:
        return None
    served = b.ruleset.lists
    now = list_types(ws)
    retyped = {n for n, t in b.list_types.items() if n in now and now[n] != t}
    current = {n: v for n, v in all_values(ws, served).items() if n not in retyped}
    gone = tuple(sorted(set(served) - set(current)))
    contents = {name: current.get(name, served[name]) for name in served}
    if contents == served and gone == b.lists_deleted:
        return None
    ruleset = compile_rules(list(b.ruleset.rules), contents, b.ruleset.types)
    return replace(b, ruleset=ruleset, lists_deleted=gone)


def log_relisting(b: Bundle, new: Bundle) -> None:
    """Log what :func:`relisted` changed from ``b`` to ``new``: the lists with new contents, the lists
    deleted under the served version (a warning, once)."""
    assert new.ruleset is not None and b.ruleset is not None  # relisted: both have one
    changed = sorted(n for n, v in new.ruleset.lists.items() if v != b.ruleset.lists.get(n))
    if changed:
        log.info("lists %s changed: ruleset version %s uses their new contents", changed, b.ruleset_version)
    if new.lists_deleted and new.lists_deleted != b.lists_deleted:
        log.warning("%s", deleted_lists_warning(new.lists_deleted, b.ruleset_version))


def deleted_lists_warning(names: tuple[str, ...], version: int | None) -> str:
    """What ``/healthz`` and the log say of lists deleted under the served ruleset."""
    shown = ", ".join(f"'@{n}'" for n in names)
    return (
        f"list{'s' if len(names) > 1 else ''} {shown} read by the served ruleset v{version} "
        f"{'were' if len(names) > 1 else 'was'} deleted (or made again with another type): the server keeps "
        "the last contents until a reload "
        "serves a version that does not read them (POST /v1/admin/reload)"
    )


def no_model_warning(ws: Workspace) -> str | None:
    """What a server, or an in-process replay, deciding with no production model says (None when one is):
    that no charge gets a score, and how to put a model in production. Serving the rules alone may be meant,
    so this is a warning, not an error.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     print(no_model_warning(Workspace(d)))
    no production model: every risk_score is null, the rules decide alone and those reading :risk_score: \
never match; train one with `payfm train` and promote it with `payfm models promote REF`.
    """
    versions = Registry(ws).list() if (ws.root / "models").exists() else []
    if any(v.stage == "production" for v in versions):
        return None
    latest: dict[str, ModelVersion] = {v.name: v for v in versions if v.stage != "archived"}  # (by version)
    how = "train one with `payfm train` and promote it with `payfm models promote REF`"
    if latest:
        refs = ", ".join(v.ref for v in latest.values())
        how = f"promote one of {refs} (`payfm models promote {next(iter(latest.values())).ref}`)"
    return (
        "no production model: every risk_score is null, the rules decide alone and those reading "
        f":risk_score: never match; {how}."
    )


def served_line(served: Mapping[str, Any]) -> str:
    """What :meth:`Bundle.describe` says, as one line for a person (the server's start line).

    >>> served_line({"feature_set": "default@3", "model": "fraud-gbdt@2", "shadow_model": "fraud-lr@1",
    ...              "ruleset_version": 4, "foundation_model": "fm/base.pt (content hash 0123abcd4567)"})
    'model fraud-gbdt@2 (shadow fraud-lr@1), ruleset v4, feature set default@3, embeddings of fm/base.pt \
(content hash 0123abcd4567)'
    >>> served_line({"feature_set": "default@3", "model": None, "ruleset_version": None})
    'no model, no ruleset, feature set default@3'
    """
    model = f"model {served['model']}" if served.get("model") else "no model"
    if served.get("shadow_model"):
        model += f" (shadow {served['shadow_model']})"
    rules = f"ruleset v{served['ruleset_version']}" if served.get("ruleset_version") else "no ruleset"
    parts = [model, rules, f"feature set {served['feature_set']}"]
    if served.get("foundation_model"):
        parts.append(f"embeddings of {served['foundation_model']}")
    if served.get("shadow_foundation_model"):
        parts.append(f"the shadow's embeddings of {served['shadow_foundation_model']}")
    return ", ".join(parts)
