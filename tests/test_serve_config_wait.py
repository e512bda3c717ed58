"""``GET /healthz`` and ``GET /metrics`` show a worker waiting for the config to be fixed, never a secret."""

from __future__ import annotations

import logging
import random
from datetime import timedelta

import pytest
import requests
from prometheus_client.utils import floatToGoString

from sync.config import Config, load_config
from sync.errors import DestinationConfigError, DestinationError
from sync.ledger import Ledger, open_ledger
from sync.serve.app import create_app
from sync.serve.metrics import Metrics
from sync.serve.service import Service
from sync.serve.webhooks import Intake
from sync.serve.worker import Worker
from sync.settings import Settings, load_settings

try:
    from tests import test_worker_outage as outage
    from tests.test_serve import order_body, signed_post, wait_for
    from tests.test_webhooks_generic import AsgiClient, live_server
    from tests.test_worker import AS_OF, churned_contact, shop  # noqa: F401  (fixture)
except ImportError:  # tests/ itself on sys.path
    import test_worker_outage as outage  # type: ignore[no-redef]
    from test_serve import order_body, signed_post, wait_for  # type: ignore[no-redef]
    from test_webhooks_generic import AsgiClient, live_server  # type: ignore[no-redef]
    from test_worker import AS_OF, churned_contact, shop  # type: ignore[no-redef] # noqa: F401

KEY = "0123456789abcdef0123456789abcdef-us21"  # the Mailchimp key the ESP rejects (a rotated one)


def _get(client: AsgiClient, path: str):
    return client.loop.run_until_complete(client.client.get(path))


def test_healthz_and_metrics_show_a_config_wait_and_when_it_began_without_the_rejected_key(tmp_path):
    """Mailchimp rejects the key (a 401, its message quoting the key): the worker waits for the config to be fixed.
    ``GET /healthz`` keeps its fields and adds ``config_wait`` (since when, which error, how many workers), and
    ``GET /metrics`` the time it began (``rfmsync_config_wait_since_seconds``), so an operator sees it without
    reading the logs; the key is masked in both. Once the key is fixed and a resync goes through, both say no
    worker waits (null, 0)."""
    broken = [True]

    def process(batch):
        if broken[0]:
            raise DestinationConfigError(f"Mailchimp: API key {KEY} is invalid or was revoked (HTTP 401)",
                                         status=401)

    ticks, wall = outage.Ticks(), [outage.AS_OF_DT]
    settings = Settings(_env_file=None, mailchimp_api_key=KEY)
    metrics = Metrics()
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        client = AsgiClient(create_app(Intake(Config(), ledger, settings, metrics)))
        try:
            health = _get(client, "/healthz").json()
            assert health["config_wait"] is None and "rfmsync_config_wait_since_seconds 0.0" in _get(
                client, "/metrics").text
            outage._enqueue_orders(ledger, ["A", "B"])
            worker = Worker(Config(), ledger, settings, metrics=metrics, process=process, clock=ticks,
                            now=lambda: wall[0], rng=random.Random(1))
            began = wall[0]
            for _ in range(3):  # three waits: since when is the first one's time
                worker.process_batch()
                step = worker.backing_off()
                ticks.now += step
                wall[0] += timedelta(seconds=step)
            health = _get(client, "/healthz")
            page = _get(client, "/metrics").text
            assert health.status_code == 200 and KEY not in health.text and KEY not in page
            body = health.json()
            assert {k: body[k] for k in ("status", "queue_depth", "events")} == {
                "status": "ok", "queue_depth": 2, "events": {"queued": 2, "processing": 0, "done": 0, "failed": 0}}
            assert body["config_wait"] == {
                "since": began.isoformat(), "workers": 1,
                "error": "DestinationConfigError: Mailchimp: API key *** is invalid or was revoked (HTTP 401)"}
            assert f"rfmsync_config_wait_since_seconds {floatToGoString(began.timestamp())}" in page
            broken[0] = False  # the key fixed
            assert worker.process_batch() == 2
            assert _get(client, "/healthz").json()["config_wait"] is None
            assert "rfmsync_config_wait_since_seconds 0.0" in _get(client, "/metrics").text
        finally:
            client.close()


