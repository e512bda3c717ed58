"""Secrets never appear in errors, failures or logs: each path provoked with a recognisable secret, against the
loopback fakes (the vendor answers what the path needs)."""

from __future__ import annotations

import logging

from connectors.bitrix24 import Bitrix24Config, Bitrix24Secrets, Bitrix24Source
from tests.fakes.http import LoopbackServer, Reply

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
