"""Error text that is safe to store: no header values, whatever the exception quoted."""

from __future__ import annotations

import re

_QUOTED = re.compile(r"""('[^']*'|"[^"]*"|b'[^']*')""")
_MAX = 240


def describe_error(exc: BaseException) -> str:
    """``Type: message`` with quoted literals masked, so a decoder echoing a value leaks nothing."""
    message = _QUOTED.sub("'…'", str(exc)).replace("\n", " ").strip()
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= _MAX else text[: _MAX - 1] + "…"
