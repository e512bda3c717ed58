"""``rfmsync init EXPORT_FILE``: a commented config guessed from an export, checked and segmented at once."""

from __future__ import annotations

from pathlib import Path

import click

from connectors.file_copying import read_as_given

from .main import load
from .output import info, out


@click.command()
@click.argument("export_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("rfmsync.toml"),
              show_default=True, help="The config file to write.")
@click.option("--force", is_flag=True, help="Overwrite the config file if it exists.")
@click.pass_context
def init(ctx, export_file, output, force):
    """Write a config for an export (CSV/TSV, XLSX or Parquet): detect its encoding, delimiter, decimal mark and
    date format, recognise the BILLZ and 1C presets or guess the columns from the headers (Russian, Uzbek, English;
    guesses are marked "# guessed: check"), then run `check` on it and print the segments summary. Never prompts;
    an existing config is kept unless --force."""
    from .. import api
    from .check import check
    from .segments import segments

    g = api.init_config(export_file, output, force=force)
    how = f"preset {g.preset}" if g.preset else f"{len(g.columns)} columns guessed"
    info(f"wrote {output} ({how}); check the lines marked 'guessed: check'")
    if g.names_as_ids:
        info(f"no customer code, e-mail or phone column found: the names in column {g.names_as_ids!r} are the "
             "customer ids, so namesakes count as one customer in the segments; map a code, e-mail or phone column "
             "under [source.columns] if the export has one")
    load(str(output))  # the written config validates
    with read_as_given([export_file]):  # saved a moment ago without a final line break: not a copy under way
        ctx.invoke(check, config_path=str(output), limit=10, strict=False, offline=True)
        out.print()
        ctx.invoke(segments, config_path=str(output))


COMMANDS = [init]
