"""The access matrix (tests/support/access_matrix.py) for the users of one site or of none:
operators and viewers, by session and by token (and the anonymous caller, so public routes are
seen to answer everyone alike here too)."""

from __future__ import annotations

import pytest

from fieldhub.hub.app import Hub
from tests.support.access_matrix import CALLERS, run_matrix

SITE_USERS = [CALLERS[0], *CALLERS[10:]]


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_access_matrix_for_operators_and_viewers(
    hub: Hub, capsys: pytest.CaptureFixture[str]
):
    assert {w.role for w in SITE_USERS[1:]} == {"operator", "viewer"}
    await run_matrix(hub, SITE_USERS, capsys)
