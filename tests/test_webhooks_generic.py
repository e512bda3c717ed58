"""Webhook intake: generic HMAC signatures, the canonical payload, status codes, dedupe, fuzzing; CRM schemes."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from decimal import Decimal
from urllib.parse import urlencode

import threading
import time
from contextlib import contextmanager

import pytest
import requests
import uvicorn
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from connectors.registry import SECRETS
from connectors.webhooks import WEBHOOK_PARSERS, WEBHOOK_SOURCES, webhook_parser
from sync.config import Config
from sync.errors import ConfigError
from sync.ledger import Ledger
from sync.ledger.codec import decode_records
from sync.serve.app import create_app
from sync.serve.generic import BadRequest, parse_generic, sign_generic, verify_generic
from sync.serve.webhooks import Intake, events_for
from sync.settings import Settings

from tests.profiles import examples

SECRET = "whsec-test-0123456789"
NOW = 1_750_000_000


def order(oid="A-1", cid="C1", **extra):
    return {"order_id": oid, "customer_id": cid, "ordered_at": "2025-06-01T10:00:00+05:00", "amount": "125000.50",
            **extra}


@pytest.fixture
def ledger(tmp_path):
    with Ledger.connect(f"sqlite:///{tmp_path / 'rfmsync.db'}") as led:
        yield led


@contextmanager
def live_server(app):
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Client:
    """requests against a live server: ``client.post(path, content=..., headers=...)``."""

    def __init__(self, base: str) -> None:
        self.base, self.session = base, requests.Session()

    def post(self, path, content=b"", headers=None):
        return self.session.post(self.base + path, data=content, headers=headers or {}, timeout=10)

    def get(self, path):
        return self.session.get(self.base + path, timeout=10)


@pytest.fixture
def make_client(ledger):
    with contextlib.ExitStack() as stack:
        def make(led=None, source=None, max_body=10_000, secret=SECRET, **settings_kw):
            cfg = Config(**({"source": source} if source else {}), serve={"max_body_bytes": max_body,
                                                                           "replay_window_seconds": 300})
            settings = Settings(_env_file=None, rfmsync_webhook_secret=secret, **settings_kw)
            woken = []
            intake = Intake(cfg, led or ledger, settings, on_queued=lambda: woken.append(1), clock=lambda: NOW)
            return Client(stack.enter_context(live_server(create_app(intake)))), woken

        yield make


def post(client, body: bytes, headers=None, path="/webhooks/generic"):
    return client.post(path, content=body, headers={"Content-Type": "application/json", **(headers or {})})


# ----------------------------------------------------------------------------------- signatures


def test_signature_is_hex_hmac_of_the_body_or_of_timestamp_dot_body():
    body = b'{"x":1}'
    plain = sign_generic(SECRET, body)
    assert plain == {"X-Rfmsync-Signature": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}
    stamped = sign_generic(SECRET, body, NOW)
    assert stamped["X-Rfmsync-Timestamp"] == str(NOW)
    assert stamped["X-Rfmsync-Signature"][7:] == hmac.new(SECRET.encode(), f"{NOW}.".encode() + body,
                                                          hashlib.sha256).hexdigest()
    lower = lambda h: {k.lower(): v for k, v in h.items()}  # noqa: E731
    assert verify_generic(lower(plain), body, SECRET, now=NOW, replay_window=300) is None
    assert verify_generic(lower(stamped), body, SECRET, now=NOW + 299, replay_window=300) is None


@pytest.mark.parametrize("headers, reason", [
    ({}, "missing or malformed X-Rfmsync-Signature"),
    ({"x-rfmsync-signature": "md5=abc"}, "missing or malformed"),
    ({"x-rfmsync-signature": "sha256=" + "0" * 64}, "signature does not match"),
    ({**{k.lower(): v for k, v in sign_generic(SECRET, b"{}", NOW - 301).items()}}, "outside the replay window"),
    ({**{k.lower(): v for k, v in sign_generic(SECRET, b"{}", NOW).items()}, "x-rfmsync-timestamp": "soon"},
     "must be Unix seconds"),
    # a signature over the body alone does not pass once a timestamp is added (and vice versa)
    ({**{k.lower(): v for k, v in sign_generic(SECRET, b"{}").items()}, "x-rfmsync-timestamp": str(NOW)},
     "does not match"),
])
def test_bad_signatures_are_refused_with_a_reason_that_never_shows_the_secret(headers, reason):
    problem = verify_generic(headers, b"{}", SECRET, now=NOW, replay_window=300)
    assert problem is not None and reason in problem and SECRET not in problem


def test_a_server_without_a_secret_refuses_everything():
    assert "RFMSYNC_WEBHOOK_SECRET is not set" in verify_generic(
        {k.lower(): v for k, v in sign_generic("", b"{}").items()}, b"{}", None, now=NOW, replay_window=1)


# ----------------------------------------------------------------------------------- payload


def test_one_order_or_a_list_with_optional_contact_becomes_canonical_records():
    body = json.dumps([order(items=[{"sku": "S1", "quantity": 2, "price": "10.25"}], currency="UZS"),
                       order("A-2", "C2", ordered_at="2025-06-02 09:30", status="Refunded", discount=5,
                             contact={"email": " A@Example.com ", "marketing_consent": True,
                                      "first_name": "Ann"})]).encode()
    (o1, c1), (o2, c2) = parse_generic(body, tz="Asia/Tashkent")
    assert c1 is None and o1.amount == Decimal("125000.50") and o1.items[0].quantity == 2
    assert o1.items[0].price == Decimal("10.25") and o1.currency == "UZS"
    assert o2.status == "refunded" and o2.discount == Decimal(5)
    assert o2.ordered_at.utcoffset().total_seconds() == 5 * 3600  # naive dates are in [source] timezone
    assert c2.customer_id == "C2" and c2.email == "a@example.com" and c2.marketing_consent == "yes"
    # numeric ids are accepted as text
    (o3, _), = parse_generic(json.dumps(order(oid=17, cid=42)).encode())
    assert (o3.order_id, o3.customer_id) == ("17", "42")


def test_a_contact_is_normalised_as_every_other_source_normalises_it(ledger, caplog):
    """One person, one e-mail and one E.164 phone whichever source spoke of them: a file export stores
    +77011234567 and ann@example.com, and so does a delivery that typed them its own way (the [source]
    phone_region is the default country); an invalid value is dropped from the contact and logged, the contact
    and its order are queued."""
    cfg = Config(source={"type": "file", "path": "orders.csv", "phone_region": "KZ"})
    intake = Intake(cfg, ledger, Settings(_env_file=None, rfmsync_webhook_secret=SECRET), clock=lambda: NOW)
    body = json.dumps([order(contact={"email": " Ann@Example.COM ", "phone": "8 (701) 123-45-67"}),
                       order("A-2", "C2", contact={"email": "ann@@example", "phone": "12"})]).encode()
    caplog.set_level("WARNING", logger="sync.serve.generic")
    _, events = intake.prepare("generic", {k.lower(): v for k, v in sign_generic(SECRET, body).items()}, body)
    contacts = [decode_records(payload)[1][0] for key, payload, _ in events if key.startswith("contact:")]
    assert [(c.customer_id, c.email, c.phone) for c in contacts] == [("C1", "ann@example.com", "+77011234567"),
                                                                     ("C2", None, None)]
    assert "invalid email" in caplog.text and "ann@@example" in caplog.text and "invalid phone" in caplog.text
    lower = Intake(Config(source={"type": "file", "path": "orders.csv", "phone_region": "kz"}), ledger,
                   Settings(_env_file=None))
    assert lower.phone_region == "KZ"  # as the file source reads it
    with pytest.raises(ConfigError, match=r"\[source\] phone_region: Value error, unknown phone region 'XX'"):
        Intake(Config(source={"type": "file", "path": "orders.csv", "phone_region": "XX"}), ledger,
               Settings(_env_file=None))


def test_a_negative_amount_is_a_refund_or_refused_as_a_file_row_is():
    """As the file reader: a refund written negative (tills differ) is stored by its absolute value; a negative
    amount on a sale or a cancelled order is refused naming the order, not subtracted from the customer's
    revenue as a 'completed' sale."""
    ((o, _),) = parse_generic(json.dumps(order(amount="-125.50", status="refunded")).encode())
    assert (o.status, o.amount) == ("refunded", Decimal("125.50"))
    for status in ("completed", "cancelled"):
        with pytest.raises(BadRequest, match=r"^order \(order_id 'A-1'\): amount: negative amount without a refund "
                                             r"status \(a return is status 'refunded'\)"):
            parse_generic(json.dumps(order(amount="-125.50", status=status)).encode())


def test_amounts_are_rounded_to_their_column_as_the_api_sources_and_files_round_them():
    """A JavaScript total (19.990000000000002) or a three-decimal price is rounded half away from zero to 2
    decimals (quantities to 3), as connectors.tables.stage_records rounds an API page's: not refused."""
    body = (b'{"order_id": "A-1", "customer_id": "C1", "ordered_at": "2025-06-01T10:00:00Z", '
            b'"amount": 19.990000000000002, "discount": "-0.005", '
            b'"items": [{"quantity": "1.0005", "price": 10.125}, {"quantity": 2, "price": "9999999999999999.994"}]}')
    ((o, _),) = parse_generic(body)
    assert (o.amount, o.discount) == (Decimal("19.99"), Decimal("-0.01"))
    assert [(it.quantity, it.price) for it in o.items] == [(Decimal("1.001"), Decimal("10.13")),
                                                           (Decimal("2.000"), Decimal("9999999999999999.99"))]
    # the same order sent with its total already rounded is the same event (deduplicated)
    rounded = json.dumps(order(amount="19.99")).encode()
    assert events_for([], [], parse_generic(json.dumps(order(amount=19.990000000000002)).encode())) == \
        events_for([], [], parse_generic(rounded))
    with pytest.raises(BadRequest, match="amount: Value error, out of range"):
        parse_generic(json.dumps(order(amount="9999999999999999.995")).encode())  # rounds past the column


