"""Shared fixtures: the stateful ESP fakes on 127.0.0.1 and the ledger backends (SQLite, PostgreSQL)."""

from __future__ import annotations

import os

import pytest

from tests.fakes.mailchimp import mailchimp_fake  # noqa: F401  (fixture)
from tests.fakes.sendgrid import sendgrid_fake  # noqa: F401  (fixture)
from tests.fakes.unisender import unisender_fake  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the developer's real credentials, .env or config."""
    for name in list(os.environ):
        if name.startswith(("RFMSYNC_", "MAILCHIMP_", "SENDGRID_", "UNISENDER_", "RETAILCRM_", "AMOCRM_",
                            "BITRIX24_", "SHOPIFY_")) and name != "RFMSYNC_TEST_PG_URL":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
