"""The HTTP face of ``rfmsync serve`` (FastAPI): webhook intake, health, runs and metrics endpoints.

Replies to a webhook: 202 accepted (duplicates included), 400 malformed (the message names the problem),
401 bad signature, 404 unknown source, 413 body over ``[serve] max_body_bytes``, 503 ledger unavailable.
Nothing a client sends can crash the server. OpenAPI at ``/openapi.json``, docs at ``/docs``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from connectors.digits import digits

from .generic import BadRequest
from .metrics import CONTENT_TYPE
from .report_page import add_report_route
from .webhooks import Intake

log = logging.getLogger(__name__)


def create_app(intake: Intake) -> FastAPI:
    """The FastAPI application (OpenAPI at ``/openapi.json``, docs at ``/docs``)."""
    app = FastAPI(title="rfmsync", summary="Webhook-triggered RFM resync, health, runs and metrics.",
                  version="1")
    _webhook_routes(app, intake)
    _status_routes(app, intake)
    add_report_route(app, intake)  # GET /report, only when RFMSYNC_REPORT_TOKEN is set
    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and digits(declared) and int(declared) > limit:
        raise BadRequest(413, f"body is larger than [serve] max_body_bytes = {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"body is larger than [serve] max_body_bytes = {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


async def receive(intake: Intake, source: str, request: Request, token: str | None) -> JSONResponse:
    """One delivery, start to reply: never raises, never answers with internals."""
    status, reply = 202, {}
    try:
        body = await read_body(request, intake.cfg.serve.max_body_bytes)
        headers = {k.lower(): v for k, v in request.headers.items()}
        reply = await intake.accept_async(source, headers, body, token)
    except BadRequest as exc:
        status, reply = exc.status, {"error": str(exc)}
    except Exception as exc:  # the ledger is down or a bug: never crash, never leak details
        log.error("webhook %s: cannot queue the delivery: %s", source[:40], exc)
        status, reply = 503, {"error": "the event queue is unavailable; retry later"}
    intake.metrics.webhook(source[:40] if source in intake.sources() else "(unknown)", status)
    return JSONResponse(reply, status_code=status)


def _webhook_routes(app: FastAPI, intake: Intake) -> None:
    @app.post("/webhooks/{source}", status_code=202, summary="Receive a webhook delivery",
              responses={400: {"description": "Malformed body"}, 401: {"description": "Bad signature"},
                         404: {"description": "Unknown source"}, 413: {"description": "Body too large"}})
    async def webhook(source: str, request: Request) -> JSONResponse:
        """Verify the delivery, queue its orders/contacts in the ledger, answer 202."""
        return await receive(intake, source, request, None)

    @app.post("/webhooks/{source}/{token}", status_code=202, summary="Receive a path-token webhook delivery")
    async def webhook_with_token(source: str, token: str, request: Request) -> JSONResponse:
        """For RetailCRM and amoCRM, which authenticate with a secret token in the URL path."""
        return await receive(intake, source, request, token)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _status_routes(app: FastAPI, intake: Intake) -> None:
    @app.get("/healthz", summary="Liveness and queue depth")
    def healthz() -> JSONResponse:
        try:
            counts = intake.ledger.event_counts()
        except Exception as exc:
            log.warning("healthz: ledger unavailable: %s", exc)
            return JSONResponse({"status": "error", "error": "ledger unavailable"}, status_code=503)
        return JSONResponse({"status": "ok", "queue_depth": counts["queued"] + counts["processing"],
                             "events": counts, "config_wait": intake.metrics.waiting_for_config(),
                             "answer_not_believed": intake.metrics.waiting_for_config("not_believed"),
                             "scheduler_failing": intake.metrics.scheduler_failure()})

    @app.get("/runs", summary="Recent runs (sync, webhook, scheduled), newest first")
    def runs(limit: int = 20) -> JSONResponse:
        rows = intake.ledger.recent_runs(max(1, min(limit, 500)))
        return JSONResponse([{k: _jsonable(v) for k, v in r.items()} for r in rows])

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        try:
            counts = intake.ledger.event_counts()
        except Exception:
            counts = None
        return PlainTextResponse(intake.metrics.render(counts), media_type=CONTENT_TYPE)
