"""Models of a task (fraud, retries): labels with maturity, time splits, the model kinds (lr, rf, gbdt, mlp),
calibration, tuning, explanations; :func:`payfm.training.trainer.train` runs it all (docs/models.md)."""
