"""``rfmsync serve``: the command line of the webhook server (the server itself is :mod:`sync.serve`, process
supervision :mod:`sync.serve.supervise`)."""

from __future__ import annotations

import sys

import click

from .main import config_option
from .output import info

#: How the server starts its worker process: this command, run with ``--no-http --parent-pipe``.
CHILD_COMMAND = (sys.executable, "-m", "sync.cli", "serve")


@click.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--worker/--no-worker", default=True, show_default=True,
              help="Run the resync workers, [serve] workers of them (--no-worker: intake only).")
@click.option("--schedule/--no-schedule", default=True, show_default=True,
              help="Run the [schedule] full syncs from this server.")
@click.option("--http/--no-http", default=True, show_default=True,
              help="Serve HTTP (--no-http: a worker/scheduler-only process, e.g. next to an intake-only one).")
@click.option("--worker-process/--worker-thread", default=True, show_default=True,
              help="Run the workers and the scheduler in a child process at nice +10, so a resync never "
                   "slows the webhook intake (--worker-thread: all in this process).")
@click.option("--parent-pipe", is_flag=True, hidden=True,
              help="Internal: the child of --worker-process (woken by stdin lines, metrics on stdout).")
def serve(config_path, host, port, worker, schedule, http, worker_process, parent_pipe):
    """Receive webhooks (POST /webhooks/{source}), resync affected customers, run scheduled syncs.

    Also serves GET /healthz, GET /runs, GET /metrics (Prometheus) and the OpenAPI document (/openapi.json).
    """
    from ..config import load_config
    from ..errors import ConfigError
    from ..progress import SILENT, reporting
    from ..serve.supervise import ServeOptions, run_serve
    from ..settings import load_settings

    cfg = load_config(config_path)
    settings = load_settings()
    opts = ServeOptions(host=host, port=port, worker=worker, schedule=schedule, http=http,
                        worker_process=worker_process, parent_pipe=parent_pipe)
    with reporting(SILENT):  # no bars from background syncs: a server's stderr is its log (retries logged at INFO)
        died = run_serve(cfg, settings, opts, child_command=CHILD_COMMAND, announce=info)
    if died == ConfigError.exit_code:  # the config (or .env) read again by the child since: its one line, exit 2
        load_config(config_path)
        load_settings()
        raise ConfigError("the worker process stopped on a config error (exit 2, its line above): the config or .env "
                          "changed while serve started; check it and start serve again")
    if died is not None:
        raise click.ClickException(f"the worker process exited unexpectedly (code {died}); see the log above")
    info("rfmsync serve: stopped")


COMMANDS = [serve]
