"""What a predicting run imports: the predictions cost what their work costs, not a library's start-up.

Every command runs in a fresh interpreter, so an import on the predictions' path is paid by every run: pandas is
0.4 s, a sixth of what the predictive fields add to `segments --customers` on 10 M orders. Nothing on that path
needs it (the model table goes to DuckDB as Arrow arrays built on the numpy buffers).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from sync.demodata import generate_shop
from tests.builders import run_cli

ROOT = Path(__file__).resolve().parents[1]
#: one fresh interpreter runs the commands in turn, each after the last, and prints what each leaves imported of
#: what it watches. A module stays imported, so a run can only be checked when none of what it watches was loaded
#: by a run before it: the child refuses otherwise (a later run's import must not hide behind an earlier one's)
CHILD = """
import json, sys
from sync.cli.main import main
for argv, watch in {runs!r}:
    before = sorted(m for m in watch if m in sys.modules)
    if before:
        sys.exit(f"cannot tell what {{argv}} imports: {{before}} already imported by a run before it")
    main(argv, standalone_mode=False)
    print("IMPORTED " + json.dumps(sorted(m for m in watch if m in sys.modules)))
"""
#: the ledger, the apply and the ESPs' clients: a run that only scores customers has no use for them (the demo
#: shop's config names destinations: validating it reads their specs, not their clients)
SYNC_LIBRARIES = ("sqlalchemy", "sync.ledger", "sync.engine", "sync.planning.planner", "mailchimp_marketing",
                  "sendgrid", "requests", "sync.destinations.mailchimp")


def _imports_in_turn(*runs: tuple[list[str], tuple[str, ...]]) -> list[list[str]]:
    """The watched modules each (argv, watch) run leaves imported, the runs made in turn in one fresh process
    (a process costs ~1 CPU s of imports: runs whose checks allow it share one, see CHILD)."""
    proc = subprocess.run([sys.executable, "-c", CHILD.format(runs=list(runs))], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = [json.loads(line[len("IMPORTED "):]) for line in proc.stdout.splitlines() if line.startswith("IMPORTED ")]
    assert len(found) == len(runs), proc.stdout
    return found


def _imports(argv: list[str], watch: tuple[str, ...] = ("pandas", "scipy", "scipy.optimize")) -> list[str]:
    return _imports_in_turn((argv, watch))[0]


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A 120-customer demo shop whose export the order store holds, no fit yet (ingested in this process: its
    imports do not matter). The store knows its files by their path: a copy of a shop would be read again."""
    cfg = str(generate_shop(tmp_path, customers=120, seed=3, as_of=date(2025, 6, 30)))
    run_cli("segments", "--customers", "--no-predict", "-o", str(tmp_path / "c.csv"), "--config", cfg,
            "--as-of", "2025-06-30")
    return tmp_path


def test_scoring_runs_do_not_import_the_ledger_or_the_esp_clients_nor_a_current_store_pandas(shop):
    """``segments`` and ``predict`` never open the ledger, plan nor call an ESP: importing SQLAlchemy, the ledger,
    the planner and the ESP clients took about 0.5 s of each such run on a config with destinations (a quarter of
    a warm ``segments --customers`` on 10 M orders). On a store that is current (the export ingested by the run
    before: reading a file's contacts may need pandas, predicting must not), a scoring run imports none of pandas
    and scipy, and a predicting run no pandas (the predicting runs after fits: test below, exact lists)."""
    as_of = ["--config", str(shop / "rfmsync.toml"), "--as-of", "2025-06-30"]
    watch = ("pandas", "scipy", "scipy.optimize", *SYNC_LIBRARIES)
    assert _imports_in_turn((["segments", "--customers", "--no-predict", "-o", str(shop / "c.csv"), *as_of], watch),
                            (["segments", "--format", "json", *as_of], SYNC_LIBRARIES),
                            (["predict", "--format", "json", *as_of], ("pandas", *SYNC_LIBRARIES))) == [[], [], []]


def test_a_run_that_reads_every_fit_does_not_import_the_optimizer(shop):
    """scipy.optimize is ~0.3 s of imports: a run whose fits are all those of an earlier run on the same orders
    (kept in the order store) predicts with scipy's special functions alone; a run that fits imports it. None
    of them imports pandas (the lists are exact)."""
    as_of = ["--config", str(shop / "rfmsync.toml"), "--as-of", "2025-06-30"]
    fields = ["segments", "--customers", "-o", str(shop / "c.csv"), *as_of]
    assert _imports(fields) == ["scipy", "scipy.optimize"]  # the totals and the fits
    # the holdout's refit, in the process of the run before (scipy.optimize loads scipy: not watched again)
    assert _imports_in_turn((fields, ("pandas", "scipy", "scipy.optimize")),
                            (["predict", "--format", "json", *as_of], ("pandas", "scipy.optimize"))
                            ) == [["scipy"], ["scipy.optimize"]]
    assert _imports(["predict", "--format", "json", *as_of]) == ["scipy"]


def test_a_run_that_reads_its_kept_model_numbers_does_not_import_scipys_special_functions(shop):
    """scipy.special is ~0.15 CPU s of imports, needed to compute the model's numbers: a run that reads those an
    earlier run on the same orders, as-of and config kept (the order store) does not import it; a run that
    computes them does (another as-of here, which fits too)."""
    as_of = ["--config", str(shop / "rfmsync.toml"), "--as-of", "2025-06-30"]
    watch = ("pandas", "scipy", "scipy.special", "scipy.optimize")
    fields = ["segments", "--customers", "-o", str(shop / "c.csv"), *as_of]
    assert _imports(fields, watch) == ["scipy", "scipy.optimize", "scipy.special"]
    # another as-of, in the process of the run before (scipy.optimize loads scipy: not watched again)
    assert _imports_in_turn((fields, watch), (fields[:-1] + ["2025-06-29"], watch[:1] + watch[2:])
                            ) == [["scipy"], ["scipy.optimize", "scipy.special"]]
    assert _imports(fields, watch) == ["scipy"]  # (the store keeps the latest two runs' numbers)


def test_a_background_import_loads_the_module_or_leaves_its_error_to_the_caller():
    """The predictions' module is imported on a thread while the store is read: the module is loaded by the
    time the caller imports it, and a failing import raises in the caller's thread, not on the helper's."""
    out = subprocess.run([sys.executable, "-c", """
import sys, threading
from segmentation.warmup import PREDICTION_MODULES, import_in_background
thread = import_in_background(*PREDICTION_MODULES)
assert thread is not None
thread.join(30)
assert "segmentation.predictive" in sys.modules and "scipy.special" in sys.modules
assert import_in_background(*PREDICTION_MODULES) is None  # loaded: nothing started
errors = []
threading.excepthook = errors.append
import_in_background("segmentation.no_such_module").join(30)
assert errors == []
try:
    import segmentation.no_such_module
except ModuleNotFoundError:
    print("ok")
"""], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_predictions_module_imports_without_scipy_special():
    """scipy.special takes ~0.2 s to import (it copies numpy's namespace): a predicting run waits for the
    predictions' module early (its config), so that module leaves the special functions to a background import
    that overlaps the run's first queries; they are loaded where a model number is first computed."""
    out = subprocess.run([sys.executable, "-c", """
import sys
import numpy as np
import segmentation.predictive
from segmentation.btyd_models import BgNbdParams, p_alive
assert "scipy.special" not in sys.modules
p_alive(BgNbdParams(0.24, 4.4, 0.79, 2.4), np.array([1.0]), np.array([2.0]), np.array([3.0]))
assert "scipy.special" in sys.modules
print("ok")
"""], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
