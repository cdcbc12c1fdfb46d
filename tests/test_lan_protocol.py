"""The LAN protocol's rules, each on real bytes: announcements, frames, authentication, pairing."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from fieldhub.lan.discovery import (
    MAX_ANNOUNCEMENT_BYTES,
    Announcement,
    AnnouncementError,
    decode_announcement,
    encode_announcement,
)
from fieldhub.lan.framing import MAX_FRAME_BYTES, FrameError, decode_json, pack_frame, read_frame
from fieldhub.lan.pairing import MODP_2048, KeyExchange, PairingError, commitment, pairing_code
from fieldhub.lan.session import AuthError, Session, session_key


def test_an_announcement_round_trips_and_bad_ones_say_why() -> None:
    announcement = Announcement("ctrl-1", 7410, paired=False)
    assert decode_announcement(encode_announcement(announcement)) == announcement
    bad = {
        b"x" * (MAX_ANNOUNCEMENT_BYTES + 1): "more than 512",
        b"\xff": "not JSON",
        b"[1]": "not a fieldhub controller announcement",
        b'{"fieldhub":"controller","v":2,"id":"a","port":1,"paired":true}': "version 2",
        b'{"fieldhub":"controller","v":1,"id":"a/b","port":1,"paired":true}': "`id` must be",
        b'{"fieldhub":"controller","v":1,"id":"a","port":70000,"paired":true}': "`port` must",
        b'{"fieldhub":"controller","v":1,"id":"a","port":1,"paired":1}': "`paired` must",
    }
    for datagram, why in bad.items():
        with pytest.raises(AnnouncementError, match=why):
            decode_announcement(datagram)


async def test_frames_are_bounded_before_they_are_read() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data((MAX_FRAME_BYTES + 1).to_bytes(4, "big") + b"x" * 10)
    with pytest.raises(FrameError, match=r"outside 1\.\.65536"):
        await read_frame(reader)
    reader = asyncio.StreamReader()
    reader.feed_data(pack_frame(b"hello"))
    assert await read_frame(reader) == b"hello"
    with pytest.raises(FrameError):
        pack_frame(b"x" * (MAX_FRAME_BYTES + 1))


def test_json_bodies_are_objects_within_the_nesting_bound() -> None:
    assert decode_json(b'{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    with pytest.raises(FrameError, match="deeper than 32"):
        decode_json(b'{"a":' + b"[" * 40 + b"]" * 40 + b"}")
    with pytest.raises(FrameError, match="not JSON"):
        decode_json(b"[" * 60000)  # the parser's own recursion limit, refused cleanly
    with pytest.raises(FrameError, match="not a JSON object"):
        decode_json(b"[1]")


def _pair_of_sessions() -> tuple[Session, Session]:
    key = secrets.token_bytes(32)
    link_key = session_key(key, b"g" * 16, b"c" * 16)
    return Session(link_key, "gateway"), Session(link_key, "controller")


def test_authenticated_frames_refuse_forgery_replay_reordering_and_reflection() -> None:
    gateway, controller = _pair_of_sessions()
    first, second = gateway.seal({"t": "hb"}), gateway.seal({"t": "req", "id": 1})
    assert controller.open(first) == {"t": "hb"}

    with pytest.raises(AuthError) as replayed:
        controller.open(first)
    assert replayed.value.reason == "bad_counter"

    tampered = second[:-2] + b"2}"
    with pytest.raises(AuthError) as forged:
        controller.open(tampered)
    assert forged.value.reason == "bad_tag"

    _, elsewhere = _pair_of_sessions()  # another key: a recorded frame of another link
    with pytest.raises(AuthError) as wrong_key:
        elsewhere.open(second)
    assert wrong_key.value.reason == "bad_tag"

    with pytest.raises(AuthError) as reflected:
        gateway.open(first)  # the gateway's own frame sent back to it
    assert reflected.value.reason == "bad_tag"

    third = gateway.seal({"t": "hb"})
    with pytest.raises(AuthError) as skipped:
        controller.open(third)  # `second` never arrived
    assert skipped.value.reason == "bad_counter"

    with pytest.raises(AuthError) as plain:
        controller.open(b"P{}")
    assert plain.value.reason == "not_authenticated"


def test_pairing_gives_both_sides_one_code_and_a_man_in_the_middle_another() -> None:
    gateway, controller = KeyExchange.fresh(), KeyExchange.fresh()
    a, b = gateway.public, controller.public
    assert gateway.shared(b) == controller.shared(a)
    ng, nc = secrets.token_bytes(16), secrets.token_bytes(16)
    code = pairing_code(a, b, ng, nc)
    assert len(code) == 6
    assert code.isdigit()

    mallory = KeyExchange.fresh()  # talks to each side with her own value
    m = mallory.public
    assert pairing_code(a, m, ng, nc) != code or pairing_code(m, b, ng, nc) != code
    assert commitment(nc, a, b) != commitment(secrets.token_bytes(16), a, b)

    for degenerate in (0, 1, MODP_2048 - 1, MODP_2048):
        with pytest.raises(PairingError, match="not in the group"):
            gateway.shared(degenerate.to_bytes(256, "big"))