@pytest.mark.parametrize("body, message", [
    (b"not json", "body is not valid JSON"),
    (b'"text"', "must be a JSON object (one order) or a JSON array"),
    (b"[]", "empty list"),
    (json.dumps([order(), 5]).encode(), "order [1]: must be a JSON object"),
    (json.dumps({"customer_id": "C1", "ordered_at": "2025-01-01T00:00:00Z", "amount": 1}).encode(),
     "order: order_id: Field required"),
    (json.dumps([order(), order("B", ordered_at="yesterday")]).encode(), "order [1] (order_id 'B'): ordered_at:"),
    (json.dumps(order(status="lost")).encode(), "status: Input should be 'completed', 'refunded' or 'cancelled'"),
    (json.dumps(order(contact={"customer_id": "C9"})).encode(), "contact.customer_id 'C9' differs"),
    (json.dumps(order(ordered_at="0001-01-01T00:00:00+14:00")).encode(), "out of range"),
    (b'{"order_id": "A", "amount": NaN}', "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (json.dumps(order(amount="1" * 20)).encode(), "order (order_id 'A-1'): amount: Value error, out of range (at "
                                                  "most 16 digits before the point)"),
    (json.dumps(order(amount="1e400")).encode(), "amount: Value error, out of range"),
    (json.dumps(order(items=[{"quantity": "1" * 16}])).encode(), "items.0.quantity: Value error, out of range (at "
                                                                  "most 15 digits before the point)"),
])
def test_malformed_bodies_are_named_precisely(body, message):
    with pytest.raises(BadRequest) as info:
        parse_generic(body)
    assert info.value.status == 400 and message in str(info.value)


# ----------------------------------------------------------------------------------- endpoint


def test_signed_delivery_is_queued_before_the_reply_and_duplicates_are_queued_once(ledger, make_client):
    client, woken = make_client()
    body = json.dumps([order(), order("A-2", "C2", contact={"email": "b@example.com"})]).encode()
    r = post(client, body, sign_generic(SECRET, body, NOW))
    assert r.status_code == 202 and r.json() == {"accepted": 2, "queued": 2, "duplicates": 0}
    assert ledger.event_counts()["queued"] == 3 and woken == [1]  # A-2's contact is an event of its own too
    events = ledger.claim_events("t", limit=10)
    assert [e.dedupe_key for e in events] == ["order:A-1", "order:A-2", "contact:C2"]
    orders, contacts, pull = decode_records(events[1].payload)
    assert [o.order_id for o in orders] == ["A-2"] and [c.email for c in contacts] == ["b@example.com"] and not pull
    assert decode_records(events[2].payload)[1][0].email == "b@example.com" and events[0].source == "generic"

    again = post(client, body, sign_generic(SECRET, body))  # redelivered (even re-signed, via /file)
    assert again.status_code == 202 and again.json() == {"accepted": 2, "queued": 0, "duplicates": 2}
    changed = json.dumps(order(status="refunded")).encode()  # the same order with new content is new work
    assert post(client, changed, sign_generic(SECRET, changed), "/webhooks/file").json()["queued"] == 1
    assert ledger.event_counts() == {"queued": 1, "processing": 3, "done": 0, "failed": 0}


def test_status_codes_unsigned_forged_malformed_unknown_and_too_large(ledger, make_client):
    client, _ = make_client(None, max_body=2_000)
    body = json.dumps(order()).encode()
    assert post(client, body).status_code == 401
    forged = post(client, body, sign_generic("wrong-secret", body))
    assert forged.status_code == 401 and forged.json() == {"error": "signature does not match"}
    bad = b'{"order_id": "A"}'
    r = post(client, bad, sign_generic(SECRET, bad))
    assert r.status_code == 400 and "customer_id: Field required" in r.json()["error"]
    r = post(client, body, sign_generic(SECRET, body), "/webhooks/mystery")
    assert r.status_code == 404 and "generic, file" in r.json()["error"]
    big = json.dumps([order(str(i)) for i in range(50)]).encode()
    r = post(client, big, sign_generic(SECRET, big))
    assert r.status_code == 413 and "max_body_bytes = 2000" in r.json()["error"]

    def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(10):
            yield b" " * 500

    assert client.post("/webhooks/generic", content=chunks()).status_code == 413
    assert ledger.queue_depth() == 0
    metrics = client.get("/metrics").text
    assert 'rfmsync_webhooks_received_total{source="generic",code="401"} 2' in metrics
    assert 'rfmsync_webhooks_received_total{source="(unknown)",code="404"} 1' in metrics


def test_a_closed_ledger_gives_503_not_a_crash(tmp_path, make_client):
    led = Ledger.connect(f"sqlite:///{tmp_path / 'x.db'}")
    client, _ = make_client(led)
    (tmp_path / "x.db").unlink()
    (tmp_path / "x.db").mkdir()  # the database file is gone and cannot be recreated
    led.close()
    body = json.dumps(order()).encode()
    r = post(client, body, sign_generic(SECRET, body))
    assert r.status_code == 503 and "retry later" in r.json()["error"]
    assert client.get("/healthz").status_code == 503


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
flat = st.dictionaries(st.sampled_from(["sku", "email", "quantity", "price", "marketing_consent", "x"]), scalars,
                       max_size=3)
order_like = st.fixed_dictionaries({}, optional={
    "order_id": st.one_of(st.text(max_size=5), st.integers()), "customer_id": st.text(max_size=5),
    "ordered_at": st.one_of(scalars, st.just("2025-01-01T00:00:00Z")),
    "amount": st.one_of(scalars, st.just("1.5")), "status": st.one_of(scalars, st.just("refunded")),
    "items": st.one_of(scalars, st.lists(flat, max_size=2)), "contact": st.one_of(scalars, flat)})
valid_orders = st.builds(lambda oid, cents, email: order(f"F-{oid}", f"C{oid % 7}", amount=f"{cents / 100:.2f}",
                                                         contact={"email": email}),
                         st.integers(0, 10**6), st.integers(0, 10**9), st.emails())
bodies = st.one_of(st.binary(max_size=200), scalars.map(lambda v: json.dumps(v).encode()),
                   order_like.map(lambda v: json.dumps(v).encode()),
                   st.lists(order_like, max_size=3).map(lambda v: json.dumps(v).encode()),
                   valid_orders.map(lambda v: json.dumps(v).encode()))

# The fuzz tests' names promise a thousand deliveries, and every vendor must be seen accepting, refusing and
# rejecting some: at least 1000 under every profile (more when thorough).
FUZZ_EXAMPLES = examples(1000, minimum=1000)


class AsgiClient:
    """Calls the ASGI app in-process (httpx's ASGI transport on one event loop): fast enough for fuzzing."""

    def __init__(self, app) -> None:
        import asyncio

        import httpx

        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rfmsync.test")

    def post(self, path, content=b"", headers=None):
        return self.loop.run_until_complete(self.client.post(path, content=content, headers=headers or {}))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


def test_a_thousand_random_bodies_signed_and_unsigned_never_give_a_5xx(ledger):
    intake = Intake(Config(), ledger, Settings(_env_file=None, rfmsync_webhook_secret=SECRET), clock=lambda: NOW)
    app = create_app(intake)
    client = AsgiClient(app)
    seen: dict[int, int] = {}

    @hsettings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=bodies, signed=st.booleans(), path=st.sampled_from(["/webhooks/generic", "/webhooks/file"]))
    def check(body, signed, path):
        r = post(client, body, sign_generic(SECRET, body) if signed else None, path)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code in (202, 400, 401, 413), (r.status_code, r.text)

    try:
        check()
    finally:
        client.close()
    assert sum(seen.values()) == FUZZ_EXAMPLES and {202, 400, 401} <= set(seen)
    with live_server(app) as base:  # and the same app still serves over real HTTP afterwards
        live = Client(base)
        body = json.dumps(order("after-fuzz")).encode()
        assert post(live, body, sign_generic(SECRET, body)).status_code == 202
        assert live.get("/healthz").json()["status"] == "ok"


