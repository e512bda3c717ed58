"""``rfmsync serve``'s worker process stopping on a config error: the config file edited between the server's own
read and its worker process's start. The server exits 2 on that config error's line (it was "the worker process
exited unexpectedly", exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: serve, whose worker process's command first writes a bad [schedule] over the config (an edit made while serve
#: started: after the server read the file, before its worker process does)
_EDITED_AT_THE_CHILD = """
import sys
import sync.cli.serve as cli
cli.CHILD_COMMAND = ("sh", "-c", 'printf "[schedule]\\\\nevery = \\\\"often\\\\"\\\\n" > "$CFG"; exec "$0" -m sync.cli serve "$@"',
                     sys.executable)
from sync.cli import main
main(["serve", "--config", sys.argv[1], "--port", "0"])
"""


def test_a_config_edited_before_the_worker_process_starts_stops_serve_with_its_config_error(tmp_path):
    config = tmp_path / "rfmsync.toml"
    config.write_text("", encoding="utf-8")  # the defaults: valid
    env = {**os.environ, "CFG": str(config), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _EDITED_AT_THE_CHILD, str(config)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=90)
    line = f"error: {config}: [schedule] every = 'often': use a duration like"
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].startswith(line), done.stderr  # the server's own last word
    assert "exited unexpectedly" not in done.stderr and "Traceback" not in done.stderr
