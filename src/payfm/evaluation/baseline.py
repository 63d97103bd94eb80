"""A rules-only baseline: a few Radar-style velocity rules, the score being the share of rules that fire.

The rules read features of the default feature set (``payfm features list``):

======================  =================================================================
rule                    fires when
======================  =================================================================
card velocity           ``card.count_charges_1h > 1`` (at least 2 earlier charges on the card in the hour)
cards per IP            ``ip.distinct_card_fingerprint_1d > 2`` (at least 3 cards from the IP in the day)
card declines           ``card.count_declined_1d > 1`` (at least 2 declines on the card in the day)
foreign big ticket      ``card_ip_country_mismatch == 1`` and ``amount_usd > 200`` (dollars)
======================  =================================================================

score = rules fired / 4, so in {0, 0.25, 0.5, 0.75, 1}. A missing feature value never fires a rule. The score
ranks charges but is not a calibrated probability; its ECE says so in the report. The thresholds are
deliberately simple (what a fraud analyst writes on day one), not tuned on any evaluation window.

Example:
    >>> import pyarrow as pa
    >>> f = pa.table({"card.count_charges_1h": [2, 0], "ip.distinct_card_fingerprint_1d": [4, None],
    ...               "card.count_declined_1d": [0, 0], "card_ip_country_mismatch": [1, 1],
    ...               "amount_usd": [900.0, 20.0]})
    >>> rules_baseline_scores(f).tolist()
    [0.75, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.evaluation.checks import EvaluationError, FloatArray, check_horizon, check_window
from payfm.events.workspace import Workspace

BASELINE_NAME = "rules baseline"


@dataclass(frozen=True)
class Condition:
    feature: str
    above: float  # fires when the feature is strictly greater


RULES: dict[str, tuple[Condition, ...]] = {
    "card velocity": (Condition("card.count_charges_1h", 1),),
    "cards per IP": (Condition("ip.distinct_card_fingerprint_1d", 2),),
    "card declines": (Condition("card.count_declined_1d", 1),),
    "foreign big ticket": (Condition("card_ip_country_mismatch", 0.5), Condition("amount_usd", 200)),
}
RULE_FEATURES = tuple(sorted({c.feature for conds in RULES.values() for c in conds}))


def rules_fired(features: pa.Table) -> dict[str, np.ndarray]:
    """Per rule, a boolean array: did it fire on each row of ``features``?"""
    missing = [f for f in RULE_FEATURES if f not in features.column_names]
    if missing:
        raise EvaluationError(
            f"The rules baseline needs the features {', '.join(RULE_FEATURES)}. "
            f"Missing: {', '.join(missing)}."
        )
    out = {}
    for name, conds in RULES.items():
        fired = np.ones(features.num_rows, dtype=bool)
        for c in conds:
            col = pc.cast(features.column(c.feature), pa.float64())
            fired &= pc.fill_null(pc.greater(col, c.above), False).to_numpy(zero_copy_only=False)
        out[name] = fired
    return out


def rules_baseline_scores(features: pa.Table) -> FloatArray:
    """The share of :data:`RULES` that fire on each row of ``features``."""
    fired = rules_fired(features)
    score: FloatArray = np.sum(np.stack(list(fired.values())), axis=0) / len(RULES)
    return score


def rules_baseline_predictions(ws: Workspace, preds: pa.Table) -> pa.Table:
    """``preds`` (a prediction table) with its scores replaced by the rules baseline's, so the baseline is
    evaluated on exactly the same charges. Features come from the default set's backfill (computed if
    missing); a charge without features scores 0."""
    from payfm.features.catalog import feature_set
    from payfm.features.training_set import load_backfill

    feats = load_backfill(ws, feature_set("default"), columns=["charge_id", *RULE_FEATURES])
    scored = pa.table({"charge_id": feats.column("charge_id"), "score": rules_baseline_scores(feats)})
    joined = preds.select(["charge_id"]).join(scored, "charge_id", join_type="left outer")
    lookup = dict(
        zip(joined.column("charge_id").to_pylist(), joined.column("score").to_pylist(), strict=True)
    )
    score = np.array([lookup.get(c) or 0.0 for c in preds.column("charge_id").to_pylist()], dtype=np.float64)
    return preds.set_column(preds.column_names.index("score"), "score", pa.array(score))


def window_predictions(
    ws: Workspace, start: datetime | None, end: datetime | None, horizon: timedelta | None = None
) -> pa.Table:
    """A prediction table with score 0 for every charge created in [start, end), with fraud labels as of the
    log's latest event over ``horizon`` (default 120 days): the population a baseline-only evaluation uses.
    An empty or inverted window, or a ``horizon`` that is no positive timedelta, is refused."""
    from payfm.training.labels import DEFAULT_HORIZON, fraud_labels

    check_window(start, end)
    horizon = check_horizon(horizon, "window_predictions")

    con = ws.connect()
    try:
        con.register("l", fraud_labels(con, None, horizon or DEFAULT_HORIZON))
        where = []
        params: list[datetime] = []
        if start is not None:
            where.append("c.created >= ?")
            params.append(start)
        if end is not None:
            where.append("c.created < ?")
            params.append(end)
        sql = (
            "SELECT c.charge_id, c.created, 0.0::DOUBLE AS score, l.is_fraud, l.mature, c.scenario, "
            "c.amount_usd, c.channel, c.merchant_id, c.merchant_country, c.card_fingerprint "
            "FROM charges c JOIN l USING (charge_id)"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY c.created, c.charge_id"
        )
        return con.sql(sql, params=params).to_arrow_table()
    finally:
        con.close()
