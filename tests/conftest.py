"""Shared fixtures: the stateful ESP fakes on 127.0.0.1 and the ledger backends (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import tempfile

import pytest

from tests.fakes.mailchimp import mailchimp_fake  # noqa: F401  (fixture)
from tests.fakes.sendgrid import sendgrid_fake  # noqa: F401  (fixture)
from tests.fakes.unisender import unisender_fake  # noqa: F401  (fixture)


MEMORY_TMP = "/dev/shm"  # a tmpfs on Linux


def pytest_configure(config: pytest.Config) -> None:
    """Test files (tmp_path, TemporaryDirectory, the stores and ledgers in them) go to memory when the machine has
    a tmpfs with room: the suite writes many small DuckDB and SQLite files and every commit's fsync waits on a
    disk; on tmpfs an fsync returns at once. What the tests check does not change (a killed process leaves what it
    wrote in the page cache on either). An explicit TMPDIR, PYTEST_DEBUG_TEMPROOT or --basetemp wins; set
    TMPDIR=/tmp to keep them on disk."""
    if config.option.basetemp or os.environ.get("TMPDIR") or os.environ.get("PYTEST_DEBUG_TEMPROOT"):
        return
    try:
        st = os.statvfs(MEMORY_TMP)
    except OSError:
        return
    if st.f_bavail * st.f_frsize >= 2 * 2**30 and os.access(MEMORY_TMP, os.W_OK | os.X_OK):
        os.environ["TMPDIR"] = MEMORY_TMP  # inherited by the xdist workers and the tests' subprocesses
        tempfile.tempdir = MEMORY_TMP  # gettempdir() may have been called (and cached) already


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the developer's real credentials, .env or config."""
    for name in list(os.environ):
        if name.startswith(("RFMSYNC_", "MAILCHIMP_", "SENDGRID_", "UNISENDER_", "RETAILCRM_", "AMOCRM_",
                            "BITRIX24_", "SHOPIFY_")) and name != "RFMSYNC_TEST_PG_URL":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
