"""Secrets never appear in errors, failures or logs: each path provoked with a recognisable secret, against the
loopback fakes (the vendor answers what the path needs)."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from connectors.bitrix24 import Bitrix24Config, Bitrix24Secrets, Bitrix24Source
from connectors.errors import AuthError, ConfigError, FatalError
from connectors.http import strips_credentials
from tests.fakes.http import LoopbackServer, Reply
from tests.test_mailchimp import BATCH, Recorder as McRecorder, change as mc_change, make as mc_make
from tests.test_sendgrid import FIELDS, Recorder as SgRecorder, change as sg_change, make as sg_make
from tests.test_unisender import Recorder as UniRecorder, change as uni_change, on as uni_on

CODE = "sk-TESTSECRET-123"  # a Bitrix24 inbound webhook's secret: a segment of its URL's path


def test_urllib3_debug_lines_never_show_a_bitrix24_webhook_code(caplog) -> None:
    """``-vv`` turns on urllib3's DEBUG lines, which print every request's path: the webhook's code is masked."""
    with LoopbackServer(lambda req: Reply.json(200, {"result": {"ID": "1", "NAME": "Ann"}})) as server:
        source = Bitrix24Source(Bitrix24Config(), Bitrix24Secrets(webhook_url=f"{server.url}/rest/1/{CODE}/"))
        with caplog.at_level(logging.DEBUG):
            assert source.check() == "127.0.0.1 (as Ann)"
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any('"POST /rest/1/***/profile.json' in line for line in lines), lines  # the line is still there
    assert CODE not in caplog.text and all(CODE not in line for line in lines)


@pytest.mark.parametrize("pasted", ["", "profile.json"])
def test_a_bitrix24_webhook_url_pasted_with_a_method_calls_the_methods_and_masks_only_its_code(pasted,
                                                                                           caplog) -> None:
    """The code is the segment after /rest/<user>/, not the URL's last segment (``.../<code>/profile.json``, as
    Bitrix24 shows an example call, made ``profile.json`` the secret and left the code in urllib3's lines); the
    calls go to /rest/<user>/<code>/<method> (not .../profile.json/<method>), and an error still names the
    portal (only the code is masked, not the whole URL)."""
    paths: list[str] = []

    def portal(req):
        paths.append(req.path)
        if req.path.endswith("/crm.deal.list.json"):
            return Reply.json(400, {"error": "INVALID_REQUEST"})
        return Reply.json(200, {"result": {"ID": "1", "NAME": "Ann"}})

    with LoopbackServer(portal) as server:
        source = Bitrix24Source(Bitrix24Config(),
                                Bitrix24Secrets(webhook_url=f"{server.url}/rest/1/{CODE}/{pasted}"))
        with caplog.at_level(logging.DEBUG):
            assert source.check() == "127.0.0.1 (as Ann)"
        with pytest.raises(FatalError) as info:
            source._call("crm.deal.list", {})
    assert paths == [f"/rest/1/{CODE}/profile.json", f"/rest/1/{CODE}/crm.deal.list.json"]
    assert f"{server.url}/rest/1/***/crm.deal.list.json" in str(info.value) and CODE not in str(info.value)
    assert any("/rest/1/***/" in r.getMessage() for r in caplog.records if r.name.startswith("urllib3"))
    assert CODE not in caplog.text


def test_a_mailchimp_error_answer_echoing_the_key_keeps_it_out_of_the_failures_and_the_log(mailchimp_fake,
                                                                                          caplog) -> None:
    """A 400 problem document whose detail and field errors echo the request (the key, its basic-auth form):
    the failure recorded for the member (the ledger's failures, ``rfmsync failures``) has them masked, and no
    DEBUG line (``-vv``) shows them."""
    key = mailchimp_fake.api_key
    basic = base64.b64encode(f"user:{key}".encode()).decode()
    problem = {"title": "Invalid Resource", "status": 400, "detail": f"Authorization: Basic {basic}",
               "errors": [{"field": "apikey", "message": f"{key} is not valid here"}]}
    mailchimp_fake.answer_raw(json.dumps(problem).encode(), "application/problem+json", status=400,
                              path=f"^{BATCH}$")
    rec = McRecorder()
    with caplog.at_level(logging.DEBUG):
        mc_make(mailchimp_fake, []).apply([mc_change("a@example.com")], rec)
    error = rec.results[("a@example.com", "upsert")].error
    assert "HTTP 400 Invalid Resource: Authorization: Basic ***" in error and "(apikey: *** is not valid" in error
    assert key not in error and basic not in error
    assert key not in caplog.text and basic not in caplog.text


def test_a_mailchimp_400_naming_a_member_keeps_the_key_out_of_that_members_failure(mailchimp_fake) -> None:
    key = mailchimp_fake.api_key
    problem = {"title": "Invalid Resource", "status": 400,
               "errors": [{"field": "members.1.email_address", "message": f"not valid (apikey={key})"}]}
    mailchimp_fake.answer_raw(json.dumps(problem).encode(), "application/problem+json", status=400,
                              path=f"^{BATCH}$")
    rec = McRecorder()
    mc_make(mailchimp_fake, []).apply([mc_change(e) for e in ("a@example.com", "b@example.com")], rec)
    bad = rec.results[("b@example.com", "upsert")]
    assert not bad.ok and "not valid (apikey=***)" in bad.error and key not in bad.error
    assert rec.results[("a@example.com", "upsert")].ok  # sent again without the member named


