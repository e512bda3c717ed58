"""The ``rfmsync`` command line (entry point ``sync.cli:main``): a thin layer over :mod:`sync.api`.

:mod:`.main` holds the group, the error → exit code mapping and the shared options; each command group
has its module; :mod:`.output` prints.
"""

from __future__ import annotations

from . import check, demo, explain, forget, history, init, report, segments, serve, sync
from .main import main, quiet_param

for _module in (init, segments, explain, history, check, demo, sync, forget, serve, report):
    for _command in _module.COMMANDS:
        _command.params.append(quiet_param)  # `rfmsync COMMAND --quiet`, as `rfmsync --quiet COMMAND`
        main.add_command(_command)

__all__ = ["main"]
