"""Every dashboard page is served whole: the shared head and top bar in place (written once in
web/pages/parts/), the same navigation on every page, and a browser's copy revalidated by ETag."""

from __future__ import annotations

import re

import httpx

from fieldhub.hub.api.web import PAGES


async def test_every_page_has_the_shared_head_and_the_same_navigation(api: httpx.AsyncClient):
    navigations = set()
    for path in PAGES:
        answer = await api.get(path.replace("{device_id}", "atm-1"))
        assert answer.status_code == 200, path
        html = answer.text
        assert "fieldhub:" not in html, f"{path}: a part was not put in"
        assert '<link rel="stylesheet" href="/static/css/app.css">' in html, path
        assert html.index('<meta charset="utf-8">') < html.index("<title>"), path
        if path != "/login":
            nav = re.search(r'<nav aria-label="pages">.*?</nav>', html, re.S)
            assert nav is not None, f"{path}: no top bar"
            navigations.add(nav.group(0))
    assert len(navigations) == 1
    links = re.findall(r'href="([^"]+)"', navigations.pop())
    assert set(links) <= set(PAGES), f"the bar links a page the hub does not serve: {links}"
    assert "/rollouts" in links
    assert "/login" not in links


async def test_a_page_is_revalidated_by_its_etag(api: httpx.AsyncClient):
    first = await api.get("/alarms")
    assert first.headers["cache-control"] == "no-cache"
    again = await api.get("/alarms", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    other = await api.get("/events", headers={"If-None-Match": first.headers["etag"]})
    assert other.status_code == 200
