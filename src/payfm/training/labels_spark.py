"""Fraud labels and training sets as Spark plans: :func:`payfm.training.labels.fraud_labels` and
:func:`payfm.features.training_set.build_training_set` for an event log on a cluster (tested equal).

A cluster job reads its tables where they are and writes the training set where it likes::

    tables = {t: spark.read.parquet(f"s3://bucket/payments/{t}/") for t in
              ("charges", "disputes", "early_fraud_warnings", "refunds", "reviews")}
    training_set(tables, default_set(), as_of=None).write.parquet("s3://bucket/training/default/")

On a workspace, :func:`workspace_labels` runs the label plan over its files (``payfm features training-set
--engine spark``).

The label rules are the one-machine ones (docs/features.md, "Training sets and labels"): a charge is fraud
when a fraudulent dispute, an early fraud warning or a review closed as ``refunded_as_fraud`` arrives within
``horizon`` of it and no later than ``as_of``; its label is mature once the horizon has passed by ``as_of``.
``reviews`` (the decision service's closures) may be left out of ``tables``: then no review labels a charge.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features.definitions import FeatureSet
from payfm.training.labels import DEFAULT_HORIZON

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

_NEEDED = ("charges", "disputes", "early_fraud_warnings")
# The one-machine labels' schema (payfm.training.labels.fraud_labels): the Spark ones are read back into it.
_LABELS = pa.schema(
    [
        ("charge_id", pa.string()),
        ("created", pa.timestamp("us", tz="UTC")),
        ("is_fraud", pa.int32()),
        ("label_time", pa.timestamp("us", tz="UTC")),
        ("mature", pa.bool_()),
    ]
)


def _check(tables: Mapping[str, DataFrame], as_of: datetime | None, horizon: timedelta) -> None:
    missing = [t for t in _NEEDED if t not in tables]
    if missing:
        raise ConfigError(
            f"The Spark labels need the tables {', '.join(_NEEDED)} (and reviews, where the decision service "
            f"closed any). Missing: {missing}."
        )
    if as_of is not None and as_of.tzinfo is None:
        raise ConfigError(f"The 'as_of' of the labels must be timezone-aware (UTC). Got {as_of.isoformat()}.")
    if horizon <= timedelta(0):
        raise ConfigError(f"The label 'horizon' must be positive. Got {horizon}.")


def log_end(tables: Mapping[str, DataFrame]) -> datetime | None:
    """The log's "now": the time of its latest event in any of ``tables``; None for an empty log (one Spark
    job over the tables' ``created``)."""
    from functools import reduce

    from pyspark.sql import functions as F

    created = reduce(lambda a, b: a.unionByName(b), [df.select("created") for df in tables.values()])
    row = created.agg(F.max("created")).first()
    return None if row is None else row[0]


def fraud_labels(
    tables: Mapping[str, DataFrame], as_of: datetime | None = None, horizon: timedelta = DEFAULT_HORIZON
) -> DataFrame:
    """Per charge: ``charge_id``, ``created``, ``is_fraud`` (0/1), ``label_time`` (the first fraud outcome
    within the horizon, if any) and ``mature``, in no particular order. ``as_of`` defaults to the time of the
    latest event of the tables (:func:`log_end`)."""
    from pyspark.sql import functions as F

    _check(tables, as_of, horizon)
    if as_of is None:
        as_of = log_end(tables)
    micros = int(horizon.total_seconds() * 1_000_000)

    def plus_horizon(t: Column) -> Column:
        return F.timestamp_micros(F.unix_micros(t) + F.lit(micros))

    outcomes = (
        tables["disputes"]
        .where(F.col("reason") == "fraudulent")
        .select("charge_id", "created")
        .unionByName(tables["early_fraud_warnings"].select("charge_id", "created"))
    )
    if "reviews" in tables:
        reviews = tables["reviews"].where(F.col("closed_as") == "refunded_as_fraud")
        outcomes = outcomes.unionByName(reviews.select("charge_id", "created"))
    charges = tables["charges"].select("charge_id", "created")
    joined = outcomes.alias("o").join(charges.alias("c"), "charge_id")
    # (as_of is None only for an empty log: nothing labelled, nothing mature, as SQL's NULL comparisons give)
    within = F.col("o.created") <= plus_horizon(F.col("c.created"))
    within = within & (F.col("o.created") <= F.lit(as_of)) if as_of is not None else F.lit(False)
    first = joined.where(within).groupBy("charge_id").agg(F.min("o.created").alias("label_time"))
    mature = plus_horizon(F.col("created")) <= F.lit(as_of) if as_of is not None else F.lit(None)
    return charges.join(first, "charge_id", "left").select(
        "charge_id",
        "created",
        F.col("label_time").isNotNull().cast("int").alias("is_fraud"),
        "label_time",
        mature.cast("boolean").alias("mature"),
    )


def training_set(
    tables: Mapping[str, DataFrame],
    fset: FeatureSet,
    as_of: datetime | None = None,
    horizon: timedelta = DEFAULT_HORIZON,
) -> DataFrame:
    """The training set of ``fset`` as :func:`payfm.features.training_set.build_training_set` builds it on one
    machine: the features of :func:`payfm.features.offline_spark.plan`, then ``is_fraud``, ``label_time``,
    ``mature`` and ``scenario`` (the synthetic world's ground truth, null on other logs; never a model
    input), one row per charge, in no particular order."""
    from pyspark.sql import functions as F

    from payfm.features.offline_spark import plan

    labels = fraud_labels(tables, as_of, horizon).drop("created")
    charges = tables["charges"]
    scenario = F.col("scenario") if "scenario" in charges.columns else F.lit(None).cast("string")
    scen = charges.select("charge_id", scenario.alias("scenario"))
    return plan(tables, fset).join(labels, "charge_id").join(scen, "charge_id")


def workspace_labels(
    ws: Workspace,
    as_of: datetime | None = None,
    horizon: timedelta = DEFAULT_HORIZON,
    master: str = "local[*]",
    memory: str = "6g",
) -> pa.Table:
    """:func:`fraud_labels` of a workspace's event log (its reviews included), computed by Spark on
    ``master`` and read back as Arrow: the rows and schema of :func:`payfm.training.labels.fraud_labels`
    (``charge_id``, ``created``, ``is_fraud``, ``label_time``, ``mature``), in no particular order. A Spark
    failure is one
    :class:`ConfigError`."""
    import shutil
    import tempfile
    from pathlib import Path

    import pyarrow.parquet as pq

    from payfm.features.offline_spark import failure, read_workspace, session

    spark = session(master, memory)
    scratch = Path(tempfile.mkdtemp(prefix="payfm-labels-"))
    try:
        tables = read_workspace(spark, ws, ("reviews",))
        labels = fraud_labels(tables, as_of, horizon)
        labels.write.mode("overwrite").parquet(str(scratch / "labels"))
        table = pq.read_table(scratch / "labels")
    except Exception as e:
        said = failure(e, "labels job")
        if said is None:
            raise
        raise said from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return table.select(_LABELS.names).cast(_LABELS)
