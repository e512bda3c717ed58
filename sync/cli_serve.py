"""CLI command ``rfmsync serve``: the webhook server with its resync workers and scheduled syncs."""

from __future__ import annotations

import logging
import sys

import click

log = logging.getLogger(__name__)
INTAKE_SWITCH_INTERVAL = 0.0005  # seconds (Python's default is 0.005)

config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                             help="Config file (default: $RFMSYNC_CONFIG, else ./rfmsync.toml).")


@click.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--worker/--no-worker", default=True, show_default=True,
              help="Run [serve] workers resync workers in this process (--no-worker: intake only).")
@click.option("--schedule/--no-schedule", default=True, show_default=True,
              help="Run the [schedule] full syncs from this process.")
@click.option("--http/--no-http", default=True, show_default=True,
              help="Serve HTTP (--no-http: a worker/scheduler-only process, e.g. next to an intake-only one).")
def serve(config_path, host, port, worker, schedule, http):
    """Receive webhooks (POST /webhooks/{source}), resync affected customers, run scheduled syncs.

    Also serves GET /healthz, GET /runs, GET /metrics (Prometheus) and the OpenAPI document (/openapi.json).
    """
    import uvicorn

    from .config import load_config
    from .server import build_service
    from .settings import load_settings

    cfg = load_config(config_path)
    settings = load_settings()
    service = build_service(cfg, settings, workers=None if worker else 0, schedule=schedule)
    try:
        service.start()
        nworkers = len(service.workers)
        sched = service.scheduler
        when = sched.next_fire.isoformat() if sched is not None and sched.next_fire else "none"
        where = f"listening on http://{host}:{port}" if http else "no HTTP"
        click.echo(f"rfmsync serve: {where} ({nworkers} workers, debounce {cfg.serve.debounce_seconds:g}s, "
                   f"next scheduled sync: {when})", err=True)
        _exit_cleanly_on_sigterm()
        if not http:
            _wait_for_signal()
            return
        # The worker's resync is CPU-bound Python in this process: hand the GIL over more often so that
        # webhook intake keeps a low latency while a resync runs (measured in bench/serve.py).
        sys.setswitchinterval(INTAKE_SWITCH_INTERVAL)
        uvicorn.run(service.app, host=host, port=port, log_config=None, access_log=False,
                    timeout_graceful_shutdown=10)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn already shut down gracefully
        pass
    finally:
        service.close()  # lets a batch in progress finish, then closes the ledger
    click.echo("rfmsync serve: stopped", err=True)


def _wait_for_signal() -> None:
    import signal

    while True:  # until SIGTERM / Ctrl-C (KeyboardInterrupt)
        signal.pause()


def _exit_cleanly_on_sigterm() -> None:
    """uvicorn re-raises the signal that stopped it; turn SIGTERM (systemd stop) into a clean exit 0."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


COMMANDS = [serve]

if __name__ == "__main__":  # pragma: no cover - `python -m sync.cli_serve` before the command is registered
    serve()
