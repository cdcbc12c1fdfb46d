"""Device certificates on the embedded broker's ``mqtts`` listener: checked in the handshake,
and a revocation applied within a second, whoever made it (the API in this process, or
``fieldhub device revoke --cert`` beside it).

OpenSSL does the checking (chain to the hub's device CA, dates, the revocation list); a
handshake it refuses is counted and logged by the broker as the rule ``TLS``, with OpenSSL's
reason (``certificate has expired``, ``certificate revoked``, ``unable to get local issuer
certificate``). That the certificate's CN is the device logging in is checked at CONNECT
(``connection.BrokerConnection.certificate_mismatch``).

A revocation rewrites ``crl.pem``; :func:`watch_revocations` sees the file change, gives the
listener a context made afresh (OpenSSL would not reliably prefer a second list of the same
CA loaded into the old one), and closes the live connections of the revoked certificates.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Final, Literal

from fieldhub.hub.broker.device_ca import DeviceCa
from fieldhub.hub.broker.embedded import EmbeddedBroker

__all__ = ["ClientCertMode", "verify_devices", "watch_revocations"]

log = logging.getLogger(__name__)

ClientCertMode = Literal["off", "optional", "required"]
_POLL_S: Final = 1.0


def verify_devices(context: ssl.SSLContext, ca: DeviceCa, mode: ClientCertMode) -> None:
    """Make a server ``context`` check client certificates against the device CA (made now if
    it is not yet) and its revocation list; ``required`` refuses clients without one."""
    if mode == "off":
        return
    ca.ensure()
    context.verify_mode = ssl.CERT_REQUIRED if mode == "required" else ssl.CERT_OPTIONAL
    context.load_verify_locations(cafile=str(ca.ca_path))
    context.load_verify_locations(cafile=str(ca.crl_path))
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


async def watch_revocations(
    ca: DeviceCa, broker: EmbeddedBroker, new_context: Callable[[], ssl.SSLContext]
) -> None:
    """Until cancelled: on each change of the revocation list, serve new handshakes with
    ``new_context()`` and close the connections of revoked certificates."""
    seen = ca.crl_path.stat().st_mtime_ns
    while True:
        await asyncio.sleep(_POLL_S)
        try:
            changed = ca.crl_path.stat().st_mtime_ns
        except OSError:
            continue
        if changed == seen:
            continue
        seen = changed
        broker.replace_tls_context(await asyncio.to_thread(new_context))
        revoked = await asyncio.to_thread(ca.revoked_serials)
        kicked = broker.kick_certificates(revoked)
        log.info(
            "device certificates: the revocation list changed (%d revoked); %d connection(s) "
            "closed",
            len(revoked),
            kicked,
        )