def test_a_sendgrid_error_answer_echoing_the_key_keeps_it_out_of_the_failures_and_the_log(sendgrid_fake,
                                                                                         caplog) -> None:
    """python_http_client prints every error answer at DEBUG (``-vv``): masked there too."""
    dest, _, _ = sg_make(sendgrid_fake)
    dest.prepare(["Champions"], FIELDS)
    key = sendgrid_fake.api_key
    sendgrid_fake.answer_raw(json.dumps({"errors": [{"field": None, "message": f"bad header Bearer {key}"}]}
                                        ).encode(), "application/json", status=400, method="PUT")
    rec = SgRecorder()
    with caplog.at_level(logging.DEBUG):
        dest.apply([sg_change("a@x.com", add={"Champions"})], rec)
    item = rec.items[("a@x.com", "upsert")]
    assert not item.ok and "bad header Bearer ***" in item.error and key not in item.error
    assert any("400" in r.getMessage() and "bad header Bearer ***" in r.getMessage() for r in caplog.records
               if r.name == "python_http_client.client")  # the line is still there
    assert key not in caplog.text


def test_a_unisender_warning_echoing_the_key_is_masked_in_the_log(unisender_fake, caplog) -> None:
    """Unisender's ``warnings`` are logged at DEBUG (``-vv``): one echoing the request has the key masked."""
    dest, _ = uni_on(unisender_fake)
    key = unisender_fake.api_key
    unisender_fake.answer_raw(json.dumps({"result": [], "warnings": [{"warning": f"api_key={key} in a form"}]}
                                         ).encode(), "application/json", method="getLists")
    with caplog.at_level(logging.DEBUG):
        assert dest.check() == "API key accepted (0 lists)"
    assert "getLists warning: {'warning': 'api_key=*** in a form'}" in caplog.text and key not in caplog.text


def test_a_unisender_error_text_is_masked_before_it_is_cut(unisender_fake) -> None:
    """The envelope's ``error`` is kept to 300 characters: a key echoed across that cut left its first
    characters in the failure."""
    unisender_fake.add_list("Champions")
    dest, _ = uni_on(unisender_fake)
    key = unisender_fake.api_key
    text = "x" * 290 + f" {key}"
    unisender_fake.answer_raw(json.dumps({"error": text, "code": "invalid_arg"}).encode(), "application/json",
                              column="email_list_ids")  # the import of his row (kept28: not the e-mail-only check)
    rec = UniRecorder()
    dest.apply([uni_change("s@x.com", add={"list:Champions"})], rec)
    errors = [r.error for r in rec.items.values() if not r.ok]
    assert errors and all("invalid_arg" in e and key[:8] not in e for e in errors), errors


def test_a_ledger_password_with_an_unencoded_at_sign_is_refused_without_showing_any_of_it(tmp_path) -> None:
    """``user:p@ss@host``: the URL parser takes ``p`` for the password and ``ss@host`` for the host, which the
    'cannot open ledger' line then printed (and a resolver error repeated)."""
    from sync.errors import ConfigError
    from sync.ledger import Ledger

    with pytest.raises(ConfigError) as info:
        Ledger.connect("postgresql+psycopg://rfmsync:sk-TEST@SECRET-9@127.0.0.1:1/rfmsync")
    assert "%40" in str(info.value) and "TEST" not in str(info.value) and "SECRET" not in str(info.value)


def test_the_pre_signed_url_of_a_sendgrid_file_never_reaches_the_debug_log(sendgrid_fake, caplog) -> None:
    """The import errors file (and a list's export) is fetched from a pre-signed URL: its signature reads the
    file (addresses) without the key, and urllib3 logs the URL's query at DEBUG."""
    dest, _, _ = sg_make(sendgrid_fake)
    dest.prepare(["Champions"], FIELDS)
    sendgrid_fake.reject["b@x.com"] = "invalid email"
    rec = SgRecorder()
    with caplog.at_level(logging.DEBUG):
        dest.apply([sg_change(e, add={"Champions"}) for e in ("a@x.com", "b@x.com")], rec)
    assert not rec.items[("b@x.com", "upsert")].ok and "invalid email" in rec.items[("b@x.com", "upsert")].error
    assert any("/_files/errors/" in r.getMessage() and "X-Amz-Signature=***" in r.getMessage()
               for r in caplog.records if r.name.startswith("urllib3"))
    assert sendgrid_fake.url_signature not in caplog.text


