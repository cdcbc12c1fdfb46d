"""Pairing: a gateway and a controller agree on a long-term key, confirmed by a 6-digit code.

Standard library only, so no elliptic curves: a Diffie-Hellman exchange in the 2048-bit MODP
group of RFC 3526 (a safe prime; Python's ``pow`` needs ~2 ms per side), with the commitment of
Bluetooth's numeric comparison so that a man in the middle cannot steer the code. In plain
frames, after the hello (docs/gateway.md shows each message):

1. gateway → controller ``pair1``: its public value ``A``;
2. controller → gateway ``pair2``: its public value ``B`` and ``commit = HMAC(Nc, A || B)``,
   binding a random nonce ``Nc`` it has not shown yet;
3. gateway → controller ``pair3``: its random nonce ``Ng``;
4. controller → gateway ``pair4``: ``Nc``; the gateway checks ``commit``.

Both sides then know ``code = SHA-256("fieldhub-lan code" || A || B || Ng || Nc)`` as 6 digits
and ``key = HMAC(DH secret, "fieldhub-lan key" || A || B || Ng || Nc || ids)``. The controller
prints the code on its console; the gateway passes it to its display and asks the hub
(``Uplink.pairing_requested``). A person approves by typing the controller's code at the gateway
(checked) or by comparing the two codes and approving in the hub. Only then does the gateway
send its first authenticated frame with the new key; the controller keeps the key on receiving
it, and answers in kind.

Threat model: an eavesdropper learns nothing of the key (Diffie-Hellman). An active attacker
in the middle gets a different key with each side, and so (thanks to the commitment, which
fixes both public values before either nonce is known) different codes, except with
probability 10^-6 per attempt: the approval is what stops them. A controller trusts the first
gateway that completes pairing with it while it is unpaired; its console names that gateway,
and ``fieldhub controller unpair`` starts over.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CODE_DIGITS",
    "KeyExchange",
    "PairingError",
    "commitment",
    "long_term_key",
    "pairing_code",
]

MODP_2048: Final = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
"""RFC 3526 group 14: a 2048-bit safe prime, generator 2."""
_GENERATOR: Final = 2
_PUBLIC_BYTES: Final = 256
_SECRET_BITS: Final = 256
CODE_DIGITS: Final = 6


class PairingError(ValueError):
    """A pairing message that is malformed or does not keep its commitment."""


@dataclass(slots=True)
class KeyExchange:
    """One side's Diffie-Hellman values."""

    _secret: int

    @classmethod
    def fresh(cls) -> KeyExchange:
        return cls(secrets.randbits(_SECRET_BITS) | 1 << (_SECRET_BITS - 1))

    @property
    def public(self) -> bytes:
        return pow(_GENERATOR, self._secret, MODP_2048).to_bytes(_PUBLIC_BYTES, "big")

    def shared(self, peer_public: bytes) -> bytes:
        """The shared secret with a peer's public value.

        Raises:
            PairingError: the value is not 256 bytes or is a degenerate element (0, 1, p - 1 or
                beyond), which would fix the secret whatever our own value is.
        """
        value = int.from_bytes(peer_public, "big")
        if len(peer_public) != _PUBLIC_BYTES or not 1 < value < MODP_2048 - 1:
            raise PairingError("the peer's public value is not in the group")
        return pow(value, self._secret, MODP_2048).to_bytes(_PUBLIC_BYTES, "big")


def commitment(nonce: bytes, gateway_public: bytes, controller_public: bytes) -> bytes:
    """The controller's commitment to its nonce (message ``pair2``)."""
    return hmac.digest(nonce, gateway_public + controller_public, "sha256")


def pairing_code(
    gateway_public: bytes, controller_public: bytes, gateway_nonce: bytes, controller_nonce: bytes
) -> str:
    """The 6 digits both sides show; equal only if no one stood in the middle."""
    digest = hashlib.sha256(
        b"fieldhub-lan code" + gateway_public + controller_public + gateway_nonce + controller_nonce
    ).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**CODE_DIGITS:0{CODE_DIGITS}d}"


def long_term_key(
    shared: bytes,
    transcript: tuple[bytes, bytes, bytes, bytes],
    gateway_id: str,
    controller_id: str,
) -> bytes:
    """The per-controller key both sides keep (0600) once the pairing is approved."""
    ids = f"{gateway_id}\x00{controller_id}".encode()
    return hmac.digest(shared, b"fieldhub-lan key" + b"".join(transcript) + ids, "sha256")
