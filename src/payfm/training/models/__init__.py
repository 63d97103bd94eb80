"""The models behind one estimator contract: lr, rf, gbdt, mlp (see :mod:`payfm.training.models.base`)."""

from __future__ import annotations

from payfm.errors import ConfigError
from payfm.training.models.base import Model, ModelError, NotFittedError, load_model

MODEL_KINDS = ("lr", "rf", "gbdt", "mlp")


def model_class(kind: str) -> type[Model]:
    """The model class of a kind (imported lazily: torch is only loaded for the MLP)."""
    if kind == "lr":
        from payfm.training.models.linear import LogisticModel

        return LogisticModel
    if kind == "rf":
        from payfm.training.models.forest import ForestModel

        return ForestModel
    if kind == "gbdt":
        from payfm.training.models.gbdt import GBDTModel

        return GBDTModel
    if kind == "mlp":
        from payfm.training.models.mlp import MLPModel

        return MLPModel
    raise ConfigError(f"Unknown model kind {kind!r}. Expected one of {', '.join(MODEL_KINDS)}.")


__all__ = ["MODEL_KINDS", "Model", "ModelError", "NotFittedError", "load_model", "model_class"]