def test_reprs_never_show_the_ledger_password_or_a_webhook_secret() -> None:
    """Reprs end up in tracebacks with locals and error trackers: the settings' ledger URLs (a PostgreSQL URL
    holds its password) and the webhook server's per-CRM secret are left out of them."""
    from connectors.webhooks import webhook_parser
    from sync.serve.webhooks import CrmWebhooks
    from sync.settings import Settings

    url = f"postgresql+psycopg://rfmsync:{CODE}@db.example/rfmsync"
    settings = Settings(_env_file=None, rfmsync_ledger_url=url, rfmsync_store_url=url)
    assert settings.rfmsync_ledger_url == url and settings.env_value("RFMSYNC_STORE_URL") == url
    assert CODE not in repr(settings) and CODE not in str(settings)
    hooks = CrmWebhooks("amocrm", webhook_parser("amocrm"), CODE)
    assert hooks.key == CODE and CODE not in repr(hooks)


def test_a_sendgrid_key_with_a_trailing_newline_is_refused_without_printing_it(sendgrid_fake) -> None:
    """A key read from a file (a Kubernetes secret) often ends in a newline: the header it went into was refused
    by http.client with a ValueError that quoted it ('Invalid header value b'Bearer SG....''), an internal
    error printing the key."""
    from sync.destinations.sendgrid import SendGridDestination
    from sync.errors import DestinationConfigError

    key = f"SG.{CODE}\n"
    with pytest.raises(DestinationConfigError, match="SENDGRID_API_KEY holds a line break") as info:
        SendGridDestination("sg", key, api_url=sendgrid_fake.url).check()
    assert CODE not in str(info.value) and sendgrid_fake.count("GET", "/v3/marketing/lists") == 0


def test_a_crm_token_with_a_line_break_is_a_credentials_error_not_a_connection_retried() -> None:
    """requests refuses the header: that was 'cannot connect (InvalidHeader); check AMOCRM_API_URL', retried
    with back-off; it is the credentials error naming AMOCRM_TOKEN (the value never shown), sent once. (A
    trailing newline is dropped when the token is read: tests/test_secrets_read.py; one inside stays.)"""
    from connectors.amocrm import AmoCrmConfig, AmoCrmSecrets, AmoCrmSource
    from connectors.errors import AuthError
    from connectors.retry import RetryPolicy

    waits: list[float] = []
    with LoopbackServer(lambda req: Reply.json(200, {})) as server:
        source = AmoCrmSource(AmoCrmConfig(), AmoCrmSecrets(api_url=server.url, token=f"{CODE}\n{CODE}"),
                              retry=RetryPolicy(sleep=waits.append))
        with pytest.raises(AuthError, match="AMOCRM_TOKEN holds a line break") as info:
            source.check()
    assert CODE not in str(info.value) and waits == []


def test_sync_runs_and_failures_never_show_the_key_an_error_answer_echoes(tmp_path, mailchimp_fake, monkeypatch,
                                                                          caplog) -> None:
    """Through the CLI (``-vv``): a batch refused with a 400 whose problem document echoes the key. The key is in
    none of the command outputs, the log records, the ledger's files or the plan file."""
    from datetime import date

    from click.testing import CliRunner

    from sync.cli import main
    from sync.demodata import generate_shop

    cfg = generate_shop(tmp_path / "shop", customers=60, seed=3, as_of=date(2025, 6, 30))
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('audience = "demo000001"', 'audience = "aud1"'),
                   encoding="utf-8")
    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    key = mailchimp_fake.api_key
    mailchimp_fake.answer_raw(json.dumps({"title": "Invalid Resource", "status": 400,
                                          "detail": f"request was: apikey={key}"}).encode(),
                              "application/problem+json", status=400, path=f"^{BATCH}$")
    caplog.set_level(logging.DEBUG)

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, [*args, "--config", str(cfg)], catch_exceptions=False)
        return result.output

    plan_file = tmp_path / "plan.json"
    outputs = [run("-vv", "plan", "--as-of", "2025-06-30", "-o", str(plan_file), "--format", "json"),
               run("-vv", "sync", "--as-of", "2025-06-30"), run("failures"), run("failures", "--format", "json"),
               run("runs"), run("runs", "--format", "json")]
    assert "request was: apikey=***" in outputs[3]  # the failure is recorded, with its reason
    files = [p for p in cfg.parent.rglob("*") if p.is_file()] + [plan_file]
    assert any(p.name.startswith("rfmsync.db") for p in files)
    leaks = [o for o in outputs if key in o] + [p.name for p in files if key.encode() in p.read_bytes()]
    assert leaks == [] and key not in caplog.text


