"""Shared fixtures: the stateful ESP fakes on 127.0.0.1 and the ledger backends (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import sys
import tempfile

import pytest

from connectors.secrets import forget_secrets
from tests import profiles  # noqa: F401  (loads the Hypothesis profile RFMSYNC_HYPOTHESIS names)
from tests.fakes.mailchimp import mailchimp_fake  # noqa: F401  (fixture)
from tests.fakes.sendgrid import sendgrid_fake  # noqa: F401  (fixture)
from tests.fakes.unisender import unisender_fake  # noqa: F401  (fixture)


MEMORY_TMP = "/dev/shm"  # a tmpfs on Linux


def pytest_configure(config: pytest.Config) -> None:
    _keep_bytecode(config)
    _memory_tmp(config)


def _keep_bytecode(config: pytest.Config) -> None:
    """The suite writes and keeps bytecode even when the shell sets ``PYTHONDONTWRITEBYTECODE`` (this
    development machine's does), as an installed package has its own: pytest then keeps each test module's
    compiled, assert-rewritten code in ``tests/__pycache__`` instead of every worker compiling and rewriting all
    of them again each run (~3 s CPU a worker), and the project's modules are compiled once before the workers
    and the tests' child processes start (``bench.common.compile_project``; a child otherwise compiles every
    module changed since its last ``.pyc`` again). What runs does not change: a ``.pyc`` is only used while it
    matches its source."""
    sys.dont_write_bytecode = False
    if not hasattr(config, "workerinput"):  # once, in the process that starts the xdist workers
        from bench.common import compile_project

        compile_project()


def _memory_tmp(config: pytest.Config) -> None:
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
    """No test sees the developer's real credentials, .env or config, nor the secrets an earlier test's clients
    were given (masked process-wide: a test must show its own client masks its secret)."""
    forget_secrets()
    for name in list(os.environ):
        if name.startswith(("RFMSYNC_", "MAILCHIMP_", "SENDGRID_", "UNISENDER_", "RETAILCRM_", "AMOCRM_",
                            "BITRIX24_", "SHOPIFY_")) and name != "RFMSYNC_TEST_PG_URL":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
