"""Log lines that no one else can write: control characters in a record are escaped.

Log messages quote what devices and users send: client ids, topics, protocol names, request
paths, the text of exceptions raised on their input. A line feed in any of them would start a
line of the log that fieldhub never wrote (``MQTT\\n... INFO admin logged in``), and an escape
sequence could rewrite what a terminal shows. Checking every log call for every untrusted
string cannot be kept up; so the one formatter fieldhub installs (``cli.plain``) escapes, in
the rendered message and in exception and stack text, every character that could break or
hide a line: C0 and C1 controls (CR, LF, ESC, NUL, ...), the Unicode line and paragraph
separators, the bidirectional overrides, and lone surrogates (undecodable bytes, which
would otherwise fail the write). A record is one line, always; a traceback reads
``Traceback ...:\\n  File ...`` on it, which ``printf '%b'`` unfolds.

Backslashes are left as they are: a literal ``\\n`` cannot be told from an escaped line feed,
but it cannot start a line either, and paths and patterns stay readable.
"""

from __future__ import annotations

import logging
import re

__all__ = ["EscapingFormatter", "escape"]

_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every character that could break or hide a log line escaped, Python
    style (``\\n``, ``\\x1b``, ``\\u2028``)."""
    if text.isascii() and text.isprintable():  # the common case, without the regex
        return text
    return _UNSAFE.sub(_escaped, text)


class EscapingFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose every record is one line (see the module doc).

    The whole rendered record is escaped, message, exception and stack text together, after
    formatting: so it covers ``%r`` and ``%s`` arguments, f-strings and exception messages
    alike, whoever logs (fieldhub, amqtt, uvicorn). The record itself is left as it was, for
    any other handler.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line."""
        return escape(super().format(record))
