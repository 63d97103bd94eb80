"""payfm: the open ML foundations platform for payments risk.

Every CLI command has a Python function behind it; the main ones, by stage (each module's docstring has an
example, and docs/ walks through each stage):

- the event log: :class:`payfm.events.workspace.Workspace` (``Workspace.open(path, create=True)``; ``read``
  gives Arrow tables, ``connect()`` a DuckDB connection, ``write_stream`` writes checked events in one
  transaction), :func:`payfm.events.summary.summarize`, :func:`payfm.events.query.run_sql` (read-only SQL);
- data: :func:`payfm.synth.generate_world` with :class:`payfm.synth.WorldConfig`, and
  :func:`payfm.events.importer.import_file` (a CSV or Parquet export through a mapping);
- features: :func:`payfm.features.catalog.feature_set` (a named set), :mod:`payfm.features.definitions`
  (your own), :func:`payfm.features.offline.backfill`, :class:`payfm.features.online.OnlineFeatures`;
- models: :func:`payfm.training.trainer.train` with :class:`payfm.training.trainer.TrainConfig`,
  :class:`payfm.registry.Registry`, :func:`payfm.training.predict.score_window`;
- evaluation: :func:`payfm.evaluation.pipeline.evaluate_models`;
- rules: :mod:`payfm.rules.lists`, :mod:`payfm.rules.rulesets`, :func:`payfm.rules.backtest.backtest`;
- decisions: :class:`payfm.serving.scorer.Scorer` (in process; ``payfm serve`` over HTTP),
  :func:`payfm.serving.replay.replay_in_process`;
- the foundation model: :func:`payfm.fm.pretrain.pretrain`, :func:`payfm.fm.embed.embed`,
  :func:`payfm.fm.downstream.evaluate_embeddings`.

User errors are :class:`payfm.errors.PayfmError`\\ s (``payfm.errors.ConfigError``,
``payfm.events.validate.ValidationError``, ...) whose
message names what was expected and what was received.
"""

__version__ = "0.1.0"
