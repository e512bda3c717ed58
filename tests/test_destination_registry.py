"""The destination registry is the one source of truth: every registered type validates in the config, builds
its client from the environment, names its managed tags, maps every field kind to a vendor type, and has a row in
the contract battery; every field value has a kind, and each vendor gives a kind the same type everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sync.config import Config, DestinationConfig, load_config
from sync.destinations.registry import DESTINATIONS, make_destination
from sync.errors import ConfigError, DestinationError
from sync.planning.plan import managed_tags
from sync.planning.planner import plan_one
from sync.planning.values import FIELD_VALUES, KINDS, PREDICTIVE_VALUES, VALUES, kind_of
from sync.settings import Settings, load_settings
from tests.fakes.registry import DESTINATIONS as BATTERY
from tests.fakes.sendgrid import FakeSendGrid, sendgrid_fake  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent


def _table(type_: str, **extra) -> dict:
    spec = DESTINATIONS[type_]
    table = {"name": f"d-{type_}", "type": type_, "segments": {"Best active": "VIP"}, **extra}
    if spec.needs_audience:
        table["audience"] = "aud1"
    return table


@pytest.mark.parametrize("type_", sorted(DESTINATIONS))
def test_every_registered_type_validates_builds_and_names(type_, monkeypatch):
    spec = DESTINATIONS[type_]
    dest = Config(destinations=[_table(type_)]).destinations[0]
    assert dest.spec is spec and dest.new_contacts == spec.default_new_contacts
    assert set(spec.field_types) == set(KINDS)  # every kind has a vendor type
    assert all(spec.field_type(v) == spec.field_types[kind_of(v)] for v in FIELD_VALUES)
    assert managed_tags(dest) == {"Best active": [spec.segment_name(dest, "VIP")]}
    # the client comes from the spec's environment variables, through make_destination
    monkeypatch.setenv(spec.key_env, "secret-key-us1")
    monkeypatch.setenv(spec.url_env, "http://127.0.0.1:9/api")
    client = make_destination(dest, load_settings())
    assert client.name == dest.name and type(client.reads_existing_members) is bool
    assert type(client.reconciles) is bool
    assert "secret-key" not in repr(client)
    assert client.batch_size == spec.max_batch  # the declared limit is the client's
    big = Config(destinations=[_table(type_, batch_size=10 * spec.max_batch)]).destinations[0]
    assert make_destination(big, load_settings()).batch_size == spec.max_batch  # never above it
    # hunt28b #4: batch_size = -1 loaded and Unisender's client cut no batch (range(0, n, -1)): every sync
    # "succeeded" having pushed nothing. Refused when the config loads; a client given one still sends one a call
    for bad in (0, -1):
        with pytest.raises(ValidationError, match="batch_size\n  Input should be greater than or equal to 1"):
            Config(destinations=[_table(type_, batch_size=bad)])
    assert make_destination(dest.model_copy(update={"batch_size": -1}), load_settings()).batch_size >= 1
    monkeypatch.delenv(spec.key_env)
    assert make_destination(dest, load_settings(), required=False) is None
    with pytest.raises(ConfigError, match=f"{spec.key_env} is not set"):
        make_destination(dest, load_settings())


def test_registry_settings_and_battery_agree():
    example = (ROOT / "settings.example.env").read_text(encoding="utf-8")
    for spec in DESTINATIONS.values():
        for env in (spec.key_env, spec.url_env):
            assert env.lower() in Settings.model_fields, f"{env}: add it to sync.settings.Settings"
            assert env in example, f"{env}: add it to settings.example.env"
    assert set(BATTERY) == set(DESTINATIONS)  # every destination runs the contract battery


def test_unknown_type_is_refused_with_the_registered_choices(tmp_path):
    path = tmp_path / "rfmsync.toml"
    path.write_text('[[destinations]]\nname = "x"\ntype = "sendgird"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).endswith("destinations.0.type: Input should be 'mailchimp', 'sendgrid' or 'unisender' "
                                   "(did you mean 'sendgrid'?)")


@pytest.mark.parametrize("table,message", [
    (_table("unisender", new_contacts="transactional"), "Unisender has no transactional status"),
    (_table("mailchimp", tags={"Best active": "vip"}), "[destinations.tags] is for Unisender only"),
    ({"name": "m", "type": "mailchimp"}, 'type = "mailchimp" needs audience = "<list id>"'),
])
def test_vendor_rules_come_from_the_spec(table, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        DestinationConfig(**table)


def test_every_value_has_a_kind_and_the_predictive_ones_are_declared():
    assert FIELD_VALUES[:3] == ("segment", "rfm", "r") and len(FIELD_VALUES) == len(set(FIELD_VALUES)) == 25
    assert all(v.kind in KINDS for v in VALUES.values())
    assert PREDICTIVE_VALUES == {"p_alive", "expected_purchases", "churn_probability", "churn_risk", "expected_aov",
                                 "clv", "next_order_date", "reorder_due", "avg_days_between_orders",
                                 "discount_share", "discount_hunter", "favourite_category", "favourite_brand"}


# value → (Mailchimp merge field, SendGrid custom field, Unisender field); the issue-14 fixes are marked
TYPES = {
    "segment": ("text", "Text", "string"), "rfm": ("text", "Text", "string"), "r": ("number", "Number", "number"),
    "f": ("number", "Number", "number"), "m": ("number", "Number", "number"),
    "recency_days": ("number", "Number", "number"), "frequency": ("number", "Number", "number"),
    "monetary": ("number", "Number", "number"), "avg_check": ("number", "Number", "number"),  # was text, everywhere
    "first_order": ("text", "Date", "date"), "last_order": ("text", "Date", "date"),
    "customer_id": ("text", "Text", "string"), "p_alive": ("number", "Number", "number"),
    "expected_purchases": ("number", "Number", "number"),  # was Text / string in SendGrid / Unisender
    "churn_probability": ("number", "Number", "number"),  # was text in Mailchimp
    "churn_risk": ("text", "Text", "string"),
    "expected_aov": ("number", "Number", "number"),  # was text in Mailchimp
    "clv": ("number", "Number", "number"), "next_order_date": ("text", "Date", "date"),
    "reorder_due": ("text", "Text", "bool"),  # was string in Unisender
    "avg_days_between_orders": ("number", "Number", "number"),  # was text in Mailchimp
    "discount_share": ("number", "Number", "number"),  # was text in Mailchimp
    "discount_hunter": ("text", "Text", "bool"),  # was a SendGrid Number / Unisender number ("count" in the name)
    "favourite_category": ("text", "Text", "string"), "favourite_brand": ("text", "Text", "string"),
}


@pytest.mark.parametrize("value", FIELD_VALUES)
def test_field_type_table(value):
    from sync.destinations.mailchimp import merge_field_type
    from sync.destinations.sendgrid import field_type_for as sendgrid_type
    from sync.destinations.unisender import field_type_for as unisender_type

    expected = TYPES[value]
    assert tuple(DESTINATIONS[t].field_type(value) for t in ("mailchimp", "sendgrid", "unisender")) == expected
    assert (merge_field_type(value), sendgrid_type(value), unisender_type(value)) == expected


def test_sendgrid_creates_booleans_as_text_and_keeps_an_existing_number_field(sendgrid_fake, caplog):
    """The migration rule: a field created by an older rfmsync keeps its type, and values are sent as that type
    takes them (a boolean is 1/0 in a Number field, yes/no in a Text field)."""
    from sync.destinations.sendgrid import SendGridDestination
    from sync.model import ContactChange

    sendgrid_fake.add_field("old_hunter", "Number")  # made by rfmsync <= 0.x from the name ("count")
    dest = SendGridDestination("sg", sendgrid_fake.api_key, api_url=sendgrid_fake.url, sleep=lambda s: None,
                               poll_interval=0.01)
    dest.prepare([], {"hunter": "discount_hunter", "old_hunter": "discount_hunter", "p": "expected_purchases"})
    assert sorted(sendgrid_fake.fields.values()) == [("hunter", "Text"), ("old_hunter", "Number"), ("p", "Number")]
    assert "custom field old_hunter is Number, rfmsync would use Text for 'discount_hunter'; leaving it" in caplog.text
    change = ContactChange(key="a@x.com", email="a@x.com", customer_id="1", segment="s", create=True,
                           status_if_new="subscribed", set_fields={"hunter": True, "old_hunter": True, "p": 1.5})
    dest.apply([change], lambda results: None)
    assert [sendgrid_fake.field_value("a@x.com", f) for f in ("hunter", "old_hunter", "p")] == ["yes", 1, 1.5]


class _NoReconcile:
    """A destination that declares it cannot list members (as Unisender does)."""

    name = "u"
    reads_existing_members = False
    reconciles = False

    def read_managed(self, managed_tags):  # pragma: no cover - must not be called
        raise AssertionError("read_managed called on a destination that does not reconcile")


def test_reconcile_is_refused_by_declared_capability(tmp_path):
    from sync.ledger import Ledger

    cfg = Config(destinations=[_table("unisender")])
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        with pytest.raises(DestinationError, match="--reconcile is not supported for Unisender"):
            plan_one(cfg, cfg.destinations[0], [], ledger, _NoReconcile(), None, full_refresh=False,
                     reconcile=True)
    finally:
        ledger.close()


def test_check_names_the_missing_key_from_the_spec(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from sync.cli import main
    from sync.demodata import generate_shop

    shop = generate_shop(tmp_path / "shop", customers=30, seed=3)
    monkeypatch.chdir(tmp_path)
    for spec in DESTINATIONS.values():
        monkeypatch.delenv(spec.key_env, raising=False)
    result = CliRunner().invoke(main, ["check", "--config", str(shop)])
    assert "destination mailchimp-demo (mailchimp): not checked, MAILCHIMP_API_KEY is not set" in result.output