@pytest.mark.parametrize("kind", ["shopify", "retailcrm", "sendgrid", "unisender", "amocrm", "mailchimp"])
def test_a_redirect_to_another_host_never_carries_a_credential(kind) -> None:
    """requests drops ``Authorization`` on a redirect to another host, but keeps every other header: Shopify's
    ``X-Shopify-Access-Token`` and RetailCRM's ``X-API-KEY`` were sent to whatever host a redirect named. urllib
    (SendGrid's client) keeps ``Authorization`` too, and a 307 re-posts Unisender's form, its ``api_key`` in it.
    (amoCRM's and Mailchimp's go in ``Authorization``, which requests drops: here so that it stays so.)"""
    from connectors.amocrm import AmoCrmConfig, AmoCrmSecrets, AmoCrmSource
    from connectors.retailcrm import RetailCrmConfig, RetailCrmSecrets, RetailCrmSource
    from connectors.shopify import ShopifyConfig, ShopifySecrets, ShopifySource
    from sync.destinations.mailchimp import MailchimpDestination
    from sync.destinations.sendgrid import SendGridDestination
    from sync.destinations.unisender import UnisenderDestination

    seen: list[dict[str, str]] = []

    def elsewhere(req):
        seen.append({**req.headers, "body": req.body.decode(), "query": json.dumps(req.query)})
        return Reply.json(200, {"shop": {"name": "S"}, "success": True, "sitesAvailable": [], "result": [],
                                "custom_fields": []})

    status = 307 if kind == "unisender" else 301
    with LoopbackServer(elsewhere) as other:
        target = other.url.replace("127.0.0.1", "localhost")  # another host name
        with LoopbackServer(lambda req: Reply(status, b"", {"Location": f"{target}{req.path}"})) as api:
            client = {"shopify": lambda: ShopifySource(ShopifyConfig(), ShopifySecrets(api_url=api.url, token=CODE)),
                      "retailcrm": lambda: RetailCrmSource(RetailCrmConfig(),
                                                           RetailCrmSecrets(api_url=api.url, api_key=CODE)),
                      "sendgrid": lambda: SendGridDestination("sg", CODE, api_url=api.url),
                      "unisender": lambda: UnisenderDestination("uni", CODE, api_url=api.url),
                      "amocrm": lambda: AmoCrmSource(AmoCrmConfig(), AmoCrmSecrets(api_url=api.url, token=CODE)),
                      "mailchimp": lambda: MailchimpDestination("mc", "aud1", f"{CODE}-us1", api_url=api.url)}[kind]()
            try:
                client.check()
            except Exception:  # the other host may refuse the call without credentials, or be refused: its right
                pass
    assert seen or kind == "unisender"  # followed (Unisender's posts are not: the answer is the 307 itself)
    assert all(CODE not in value and base64.b64encode(f"user:{CODE}-us1".encode()).decode() not in value
               for fields in seen for value in fields.values())


@pytest.mark.parametrize("kind,variable", [("shopify", "SHOPIFY_API_URL"), ("retailcrm", "RETAILCRM_API_URL"),
                                           ("amocrm", "AMOCRM_API_URL")])
def test_a_redirect_to_another_host_is_a_config_error_naming_the_host_and_the_variable(kind, variable) -> None:
    """A moved account or a custom domain redirects to another host, which gets no credentials: that ended in
    'rejected the credentials; check <token>', the wrong fix. It says where the redirect went and what to set
    (here the base-URL override, which is what is set)."""
    from connectors.amocrm import AmoCrmConfig, AmoCrmSecrets, AmoCrmSource
    from connectors.retailcrm import RetailCrmConfig, RetailCrmSecrets, RetailCrmSource
    from connectors.shopify import ShopifyConfig, ShopifySecrets, ShopifySource

    def elsewhere(req):  # the moved account: answers only with the credentials, which it never gets
        return Reply.json(401, {"errors": "[API] Invalid API key or access token"})

    with LoopbackServer(elsewhere) as other:
        target = other.url.replace("127.0.0.1", "localhost")
        with LoopbackServer(lambda req: Reply(301, b"", {"Location": f"{target}{req.path}"})) as api:
            source = {"shopify": lambda: ShopifySource(ShopifyConfig(), ShopifySecrets(api_url=api.url, token=CODE)),
                      "retailcrm": lambda: RetailCrmSource(RetailCrmConfig(),
                                                           RetailCrmSecrets(api_url=api.url, api_key=CODE)),
                      "amocrm": lambda: AmoCrmSource(AmoCrmConfig(), AmoCrmSecrets(api_url=api.url, token=CODE))}[kind]()
            with pytest.raises(ConfigError) as info:
                source.check()
    assert not isinstance(info.value, AuthError)
    assert f"redirected to {target}; point {variable} there" in str(info.value) and CODE not in str(info.value)


@pytest.mark.parametrize("location", ["https://api.other.example/ru/api/getLists", "//api.other.example/x"])
def test_a_unisender_redirect_is_a_config_error_naming_the_host_and_the_variable(location) -> None:
    """Unisender's calls are not redirected (the key is in the posted form): a 3xx said only 'HTTP 301 without a
    JSON envelope: <html>...'."""
    from sync.destinations.unisender import UnisenderDestination
    from sync.errors import DestinationConfigError

    with LoopbackServer(lambda req: Reply(301, b"<html>Moved</html>", {"Location": location})) as api:
        with pytest.raises(DestinationConfigError) as info:
            UnisenderDestination("uni", CODE, api_url=api.url).check()
    assert "getLists was redirected (HTTP 301) to " in str(info.value) and CODE not in str(info.value)
    assert "api.other.example; set UNISENDER_API_URL" in str(info.value)


def test_an_error_answer_is_masked_before_it_is_cut() -> None:
    """An error keeps the answer's first 500 characters: cut first, a token echoed across the cut left its start."""
    from connectors.amocrm import AmoCrmConfig, AmoCrmSecrets, AmoCrmSource

    with LoopbackServer(lambda req: Reply(400, ("x" * 490 + f" {CODE} more").encode(), {})) as server:
        source = AmoCrmSource(AmoCrmConfig(), AmoCrmSecrets(api_url=server.url, token=CODE))
        with pytest.raises(FatalError) as info:
            source.check()
    assert info.value.body == "x" * 490 + " *** more" and CODE[:5] not in str(info.value)


