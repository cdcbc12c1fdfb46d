"""Links that are their own credential (hub/auth/links.py): one key file, private; a
signature has one spelling; a link of one kind never passes for another kind."""

from __future__ import annotations

import stat
from pathlib import Path

from fieldhub.hub.auth.links import KEY_FILE, b64, load_link_key, sign, signed, unb64
from fieldhub.hub.media.links import UploadLinks
from fieldhub.hub.rollouts.links import DownloadForged, DownloadLinks

KEY = bytes(range(32))
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def spare_bit_changed(text: str) -> str:
    """``text`` with the lowest bit of its last character flipped: for 16 or 32 bytes that bit
    is padding, so the decoded bytes stay the same."""
    return text[:-1] + ALPHABET[ALPHABET.index(text[-1]) ^ 1]


def test_the_key_is_made_once_private_and_kept(tmp_path: Path):
    key = load_link_key(tmp_path)
    assert len(key) == 32
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert load_link_key(tmp_path) == key


def test_a_signature_has_one_spelling():
    sig = sign(KEY, b"d\x00", b"message", size=16)  # 16 bytes: the last character has spare bits
    assert signed(KEY, b"d\x00", b"message", sig, size=16)
    twin = spare_bit_changed(sig)
    assert twin != sig
    assert unb64(twin) == unb64(sig)  # the same bytes, decoded
    assert not signed(KEY, b"d\x00", b"message", twin, size=16)
    assert b64(unb64(sig)) == sig


def test_one_kind_of_link_never_stands_for_another():
    assert sign(KEY, b"a\x00", b"same") != sign(KEY, b"b\x00", b"same")
    uploads = UploadLinks(KEY, "http://hub", 60_000)
    link = uploads.mint("atm-1", "ab" * 32, now=0)
    sig = link.url.rsplit("sig=", 1)[1]
    download = uploads.mint_download("atm-1", "ab" * 32, link.expires_at)
    assert sig not in download  # an upload URL's signature is no download link's


def test_a_download_token_with_a_changed_spare_bit_is_forged():
    links = DownloadLinks(KEY, "http://hub")
    token = links.url("atm-1", "c" * 64, ttl_ms=60_000).rsplit("token=", 1)[1]
    assert links.check(token, "c" * 64).device_id == "atm-1"
    for bad in (spare_bit_changed(token), token.replace(".", ".A", 1)):
        try:
            links.check(bad, "c" * 64)
        except DownloadForged:
            continue
        raise AssertionError(f"{bad} was taken")
