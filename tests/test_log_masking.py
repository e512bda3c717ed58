"""Every record rfmsync's log handlers write is masked, its traceback too: a worker's ``batch failed`` traceback
and its ``cannot read the queue`` line, whose exception quotes a secret (a vendor's answer echoing the key, a
database URL with its password), never show it."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
import time

from connectors.secrets import MaskLogRecords, mask_log_handlers, remember_secrets
from sync.config import Config
from sync.ledger import Ledger
from sync.ledger.codec import encode_records
from sync.serve.worker import Worker

SECRET = "pg-pass-7f3a9c2e1b"


class FailingLedger:
    """A real ledger whose queue read fails once, then whose claim fails once, each with the secret in the
    exception (as a database driver's message quotes the URL it could not reach)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.failures = ["claimable_count", "claim_events"]

    def __getattr__(self, name):
        attr = getattr(self._ledger, name)
        if self.failures and name == self.failures[0]:
            def fail(*args, **kwargs):
                self.failures.pop(0)
                raise RuntimeError(f"could not connect to postgresql://rfm:{SECRET}@db.internal/rfm")
            return fail
        return attr


def test_a_secret_in_an_exception_raised_inside_the_worker_is_masked_in_its_log_lines_and_traceback(tmp_path):
    remember_secrets(SECRET)  # as the worker does with its settings' secrets
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        mask_log_handlers()  # what the CLI does once it configured logging
        with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}") as real:
            real.enqueue_event("generic", "k1", encode_records())
            ledger = FailingLedger(real)
            worker = Worker(Config(), ledger, None, debounce_seconds=0, poll_seconds=0.01,  # type: ignore[arg-type]
                            process=lambda batch: None)
            stop = threading.Event()
            thread = threading.Thread(target=worker.run_forever, args=(stop,))
            thread.start()
            try:
                deadline = time.monotonic() + 10
                while "batch failed" not in out.getvalue() and time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:
                stop.set()
                thread.join(5)
    finally:
        root.removeHandler(handler)
    text = out.getvalue()
    assert "cannot read the queue: could not connect to postgresql://rfm:***@db.internal/rfm" in text
    assert "batch failed: could not connect to postgresql://rfm:***@db.internal/rfm" in text
    assert "Traceback (most recent call last)" in text and "RuntimeError: could not connect" in text
    assert SECRET not in text


def test_the_filter_masks_message_arguments_exception_and_stack_text():
    remember_secrets(SECRET)
    try:
        raise ValueError(f"key {SECRET} refused")
    except ValueError:
        record = logging.getLogger("sync.x").makeRecord("sync.x", logging.ERROR, __file__, 1, "failed: %s",
                                                        (SECRET,), sys.exc_info(), sinfo=f"Stack: {SECRET}")
    MaskLogRecords().filter(record)
    text = logging.Formatter().format(record)
    assert "failed: ***" in text and "ValueError: key *** refused" in text and "Stack: ***" in text
    assert SECRET not in text


def test_the_cli_masks_what_the_last_resort_handler_writes(tmp_path):
    """``rfmsync serve`` without ``-v`` configures no handler: Python's last resort writes its WARNINGs and
    tracebacks to stderr, masked too (a real process: pytest's own handlers are not in the way)."""
    script = (
        "import logging, sys\n"
        "from sync.cli.main import main\n"
        "from connectors.secrets import remember_secrets\n"
        "try:  # any command: the group's callback sets logging up, then check fails on the missing file\n"
        "    main.main(['check', '--config', sys.argv[1]], standalone_mode=False)\n"
        "except Exception:\n"
        "    pass\n"
        f"remember_secrets({SECRET!r})\n"
        "try:\n"
        f"    raise RuntimeError('lease lost: ' + {SECRET!r})\n"
        "except RuntimeError as exc:\n"
        "    logging.getLogger('sync.serve.worker').exception('worker w1: batch failed: %s', exc)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "none.toml")], capture_output=True,
                          text=True, timeout=60)
    assert "worker w1: batch failed: lease lost: ***" in done.stderr
    assert "RuntimeError: lease lost: ***" in done.stderr
    assert SECRET not in done.stderr


