"""Client-provided text made safe to log: escaped and capped.

A proxy chooses its node id, its NACK messages, the type URLs and resource names it asks
for. Logged as they are, a newline forges a log line (``node\\nERROR ...``), an escape
sequence rewrites a terminal, and a 1 MB node id is written whole into every line that
names it. Every log line that includes such a string passes it through ``printable``.
"""

from __future__ import annotations

# Long enough for any real node id (istiod's are ``sidecar~IP~POD.NS~NS.svc.cluster.local``,
# well under 200 characters) and for the useful start of an Envoy NACK message.
LOG_LIMIT = 256


def printable(value: object, limit: int = LOG_LIMIT) -> str:
    """``value`` as one line of at most about ``limit`` characters: control and other
    non-printable characters (CR, LF, ESC, NUL, U+2028...) escaped as ``\\n``, ``\\x1b``,
    ``\\u2028``; a longer text cut, saying how long it was."""
    text = str(value)
    total = len(text)
    if total > limit:
        text = text[:limit]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if total > limit:
        text += f"...[{total} characters]"
    return text


def _escape(char: str) -> str:
    special = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if special is not None:
        return special
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
