"""Where the ledger is: ``$RFMSYNC_LEDGER_URL``, else ``[ledger] url``, else ``rfmsync.db`` next to the config.

The ledger used to be configured as ``[store] url`` / ``$RFMSYNC_STORE_URL`` (names that suggested the order
store, which is ``[store] orders``). The old names still work and log a deprecation warning, once per name
and config file in a process; the new ones win when both are set, and the environment wins over the file.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.secrets import remember_secrets

from .facade import Ledger

if TYPE_CHECKING:
    from ..config import Config
    from ..settings import Settings

log = logging.getLogger(__name__)

LEDGER_ENV = "RFMSYNC_LEDGER_URL"
OLD_LEDGER_ENV = "RFMSYNC_STORE_URL"  # deprecated
_warned: set[tuple[str, str]] = set()
_warned_guard = threading.Lock()


def ledger_url(cfg: Config, settings: Settings | None = None) -> str:
    """$RFMSYNC_LEDGER_URL, else [ledger] url, else rfmsync.db next to the config (old names: see above). Its
    password, wherever it was written (the config file's too, which the CLI's start does not read), is masked
    from here on where it stands in a URL, ``:<password>@`` (:func:`sync.settings.url_password`)."""
    from ..settings import load_settings, url_password

    if settings is None:
        settings = load_settings()
    for message in deprecated_names(cfg, settings):
        _warn_once(message, cfg)
    url = settings.rfmsync_ledger_url or settings.rfmsync_store_url
    if not url:
        url = config_relative(cfg.ledger.url or cfg.store.url, cfg) or f"sqlite:///{cfg.base_dir / 'rfmsync.db'}"
    remember_secrets(*url_password(url))
    return url


def config_relative(url: str | None, cfg: Config) -> str | None:
    """A SQLite URL written in the config file with a relative path (``sqlite:///rfmsync.db``) names a file in the
    config's folder, as every relative path in the file does, not one in whichever folder rfmsync runs from (a
    cron job's home, a service's ``/``: each would have opened a ledger of its own, empty, so its first sync
    re-sent everything with no plan guard). A ledger left in the working folder by an older version is a config
    error naming both paths, never a second, empty ledger. Other URLs are returned as they are (and so is the
    environment's URL, which the caller does not pass here: a relative path there is the working folder's)."""
    name = sqlite_file(url)
    if url is None or name is None or Path(name).is_absolute():
        return url
    path = cfg.base_dir / name
    here = Path.cwd() / name
    if not path.exists() and here.exists() and here.resolve() != path.resolve():
        from ..errors import ConfigError

        where = f"{cfg.path}: " if cfg.path else ""
        raise ConfigError(f"{where}[ledger] url names the relative path {name!r}, which is {path} (relative paths "
                          f"in the config are relative to its folder); a ledger is at {here}, where earlier "
                          f"versions put it when run from {Path.cwd()}: move that file (with its -wal and -shm "
                          f"files) to {path}, or write its absolute path in the url")
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=str(path)).render_as_string(hide_password=False)


def sqlite_file(url: str | None) -> str | None:
    """The file a SQLite URL names, without its query (``sqlite:///data/l.db?timeout=30`` → ``data/l.db``); None
    for another database, an in-memory one or a URL that does not parse (Ledger.connect says what is wrong)."""
    if not url or not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        name = make_url(url).database
    except ArgumentError:
        return None
    return None if not name or name == ":memory:" or name.startswith("file:") else name


def open_ledger(cfg: Config, settings: Settings | None = None) -> Ledger:
    """Open (creating and migrating if needed) the ledger this config and environment point at."""
    url = ledger_url(cfg, settings)
    return Ledger.connect(url, state_cache=state_cache_folder(cfg, url))


def state_cache_folder(cfg: Config, url: str) -> Path | None:
    """Where the plans keep their copy of the pushed state (:mod:`sync.ledger.statecache`): beside a SQLite
    ledger file by default (None here); for a PostgreSQL ledger, beside this host's order store
    (``<store file>.state-cache``). Every host keeps its own copy; the ledger's epoch and revision decide
    whether a copy may be used."""
    if not url.startswith("postgres"):
        return None
    from ..pipeline import store_path

    store = store_path(cfg)
    return store.with_name(store.name + ".state-cache")


def deprecated_names(cfg: Config, settings: Settings) -> list[str]:
    """One warning per old ledger setting in use (names only, never the URL: it may hold a password)."""
    out = []
    if settings.rfmsync_store_url:
        wins = f"; {LEDGER_ENV} is set and wins" if settings.rfmsync_ledger_url else ""
        out.append(f"{OLD_LEDGER_ENV} is deprecated: rename it to {LEDGER_ENV}{wins}")
    if cfg.store.url:
        where = f"{cfg.path}: " if cfg.path else ""
        wins = "; [ledger] url is set and wins" if cfg.ledger.url else ""
        out.append(f"{where}[store] url is deprecated: move it to [ledger] url{wins}")
    return out


def _warn_once(message: str, cfg: Config) -> None:
    key = (message, str(cfg.path))
    with _warned_guard:
        if key in _warned:
            return
        _warned.add(key)
    log.warning("%s", message)