def test_a_formatter_that_formats_exc_info_itself_gets_no_secret():
    """A handler's formatter reading ``record.exc_info`` (as python-json-logger's does: exc_info first, exc_text
    only without it) formatted the unmasked exception again; the stdlib one still prints the masked text."""
    import json

    class JsonFormatter(logging.Formatter):
        def format(self, record):
            out = {"message": record.getMessage()}
            if record.exc_info:
                out["exc_info"] = self.formatException(record.exc_info)
            elif record.exc_text:
                out["exc_info"] = record.exc_text
            return json.dumps(out)

    remember_secrets(SECRET)
    streams = {kind: io.StringIO() for kind in ("json", "plain")}
    logger = logging.getLogger("sync.serve.test_json")
    logger.propagate = False
    for kind, formatter in (("json", JsonFormatter()), ("plain", logging.Formatter("%(message)s"))):
        handler = logging.StreamHandler(streams[kind])
        handler.setFormatter(formatter)
        handler.addFilter(MaskLogRecords())
        logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"lease lost: postgresql://rfm:{SECRET}@db/rfm")
        except RuntimeError:
            logger.exception("worker w1: batch failed")
    finally:
        logger.handlers.clear()
        logger.propagate = True
    line = json.loads(streams["json"].getvalue())
    assert "RuntimeError: lease lost: postgresql://rfm:***@db/rfm" in line["exc_info"]
    plain = streams["plain"].getvalue()
    assert "Traceback (most recent call last)" in plain and "lease lost: postgresql://rfm:***@db/rfm" in plain
    assert SECRET not in streams["json"].getvalue() + plain


def test_an_uncaught_exception_of_a_thread_or_of_the_main_thread_is_written_masked(tmp_path):
    """Python writes an exception nothing caught itself (``threading.excepthook``, ``sys.excepthook``), not
    through logging: a ``serve`` background thread's traceback quoting a database URL showed its password."""
    script = (
        "import sys, threading\n"
        "from connectors.secrets import install_masked_excepthooks, mask_log_handlers, remember_secrets\n"
        "mask_log_handlers(); install_masked_excepthooks()\n"
        f"remember_secrets({SECRET!r})\n"
        "def beat():\n"
        f"    raise RuntimeError('heartbeat lost: postgresql://rfm:' + {SECRET!r} + '@db/rfm')\n"
        "t = threading.Thread(target=beat, name='rfmsync-bg-0')\n"
        "t.start(); t.join()\n"
        "threading.Thread(target=sys.exit).start()\n"  # SystemExit in a thread: nothing, as Python does
        f"raise ValueError('bad key ' + {SECRET!r})\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "Exception in thread rfmsync-bg-0:\nTraceback (most recent call last)" in done.stderr
    assert "RuntimeError: heartbeat lost: postgresql://rfm:***@db/rfm" in done.stderr
    assert done.stderr.count("Exception in thread") == 1
    assert "ValueError: bad key ***" in done.stderr and done.returncode == 1
    assert SECRET not in done.stderr


def test_the_entry_point_installs_the_masked_exception_hooks_and_an_in_process_command_does_not(tmp_path):
    """The hooks are the process's: the ``rfmsync`` script (``main()``) installs them; a command run in-process
    (CliRunner, as every test does) leaves the test runner's own (pytest's check for crashed threads)."""
    from click.testing import CliRunner

    from sync.cli import main

    hooks = (threading.excepthook, sys.excepthook)
    result = CliRunner().invoke(main, ["runs", "--config", str(tmp_path / "none.toml")])
    assert result.exit_code != 0 and "none.toml" in result.output  # the group's callback ran
    assert (threading.excepthook, sys.excepthook) == hooks
    script = ("import sys, threading\n"
              "from sync.cli import main\n"
              "try:\n    main(['--version'])\n"
              "except SystemExit:\n    pass\n"
              "print(threading.excepthook.__name__, sys.excepthook.__name__)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.split()[-2:] == ["masked_thread_excepthook", "masked_excepthook"], done.stderr