# ----------------------------------------------------------------------------------- CRM sources


def test_shopify_deliveries_use_the_vendor_hmac_and_map_orders(ledger, make_client):
    client, _ = make_client(None, source={"type": "shopify", "shop": "demo"}, shopify_webhook_secret="shp-secret")
    payload = {"id": 450789469, "created_at": "2025-06-01T10:00:00-04:00", "processed_at": "2025-06-01T10:00:00-04:00",
               "total_price": "199.00", "currency": "USD", "financial_status": "paid",
               "customer": {"id": 207119551, "email": "bob@example.com"}, "line_items": []}
    body = json.dumps(payload).encode()
    sig = base64.b64encode(hmac.new(b"shp-secret", body, hashlib.sha256).digest()).decode()
    headers = {"X-Shopify-Hmac-Sha256": sig, "X-Shopify-Topic": "orders/create"}
    r = post(client, body, headers, "/webhooks/shopify")
    assert r.status_code == 202 and r.json()["queued"] == 1, r.text
    orders, _, _ = decode_records(ledger.claim_events("t")[0].payload)
    assert orders[0].order_id == "450789469" and orders[0].amount == Decimal("199.00")
    forged = post(client, body, {**headers, "X-Shopify-Hmac-Sha256": base64.b64encode(b"x" * 32).decode()},
                  "/webhooks/shopify")
    assert forged.status_code == 401
    # a source that is not this config's source is unknown here
    assert post(client, body, headers, "/webhooks/retailcrm").status_code == 404


