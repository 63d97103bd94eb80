"""The real-time decision service: scorer (no HTTP inside), decision log, API keys and the HTTP app.

Public API::

    from payfm.serving.scorer import Scorer, ScorerConfig   # score(charge) -> Decision, reload()
    # Scorer.record_outcome / reviews / close_review come from payfm.serving.feedback (outcomes, reviews);
    # Scorer.snapshot writes from a forked child (payfm.serving.snapshot_child)
    from payfm.serving.decision_log import open_log         # sqlite (embedded) or postgresql://...
    from payfm.serving.keys import KeyStore                 # API keys, stored as salted hashes
    from payfm.serving.app import create_app                # FastAPI app over a Scorer

See docs/serving.md for the API, durability and restart semantics.
"""
