"""A ``serve`` schedule's warnings (:func:`sync.run.log_warnings`): where only the log reads them, the same warning
every interval (an export's codes without their zeros, said by every run that reads the files) is a WARNING once,
then INFO while it stays; a new or changed one is a WARNING again (before: a WARNING every interval)."""

from __future__ import annotations

import logging

from sync.config import load_config
from sync.ledger import open_ledger
from sync.serve.scheduler import run_full_sync
from sync.settings import load_settings
from tests.test_worker import AS_OF, make_shop


def add_orders(cfg_path, *customers: str) -> None:
    orders = cfg_path.parent / "orders.csv"
    lines = "".join(f"9{c};01.06.2025 10:00;{c};;;100,00;;Продажа\n" for c in customers)
    orders.write_text(orders.read_text(encoding="utf-8-sig") + lines, encoding="utf-8")


def test_a_scheduled_run_logs_a_warning_the_last_one_logged_at_info(tmp_path, mailchimp_fake, monkeypatch, caplog):
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=60)
    add_orders(path, "000123", "123")
    cfg, settings = load_config(path), load_settings()
    caplog.set_level(logging.INFO, logger="sync.run")

    def zeros_said() -> list[tuple[int, str]]:
        caplog.clear()
        with open_ledger(cfg, settings) as ledger:
            run_full_sync(cfg, ledger, settings, as_of=AS_OF)
        return [(r.levelno, r.getMessage()) for r in caplog.records if "leading zeros" in r.getMessage()]

    ((level, first),) = zeros_said()
    assert level == logging.WARNING and first.startswith("1 customer id in ")
    assert zeros_said() == [(logging.INFO, f"{first} (as at the last run)")]  # the next interval: the same files
    add_orders(path, "0456", "456")
    ((level, changed),) = zeros_said()  # another pair: the line changed, a WARNING again
    assert level == logging.WARNING and changed.startswith("2 customer ids in ")