def test_a_source_key_every_api_source_shares_does_not_break_its_webhooks(ledger, make_client):
    """``max_identity_group`` is not a key of the vendor's own config model: the intake leaves it out too."""
    source = {"type": "shopify", "shop": "demo", "max_identity_group": 50}
    client, _ = make_client(None, source=source, shopify_webhook_secret="shp-secret")
    body = json.dumps({"id": 7, "created_at": "2025-06-01T10:00:00Z", "total_price": "5.00", "currency": "USD",
                       "financial_status": "paid", "customer": {"id": 8}, "line_items": []}).encode()
    sig = base64.b64encode(hmac.new(b"shp-secret", body, hashlib.sha256).digest()).decode()
    r = post(client, body, {"X-Shopify-Hmac-Sha256": sig, "X-Shopify-Topic": "orders/create"}, "/webhooks/shopify")
    assert r.status_code == 202 and r.json()["queued"] == 1, r.text


@pytest.mark.parametrize("kind", WEBHOOK_SOURCES)
def test_every_crm_source_registers_its_webhook_parser(kind):
    parser = webhook_parser(kind)
    assert parser is WEBHOOK_PARSERS[kind]
    assert parser.secret_field in SECRETS[kind].model_fields  # the server reads the webhook secret from here
    # their deliveries (some of Shopify's topics: tests/test_shopify_topics.py) carry ids only
    assert (parser.pull_key is not None) == (kind in ("amocrm", "bitrix24", "shopify"))


