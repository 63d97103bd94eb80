"""The model registry: versions of trained models in the workspace, with stages, promote and rollback."""

from __future__ import annotations

from payfm.registry.store import (
    STAGES,
    ArtifactIntegrityError,
    FeatureSetMismatchError,
    FoundationModelMismatchError,
    ModelVersion,
    Registry,
    RegistryError,
    UnknownModelError,
    fm_outputs,
)

__all__ = [
    "STAGES",
    "ArtifactIntegrityError",
    "FeatureSetMismatchError",
    "FoundationModelMismatchError",
    "ModelVersion",
    "Registry",
    "RegistryError",
    "UnknownModelError",
    "fm_outputs",
]
