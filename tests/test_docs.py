"""The docs cannot drift (sqlite-utils' test_docs.py is the model).

* every ```toml block in README.md, docs/**/*.md, CONTRIBUTING.md and BENCHMARKS.md validates against the config
  model; a fragment (just ``[guards]``, a CRM's ``[source]``) is validated as a whole config: its top-level tables
  replace those of a minimal valid one. A block meant to show an error is preceded by ``<!-- not-validated -->``;
* every command of ``rfmsync`` and every option of every command is in the CLI reference (docs/configuration.md),
  in the table row(s) of that command;
* every variable of settings.example.env is in the environment table of docs/configuration.md;
* Mailchimp's member refusals are the table of docs/destinations/mailchimp.md;
* every class-like name (``PullResult``, ``PredictConfig``) in CONTRIBUTING.md's layout is defined in the code;
* every relative link points at a file that exists, and every ``#anchor`` at a heading or ``<a id>`` in it;
* the README walkthrough shows what rfmsync really prints for examples/billz.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from connectors.registry import SOURCES
from sync.cli import main
from sync.config import Config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
CONFIGURATION = ROOT / "docs" / "configuration.md"
NOT_VALIDATED = "<!-- not-validated -->"
MINIMAL = {"source": {"type": "file", "orders": "orders.csv", "columns": {"ordered_at": "Date", "amount": "Sum",
                                                                           "customer_id": "Client"}}}


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def toml_blocks() -> list[tuple[str, str]]:
    """(``file:line``, text) of every ```toml block not marked ``<!-- not-validated -->``."""
    blocks = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() == "```toml":
                end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
                before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
                if before != NOT_VALIDATED:
                    blocks.append((f"{name(path)}:{i + 1}", "\n".join(lines[i + 1:end])))
                i = end
            i += 1
    return blocks


def validate(data: dict) -> None:
    cfg = Config(**{**MINIMAL, **data})
    model = SOURCES[cfg.source.get("type", "file")][0]
    model.model_validate(cfg.source)
    cfg.predict_config()


@pytest.mark.parametrize("where,text", toml_blocks(), ids=[b[0] for b in toml_blocks()])
def test_every_toml_block_validates(where, text):
    validate(tomllib.loads(text))


def test_toml_blocks_are_found_and_a_bad_one_fails():
    assert len(toml_blocks()) >= 15
    with pytest.raises(ValueError, match="stor"):
        validate(tomllib.loads("[stor]\nurl = 'sqlite:///x.db'\n"))
    with pytest.raises(ValueError, match="page_sise"):
        validate(tomllib.loads("[source]\ntype = 'amocrm'\npage_sise = 250\n"))


def cli_rows(text: str, command: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith(f"| `rfmsync {command}"))


def test_every_command_and_option_is_documented():
    text = CONFIGURATION.read_text(encoding="utf-8")
    for option in main.params:
        for opt in option.opts + option.secondary_opts:
            assert opt in text, f"`rfmsync {opt}` is not documented in docs/configuration.md"
    for command_name, command in main.commands.items():
        rows = cli_rows(text, command_name)
        assert rows, f"`rfmsync {command_name}` has no row in the CLI reference of docs/configuration.md"
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            for opt in param.opts + param.secondary_opts:
                where = text if opt == "--config" else rows
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", where), \
                    f"`rfmsync {command_name} {opt}` is not documented in docs/configuration.md"
        assert CliRunner().invoke(main, [command_name, "--help"]).exit_code == 0


def test_every_setting_is_documented():
    listed = re.findall(r"^([A-Z0-9_]+)=", (ROOT / "settings.example.env").read_text(encoding="utf-8"), re.M)
    text = CONFIGURATION.read_text(encoding="utf-8")
    assert listed
    for variable in listed:
        assert f"| `{variable}` |" in text, f"{variable} is not in the environment table of docs/configuration.md"


def test_mailchimps_member_refusals_are_the_documented_table():
    """The texts that refuse a Mailchimp member for good are the table in docs/destinations/mailchimp.md, no more,
    no fewer (rv32 #1)."""
    from sync.destinations.mailchimp_answers import MEMBER_REFUSALS

    text = (ROOT / "docs" / "destinations" / "mailchimp.md").read_text(encoding="utf-8")
    assert re.findall(r"^  \| `([^`]+)` \|", text, re.M) == list(MEMBER_REFUSALS)


def slug(title: str) -> str:
    """GitHub's heading anchor."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen, fence = set(), {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        heading = re.match(r"#+ (.*)", line)
        if heading and not fence:
            s = slug(heading.group(1))
            found.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
        found.update(re.findall(r'<a id="([^"]+)"></a>', line))
    return found


def test_every_link_resolves():
    broken = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{name(path)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{name(path)}: {target} (no such anchor)")
    assert not broken, "\n".join(broken)


def test_the_walkthrough_shows_real_output(tmp_path, monkeypatch):
    """README's walkthrough: the numbers it prints are those of examples/billz (run on a copy of it)."""
    for variable in ("MAILCHIMP_API_KEY", "MAILCHIMP_API_URL", "RFMSYNC_CONFIG", "RFMSYNC_LEDGER_URL",
                     "RFMSYNC_STORE_URL"):
        monkeypatch.delenv(variable, raising=False)
    shutil.copytree(ROOT / "examples" / "billz", tmp_path / "billz")
    config = str(tmp_path / "billz" / "rfmsync.toml")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert (ROOT / "examples" / "billz" / "rfmsync.toml").read_text(encoding="utf-8").split("\n", 1)[1] in readme
    check = CliRunner().invoke(main, ["check", "--config", config, "--offline"])
    assert check.exit_code == 0, check.output
    summary = next(line for line in check.output.splitlines() if line.startswith("source file:"))
    assert summary in readme
    result = CliRunner().invoke(main, ["segments", "--config", config, "--as-of", "2025-06-30", "--format", "json"])
    assert result.exit_code == 0, result.output
    for row in json.loads(result.stdout)["segments"]:
        assert re.search(rf"│ {re.escape(row['segment'])} +│ +{row['customers']} │", readme), row
    result = CliRunner().invoke(main, ["plan", "--config", config, "--as-of", "2025-06-30", "--format", "json"])
    assert result.exit_code == 0, result.output
    totals = json.loads(result.stdout)["plans"][0]["totals"]
    assert re.search(rf"│ Total +│ +│ +{totals['added']} │ .* │ +{totals['new']} │", readme), totals


#: names in CONTRIBUTING.md's layout that are products or other libraries' classes, not rfmsync's
NOT_OURS = {"DuckDB", "FastAPI", "PostgreSQL", "RetailCRM", "SendGrid", "SecretStr"}


def test_contributing_layout_names_only_classes_that_exist():
    """The layout named ``AsOfError`` (an as-of before every order became a warning) and ``ContactTally`` (dropped)
    after the code lost them: every class-like name in it is a class, function or name defined in the code."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):text.index("## ", text.index("## Layout") + 3)]
    names = set(re.findall(r"\b[A-Z][a-z]+[A-Z][A-Za-z]*\b", layout)) - NOT_OURS
    code = "\n".join(p.read_text(encoding="utf-8") for package in ("connectors", "segmentation", "sync")
                     for p in (ROOT / package).rglob("*.py"))
    defined = set(re.findall(r"^\s*(?:class|def) ([A-Za-z_]\w*)|^([A-Za-z_]\w*)\s*[:=]", code, re.M))
    defined = {a or b for a, b in defined}
    assert len(names) > 20 and sorted(names - defined) == []