def test_a_source_without_webhooks_has_no_parser():
    with pytest.raises(KeyError):
        webhook_parser("file")


def test_amocrm_path_token_and_lead_events_queue_a_pull(ledger, make_client):
    client, _ = make_client(None, source={"type": "amocrm", "subdomain": "shop"}, amocrm_webhook_token="tok-123")
    body = b"leads[status][0][id]=5&leads[status][0][status_id]=142&account[subdomain]=shop"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert client.post("/webhooks/amocrm/wrong", content=body, headers=headers).status_code == 401
    assert client.post("/webhooks/amocrm", content=body, headers=headers).status_code == 401
    r = client.post("/webhooks/amocrm/tok-123", content=body, headers=headers)
    assert r.status_code == 202 and r.json()["queued"] == 1
    event = ledger.claim_events("t")[0]
    assert event.dedupe_key.startswith("pull:") and decode_records(event.payload) == ([], [], True)
    assert client.post("/webhooks/amocrm/tok-123", content=b"%%%", headers=headers).status_code == 400


@pytest.mark.parametrize("body, field", [
    (b"contacts[add][0][id]=5&contacts[add][0][custom_fields]=x", "custom_fields"),
    (b"contacts[update][0][id]=5&contacts[update][0][_embedded][tags]=vip", "_embedded.tags"),
    (b"contacts=x", "contacts must be grouped by action"),
])
def test_a_malformed_amocrm_record_is_a_400_naming_the_field_never_a_503(ledger, make_client, body, field):
    client, _ = make_client(None, source={"type": "amocrm", "subdomain": "shop"}, amocrm_webhook_token="tok-123")
    r = client.post("/webhooks/amocrm/tok-123", content=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("amocrm webhook: ") and field in r.json()["error"]
    assert ledger.queue_depth() == 0


def test_a_malformed_crm_record_is_a_400_naming_the_source_and_field_not_a_503(ledger, make_client):
    # RetailCRM's order.customer must be an object (a string once crashed the parser: a 503)
    client, _ = make_client(None, source={"type": "retailcrm"}, retailcrm_webhook_token="rc-tok")
    body = json.dumps({"order": {"id": 7, "status": "complete", "customer": "x", "totalSumm": 1}}).encode()
    r = client.post("/webhooks/retailcrm/rc-tok", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("retailcrm webhook") and "customer" in r.json()["error"], r.text
    assert ledger.queue_depth() == 0


# ----------------------------------------------------------------------------------- CRM fuzzing

CRM_TOKENS = {"shopify": "shp-fuzz", "amocrm": "amo-fuzz", "retailcrm": "rc-fuzz", "bitrix24": "b24-fuzz"}
CRM_CONFIGS = {"shopify": {"type": "shopify", "shop": "demo"}, "amocrm": {"type": "amocrm", "subdomain": "shop"},
               "retailcrm": {"type": "retailcrm"}, "bitrix24": {"type": "bitrix24"}}
SEGMENTS = ["add", "update", "delete", "status", "0", "1", "id", "custom_fields", "custom_fields_values", "code",
            "field_code", "values", "value", "_embedded", "tags", "contacts", "name", "is_main", "FIELDS", "ID",
            "application_token", "status_id", "price", "customer", "items", "", "x"]
ROOTS = ["leads", "contacts", "account", "order", "customer", "event", "data", "auth", "ts", "x"]
form_key = st.builds(lambda root, segs: root + "".join(f"[{s}]" for s in segs), st.sampled_from(ROOTS),
                     st.lists(st.sampled_from(SEGMENTS), max_size=5)) | st.text(max_size=6)
form_value = st.sampled_from(["5", "142", "EMAIL", "a@example.com", "ONCRMDEALUPDATE", "ONCRMDEALDELETE",
                              "1750000000", "", "{}", "[]", '{"id": 1}']) | st.text(max_size=6)
form_pairs = st.lists(st.tuples(form_key, form_value), max_size=8)
json_tree = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
    st.sampled_from(["id", "order", "customer", "status", "totalSumm", "createdAt", "items", "email", "contact",
                     "total_price", "created_at", "line_items", "financial_status", "event", "data", "FIELDS", "ID",
                     "auth", "ts", "x"]), kids, max_size=4), max_leaves=8)