def test_a_crm_token_with_a_character_outside_latin_1_is_a_credentials_error() -> None:
    """A typographic quote pasted into the token: requests raised UnicodeEncodeError, an internal error (exit 70)."""
    from connectors.amocrm import AmoCrmConfig, AmoCrmSecrets, AmoCrmSource

    with LoopbackServer(lambda req: Reply.json(200, {})) as server:
        source = AmoCrmSource(AmoCrmConfig(), AmoCrmSecrets(api_url=server.url, token=f"{CODE}\u2019"))
        with pytest.raises(AuthError, match="AMOCRM_TOKEN holds .* a character outside latin-1") as info:
            source.check()
    assert CODE not in str(info.value)


def test_the_sendgrid_key_stays_off_a_redirect_to_another_port_or_scheme_on_the_same_host() -> None:
    """The key was dropped only when the host name changed: kept on https → http and on another port. It follows
    requests' rule (same host, scheme and port; http → https allowed)."""
    from sync.destinations.sendgrid import SendGridDestination

    seen: list[dict[str, str]] = []

    def other_port(req):
        seen.append(dict(req.headers))
        return Reply.json(200, {"result": [], "_metadata": {}})

    with LoopbackServer(other_port) as other:
        with LoopbackServer(lambda req: Reply(302, b"", {"Location": f"{other.url}{req.path}"})) as api:
            try:
                SendGridDestination("sg", f"SG.{CODE}", api_url=api.url).check()
            except Exception:  # what the other port answers does not matter here
                pass
    assert seen and all(CODE not in value for fields in seen for value in fields.values())
    assert strips_credentials("https://api.example/v3", "http://api.example/v3")
    assert not strips_credentials("http://api.example/v3", "https://api.example/v3")


def _shop(tmp_path):
    from datetime import date

    from sync.demodata import generate_shop

    return generate_shop(tmp_path / "shop", customers=20, seed=3, as_of=date(2025, 6, 30))


def _cli(cfg, *args: str) -> str:
    from click.testing import CliRunner

    from sync.cli import main

    return CliRunner().invoke(main, [*args, "--config", str(cfg)]).output


def test_the_cli_masks_a_secret_of_its_settings_in_its_error_line_traceback_json_error_and_run_error(
        tmp_path, monkeypatch) -> None:
    """A last resort for an error no client masked (here the key pasted into the wrong setting, the orders file):
    the secrets of the settings are known from the CLI's start, masked in the error line, the ``-v`` traceback,
    the JSON error and the run's error in the ledger."""
    cfg = _shop(tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('orders = "orders.csv"', f'orders = "{CODE}.csv"'),
                   encoding="utf-8")
    monkeypatch.setenv("MAILCHIMP_API_KEY", CODE)
    outputs = [_cli(cfg, "pull"), _cli(cfg, "-v", "pull"), _cli(cfg, "pull", "--format", "json"),
               _cli(cfg, "runs", "--format", "json")]
    assert "error: no file matches '***.csv'" in outputs[0] and "Traceback" in outputs[1]
    assert json.loads(outputs[2][:outputs[2].rindex("}") + 1])["error"].startswith("no file matches '***.csv'")
    assert all(CODE not in o for o in outputs), outputs
    assert CODE.encode() not in (cfg.parent / "rfmsync.db").read_bytes()


def test_failures_and_run_errors_stored_unmasked_print_masked(tmp_path, monkeypatch) -> None:
    """Rows an older rfmsync stored with a key in them: ``failures`` and ``runs`` build no client, and mask them
    with the settings' secrets."""
    from sync.ledger import Ledger
    from sync.model import ItemResult

    cfg = _shop(tmp_path)
    ledger = Ledger.connect(f"sqlite:///{cfg.parent / 'rfmsync.db'}")
    run_id = ledger.start_run("sync", "mailchimp-demo")
    ledger.record_failures("mailchimp-demo", run_id, [ItemResult("a@x.com", "upsert", False, f"apikey={CODE}")])
    ledger.finish_run(run_id, "failed", {}, error=f"boom: {CODE}")
    ledger.close()
    assert CODE.encode() in (cfg.parent / "rfmsync.db").read_bytes()  # as an older rfmsync left them
    monkeypatch.setenv("MAILCHIMP_API_KEY", CODE)
    outputs = [_cli(cfg, *args) for args in (("failures",), ("failures", "--format", "json"), ("runs",),
                                             ("runs", "--format", "json"))]
    assert "apikey=***" in outputs[1] and "boom: ***" in outputs[3]
    assert all(CODE not in o for o in outputs), outputs


def test_the_secrets_of_the_settings_are_their_secret_values_a_webhook_code_and_the_ledger_password() -> None:
    from sync.settings import Settings

    settings = Settings(_env_file=None, sendgrid_api_key="SG.key-1",
                        bitrix24_webhook_url=f"https://p.example/rest/1/{CODE}/",
                        rfmsync_ledger_url="postgresql+psycopg://rfm:pa%40ss-word@db.example/rfm")
    assert sorted(settings.secret_values()) == sorted(["SG.key-1", CODE, ":pa%40ss-word@", ":pa@ss-word@"])


