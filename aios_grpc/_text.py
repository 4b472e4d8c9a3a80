"""``quote``: how a caller-controlled string is shown in a log line or an error message.

Session ids, action names, queue names, routing targets and pointers come from the
caller. Shown as they are, a newline in one forges a log line and a megabyte one makes
an error message larger than the caller's client accepts. ``quote`` shows a bounded
prefix in ``repr`` form: control characters (``\\n``, ``\\r``, ``\\x1b``, ...) and
other unprintable characters are escaped, so a quoted value always stays on one line.

>>> quote("s1")
"'s1'"
>>> quote("a\\nERROR forged")
"'a\\\\nERROR forged'"
>>> quote("x" * 200, limit=4)
"'xxxx'...(196 more)"
"""

from __future__ import annotations

import reprlib

LIMIT = 128
"""Characters of a caller's string shown in logs and errors by default."""

# Other values (dicts, lists of a routing pointer): the standard library's reprlib bounds
# the work on a large value too (it stops after a few items per level), where repr()
# would render the whole value before it is cut.
_SHORT = reprlib.Repr()
_SHORT.maxstring = LIMIT
_SHORT.maxother = LIMIT
_SHORT.maxlevel = 3


def quote(value: object, limit: int = LIMIT) -> str:
    """``value`` escaped onto one line and cut to ``limit`` characters (``...(N more)`` says how many)."""
    if isinstance(value, str | bytes):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}...({len(value) - limit} more)"
    shown = _SHORT.repr(value)
    if len(shown) <= limit:
        return shown
    return f"{shown[:limit]}...({len(shown) - limit} more)"


def cut(text: str, limit: int = 1024) -> str:
    """``text`` (a message already formatted, with any caller string in it quoted) cut to
    ``limit`` characters, so that an error sent back stays far below any client's limit."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text) - limit} more)"


__all__ = ["LIMIT", "cut", "quote"]
