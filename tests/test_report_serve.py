"""`GET /report` of `rfmsync serve`: only with RFMSYNC_REPORT_TOKEN, only for its Bearer token, never logged."""

from __future__ import annotations

import logging
import threading

import pytest
import requests

from sync.config import load_config
from sync.demodata import generate_shop
from sync.ledger import Ledger
from sync.serve.app import create_app
from sync.serve.webhooks import Intake
from sync.settings import Settings
from sync.store import STORE_LOCK
from tests.test_report import AS_OF, shop  # noqa: F401  (fixture)
from tests.test_webhooks_generic import live_server

TOKEN = "rep-0123456789abcdef-token"


@pytest.fixture
def serve(shop, tmp_path):
    """A live server of the demo shop; ``serve(token)`` → its base URL."""
    ledgers = []

    def start(token: str | None):
        ledger = Ledger.connect(f"sqlite:///{tmp_path / f'rfmsync{len(ledgers)}.db'}")
        ledgers.append(ledger)
        settings = Settings(_env_file=None, rfmsync_report_token=token)
        return live_server(create_app(Intake(load_config(shop), ledger, settings)))

    yield start
    for ledger in ledgers:
        ledger.close()


def get(base: str, auth: str | None = None, **params) -> requests.Response:
    headers = {"Authorization": auth} if auth is not None else {}
    return requests.get(f"{base}/report", headers=headers, params=params, timeout=60)


def test_the_page_needs_the_bearer_token_and_never_shows_or_logs_it(serve, caplog):
    caplog.set_level(logging.DEBUG)
    with serve(TOKEN) as base:
        refused = [get(base), get(base, "Bearer"), get(base, f"Bearer {TOKEN}x"), get(base, f"Bearer {TOKEN[:-1]}"),
                   get(base, f"Basic {TOKEN}"), get(base, TOKEN), get(base, "Bearer ")]
        assert [r.status_code for r in refused] == [401] * len(refused)
        assert refused[0].headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in refused[0].json()["error"]

        bad = get(base, f"Bearer {TOKEN}", as_of="01.06.2026")
        assert bad.status_code == 400 and "as_of" in bad.json()["error"]
        assert get(base, f"Bearer {TOKEN}", lang="de").status_code == 400

        page = get(base, f"bearer  {TOKEN} ", as_of=AS_OF.isoformat(), lang="ru")
        assert page.status_code == 200, page.text[:300]
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        html = page.text
        assert '<html lang="ru">' in html and f"На дату {AS_OF.isoformat()}" in html
        assert html.count('<tr class="segment">') == 5 and '<svg class="chart holdout"' in html
        assert "/report" in requests.get(f"{base}/openapi.json", timeout=10).json()["paths"]
    for response in [*refused, bad, page]:
        assert TOKEN not in response.text and TOKEN not in str(response.headers)
    assert caplog.records and not any(TOKEN in r.getMessage() for r in caplog.records)


def test_without_the_token_setting_there_is_no_page(serve):
    with serve(None) as base:
        assert get(base).status_code == 404
        assert get(base, f"Bearer {TOKEN}").status_code == 404
        assert get(base, "Bearer ").status_code == 404
        assert "/report" not in requests.get(f"{base}/openapi.json", timeout=10).json()["paths"]
    with serve("") as base:  # RFMSYNC_REPORT_TOKEN= (empty) in .env: not set
        assert get(base, "Bearer ").status_code == 404


def test_a_store_that_cannot_be_read_answers_503_with_the_reason(shop, tmp_path):
    """An API source whose order store was never pulled: the page cannot be built, the reply says why."""
    cfg = load_config(shop).model_copy(update={"source": {"type": "shopify", "shop": "x.myshopify.com"}})
    cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"orders": str(tmp_path / "none.duckdb")})})
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        settings = Settings(_env_file=None, rfmsync_report_token=TOKEN)
        with live_server(create_app(Intake(cfg, ledger, settings))) as base:
            reply = get(base, f"Bearer {TOKEN}")
    assert reply.status_code == 503 and "run `rfmsync pull` first" in reply.json()["error"]



class _StoreRead(logging.Handler):
    """Set when the file source has read the export into the order store (its INFO line)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.done = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("file source: read "):
            self.done.set()


def test_a_file_sources_page_waits_for_the_store_writer_holding_the_store_lock(tmp_path):
    """A file source's page reads the export into the order store: while a writer of this server holds the store
    (a webhook's resync, a scheduled sync: :data:`sync.store.STORE_LOCK`) the page waits for it, as they wait for
    each other (it wrote the store beside them: a write conflict failing one of them, a sync's read of the store
    split from its lease by a refresh, which then held the sync as if it had moved customers unnoticed); a few
    seconds (REPORT_LOCK_WAIT), then 503 "busy" without having read it; once the store is free, the page."""
    read, files_log = _StoreRead(), logging.getLogger("sync.store.files")
    files_log.addHandler(read)
    level, files_log.level = files_log.level, logging.INFO
    shop = generate_shop(tmp_path / "shop", customers=60, seed=2, as_of=AS_OF)  # (its export not read yet)
    settings = Settings(_env_file=None, rfmsync_report_token=TOKEN)
    try:
        with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger, \
                live_server(create_app(Intake(load_config(shop), ledger, settings))) as base:
            with STORE_LOCK:  # a resync writing the store
                busy = get(base, f"Bearer {TOKEN}", as_of=AS_OF.isoformat())
                read_meanwhile = read.done.is_set()
            page = get(base, f"Bearer {TOKEN}", as_of=AS_OF.isoformat())
    finally:
        files_log.removeHandler(read)
        files_log.setLevel(level)
    assert busy.status_code == 503 and "the order store is busy" in busy.json()["error"], busy.text[:300]
    assert not read_meanwhile, "the page read the export into the store while another writer held it"
    assert read.done.is_set() and page.status_code == 200, page.text[:300]


def test_reports_waiting_for_a_long_sync_leave_healthz_answered(tmp_path):
    """A scheduled sync holding the store for minutes: each report asked meanwhile (a dashboard, a probe giving up
    after 2 s) waited for the lock without a limit in a server thread of its own, and 45 of them left /healthz
    unanswered; now each waits a few seconds, then 503. (The review's test_reports_waiting_for_a_long_sync_starve_
    healthz.)"""
    shop = generate_shop(tmp_path / "shop", customers=30, seed=2, as_of=AS_OF)
    settings = Settings(_env_file=None, rfmsync_report_token=TOKEN)
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger, \
            live_server(create_app(Intake(load_config(shop), ledger, settings))) as base:
        def ask() -> None:
            try:
                requests.get(base + "/report", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2)
            except requests.RequestException:
                pass  # the probe gives up; the server's thread goes on waiting for the lock
        with STORE_LOCK:
            askers = [threading.Thread(target=ask) for _ in range(45)]
            for a in askers:
                a.start()
            for a in askers:
                a.join()
            try:
                health: int | str = requests.get(base + "/healthz", timeout=5).status_code
            except requests.RequestException as exc:
                health = repr(exc)
    assert health == 200, f"/healthz while reports wait for the store: {health}"
