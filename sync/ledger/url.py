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
    from here on where it stands in a URL, ``:<password>@`` or ``?password=`` (:func:`sync.settings.url_password`).
    A relative SQLite path in the environment that would start an empty ledger beside the config's used one is a
    config error (:func:`check_environment_relative`)."""
    from ..settings import load_settings, url_password

    if settings is None:
        settings = load_settings()
    for message in deprecated_names(cfg, settings):
        _warn_once(message, cfg)
    url = settings.rfmsync_ledger_url or settings.rfmsync_store_url
    if url:
        check_environment_relative(url, cfg, LEDGER_ENV if settings.rfmsync_ledger_url else OLD_LEDGER_ENV)
    else:
        setting = "[ledger] url" if cfg.ledger.url or not cfg.store.url else "[store] url"  # for its error
        url = (config_relative(cfg.ledger.url or cfg.store.url, cfg, setting)
               or f"sqlite:///{cfg.base_dir / 'rfmsync.db'}")
    remember_secrets(*url_password(url))
    return url


def config_relative(url: str | None, cfg: Config, setting: str = "[ledger] url") -> str | None:
    """A SQLite URL written in the config file (``setting``) with a relative path (``sqlite:///rfmsync.db``) names
    a file in the config's folder, as every relative path in the file does, not one in whichever folder rfmsync
    runs from (a cron job's home, a service's ``/``: each would have opened a ledger of its own, empty, so its
    first sync re-sent everything with no plan guard). A ledger left in the working folder by an older version is
    a config error naming both paths, never a second, empty ledger: when the config's folder has none, and also
    when the one there holds less (:func:`_used`: no pushed state where the working folder's has some, or nothing
    at all where it has runs), as one that a command run from the config's folder since the upgrade created, or
    when the working folder's was used later for this config's destinations (a run started or a contact pushed:
    the cron job kept syncing there while the one next to the config is an old copy or a test's). A ledger that
    holds only other destinations (another config's, which names the same file) does not stop this one when its
    own is in place.
    Other URLs are returned as they are (and so is the environment's URL, which the caller does not pass here: a
    relative path there is the working folder's)."""
    name = sqlite_file(url)
    if url is None or name is None or Path(name).is_absolute():
        return url
    path = cfg.base_dir / name
    here = Path.cwd() / name
    if here.exists() and here.resolve() != path.resolve():
        ours = tuple(d.name for d in cfg.destinations)
        theirs, mine = _used(here, ours), _used(path, ours) if path.exists() else None
        newer = theirs[2] is not None and (mine is None or mine[2] is None or theirs[2] > mine[2])
        if mine is None or theirs[:2] > mine[:2] or newer:
            raise _stop(cfg, setting, name, path, here, theirs, mine)
    from sqlalchemy.engine import make_url

    from .db import URI_SCHEME, uri_path

    parsed = make_url(url)
    uri = URI_SCHEME if uri_path(parsed) is not None else ""  # a URI filename stays one
    return parsed.set(database=uri + str(path)).render_as_string(hide_password=False)


def check_environment_relative(url: str, cfg: Config, variable: str) -> None:
    """A relative SQLite path in the environment (``variable``) is the working folder's, as documented: run by
    hand from the config's folder it names the ledger there; a cron job or a service running from elsewhere
    would start a new, empty ledger in its own folder, whose first sync re-sends every tag and field with no plan
    guard and never takes a tag off a contact who left its segment (nothing says it was pushed). So when the
    working folder has no such file and the config's folder has a used ledger (runs or pushed contacts) of that
    name, it is a config error naming both, never a second ledger."""
    name = sqlite_file(url)
    if name is None or Path(name).is_absolute():
        return
    here, there = Path.cwd() / name, cfg.base_dir / name
    if here.exists() or not there.is_file() or here.resolve() == there.resolve():
        return
    used = _used(there, tuple(d.name for d in cfg.destinations))
    if not (used[0] or used[1]):
        return
    from ..errors import ConfigError

    raise ConfigError(f"{variable} names the relative path {name!r}, which is {here} (a relative path in the "
                      f"environment is the working folder's, {Path.cwd()}), where there is no ledger; the config's "
                      f"folder has one at {there}, holding {_what(used)}: a run from here would start a new, empty "
                      f"ledger and re-send everything. Write the absolute path in {variable} "
                      f"(sqlite:///{there.resolve()}), or run from {cfg.base_dir}; to start another ledger here on "
                      f"purpose, write its absolute path")


def _stop(cfg: Config, setting: str, name: str, path: Path, here: Path, theirs: Used, mine: Used | None):
    from ..errors import ConfigError

    where = f"{cfg.path}: " if cfg.path else ""
    there = f", and the one at {path} holds {_what(mine)}" if mine is not None else ""
    return ConfigError(f"{where}{setting} names the relative path {name!r}, which is {path} (relative paths in the "
                       f"config are relative to its folder); a ledger is at {here}, where earlier versions put it "
                       f"when run from {Path.cwd()}, holding {_what(theirs)}{there}: move that file (with its -wal "
                       f"and -shm files) to {path}{' in place of the one there' if mine is not None else ''}, or "
                       f"write its absolute path in {setting}; unless it is another config's ledger: then leave it "
                       f"and write this config's one in {setting} as an absolute path "
                       f"(sqlite:///{path.resolve()})")


#: (holds pushed state, holds runs, the newest run start or push of the config's destinations: None when none)
Used = tuple[bool, bool, str | None]


def _used(file: Path, destinations: tuple[str, ...] = ()) -> Used:
    """What a SQLite ledger file holds (:data:`Used`), read without creating any file beside it: without a ``-wal``
    file as immutable (a read-only connection to a WAL database would leave ``-wal`` and ``-shm`` files); with
    ``-wal`` and ``-shm`` read only, as any reader of a live ledger (which marks what it reads in the ``-shm``); with
    a ``-wal`` but no ``-shm`` (a writer killed, its ``-shm`` removed) from a copy of both in a temporary folder:
    SQLite would create the ``-shm`` to read the ``-wal``, whose rows immutable would miss. (True, True, None)
    when it cannot be read: never taken for an empty one."""
    import shutil
    import tempfile

    wal = file.with_name(file.name + "-wal")
    if not wal.exists():
        return _read(f"{file.resolve().as_uri()}?mode=ro&immutable=1", destinations)
    if file.with_name(file.name + "-shm").exists():
        return _read(f"{file.resolve().as_uri()}?mode=ro", destinations)
    with tempfile.TemporaryDirectory(prefix="rfmsync-ledger-") as folder:
        copy = Path(folder) / file.name
        try:
            shutil.copyfile(file, copy)
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        except OSError:
            return True, True, None
        return _read(copy.as_uri(), destinations)


def _read(uri: str, destinations: tuple[str, ...]) -> Used:
    import sqlite3

    try:
        con = sqlite3.connect(uri, uri=True)
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            pushed, runs = (table in tables and con.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
                            for table in ("pushed_state", "runs"))
            marks = ", ".join("?" * len(destinations))
            newest = [con.execute(f"SELECT max({column}) FROM {table} WHERE destination IN ({marks})",
                                  destinations).fetchone()[0]
                      for table, column, held in (("runs", "started_at", runs), ("pushed_state", "pushed_at", pushed))
                      if held and destinations]
            return pushed, runs, max((str(t) for t in newest if t is not None), default=None)
        finally:
            con.close()
    except sqlite3.Error:
        return True, True, None


def _what(used: Used) -> str:
    pushed, runs, newest = used
    what = "pushed contacts" if pushed else "runs but no pushed contacts" if runs else "no runs and no pushed contacts"
    return f"{what} (this config's destinations last run or pushed {newest[:19]})" if newest else what


def sqlite_file(url: str | None) -> str | None:
    """The file a SQLite URL names, without its query (``sqlite:///data/l.db?timeout=30`` → ``data/l.db``; a URI
    filename ``sqlite:///file:data/l.db?uri=true`` → ``data/l.db``); None for another database, an in-memory one
    (decided as the ledger's engine decides it, :func:`sync.ledger.db.is_memory`: ``file::memory:`` and
    ``?mode=memory`` in a URI filename) or a URL the ledger refuses (Ledger.connect says what is wrong)."""
    if not url or not url.startswith("sqlite"):
        return None
    from ..errors import ConfigError
    from .db import is_memory, parse_url, uri_path

    try:
        parsed = parse_url(url)
    except ConfigError:
        return None
    if not parsed.database or is_memory(parsed):
        return None
    path = uri_path(parsed)
    return parsed.database if path is None else path


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
