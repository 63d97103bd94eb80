"""Feature names: their form, and the names a set's features may not take.

A feature's name is a column of the backfill (beside ``charge_id`` and ``created``) and of a training set
(beside those and the labels, ``is_fraud``, ``label_time``, ``mature`` and ``scenario``:
:mod:`payfm.features.training_set`); a model trained on a foundation model's outputs takes them as inputs
named ``fm.emb_0``, ``fm.surprise_card_amount``... after its features (:mod:`payfm.fm.identity`). A feature
of any of those names would be a second column of one name: refused when the set is built.

Example:
    >>> check_feature_name("card.count_charges_1h")
    >>> try:
    ...     check_feature_name("mature")
    ... except ConfigError as e:
    ...     print(str(e).partition(":")[0], "...", str(e).rpartition(". ")[2])
    Feature 'mature' ... Got 'mature'.
"""

from __future__ import annotations

import re

from payfm.errors import ConfigError

# A lower-case word, then at most one dot and another (the entity's name, then the feature's).
FEATURE_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)?")

# Columns beside the features: the backfill's keys, then what a training set adds (training_set.py).
RESERVED_NAMES = ("charge_id", "created", "is_fraud", "label_time", "mature", "scenario")

# The foundation model's outputs as model inputs (payfm.fm.identity: EMBEDDING_PREFIX, SURPRISE_PREFIX).
FM_PREFIX = "fm."


def check_feature_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is a feature's name of the right form (the whole of it:
    no trailing line break) and none of the columns its files put beside it (module docstring)."""
    from payfm.events.cards import shown_text  # (events -> features is the flow's direction)

    who = f"Feature '{shown_text(name)}'"
    got = shown_text(repr(name))
    if not FEATURE_NAME.fullmatch(name):
        raise ConfigError(
            f"{who}: a feature's name must be lower-case words with underscores and one optional dot (like "
            f"card.count_charges_1h). Got {got}."
        )
    if name in RESERVED_NAMES:
        raise ConfigError(
            f"{who}: a feature's name must not be a column a backfill or a training set puts beside the "
            f"features ({', '.join(RESERVED_NAMES)}). Got {got}."
        )
    if name.startswith(FM_PREFIX):
        raise ConfigError(
            f"{who}: a feature's name must not start with '{FM_PREFIX}', the foundation model's outputs "
            f"(fm.emb_0, fm.surprise_card_amount, ...). Got {got}."
        )