def test_a_page_of_data_is_never_masked_and_an_error_answer_only_as_far_as_its_excerpt(monkeypatch) -> None:
    """Every answer's whole text went through redact() to build an excerpt only an error keeps: a 1.4 MB page
    took 100 ms there (13 times its json.loads), minutes of CPU in a backfill. A page is not masked at all; an
    error answer only as far as its excerpt can reach, a secret longer than the margin a fixed one would give
    (a 1 100-character token) still masked across the cut."""
    import connectors.http
    from connectors.amocrm import AmoCrmConfig, AmoCrmSecrets, AmoCrmSource

    masked: list[str] = []
    real = connectors.http.redact
    monkeypatch.setattr(connectors.http, "redact", lambda text, secrets=(): masked.append(text) or real(text, secrets))
    token = "t0k." + "a" * 1100
    page = {"_embedded": {"leads": [{"id": i, "name": "n" * 300} for i in range(300)]}, "marker": "PAGE-OF-DATA"}
    error = "x" * 450 + f" {token} " + "y" * 100_000
    answers = iter([Reply.json(200, page), Reply(400, error.encode(), {})])
    with LoopbackServer(lambda req: next(answers)) as server:
        source = AmoCrmSource(AmoCrmConfig(), AmoCrmSecrets(api_url=server.url, token=token))
        assert source.http.get("api/v4/leads")["marker"] == "PAGE-OF-DATA"
        assert not any("PAGE-OF-DATA" in text or '"leads"' in text for text in masked)
        with pytest.raises(FatalError) as info:
            source.http.get("api/v4/leads")
    assert info.value.body == "x" * 450 + " *** " + "y" * 45 and "t0k" not in str(info.value)
    assert max(len(text) for text in masked) < 2_000  # the start of the 100 kB answer, not all of it


def test_the_ledger_password_is_masked_in_its_url_not_where_the_word_stands_elsewhere(tmp_path, monkeypatch) -> None:
    """The bare password was remembered at the CLI's start: ``postgres`` (docker's image, most guides) or
    ``password`` garbled every message (``***ql+psycopg://``, ``user, *** and database``) and every error the
    ledger stored. It is masked where it stands in a URL, ``:<password>@``, as written and percent-decoded."""
    from connectors.secrets import mask, remember_secrets
    from sync.settings import Settings

    cfg = _shop(tmp_path)
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:1/postgres")
    out = _cli(cfg, "runs")
    assert "ledger postgresql+psycopg://postgres:***@127.0.0.1:1/postgres" in out
    settings = Settings(_env_file=None, rfmsync_ledger_url="postgresql+psycopg://rfm:pa%40ssword@db.example/rfm")
    remember_secrets(*settings.secret_values())
    assert mask("HTTP 400: Invalid Resource: pa@ssword.admin@clinic.example; the password is pa@ssword") == (
        "HTTP 400: Invalid Resource: pa@ssword.admin@clinic.example; the password is pa@ssword")
    assert mask("postgresql://rfm:pa%40ssword@db.example/rfm, rfm:pa@ssword@db") == (
        "postgresql://rfm:***@db.example/rfm, rfm:***@db")


def test_a_short_ledger_password_is_masked_in_its_url_and_nowhere_else(tmp_path, monkeypatch) -> None:
    """rv32 #4: a ledger password of 5 characters or fewer was never masked (only secrets of 8+ were remembered):
    its ``:<password>@`` form is, at any length, where it stands in a URL (after ``//`` and a user), and only
    there: an address after a colon (``mailto:ab@x.com``) is not a URL's password."""
    from connectors.secrets import mask, remember_secrets
    from sync.settings import url_password

    cfg = _shop(tmp_path)
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", "postgresql+psycopg://postgres:ab1@127.0.0.1:1/postgres")
    out = _cli(cfg, "runs")
    assert "ledger postgresql+psycopg://postgres:***@127.0.0.1:1/postgres" in out and ":ab1@" not in out
    for url in ("postgresql://rfm:ab@db.example/rfm", "postgresql://x%40y:a%40@db.example/rfm"):
        remember_secrets(*url_password(url))
    assert mask("could not connect to postgresql://rfm:ab@db, sqlite://:ab@h, postgresql://x%40y:a%40@db") == (
        "could not connect to postgresql://rfm:***@db, sqlite://:***@h, postgresql://x%40y:***@db")
    unchanged = "mailto:ab@x.com, Email:ab@x.ru, to:a@@b, {\"e\":ab@x} key:ab@ http:ab@x ab a%40"
    assert mask(unchanged) == unchanged


