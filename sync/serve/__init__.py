"""``rfmsync serve``: the webhook server, its resync workers and its scheduled full syncs.

One request's path: :mod:`.app` (routes) → :mod:`.webhooks` (verify, parse: :mod:`.generic` for rfmsync's own
format, the :mod:`connectors.webhooks` registry for CRM sources; then queue in the ledger) → :mod:`.worker`
(drains the queue) → :mod:`.resync` (the affected customers only). :mod:`.scheduler` fires full syncs,
:mod:`.metrics` counts everything for ``GET /metrics``, :mod:`.service` is one process's app and background
threads, :mod:`.supervise` runs the intake and worker processes. The ``serve`` CLI command is a thin layer on
:func:`.supervise.run_serve`.
"""
