"""Checks of the whole config that ``sync`` would otherwise meet only later (at plan time, at the ESP, in the
report): run when the config loads (:meth:`sync.config.Config._unique_names` calls :func:`check_config`), so
``rfmsync check`` refuses what ``sync`` refuses, before anything is read or written.

* two destinations of one audience managing one tag/list or writing one field (:mod:`sync.destinations.overlap`);
* a ``[destinations.fields]`` value that is no rfmsync value (``rfm_x = "segmnet"``: sync stopped at plan time);
* ``tag_prefix`` / ``list_prefix`` on a destination type that does not use it (``tag_prefix`` on SendGrid was
  ignored: its segment went to the shop's own list of that name);
* a ``[report.playbook]`` key that is no segment the rules give (the report silently used the default line).

The checks that need more than the file (the ESP's field names and types, the ledger URL once the environment is
read, the ``[predict]`` section's model) are ``rfmsync check``'s own (:mod:`sync.cli.check`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from connectors.suggest import did_you_mean

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config, DestinationConfig
    from .settings import Settings

#: the naming keys a destination type may use: only where its segment names take them
PREFIXES = ("tag_prefix", "list_prefix")


def check_config(cfg: "Config") -> None:
    """ValueError (pydantic names the file) for the first of the checks above that fails. A field value is checked
    with its name by each destination as it loads, before these (:meth:`sync.config.DestinationConfig.
    check_field_names`, the one place)."""
    from .destinations.overlap import check_shared_audiences

    check_shared_audiences(cfg.destinations)  # two destinations managing one tag would undo each other
    for dest in cfg.destinations:
        check_prefixes(dest)


def check_before_sync(cfg: "Config", settings: "Settings") -> None:
    """ConfigError for what ``sync`` refuses once the environment is read (``rfmsync check`` calls it): a ledger
    URL that is no database URL (``[ledger] url = "${DATABASE_URL}"``: the config file expands no variable), a
    ``[predict]`` key the model does not have (``horizon_dyas``)."""
    from .ledger import ledger_url
    from .ledger.db import parse_url

    url = ledger_url(cfg, settings)
    try:
        parse_url(url)
    except ConfigError as exc:
        hint = (f"; the config file expands no environment variable ({_variable(url)}): set RFMSYNC_LEDGER_URL "
                f"instead, which wins over [ledger] url") if _variable(url) else ""
        raise ConfigError(f"{exc}{hint}") from None
    if cfg.predict:
        cfg.predict_config()
    if unknown := playbook_unknown(cfg):  # the report's lines only: refused by `check`, warned by `report`
        raise ConfigError(unknown)


def _variable(text: str) -> str:
    """The first ``${NAME}`` or ``$NAME`` in ``text`` (a URL's password may hold a ``$``: only a whole name)."""
    found = re.search(r"\$\{[A-Za-z_]\w*\}|^\$[A-Za-z_]\w*$", text)
    return found.group(0) if found else ""


def check_prefixes(dest: "DestinationConfig") -> None:
    """ValueError for a ``tag_prefix`` / ``list_prefix`` the destination's type does not put on its names (its
    segment naming gives the same name without it)."""
    from .destinations.registry import DESTINATIONS

    for key in PREFIXES:
        if getattr(dest, key) and not _uses(dest.spec, dest, key):
            used = " or ".join(s.label for s in DESTINATIONS.values() if _uses(s, dest, key))
            raise ValueError(f"destination {dest.name!r}: {key} is for {used or 'no destination type'} only: "
                             f"{dest.spec.label} ignores it (its segments would go to tags/lists named without it, "
                             f"which may be the account's own); take it out, or write the names in "
                             f"[destinations.segments]")


def _uses(spec, dest: "DestinationConfig", key: str) -> bool:
    """Whether ``spec``'s segment naming puts ``key`` (a prefix) on the names."""
    return spec.segment_name(dest.model_copy(update={key: "p"}), "x") != \
        spec.segment_name(dest.model_copy(update={key: ""}), "x")


def playbook_unknown(cfg: "Config") -> str | None:
    """What is wrong with a ``[report.playbook]`` key that is no segment the rules give ("did you mean"), or None.
    Only the report reads the playbook: ``check`` refuses such a key, ``report`` warns, and nothing else stops on
    it (a playbook reused from another preset's shop names segments these rules do not give: harmless)."""
    if not cfg.report.playbook:
        return None
    from .planning.transitions import segment_names

    names = segment_names(cfg)
    for segment in cfg.report.playbook:
        if segment not in names:
            return (f"[report.playbook] {segment!r}: unknown segment{did_you_mean(segment, names)}; the segments "
                    f"are {', '.join(names)}")
    return None


__all__ = ["check_before_sync", "check_config", "check_prefixes", "playbook_unknown"]
