"""How a :class:`~payfm.serving.scorer.Scorer` runs: the model it serves, reasons per decision, snapshots, the
bounds on an event's time. Checked when made, naming the field (``payfm serve`` checks its options as it
parses them; this covers the Python API).

Example:
    >>> ScorerConfig(top_k=5, max_future_s=300).top_k
    5
    >>> try:
    ...     ScorerConfig(top_k=-1)
    ... except ConfigError as e:
    ...     print(e)
    The 'top_k' of ScorerConfig (reasons per decision) must be an integer >= 0. Got -1.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from payfm.errors import ConfigError
from payfm.training.scores import ScoreLevels
from payfm.training.splits import finite_number


@dataclass(frozen=True)
class ScorerConfig:
    """``model``: registry name the production version must have (default: the production version);
    ``top_k``: reasons per decision (0: none); ``snapshot_every``: snapshot the memory state every n
    decisions (0: only at close); ``levels``: risk level thresholds."""

    model: str | None = None
    top_k: int = 3
    snapshot_every: int = 0
    levels: ScoreLevels = field(default_factory=ScoreLevels)
    # With no snapshot yet, start the memory state from the workspace's event log (the history the models
    # were trained on), then snapshot it, so features do not start from zero on a new server.
    warm_from_event_log: bool = True
    # Write snapshots from a forked child (copy-on-write) so deciding goes on meanwhile (POSIX only).
    fork_snapshots: bool = True
    # Every n decisions, move what survived (new online-state records, mostly) out of the cyclic garbage
    # collector's reach (gc.freeze, after a full collection of what is not frozen yet): else each full
    # collection rescans every state record made since start-up, a pause that grows with uptime. The pause
    # of that collection grows with n: 6-8 ms at 2,000, 23-53 ms at 5,000 (BENCHMARKS.md). 0: never.
    gc_freeze_every: int = 2_000
    # Refuse a charge or outcome dated more than this many seconds ahead of the server's clock (None: no
    # bound, as for a replay, whose time is the log's): one far-future event would move its keys' velocity
    # windows there. `payfm serve --max-future-s` (default 300).
    max_future_s: float | None = None
    # Refuse a charge dated more than this many seconds behind the server's clock (None: no bound, the
    # default): a back-dated charge gives its card a history it never had. Outcomes are dated when the issuer
    # opened them and may come days later: not bound. `payfm serve --max-past-s`.
    max_past_s: float | None = None
    # Every this many seconds, look whether rules.db changed (PRAGMA data_version) and, when a list the
    # served ruleset uses did, recompile it with the new contents: a blocklist entry takes effect within it,
    # without a reload (the ruleset's version stays: activating another one is `POST /v1/admin/reload`).
    # None: lists are read at load and reload only. `payfm serve` sets 1.0.
    lists_refresh_s: float | None = None
    # Follow the workspace's active ruleset and production / shadow models too (payfm.serving.watch): at each
    # look, reload when what a load would serve changed (`rules apply`, `models promote`, a rollback), as
    # POST /v1/admin/reload does. Needs lists_refresh_s (the looks' interval). `payfm serve` sets it unless
    # --no-follow.
    follow: bool = False

    def __post_init__(self) -> None:
        """Refuse a value no scorer can use, naming the field, when the config is made (not at
        :meth:`Scorer.open`, nor as a decision that silently gives every reason). NaN compares false with
        every bound: refused too."""
        if self.model is not None and not (isinstance(self.model, str) and self.model.strip()):
            raise ConfigError(
                "The 'model' of ScorerConfig must be a registered model's name (e.g. 'fraud-gbdt') or None "
                f"(the production version). Got {self.model!r}."
            )
        for name, what in (
            ("top_k", "reasons per decision"),
            ("snapshot_every", "decisions between snapshots; 0: at close only"),
            ("gc_freeze_every", "decisions between gc.freeze calls; 0: never"),
        ):
            v = getattr(self, name)
            if not (isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 0):
                raise ConfigError(
                    f"The '{name}' of ScorerConfig ({what}) must be an integer >= 0. Got {v!r}."
                )
        if not isinstance(self.levels, ScoreLevels):
            raise ConfigError(
                "The 'levels' of ScorerConfig must be a ScoreLevels (ScoreLevels(elevated=65, highest=75)). "
                f"Got {self.levels!r}."
            )
        for name in ("warm_from_event_log", "fork_snapshots", "follow"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"The '{name}' of ScorerConfig must be True or False. Got {getattr(self, name)!r}."
                )
        for name, zero, none in (
            ("max_future_s", True, "no bound"),
            ("max_past_s", False, "no bound"),
            ("lists_refresh_s", False, "lists read at load only"),
        ):
            v = getattr(self, name)
            if v is not None and not (finite_number(v) and (v >= 0 if zero else v > 0)):
                bound = ">= 0" if zero else "> 0"
                raise ConfigError(
                    f"The '{name}' of ScorerConfig must be a number of seconds {bound} or None ({none}). "
                    f"Got {v!r}."
                )
        if self.follow and self.lists_refresh_s is None:
            raise ConfigError(
                "ScorerConfig(follow=True) looks for changes every 'lists_refresh_s' seconds: give it too "
                "(payfm serve uses 1.0). Got lists_refresh_s=None."
            )
