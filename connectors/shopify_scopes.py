"""Shopify's 60-day order window: without the ``read_all_orders`` scope the Admin API lists only the orders of the
last 60 days, and says nothing (sources.md §6.1): RFM over 60 days looks like RFM, and is wrong.

Once per pull the token's scopes are read (``GET /admin/oauth/access_scopes.json``, outside the versioned API:
``{"access_scopes": [{"handle": "read_orders"}, …]}``). When orders older than 60 days are wanted (a backfill, or an
incremental pull whose window starts before then) and the token lacks ``read_all_orders``, the pull goes on (a shop
younger than 60 days, or one whose owner has not been granted the scope yet, still gets its segments) and carries
a warning saying so and what to do (:func:`window_warning`). A token that may not read its scopes (403, 404, or an
answer of another shape) does not stop the pull: the warning then says the window could not be checked (a 401, the
token refused, is the pull's credentials error).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Mapping

from .errors import AuthError, ConfigError, FatalError
from .http import HttpClient, clean

log = logging.getLogger(__name__)

#: how far back Shopify lists orders for a token without :data:`ALL_ORDERS`
ORDER_WINDOW = timedelta(days=60)
ALL_ORDERS = "read_all_orders"
#: the scopes endpoint, under the shop's host (not under ``/admin/api/{version}``)
SCOPES_PATH = "/admin/oauth/access_scopes.json"
_FIX = (f"grant the app the {ALL_ORDERS} scope (Shopify admin → Settings → Apps → develop apps → the app → Admin API "
        "scopes; a public app must request it from Shopify), then pull the whole history once: rfmsync pull --full")


def granted_scopes(http: HttpClient, url: str) -> tuple[set[str] | None, str]:
    """(the scope handles the token holds, or None when they cannot be read; why not, for the warning). A refusal
    (403, 404: the token may not read its scopes) or an answer not of the documented shape is not an error of the
    pull; a 401 (the token refused) is the credentials error."""
    try:
        data: Any = http.get(url)
    except (ConfigError, FatalError) as exc:
        if isinstance(exc, AuthError) and exc.status == 401:  # the token itself refused: the pull's credentials error
            raise
        log.info("shopify: the token's scopes could not be read: %s", exc)
        return None, f"HTTP {exc.status}" if exc.status else "refused"
    scopes = data.get("access_scopes") if isinstance(data, Mapping) else None
    if not isinstance(scopes, list):
        return None, "an answer without an access_scopes list"
    return {h for s in scopes if isinstance(s, Mapping) and (h := clean(s.get("handle")))}, ""


def window_warning(scopes: set[str] | None, why: str, since: datetime | None, now: datetime) -> str | None:
    """The pull's warning when orders older than :data:`ORDER_WINDOW` are wanted (``since`` None: a backfill) and
    the token lacks :data:`ALL_ORDERS` (or its scopes could not be read); None otherwise."""
    start = now - ORDER_WINDOW
    if (scopes is not None and ALL_ORDERS in scopes) or (since is not None and since >= start):
        return None
    wanted = "this backfill (the whole order history)" if since is None else (
        f"this pull (orders changed since {since.date().isoformat()})")
    if scopes is None:
        return (f"shopify: the token's scopes could not be read ({why}), so whether it holds {ALL_ORDERS} is not "
                f"known: without it Shopify lists only the orders of the last 60 days (since "
                f"{start.date().isoformat()}) and {wanted} stops there; if the oldest orders stored are that recent, "
                + _FIX)
    return (f"shopify: the token lacks the {ALL_ORDERS} scope, so Shopify lists only the orders of the last 60 days "
            f"(since {start.date().isoformat()}): {wanted} stops there, and recency, frequency and monetary count "
            "only those days; " + _FIX)
