"""The ``rfmsync`` click group: the one place errors become exit codes, and the options commands share.

Errors are converted here only: one clear line on stderr, exit code by kind (see :mod:`sync.errors`);
``-v`` adds the traceback. The commands (one module per group: :mod:`.segments`, :mod:`.check`,
:mod:`.demo`, :mod:`.sync`, :mod:`.serve`) are thin layers over :mod:`sync.api`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from typing import Iterator

import click

from connectors.errors import ConfigError as SourceConfigError
from connectors.errors import ConnectorError, RetryLaterError
from connectors.secrets import install_masked_excepthooks, mask, mask_log_handlers, remember_secrets
from segmentation import DataRangeError, SegmentationError
from segmentation.errors import interrupted_query

from ..errors import INTERNAL_EXIT, RETRY_LATER_EXIT, ConfigError, DataError, RfmsyncError, Terminated
from .json_output import emit_error
from .output import err, print_error

log = logging.getLogger("rfmsync")

config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                             help="Config file (default: $RFMSYNC_CONFIG, else ./rfmsync.toml).")
as_of_option = click.option("--as-of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
                            help="Compute as of this date (YYYY-MM-DD; default: today in the config's timezone).")


def reading_options(f):
    """``--reread`` and ``--verify``: how a file source's files are read into the order store."""
    f = click.option("--verify", is_flag=True,
                     help="File source: hash every file whole to tell it unchanged (not only size, mtime, "
                          "head and tail).")(f)
    return click.option("--reread", is_flag=True,
                        help="File source: read every file again, changed or not.")(f)


def reading(reread: bool, verify: bool):
    """The :class:`sync.pipeline.Reading` of the ``--reread`` / ``--verify`` flags."""
    from ..pipeline import Reading

    return Reading(reread=reread, verify=verify)


dest_option = click.option("--destination", "destinations", multiple=True, metavar="NAME",
                           help="Only this destination (repeatable; default: all).")


def exit_code(exc: BaseException) -> int:
    """The exit code of an error (the tree in :mod:`sync.errors`); anything unexpected is internal (70)."""
    if isinstance(exc, RfmsyncError):
        return exc.exit_code
    if isinstance(exc, DataRangeError):
        return DataError.exit_code
    if isinstance(exc, RetryLaterError):  # a source refused until a known time: try later (EX_TEMPFAIL)
        return RETRY_LATER_EXIT
    if isinstance(exc, (SourceConfigError, SegmentationError)):
        return ConfigError.exit_code
    if isinstance(exc, ConnectorError):
        return DataError.exit_code
    return INTERNAL_EXIT


class RfmsyncGroup(click.Group):
    def __call__(self, *args, **kwargs):
        """The program's entry point (the ``rfmsync`` script and ``python -m sync`` call ``main()``; a test's
        CliRunner calls ``main.main()``): the process's exception hooks, masked, are installed here only."""
        install_masked_excepthooks()
        with terminated_on_sigterm():
            return super().__call__(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # the one place errors become exit codes
            if interrupted_query(exc):  # a Ctrl-C inside a DuckDB statement: click's answer to any other Ctrl-C
                raise KeyboardInterrupt from exc
            verbose = (ctx.obj or {}).get("verbose", 0)
            code = exit_code(exc)
            try:
                emit_error(ctx, code, _message(exc), exc)  # --format json: the document, with the error
            except Exception:
                pass
            try:
                if verbose:
                    sys.stderr.write(mask(traceback.format_exc()))
                kind = "internal error" if code == INTERNAL_EXIT else "error"
                print_error(kind, _message(exc))
                if code == INTERNAL_EXIT and not verbose:
                    err.print("(run with -v for details)")
            except Exception:  # printing the error must not become a traceback of its own
                pass
            ctx.exit(code)


@contextmanager
def terminated_on_sigterm() -> Iterator[None]:
    """SIGTERM (``kill``, a supervisor's stop) raises :class:`~sync.errors.Terminated` in the main thread, once, as
    Ctrl-C raises KeyboardInterrupt: the run under way records itself ``interrupted`` on the way out (before, the
    process ended at once and its run showed ``running`` until the next run found it dead). The process then ends
    by SIGTERM as before (its exit status unchanged). A second SIGTERM or Ctrl-C while the first one's cleanup runs
    ends the process at once, by that signal (its run recorded ``interrupted`` already, but for a second signal
    held during that record's write, 1.5 s at most: :func:`sync.ledger.runs.record_interrupted`; its adds sent are
    in doubt all the same: :mod:`sync.ledger.inflight`). ``serve`` installs its own handlers over these."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        got.append(signum)
        for sig in (signal.SIGTERM, signal.SIGINT):  # the next one of ours (not serve's) ends the process at once
            if signal.getsignal(sig) is handler:
                signal.signal(sig, signal.SIG_DFL)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated
    previous = signal.signal(signal.SIGTERM, handler)
    # Ctrl-C: only where Python's own handler answers it (a SIGINT ignored, as under nohup, stays ignored)
    interrupt = signal.getsignal(signal.SIGINT)
    if interrupt is signal.default_int_handler:
        signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        if got and got[0] == signal.SIGTERM:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        if not got:  # (after a Ctrl-C the process ends: a second one meanwhile, as the threads are joined, too)
            signal.signal(signal.SIGTERM, previous)
            if interrupt is signal.default_int_handler:
                signal.signal(signal.SIGINT, interrupt)


def _message(exc: BaseException) -> str:
    """The error's one line, every known secret masked (a last resort: the clients mask theirs)."""
    try:
        return mask(str(exc)) or type(exc).__name__
    except Exception:
        return type(exc).__name__


def _quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--quiet`` after a command (``rfmsync sync --quiet``) is the same as before it."""
    if value:
        display = (ctx.find_root().obj or {}).get("display")
        if display is not None:
            display.quiet = True


QUIET_HELP = ("No progress bars, retry-wait lines or info lines; the output, errors and warnings stay "
              "(progress shows only when stderr is a terminal anyway).")
#: added to every command (sync/cli/__init__.py), hidden: documented once, with the group's option
quiet_param = click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True, hidden=True,
                           callback=_quiet, help=QUIET_HELP)


@click.group(cls=RfmsyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More output; -v shows tracebacks, -vv debug logs.")
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@click.version_option(package_name="rfmsync")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """rfmsync: RFM customer segments from your orders, kept in sync with your email platform.

    Progress bars show on stderr while a step runs, when stderr is a terminal; -q/--quiet (before or after
    the command) turns them off."""
    from ..progress import reporting
    from .progress import cli_display

    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    display = ctx.obj["display"] = cli_display(quiet)
    ctx.with_resource(reporting(display))
    ctx.call_on_close(display.close)
    if verbose:
        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mask_log_handlers()  # every record written masked, a traceback's text too (the secrets: remembered below)
    from ..settings import Settings, warn_unknown_variables

    warn_unknown_variables()  # MAILCHIMP_KEY and the like: a warning naming the expected variable
    try:  # masked in the error line, the JSON error, the ledger's error columns and stored rows printed
        remember_secrets(*Settings().secret_values())
    except Exception:  # settings that do not load: the command that reads them says why
        pass


def load(config_path):
    """The config (``--config``, else $RFMSYNC_CONFIG, else ./rfmsync.toml)."""
    from ..config import load_config

    return load_config(config_path)