def test_a_config_wait_in_the_worker_process_reaches_the_intake_processs_healthz(tmp_path):
    """By default the workers run in a child process, which sends its metrics to the intake process (the one
    answering HTTP) once a second: its config wait is in that snapshot, so the intake's ``/healthz`` shows it."""
    child, parent = Metrics(), Metrics()
    child.config_wait("host:12:w1", "DestinationConfigError: Mailchimp: audience 'aud9' not found", 1_750_000_000.0)
    child.config_wait("host:12:w1", "DestinationConfigError: Mailchimp: audience 'aud9' not found", 1_750_000_300.0)
    parent.set_remote([child.snapshot()])
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        client = AsgiClient(create_app(Intake(Config(), ledger, Settings(_env_file=None), parent)))
        try:
            assert _get(client, "/healthz").json()["config_wait"] == {
                "since": "2025-06-15T15:06:40+00:00", "workers": 1,
                "error": "DestinationConfigError: Mailchimp: audience 'aud9' not found"}
            assert "rfmsync_config_wait_since_seconds 1.75e+09" in _get(client, "/metrics").text
        finally:
            client.close()


def test_a_key_mailchimp_rejects_shows_in_healthz_end_to_end_without_the_key(shop, mailchimp_fake):
    """End to end: the server's worker resyncs a webhook's order and the fake Mailchimp answers 401 to every call
    (the key revoked): ``GET /healthz`` soon says the worker waits for the config to be fixed, naming the
    destination's error, and neither it nor ``/metrics`` holds the key."""
    cfg, settings = load_config(shop), load_settings()
    ledger = open_ledger(cfg, settings)
    service = Service(cfg, settings, ledger, as_of=lambda: AS_OF, poll_seconds=0.05).start()
    try:
        _, cid = churned_contact(ledger)
        mailchimp_fake.fail(401, None, fraction=1.0)
        with live_server(service.app) as base:
            assert signed_post(base, order_body("L-401", cid)).status_code == 202

            def waiting() -> dict | None:
                return requests.get(f"{base}/healthz", timeout=10).json()["config_wait"]

            wait_for(lambda: waiting() is not None, 30)
            health = requests.get(f"{base}/healthz", timeout=10)
            page = requests.get(f"{base}/metrics", timeout=10).text
            key = mailchimp_fake.api_key
            assert key not in health.text and key not in page
            wait = health.json()["config_wait"]
            assert wait["workers"] == 1 and wait["error"].startswith("DestinationConfigError: ") and "401" in \
                wait["error"], wait
            assert "rfmsync_config_wait_since_seconds 0.0" not in page
            assert ledger.event_counts()["failed"] == 0
    finally:
        service.close()


def test_a_resync_that_goes_through_clears_every_workers_config_wait_of_its_process(tmp_path):
    """Two worker threads share the process's metrics ([serve] workers = 2); both met the config error (an audience
    missing). The audience is created (the config fixed, no restart): worker a's next resync goes through, every
    event is done, and ``/healthz`` says no worker waits, though worker b made no resync since. Before: b's entry
    stayed (``"workers": 1``) for as long as b made no resync that went through."""
    broken = [True]

    def process(batch):
        if broken[0]:
            raise DestinationConfigError("destination 'mc': Mailchimp audience 'abc' not found", status=404)

    ticks, wall = outage.Ticks(), [outage.AS_OF_DT]
    metrics = Metrics()
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        a, b = (Worker(Config(), ledger, None, name=name, metrics=metrics, process=process,  # type: ignore[arg-type]
                       clock=ticks, now=lambda: wall[0], rng=random.Random(1)) for name in ("a", "b"))
        outage._enqueue_orders(ledger, ["O1"])
        a.process_batch()
        ticks.now += 600
        wall[0] += timedelta(seconds=600)
        b.process_batch()
        assert metrics.waiting_for_config()["workers"] == 2
        broken[0] = False
        ticks.now += 600
        wall[0] += timedelta(seconds=600)
        outage._enqueue_orders(ledger, ["O2"])
        assert a.process_batch() == 2 and ledger.event_counts()["done"] == 2
        client = AsgiClient(create_app(Intake(Config(), ledger, Settings(_env_file=None), metrics)))
        try:
            assert _get(client, "/healthz").json()["config_wait"] is None
            assert "rfmsync_config_wait_since_seconds 0.0" in _get(client, "/metrics").text
        finally:
            client.close()


