"""Every example in docs/gateway.md's LAN protocol decodes, or is refused, as the page says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fieldhub.controller.config import load_config
from fieldhub.lan.discovery import AnnouncementError, decode_announcement
from fieldhub.lan.framing import decode_json, pack_frame
from fieldhub.lan.session import Session, session_key

DOC = (Path(__file__).parent.parent / "docs" / "gateway.md").read_text()
_BLOCK = re.compile(r"```(?:json|text|yaml) lan=(\w+)( invalid)?\n(.*?)```", re.DOTALL)
EXAMPLES = [(m.group(1), bool(m.group(2)), m.group(3)) for m in _BLOCK.finditer(DOC)]


def _examples(kind: str) -> list[tuple[bool, str]]:
    return [(invalid, body) for k, invalid, body in EXAMPLES if k == kind]


@pytest.mark.parametrize(("invalid", "body"), _examples("announcement"))
def test_announcement(invalid: bool, body: str) -> None:
    if invalid:
        with pytest.raises(AnnouncementError):
            decode_announcement(body.encode())
    else:
        assert decode_announcement(body.encode()).controller_id == "ctrl-1"


@pytest.mark.parametrize(("invalid", "body"), _examples("body"))
def test_body(invalid: bool, body: str) -> None:
    assert not invalid
    assert decode_json(body.encode())["t"] in {"hello", "req", "res", "hb", "auth"}


def test_the_frame_example_is_what_the_code_sends() -> None:
    [(_, text)] = _examples("frame")
    fields = dict(line.split(": ", 1) for line in text.strip().splitlines())
    key = session_key(
        bytes.fromhex(fields["key"]),
        bytes.fromhex(fields["gateway_nonce"]),
        bytes.fromhex(fields["controller_nonce"]),
    )
    assert key.hex() == fields["session_key"]
    frame = pack_frame(Session(key, "gateway").seal(decode_json(fields["body"].encode())))
    assert frame.hex() == fields["frame"]
    assert Session(key, "controller").open(frame[4:]) == {"t": "auth"}


def test_the_controller_file_example_loads(tmp_path: Path) -> None:
    [(_, text)] = _examples("controller")
    path = tmp_path / "controller.yaml"
    path.write_text(text)
    config = load_config(path)
    assert config.actions["relay.set"].args == {"closed": "bool"}
    assert set(config.values) == {"temperature", "load", "free_mb"}


def test_the_page_has_examples_of_each_kind() -> None:
    assert {kind for kind, _, _ in EXAMPLES} == {"announcement", "body", "frame", "controller"}
