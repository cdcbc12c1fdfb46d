"""Why a bundle is refused: one reason code per kind of fault, the one list of them.

The device reports the code to the hub (a ``bundle.refused`` event, a command's error) and
the hub shows and counts it, so the codes are part of the contract between the agent and
the hub's rollouts: they are stable strings, never reworded. The message beside a code is for
people and may change.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["BundleRefused", "Reason"]


class Reason(StrEnum):
    """A refusal's code; its value travels on the wire."""

    # The archive and its manifest
    MALFORMED = "malformed"  # not a tar, truncated, manifest not valid JSON or not the schema
    BAD_SIGNATURE = "bad_signature"  # signed by a trusted key id, but the signature does not match
    UNKNOWN_KEY = "unknown_key"  # signed by a key this side does not trust
    REVOKED_KEY = "revoked_key"  # signed by a key whose id is revoked
    KEY_EXPIRED = "key_expired"  # signed by a trusted key past its expiry (at verification)
    FILE_MISMATCH = "file_mismatch"  # a file's size or SHA-256 differs from the manifest
    MISSING_FILE = "missing_file"  # the manifest lists a file the archive lacks
    UNLISTED_FILE = "unlisted_file"  # the archive holds a file the manifest does not list
    UNSAFE_PATH = "unsafe_path"  # absolute, "..", or outside files/
    UNSAFE_MEMBER = "unsafe_member"  # symlink, hard link, device, fifo
    DUPLICATE_MEMBER = "duplicate_member"  # the same path twice (which copy would count?)
    # The device's own checks
    WRONG_TARGET = "wrong_target"  # another device type, or labels that do not match
    AGENT_TOO_OLD = "agent_too_old"  # min_agent_version above the running agent
    DOWNGRADE = "downgrade"  # lower than the installed version, without a signed force
    BAD_FORCE = "bad_force"  # a downgrade permission that is not valid for this device/bundle
    BAD_CONFIG = "bad_config"  # the bundle's agent.yaml fails the agent's own schema
    TOO_LARGE = "too_large"  # the download is larger than announced
    DIGEST_MISMATCH = "digest_mismatch"  # the download's SHA-256 is not the announced one
    DOWNLOAD_FAILED = "download_failed"  # HTTP error, TLS refusal, connection lost
    DISK_FULL = "disk_full"  # writing the new version ran out of space (or of file size)
    WRITE_FAILED = "write_failed"  # writing the new version failed otherwise (permissions, I/O)
    BUSY = "busy"  # another install is under way
    NOT_INSTALLED = "not_installed"  # rollback of a bundle that has no previous version
    INTERRUPTED = "interrupted"  # the agent died while writing; found at its next start
    # After activation
    HEALTH_FAILED = "health_failed"  # the trial start did not confirm in time
    CRASHED = "crashed"  # the agent died during the trial start


class BundleRefused(Exception):
    """A bundle (or an install step) refused, with its :class:`Reason` and a message for people."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message
