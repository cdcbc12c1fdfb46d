"""SHA-256 without OpenSSL.

``hashlib`` loads OpenSSL's libcrypto to offer its hashes: 3.5 MB of the agent's 30 MB budget
(docs/agent.md, "Memory"), for a plain-TCP agent that needs nothing else of it. CPython also
builds its own SHA-256 (HACL*, the same code ``hashlib`` falls back to without OpenSSL), as
``_sha256`` up to 3.11 and ``_sha2`` since 3.12; the agent hashes its media with that.
"""

from __future__ import annotations

from typing import Any

__all__ = ["sha256"]

try:  # Python 3.12+
    from _sha2 import sha256 as _builtin  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Python 3.11
    try:
        from _sha256 import sha256 as _builtin  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:  # a build without it: OpenSSL's, then
        from hashlib import sha256 as _builtin  # type: ignore[assignment,unused-ignore]


def sha256(data: bytes = b"") -> Any:
    """A new SHA-256 hash object (``update``, ``hexdigest``) fed with ``data``."""
    return _builtin(data)