record = st.fixed_dictionaries({"id": st.integers(0, 10**6) | scalars}, optional={
    k: json_tree | st.just(v) for k, v in [
        ("status", "complete"), ("totalSumm", 10), ("createdAt", "2025-06-01 10:00:00"), ("customer", {"id": 1}),
        ("email", "a@example.com"), ("items", [{"quantity": 1}]), ("total_price", "1.00"),
        ("created_at", "2025-06-01T10:00:00Z"), ("financial_status", "paid"), ("line_items", [])]})
crm_json = st.one_of(json_tree, record, st.builds(lambda k, r: {k: r}, st.sampled_from(["order", "customer"]), record),
                     st.builds(lambda e, rid, ts: {"event": e, "data": {"FIELDS": {"ID": rid}}, "ts": ts},
                               st.sampled_from(["ONCRMDEALUPDATE", "ONCRMDEALDELETE", "ONCRMCONTACTADD", "x"]),
                               scalars, scalars | st.just(str(int(time.time())))))


def _valid_crm(kind: str, n: int):
    """A well-formed delivery body for ``kind`` (before authentication is added)."""
    if kind == "shopify":
        return {"id": n, "created_at": "2025-06-01T10:00:00-04:00", "total_price": "199.00", "currency": "USD",
                "financial_status": "paid", "customer": {"id": n % 97, "email": "bob@example.com"}, "line_items": []}
    if kind == "retailcrm":
        return {"order": {"id": n, "status": "complete", "createdAt": "2025-06-01 10:00:00", "totalSumm": 10.5,
                          "customer": {"id": n % 97}, "items": []}}
    if kind == "bitrix24":
        return {"event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": str(n)}}, "ts": str(int(time.time()))}
    return [(f"contacts[add][0][{k}]", v) for k, v in [("id", str(n)), ("name", "Ann"), ("updated_at", str(NOW))]]


