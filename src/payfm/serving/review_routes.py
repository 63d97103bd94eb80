"""The review queue's endpoints: ``GET /v1/reviews`` (a page of the queue), ``GET /v1/reviews/{charge_id}``
(one review) and ``POST /v1/reviews/{charge_id}/close`` (a reviewer's verdict, a label: docs/serving.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from payfm.serving.decision_log import REVIEW_REASONS
from payfm.serving.metrics import ServiceMetrics
from payfm.serving.scorer import Scorer


class ReviewClose(BaseModel):
    """How a reviewer closed a charge of the review queue (a label: docs/serving.md)."""

    model_config = ConfigDict(extra="forbid")
    reason: Literal["approved", "refunded", "refunded_as_fraud", "disputed"]
    note: str | None = Field(None, max_length=2000)  # null: none, as left out


assert tuple(ReviewClose.model_fields["reason"].annotation.__args__) == REVIEW_REASONS  # type: ignore[union-attr]


def add_review_routes(
    app: FastAPI,
    scorer: Scorer,
    metrics: ServiceMetrics,
    authorize: Callable[[Request], Awaitable[str | None]],
) -> None:
    """The review endpoints on ``app``; ``authorize`` checks the API key and gives its name (the reviewer)."""
    auth = [Depends(authorize)]

    @app.get("/v1/reviews", dependencies=auth)
    def reviews(
        status: Literal["open", "closed", "all"] | None = None,  # all (or none): both
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=10**9),
        starting_after: str | None = Query(None, max_length=255),
        rule: str | None = Query(None, max_length=255),  # those this rule sent
        min_risk_score: int | None = Query(None, ge=0, le=100),  # those scored at least this
    ) -> dict[str, Any]:
        # one more than a page: whether another follows
        rows = scorer.reviews(
            status, limit + 1, offset, starting_after, rule=rule, min_risk_score=min_risk_score
        )
        has_more = len(rows) > limit
        both = None if status == "all" else status
        return {
            "data": rows[:limit],
            "total": scorer.log.review_count(both, rule=rule, min_risk_score=min_risk_score),
            "has_more": has_more,
            # the next page's starting_after (or offset, when paging by offset); null on the last page
            "next_starting_after": rows[limit - 1]["charge_id"] if has_more else None,
            "next_offset": offset + limit if has_more and starting_after is None else None,
        }

    @app.get("/v1/reviews/{charge_id:path}", dependencies=auth)  # :path: a charge id may hold "/"
    def review(charge_id: str, request: Request) -> Any:
        """One review, as a page of the queue shows it; 404 when the charge has none."""
        if not charge_id:  # GET /v1/reviews/: the queue, as Starlette redirects a path's trailing slash
            query = request.url.query
            return RedirectResponse("/v1/reviews" + (f"?{query}" if query else ""), status_code=307)
        return scorer.review(charge_id)

    @app.post("/v1/reviews/{charge_id:path}/close")
    def close_review(
        charge_id: str, body: ReviewClose, reviewer: str | None = Depends(authorize)
    ) -> dict[str, Any]:
        closed = scorer.close_review(charge_id, body.reason, body.note or "", reviewer)
        if not closed.get("duplicate"):  # a retry closed nothing
            metrics.reviews_closed.labels(body.reason).inc()
        return closed