def test_a_ledger_password_given_as_a_query_parameter_is_masked_where_it_stands(tmp_path, monkeypatch) -> None:
    """``?password=pg`` (libpq's own keyword, which psycopg and SQLAlchemy pass on: a URL without a ``:password@``
    part still logs in) was printed as written in every error naming the ledger, at any length: the ledger's own
    name for itself hid only the ``:password@`` part, and nothing remembered the parameter. It is masked in the
    ledger's name and, as a last resort, wherever it stands as that parameter (``sslpassword=`` too, a client key's
    passphrase); a 2-letter password is left alone elsewhere (``pg`` is a word in every PostgreSQL message)."""
    from connectors.secrets import mask, remember_secrets
    from sync.settings import url_password

    from sync.errors import ConfigError as LedgerConfigError
    from sync.ledger import Ledger

    url = "postgresql+psycopg://rfm@127.0.0.1:1/rfm?password=pg&sslmode=prefer"
    with pytest.raises(LedgerConfigError) as opening:  # the library alone, no secret remembered: its own name
        Ledger.connect(url)
    assert "ledger postgresql+psycopg://rfm@127.0.0.1:1/rfm?password=***&sslmode=prefer: " in str(opening.value)
    cfg = _shop(tmp_path)
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", url)
    outputs = [_cli(cfg, "runs"), _cli(cfg, "runs", "--format", "json"), _cli(cfg, "-v", "runs")]
    assert "ledger postgresql+psycopg://rfm@127.0.0.1:1/rfm?password=***&sslmode=prefer" in outputs[0]
    assert all("password=pg" not in o for o in outputs), outputs
    for url in ("postgresql://rfm@db/rfm?password=pg", "postgresql://rfm@db/rfm?sslpassword=k%26y&password=p%40g"):
        remember_secrets(*url_password(url))
    assert mask("postgresql://rfm@db/rfm?password=pg: failed; db?sslpassword=k%26y&password=p@g, pg_hba, pg") == (
        "postgresql://rfm@db/rfm?password=***: failed; db?sslpassword=***&password=***, pg_hba, pg")
    unchanged = "password=pgx, my_password=pg, the password is pg, ?password=pg2"
    assert mask(unchanged) == unchanged


@pytest.mark.parametrize("query, secret", [("PASSWORD=pg", "pg"), ("Password=Zq7", "Zq7"),
                                           ("sslmode=require&SSLPASSWORD=k%26y", "k%26y"),
                                           ("SslPassword=k3y", "k3y")])
def test_a_ledger_password_parameter_in_upper_case_is_masked_too(tmp_path, monkeypatch, query, secret) -> None:
    """Query parameters' names are written in any case (``?PASSWORD=pg``, ``&SSLPASSWORD=``): the password was
    printed as written in the CLI's error when the ledger could not be reached (its name for itself hid only
    ``password=``, and the settings' secrets knew only that spelling). Masked whatever the case of the name,
    which is shown as written; the 2-letter password stays a word elsewhere."""
    from connectors.secrets import mask, remember_secrets
    from sync.settings import url_password

    url = f"postgresql+psycopg://rfm@127.0.0.1:1/rfm?{query}"
    name = query.rpartition("&")[2].partition("=")[0]
    cfg = _shop(tmp_path)
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", url)
    outputs = [_cli(cfg, "runs"), _cli(cfg, "runs", "--format", "json"), _cli(cfg, "-v", "runs")]
    assert f"{name}=***" in outputs[0] and "ledger postgresql+psycopg://rfm@127.0.0.1:1/rfm?" in outputs[0]
    assert all(f"{name}={secret}" not in o and f"={secret}" not in o for o in outputs), outputs
    remember_secrets(*url_password(url))
    assert mask(f"failed: {url}; pg_hba, pg") == f"failed: {url.replace(f'{name}={secret}', f'{name}=***')}; pg_hba, pg"


def test_an_excerpt_never_shows_part_of_a_secret_past_its_cut() -> None:
    """rv32 #3: an excerpt masked only the start it needed, then cut: masking a secret there shortened the text,
    bringing characters past the start within the cut, the unmasked beginning of a secret running past it (30 of
    a 37-character key). Wherever a second key stands, and however much masking shortens the start, the excerpt
    is the start of the whole text masked."""
    from connectors.secrets import mask
    from sync.destinations.answers import excerpt

    key = "0123456789abcdef0123456789abcdef-us21"
    for gap in range(120, 280):
        text = f"api_key={key} " + "-" * gap + f" again={key} tail" + "-" * 300
        assert excerpt(text, (key,)) == mask(text, (key,))[:200], gap
    text = f"{key} " * 40 + "-" * 300  # the start masked shrinks to a fraction: widened
    assert excerpt(text, (key,)) == mask(text, (key,))[:200] and len(excerpt(text, (key,))) == 200
    text = f"{key} {'x' * 471} {key} more" + "y" * 100  # the second key past the start masked (537), not the cut
    with LoopbackServer(lambda req: Reply(400, text.encode(), {})) as server:
        from connectors.amocrm import AmoCrmConfig, AmoCrmSecrets, AmoCrmSource

        source = AmoCrmSource(AmoCrmConfig(), AmoCrmSecrets(api_url=server.url, token=key))
        with pytest.raises(FatalError) as info:
            source.check()
    assert info.value.body == mask(text, (key,))[:500] and key[:4] not in str(info.value)