def test_the_config_waits_error_line_and_the_events_last_error_mask_the_key(tmp_path, caplog):
    """Mailchimp's 401 quotes the rejected key: the ERROR line of the wait (``waits for the config to be fixed``)
    and the events' last error mask it, as ``/healthz`` does. Before: logged, and kept in the ledger, as is."""
    def process(batch):
        raise DestinationConfigError(f"Mailchimp: API key {KEY} is invalid or was revoked (HTTP 401)", status=401)

    caplog.set_level(logging.INFO, "sync")
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        outage._enqueue_orders(ledger, ["A"])
        worker = Worker(Config(), ledger, Settings(_env_file=None, mailchimp_api_key=KEY), process=process,
                        rng=random.Random(1))
        worker.process_batch()
        [line] = [r for r in caplog.records if "waits for the config to be fixed" in r.getMessage()]
        assert line.levelno == logging.ERROR
        assert "API key *** is invalid" in line.getMessage() and KEY not in caplog.text
        assert outage._statuses(ledger)["A"] == ("queued", "DestinationConfigError: Mailchimp: API key *** is "
                                                 "invalid or was revoked (HTTP 401) (looking again in 3 s)")


@pytest.mark.parametrize("kind", ["own error", "5xx"])
def test_every_failure_the_worker_logs_or_keeps_masks_the_settings_secrets(tmp_path, caplog, kind):
    """Not only a config wait: an event's own error or an ESP's 5xx whose text quotes a key of the settings is
    masked in every log line and in the events' last error. Before: only the config wait's text was masked (a
    key of its own for this test: the CLI remembers every secret of the settings, a worker given them did not)."""
    key = f"fedcba9876543210fedcba9876543210-{kind[:3].strip()}9"

    def process(batch):
        if kind == "5xx":
            raise DestinationError(f"Mailchimp: HTTP 503 for key {key}", status=503, transient=True)
        raise ValueError(f"order A: field X refused for key {key}")

    caplog.set_level(logging.DEBUG)
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        outage._enqueue_orders(ledger, ["A"])
        worker = Worker(Config(), ledger, Settings(_env_file=None, sendgrid_api_key=key), process=process,
                        rng=random.Random(1))
        worker.process_batch()
        status, error = outage._statuses(ledger)["A"]
        assert status == "queued" and "***" in error and key not in error
        assert "***" in caplog.text and key not in caplog.text


def test_healthz_shows_a_wait_on_an_answer_not_believed_until_a_resync_goes_through(tmp_path):
    """A proxy answers Mailchimp's calls with a 200 maintenance page (an answer not believed): the events wait,
    uncounted, as in an outage, which may last up to the give-up. ``GET /healthz`` says so
    (``answer_not_believed``: since when, which answer), beside ``config_wait``, and null again once a resync
    goes through."""
    from sync.destinations.answers import BadAnswer

    down = [True]

    def process(batch):
        if down[0]:
            raise BadAnswer("mailchimp: GET /lists/aud1", "not JSON", b"<html><h1>Down for maintenance</h1></html>")

    ticks, wall = outage.Ticks(), [outage.AS_OF_DT]
    metrics = Metrics()
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        client = AsgiClient(create_app(Intake(Config(), ledger, Settings(_env_file=None), metrics)))
        try:
            assert _get(client, "/healthz").json()["answer_not_believed"] is None
            outage._enqueue_orders(ledger, ["A"])
            worker = Worker(Config(), ledger, Settings(_env_file=None), metrics=metrics, process=process,
                            clock=ticks, now=lambda: wall[0], rng=random.Random(1))
            began = wall[0]
            for _ in range(2):
                worker.process_batch()
                ticks.now += worker.backing_off()
                wall[0] += timedelta(seconds=worker.backing_off())
            body = _get(client, "/healthz").json()
            assert body["config_wait"] is None and body["answer_not_believed"]["since"] == began.isoformat()
            assert "answer not believed (not JSON)" in body["answer_not_believed"]["error"]
            down[0] = False
            assert worker.drain() == 1
            assert _get(client, "/healthz").json()["answer_not_believed"] is None
        finally:
            client.close()
