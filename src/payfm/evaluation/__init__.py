"""Honest evaluation of fraud models: metrics checked against scikit-learn, threshold presets, breakdowns,
bootstrap intervals, feature drift and a self-contained report. See docs/evaluation.md."""

from __future__ import annotations

from payfm.evaluation.checks import EvaluationError
from payfm.evaluation.drift import DriftReport, FeatureDrift, feature_drift, window_drift
from payfm.evaluation.evaluate import (
    PREDICTION_COLUMNS,
    ComparisonRow,
    EvaluationResult,
    compare,
    evaluate_predictions,
)
from payfm.evaluation.thresholds import BALANCE, DEFAULT_PRESETS, PROTECTION, REVENUE, Preset

__all__ = [
    "BALANCE",
    "DEFAULT_PRESETS",
    "PREDICTION_COLUMNS",
    "PROTECTION",
    "REVENUE",
    "ComparisonRow",
    "DriftReport",
    "EvaluationError",
    "EvaluationResult",
    "FeatureDrift",
    "Preset",
    "compare",
    "evaluate_predictions",
    "feature_drift",
    "window_drift",
]