def _crm_delivery(kind: str, authentic: bool, body_obj):
    """(path, headers, body) for one delivery to ``kind`` with real or forged authentication.

    ``body_obj`` is raw bytes, form pairs (a list of tuples) or a JSON value."""
    token = CRM_TOKENS[kind] if authentic else "forged"
    if isinstance(body_obj, bytes):
        body, ctype = body_obj, "application/octet-stream"
    elif isinstance(body_obj, list) and all(isinstance(p, tuple) for p in body_obj):
        pairs = [*body_obj, ("auth[application_token]", token)] if kind == "bitrix24" else body_obj
        body, ctype = urlencode(pairs).encode(), "application/x-www-form-urlencoded"
    else:
        if kind == "bitrix24" and isinstance(body_obj, dict):
            body_obj = {**body_obj, "auth": {"application_token": token}}
        body, ctype = json.dumps(body_obj).encode(), "application/json"
    headers = {"Content-Type": ctype}
    if kind == "shopify":
        headers |= {"X-Shopify-Topic": "orders/create",
                    "X-Shopify-Hmac-Sha256": base64.b64encode(hmac.new(token.encode(), body, hashlib.sha256)
                                                              .digest()).decode()}
    path = f"/webhooks/{kind}/{token}" if kind in ("amocrm", "retailcrm") else f"/webhooks/{kind}"
    return path, headers, body


CRM_SECRET_SETTING = {"shopify": "webhook_secret", "amocrm": "webhook_token", "retailcrm": "webhook_token",
                      "bitrix24": "app_token"}


def test_a_thousand_random_crm_deliveries_with_real_and_forged_auth_never_give_a_5xx(ledger):
    clients = {kind: AsgiClient(create_app(Intake(
        Config(source=CRM_CONFIGS[kind]), ledger,
        Settings(_env_file=None, **{f"{kind}_{CRM_SECRET_SETTING[kind]}": token}), clock=lambda: NOW)))
        for kind, token in CRM_TOKENS.items()}
    seen: dict[tuple[str, int], int] = {}
    shapes = {"valid": None, "form": form_pairs, "json": crm_json, "binary": st.binary(max_size=100)}

    @hsettings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(kind=st.sampled_from(sorted(CRM_TOKENS)), authentic=st.booleans(),
           shape=st.sampled_from(["valid", "form", "form", "json", "json", "binary"]), data=st.data())
    def check(kind, authentic, shape, data):
        body_obj = _valid_crm(kind, data.draw(st.integers(1, 10**6))) if shape == "valid" else \
            data.draw(shapes[shape])
        path, headers, body = _crm_delivery(kind, authentic, body_obj)
        r = clients[kind].post(path, content=body, headers=headers)
        seen[kind, r.status_code] = seen.get((kind, r.status_code), 0) + 1
        assert r.status_code in (202, 400, 401), (kind, path, body[:300], r.status_code, r.text)
        if not authentic:
            assert r.status_code == 401, (kind, body[:300], r.text)
        elif shape == "valid":
            assert r.status_code == 202, (kind, body[:300], r.text)

    try:
        check()
    finally:
        for client in clients.values():
            client.close()
    assert sum(seen.values()) == FUZZ_EXAMPLES
    for kind in CRM_TOKENS:  # every vendor accepted, refused and rejected deliveries
        assert {(kind, 202), (kind, 400), (kind, 401)} <= set(seen), seen
