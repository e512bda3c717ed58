"""The ledger id a saved plan names (``ledger_id``) when ``plan -o`` cannot write it, and when the ledger was put
back from a copy taken before it had one."""
from __future__ import annotations

import json

from sqlalchemy.engine import make_url

from tests.builders import run_cli as cli
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_config_moved import AS_OF, shop  # noqa: F401


def _read_only(url: str) -> str:
    """``url`` opened read-only: SQLite's ``mode=ro``; a PostgreSQL session that only reads (as a standby's)."""
    if url.startswith("sqlite"):
        return f"sqlite:///file:{url.removeprefix('sqlite:///')}?mode=ro&uri=true"
    parsed = make_url(url)
    options = f"{parsed.query['options']} -cdefault_transaction_read_only=on"
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


def test_plan_o_on_a_read_only_ledger_saves_a_plan_naming_no_ledger(shop, mailchimp_fake, tmp_path,  # noqa: F811
                                                                    monkeypatch, ledger_url):  # noqa: F811
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", ledger_url)
    cli("sync", "--config", str(shop), "--as-of", "2025-03-31")  # a written ledger, no id (sync makes none)
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", _read_only(ledger_url))
    saved = tmp_path / "p.json"
    out = cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved), code=(0, 74))
    assert out.exit_code == 0, out.output
    assert "the ledger's id could not be made" in out.output and "ledger_id null" in out.output, out.output
    doc = json.loads(saved.read_text())
    assert doc["ledger_id"] is None and doc["plans"][0]["changes"]
    # where the ledger can be written, the plan is judged by its revision (it has not moved: applied)
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", ledger_url)
    before = mailchimp_fake.write_calls
    cli("apply", "--config", str(shop), str(saved), "--allow-mass-change")
    assert mailchimp_fake.write_calls > before


def test_a_write_a_postgresql_role_may_not_make_is_a_ledger_failure_not_an_internal_error():
    """A SELECT-only role's write (``permission denied``, SQLSTATE 42501) is the settings' ledger failure (exit
    74, saying what to do; ``plan -o`` only warns that the plan names no ledger), not an internal error (70)."""
    from psycopg import errors
    from sqlalchemy.engine import make_url as url_of

    from sync.errors import LedgerError
    from sync.ledger.dberrors import ledger_failure

    failure = ledger_failure(errors.InsufficientPrivilege("permission denied for table cursors"),
                             url_of("postgresql+psycopg://u:secret@db/ledger"))
    assert isinstance(failure, LedgerError) and not failure.transient
    assert "permission denied" in str(failure) and "SELECT-only" in str(failure) and "secret" not in str(failure)


def test_a_ledger_put_back_from_a_copy_older_than_its_id_is_judged_by_revisions_not_as_another_ledger(
        shop, mailchimp_fake, tmp_path, monkeypatch):  # noqa: F811
    """The ledger file put back from a copy taken before its id was made (by ``plan -o``): not another ledger. At
    the plan's revision (nothing written after the copy) the plan applies; a plan the restore undid is refused by
    its revisions (exit 5: tests/test_sync_e2e.py)."""
    db = tmp_path / "l.db"
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", f"sqlite:///{db}")
    cli("sync", "--config", str(shop), "--as-of", "2025-03-31")
    copy = {p.name: p.read_bytes() for p in tmp_path.glob("l.db*") if p.is_file()}
    saved = tmp_path / "p.json"
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved))
    assert json.loads(saved.read_text())["ledger_id"] is not None
    for p in tmp_path.glob("l.db*"):  # (the state cache's folder beside it kept)
        if p.is_file():
            p.unlink()
    for name, data in copy.items():
        (tmp_path / name).write_bytes(data)
    before = mailchimp_fake.write_calls
    out = cli("apply", "--config", str(shop), str(saved), "--allow-mass-change", code=(0, 2, 5))
    assert out.exit_code == 0, out.output
    assert mailchimp_fake.write_calls > before


def test_the_library_and_the_cli_save_the_same_ledger_id_on_a_fresh_ledger(shop, mailchimp_fake, tmp_path,  # noqa: F811
                                                                            monkeypatch, ledger_url):  # noqa: F811
    """A plan saved by the library (``api.plan_to_save``) names the ledger as ``plan -o`` does: on a fresh ledger
    (no SQLite file yet; an empty PostgreSQL schema) the id is made, the same one whichever saves first, and
    ``apply`` takes either plan (a library ``api.plan`` used to save ``ledger_id: null`` there, refused by apply)."""
    from datetime import date

    from sync import api
    from sync.config import load_config
    from sync.settings import load_settings

    monkeypatch.setenv("RFMSYNC_LEDGER_URL", ledger_url)
    cfg, settings = load_config(shop), load_settings()
    library = api.plan_to_save(cfg, settings, as_of=date.fromisoformat(AS_OF)).document()
    assert isinstance(library["ledger_id"], str) and library["plans"][0]["changes"]
    saved = tmp_path / "cli.json"
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved))
    assert json.loads(saved.read_text())["ledger_id"] == library["ledger_id"]
    mine = tmp_path / "library.json"
    mine.write_text(json.dumps(library))
    cli("apply", "--config", str(shop), str(mine))
    assert mailchimp_fake.write_calls > 0
