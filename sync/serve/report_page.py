"""``GET /report`` of ``rfmsync serve``: the report page (:mod:`sync.report`) behind a Bearer token.

The page holds revenue figures, so the route exists only when ``RFMSYNC_REPORT_TOKEN`` is set (otherwise the path
answers 404 like any unknown one), and a request must carry ``Authorization: Bearer <token>``: 401 without it or
with a wrong one (compared in constant time). The token is never logged nor echoed. ``?as_of=YYYY-MM-DD`` and
``?lang=en|ru`` work like ``rfmsync report --as-of`` and ``--lang``. The page is built in the threadpool, the same
way ``rfmsync report`` builds it (:func:`sync.report.report_run`, :func:`sync.report.report_html`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import date

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..errors import LockBusyError, RfmsyncError
from ..settings import secret
from .webhooks import Intake

log = logging.getLogger(__name__)

UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="rfmsync report"'}


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def authorized(header: str | None, expected: bytes) -> bool:
    """Whether ``Authorization`` carries the Bearer token whose SHA-256 is ``expected`` (the digests are compared
    with :func:`hmac.compare_digest`: the time does not depend on where a wrong token differs, nor its length)."""
    scheme, _, given = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(_digest(given.strip()), expected)


#: seconds a page waits for the store lock before the reply is 503 (the store is busy): a page waiting as long as a
#: scheduled sync holds it kept a server thread each, and a few dozen left /healthz unanswered
REPORT_LOCK_WAIT = 3.0


def build_page(intake: Intake, as_of: date | None, lang: str | None) -> str:
    """The page as ``rfmsync report`` writes it, under the store lock the worker threads and the scheduler share: a
    file source's page reads the export into the store (a write: beside a resync's merge a conflict failing one of
    them, between a sync's read of the store and its lease a refresh that held the sync), an API source's reads it.
    :class:`~sync.errors.LockBusyError` when the lock is not free within :data:`REPORT_LOCK_WAIT` seconds."""
    from ..report import report_html, report_run
    from ..store import STORE_LOCK

    cfg = intake.cfg
    if not STORE_LOCK.acquire(timeout=REPORT_LOCK_WAIT):
        raise LockBusyError(f"the order store is busy (a sync or a webhook resync holds it for more than "
                            f"{REPORT_LOCK_WAIT:g} s); try again later")
    try:
        run = report_run(cfg, as_of, intake.settings)
        try:
            return report_html(cfg, run, intake.ledger, lang=lang)
        finally:
            run.close()
    finally:
        STORE_LOCK.release()


def add_report_route(app: FastAPI, intake: Intake) -> None:
    """Register ``GET /report`` when ``RFMSYNC_REPORT_TOKEN`` is set (only then)."""
    token = secret(intake.settings.rfmsync_report_token)
    if not token:
        return
    expected = _digest(token)
    del token

    @app.get("/report", summary="The report page (Bearer token RFMSYNC_REPORT_TOKEN)", response_class=HTMLResponse,
             responses={400: {"description": "Bad as_of or lang"}, 401: {"description": "Missing or wrong token"},
                        503: {"description": "The page cannot be built now"}})
    def report_page(request: Request, as_of: str | None = None, lang: str | None = None) -> Response:
        """The one-page HTML report of ``rfmsync report``, for ``Authorization: Bearer <RFMSYNC_REPORT_TOKEN>``."""
        if not authorized(request.headers.get("authorization"), expected):
            return JSONResponse({"error": "send the report token as Authorization: Bearer <RFMSYNC_REPORT_TOKEN>"},
                                status_code=401, headers=UNAUTHORIZED)
        try:
            day = date.fromisoformat(as_of) if as_of else None
        except ValueError:
            return JSONResponse({"error": f"as_of: expected a date like 2026-06-01, got {as_of[:40]!r}"},
                                status_code=400)
        if lang not in (None, "en", "ru"):
            return JSONResponse({"error": f"lang: expected en or ru, got {lang[:10]!r}"}, status_code=400)
        try:
            html = build_page(intake, day, lang)
        except RfmsyncError as exc:  # the store is busy or empty, a config problem: the message says which
            log.warning("GET /report: cannot build the page: %s", exc)
            return JSONResponse({"error": f"cannot build the report: {exc}"}, status_code=503)
        except Exception as exc:  # a bug: never crash the server, never answer with internals
            log.error("GET /report: cannot build the page: %s: %s", type(exc).__name__, exc)
            return JSONResponse({"error": "cannot build the report; see the server log"}, status_code=500)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})
