"""``rfmsync init``: the commented config written from an export's guessed layout (:mod:`connectors.guess`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from connectors.guess import Guess


def _toml(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string or number is the JSON one


def render_config(g: Guess, config_path: Path) -> str:
    """The config text: ``[source]`` with every guess commented, ``[segmentation] preset = "tracks"``."""
    export = g.sample.path.resolve()
    rel = os.path.relpath(export, config_path.resolve().parent)
    if rel.startswith(".."):  # outside the config's folder: the absolute path reads better
        rel = str(export)
    lines = [f"# Written by `rfmsync init {g.sample.path.name}`: check every line marked \"guessed: check\",",
             "# then run `rfmsync check` and `rfmsync segments`. Reference: docs/configuration.md.",
             "[source]", 'type = "file"', f"orders = {_toml(rel)}"]
    if g.preset:
        lines.append(f"preset = {_toml(g.preset)}  # recognised from the headers: check")
    width = max((len(f"{k} = {_toml(v)}") for k, (v, _) in g.settings.items()), default=0)
    for key, (value, note) in g.settings.items():
        item = f"{key} = {_toml(value)}"
        lines.append(f"{item.ljust(width)}  # {note}")
    if g.columns:
        lines += ["", "[source.columns]  # canonical field = header in the file"]
        width = max(len(f"{k} = {_toml(h)}") for k, (h, _) in g.columns.items())
        for f, (header, note) in g.columns.items():
            item = f"{f} = {_toml(header)}"
            lines.append(f"{item.ljust(width)}  # {note}")
    if g.unmapped:
        lines.append("# not mapped (add under [source.columns] or [source.attributes] if needed): "
                     + ", ".join(g.unmapped))
    lines += ["", "[segmentation]", 'preset = "tracks"', ""]
    return "\n".join(lines)
