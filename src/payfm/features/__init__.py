"""Features defined once, computed point-in-time correct offline and identically online (docs/features.md).

:mod:`payfm.features.definitions` declares them (``Aggregate``, ``RequestFeature``, ``Derived``,
``FeatureSet``), :func:`payfm.features.catalog.feature_set` names the sets (``default`` and those a workspace
defines), :func:`payfm.features.offline.backfill` computes every charge's features as of just before it,
:class:`payfm.features.online.OnlineFeatures` keeps the same state live, and :mod:`payfm.features.parity`
checks that both agree.
"""
