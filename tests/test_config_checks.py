"""What ``rfmsync check`` said ok and ``sync`` refused or got wrong (hunt28b #5, #6, #7): refused when the config
loads (:mod:`sync.config_checks`), so ``check`` exits 2 with the same sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import config_error, run_cli
from tests.fakes.sendgrid import sendgrid_fake  # noqa: F401  (fixture)

HEAD = '[segmentation]\npreset = "tracks"\n'


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "rfmsync.toml"
    path.write_text(HEAD + body, encoding="utf-8")
    return path


@pytest.mark.parametrize("dest, message", [
    ('type = "sendgrid"\ntag_prefix = "rfm:"',
     "destination 'd': tag_prefix is for Mailchimp only: SendGrid ignores it"),
    ('type = "unisender"\ntag_prefix = "rfm:"', "destination 'd': tag_prefix is for Mailchimp only: Unisender"),
    ('type = "mailchimp"\naudience = "a1"\nlist_prefix = "RFM "',
     "destination 'd': list_prefix is for SendGrid only: Mailchimp ignores it"),
    ('type = "sendgrid"\n[destinations.fields]\nrfm_x = "segmnet"',  # kept28's load check words it
     "destination 'd': [destinations.fields] rfm_x = 'segmnet': unknown value (did you mean 'segment'?)"),
    ('type = "sendgrid"\n[destinations.fields]\n"rfm-seg" = "segment"',  # a name SendGrid refuses: at load too
     "destination 'd': [destinations.fields] 'rfm-seg': a SendGrid custom field name is letters, digits and _ only"),
])
def test_a_destination_key_sync_would_ignore_or_refuse_is_a_config_error(tmp_path, dest, message):
    """``tag_prefix`` on SendGrid was ignored: "Best active" went to the shop's own list ``VIP``, and
    ``--reconcile`` removed the shop's members from it; an unknown field value passed ``check`` and stopped
    ``sync`` at plan time."""
    path = write(tmp_path, f'[[destinations]]\nname = "d"\n{dest}\n[destinations.segments]\n"Best active" = "VIP"\n')
    error, out = config_error(path)
    assert error.startswith(f"{path}: ") and message in error
    assert message.split(":")[0] in out


def test_a_playbook_key_that_is_no_segment_is_refused_by_check_and_warned_by_report_alone(tmp_path):
    """A ``[report.playbook]`` typo was ignored (the report used its default line): ``check`` refuses it with "did
    you mean". Only the report reads the playbook, so nothing else stops on it (the review of conf28: refused at
    load, it stopped ``sync``/``pull``/``plan`` of a shop whose playbook names another preset's segment, which
    main ran): ``segments`` runs, ``report`` warns and writes its page."""
    from datetime import date

    from sync.config import load_config
    from sync.demodata import generate_shop

    cfg = generate_shop(tmp_path / "shop", customers=60, seed=3, as_of=date(2025, 6, 30))
    cfg.write_text(cfg.read_text(encoding="utf-8") + '\n[report.playbook]\n"Best activ" = "Call them"\n',
                   encoding="utf-8")
    load_config(cfg)  # loads: sync, pull, plan are not stopped by the report's lines
    said = ("[report.playbook] 'Best activ': unknown segment (did you mean 'Best active'?); the segments are ")
    assert said in " ".join(run_cli("check", "--config", str(cfg), code=2).output.split())
    run_cli("segments", "--config", str(cfg), "--as-of", "2025-06-30")
    page = tmp_path / "page.html"
    result = run_cli("report", "--config", str(cfg), "--as-of", "2025-06-30", "-o", str(page))
    assert said in " ".join(result.output.split()) and page.exists()


# ------------------------------------------------------------------ what `check` reads besides the file (#3, #6)
def shop(esp: str, fake, tmp_path: Path, monkeypatch, fields: str) -> Path:
    from tests.test_retire_fields import make_shop

    cfg = make_shop(esp, fake, tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'ledger.db'}")
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text[:text.index("[destinations.fields]")] + f"[destinations.fields]\n{fields}\n", encoding="utf-8")
    return cfg


@pytest.mark.parametrize("fields, seed, message", [
    ('first_name = "rfm"', None, "field 'first_name' is a SendGrid reserved field"),
    ('rfm_seg = "segment"', ("rfm_seg", "Date"), "field 'rfm_seg' exists in SendGrid as a Date field, and rfmsync "
                                                 "would write 'segment' there"),
])
def test_check_refuses_the_sendgrid_fields_sync_would_refuse(sendgrid_fake, tmp_path, monkeypatch, fields, seed,
                                                             message):
    if seed:
        sendgrid_fake.add_field(*seed)
    cfg = shop("sendgrid", sendgrid_fake, tmp_path, monkeypatch, fields)
    out = run_cli("check", "--config", str(cfg), code=2).output
    assert message in out and "destination check failed: mailchimp-demo" in out
    assert sendgrid_fake.write_calls == 0
    assert message in run_cli("sync", "--config", str(cfg), "--as-of", "2025-06-30", code=2).output


def test_check_refuses_a_mailchimp_merge_field_of_a_type_that_cannot_take_the_values(mailchimp_fake, tmp_path,
                                                                                     monkeypatch):
    mailchimp_fake.add_merge_field("RFM_SEG", "number", list_id="aud1")
    cfg = shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch, 'RFM_SEG = "segment"')
    out = run_cli("check", "--config", str(cfg), code=2).output
    assert "field 'RFM_SEG' exists in Mailchimp as a number field, and rfmsync would write 'segment' there" in out
    run_cli("check", "--config", str(cfg), "--offline")  # offline: the file alone, ok


@pytest.mark.parametrize("extra, message", [
    ('[predict]\nhorizon_dyas = 60\n', "predict.horizon_dyas: unknown key 'horizon_dyas' (did you mean "
                                       "'horizon_days'?)"),
    ('[ledger]\nurl = "${DATABASE_URL}"\n', "ledger URL is not a database URL (expected sqlite:///path/rfmsync.db "
                                           "or postgresql+psycopg://user:password@host:5432/db); the config file "
                                           "expands no environment variable (${DATABASE_URL}): set "
                                           "RFMSYNC_LEDGER_URL instead"),
])
def test_check_offline_refuses_what_sync_refuses_once_the_environment_is_read(tmp_path, monkeypatch, extra,
                                                                              message):
    monkeypatch.delenv("RFMSYNC_LEDGER_URL", raising=False)
    path = write(tmp_path, extra)
    assert message in run_cli("check", "--offline", "--config", str(path), code=2).output


def test_the_planners_field_check_is_the_load_check_in_its_words(tmp_path):
    """sync29 #5: one check of ``[destinations.fields]`` (the load's, before config_checks: the call there never
    ran); the planners' :func:`sync.planning.plan.check_fields` asks it too, so a destination copied with other
    fields (``model_copy`` validates nothing) is refused in the words ``check`` uses."""
    from sync.config import load_config
    from sync.errors import ConfigError
    from sync.planning.plan import check_fields
    from sync.planning.values import FIELD_VALUES

    path = write(tmp_path, '[[destinations]]\nname = "d"\ntype = "sendgrid"\n[destinations.fields]\n'
                           'rfm_seg = "segment"\n[destinations.segments]\n"Best active" = "VIP"\n')
    dest = load_config(path).destinations[0]
    check_fields(dest)  # a loaded destination passes
    with pytest.raises(ConfigError) as exc:
        check_fields(dest.model_copy(update={"fields": {"rfm_x": "segmnet"}}))
    assert str(exc.value) == ("destination 'd': [destinations.fields] rfm_x = 'segmnet': unknown value (did you mean "
                              "'segment'?); the values are " + ", ".join(FIELD_VALUES))


@pytest.mark.parametrize("schedule, message", [
    ('cron = "0 25 * * *"', "[schedule] cron = '0 25 * * *' is not a valid cron expression"),
    ('every = "6 hours"', "[schedule] every = '6 hours': use a duration like \"6h\""),
    ('cron = "0 3 * * *"\nretry_wait = "ten minutes"', "[schedule] retry_wait = 'ten minutes': use a duration"),
    ('every = "30s"', "[schedule] every = '30s': the shortest interval is 1 minute"),
])
def test_check_and_serve_refuse_the_schedule_serve_cannot_read(tmp_path, schedule, message):
    """hunt31b F5: ``check`` passed a ``[schedule]`` that ``serve`` refused at start (exit 2), or, for
    ``retry_wait``, only in its worker child after "listening on …" (serve exit 1). Now the load reads it with
    serve's own parser: ``check`` and ``serve`` exit 2 with one line naming the key, serve before it listens."""
    path = write(tmp_path, f"[schedule]\n{schedule}\n")
    error, out = config_error(path)
    assert error.startswith(f"{path}: ") and message in error
    assert message in out
    assert message in run_cli("check", "--offline", "--config", str(path), code=2).output
    served = run_cli("serve", "--config", str(path), "--port", "0", "--no-worker", code=2).output
    assert message in served and "listening" not in served