def test_a_secret_is_masked_where_it_stands_alone_not_inside_a_longer_word() -> None:
    """A secret that is a word (a webhook secret ``mybakery``) was replaced inside every longer word too."""
    from connectors.secrets import mask, remember_secrets

    remember_secrets("mybakery", "pw-0123456789")
    assert mask("mybakery2 mybakerys xpw-0123456789a") == "mybakery2 mybakerys xpw-0123456789a"
    assert mask('mybakery, "mybakery" (mybakery) key=mybakery&pw-0123456789. the_mybakery') == (
        '***, "***" (***) key=***&***. the_***')
    # an escape before it ends a word: masked after a percent escape, JSON's \n and \u00a0
    assert mask(r'{"e": "a\nmybakery b\u00a0mybakery"} apikey%3Dmybakery%26') == (
        r'{"e": "a\n*** b\u00a0***"} apikey%3D***%26')


def test_failures_and_runs_mask_their_error_columns_only(tmp_path, monkeypatch) -> None:
    """``failures`` and ``runs`` masked every string column: with RFMSYNC_WEBHOOK_SECRET=mybakery the contact
    ``orders@mybakery.example`` was printed ``orders@***.example`` and the destination ``mybakery-mc``
    ``***-mc``; the error columns are still masked."""
    from sync.ledger import Ledger
    from sync.model import ItemResult

    cfg = _shop(tmp_path)
    ledger = Ledger.connect(f"sqlite:///{cfg.parent / 'rfmsync.db'}")
    run_id = ledger.start_run("sync", "mybakery-mc")
    ledger.record_failures("mybakery-mc", run_id,
                           [ItemResult("orders@mybakery.example", "upsert", False, "secret=mybakery refused")])
    ledger.finish_run(run_id, "failed", {}, error="boom: mybakery")
    ledger.close()
    monkeypatch.setenv("RFMSYNC_WEBHOOK_SECRET", "mybakery")
    failures = json.loads(_cli(cfg, "failures", "--format", "json"))
    runs = json.loads(_cli(cfg, "runs", "--format", "json"))
    assert [(f["destination"], f["key"], f["last_error"]) for f in failures] == [
        ("mybakery-mc", "orders@mybakery.example", "secret=*** refused")]
    assert [(r["destination"], r["error"]) for r in runs] == [("mybakery-mc", "boom: ***")]


@pytest.mark.parametrize("kind,moved_to,advice", [
    ("amocrm", "https://shop.kommo.com", 'set [source] domain = "kommo.com"'),
    ("amocrm", "https://other.kommo.com", 'set [source] domain = "kommo.com" and set AMOCRM_SUBDOMAIN=other'),
    ("amocrm", "https://proxy.example:8443", "set AMOCRM_API_URL=https://proxy.example:8443"),
    ("shopify", "https://new-shop.myshopify.com", "set SHOPIFY_SHOP=new-shop.myshopify.com"),
    ("shopify-config", "https://new-shop.myshopify.com", 'set [source] shop = "new-shop.myshopify.com"')])
def test_a_redirect_says_what_to_set_for_the_calls_to_go_where_it_went(kind, moved_to, advice) -> None:
    """The advice was 'point AMOCRM_SUBDOMAIN there' with a URL: an account moved from amocrm.com to kommo.com
    keeps its subdomain (its domain is ``[source] domain``), and SHOPIFY_SHOP takes a host, not a URL (both
    taken literally gave ``https://https://...``). Each advice, followed, gives the host the redirect went to."""
    from connectors.amocrm import AmoCrmConfig, AmoCrmSecrets, AmoCrmSource
    from connectors.shopify import ShopifyConfig, ShopifySecrets, ShopifySource

    source = {"amocrm": lambda: AmoCrmSource(AmoCrmConfig(domain="amocrm.com"),
                                             AmoCrmSecrets(subdomain="shop", token=CODE)),
              "shopify": lambda: ShopifySource(ShopifyConfig(), ShopifySecrets(shop="shop", token=CODE)),
              "shopify-config": lambda: ShopifySource(ShopifyConfig(shop="shop"), ShopifySecrets(token=CODE))}[kind]()
    assert source.http.redirect_advice(moved_to) == advice
    if kind == "amocrm" and "[source]" in advice:
        sub, _, domain = moved_to.removeprefix("https://").partition(".")
        assert AmoCrmSource(AmoCrmConfig(domain=domain), AmoCrmSecrets(subdomain=sub, token=CODE)).http.base_url == moved_to
    if kind == "shopify":
        shop = advice.partition("=")[2]
        assert ShopifySource(ShopifyConfig(), ShopifySecrets(shop=shop, token=CODE)).http.base_url.startswith(moved_to + "/")


@pytest.mark.parametrize("url", ["https://p.bitrix24.ru/rest/1/profile.json",
                                 "https://p.bitrix24.ru/rest/1/crm.contact.list.json/"])
def test_a_bitrix24_url_without_its_code_is_refused(url) -> None:
    """A method pasted in place of the code was taken for the code: calls went to .../profile.json/<method>.json
    and the method's name was masked as a secret."""
    with pytest.raises(ConfigError, match="must look like https://<portal>/rest/<user>/<code>/"):
        Bitrix24Source(Bitrix24Config(), Bitrix24Secrets(webhook_url=url))
