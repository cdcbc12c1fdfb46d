"""Errors of the wire contract: one root, leaves that are also ``ValueError``."""


class ProtocolError(ValueError):
    """A message does not follow the wire contract; the text says what is wrong."""


class TopicError(ProtocolError):
    """A topic is outside the tree or malformed."""


class PayloadError(ProtocolError):
    """A payload is not valid JSON or does not match its channel's schema."""
