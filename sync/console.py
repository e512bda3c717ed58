"""Terminal output that prints user text literally and safely.

Paths, column names, values, segment and destination names reach the terminal inside messages, tables and
errors. :class:`SafeConsole` never interprets them: no rich markup (``[/сум]`` stays ``[/сум]``), no emoji codes,
and control characters (ANSI escapes, NUL, carriage returns, bidi overrides) are shown as visible escapes
(``\\x1b``, ``\\x00``, ``\\u202e``) rather than sent raw to the terminal or dropped. Style is given explicitly
with :func:`styled` / :class:`rich.text.Text`, never by markup in a string.
"""

from __future__ import annotations

import re

from rich.console import Console
from rich.text import Text

# C0 controls but tab and newline, DEL, C1 controls, and the bidi embeddings/overrides/isolates that can
# make a terminal show text in another order than it is (Trojan Source), and the Unicode line separators.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object) -> str:
    """``text`` with every unsafe control character replaced by a visible escape; everything else as is."""
    return _UNSAFE.sub(_escape, str(text))


def styled(text: object, style: str) -> Text:
    """A styled piece of output (``Text.assemble(styled("error:", "bold red"), " ", message)``)."""
    return Text(visible(text), style=style)


class SafeConsole(Console):
    """A rich Console for user text: markup and emoji codes off, control characters made visible.

    Every string it renders (``print`` arguments, table cells and titles) goes through :meth:`render_str`.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("emoji", False)
        super().__init__(**kwargs)

    def render_str(self, text: str, **kwargs) -> Text:
        kwargs["markup"] = False  # even when a caller asks for it: a message may carry a user's "[/x]"
        kwargs["emoji"] = False
        return super().render_str(visible(text), **kwargs)
