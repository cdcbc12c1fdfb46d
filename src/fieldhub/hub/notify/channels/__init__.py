"""Delivery channels: one module per kind, each a :class:`~.base.Sender`."""
