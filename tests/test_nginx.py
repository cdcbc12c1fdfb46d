"""deploy/nginx/fieldhub.conf for real: it passes ``nginx -t``, and nginx (the Debian package,
run as a child, not a daemon) serves a running ``fieldhub demo`` over https with a self-signed
certificate made here: the dashboard, REST and the live WebSocket (wss) through it, in Chromium.

The site file is used as shipped, but for what an installation changes: its ports, the
certificate's paths, the hub's port. Each of those edits must find its text, so a changed
file fails here rather than going untested.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from fieldhub.hub.api.limits import DEFAULT_MAX_BODY
from tests.support.servers import free_port
from tests.test_cli import _demo_password, running
from tests.test_dashboard import CHROMIUM_ARGS, _chromium
from tests.waiting import HTTP_TIMEOUT_S

SITE = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "fieldhub.conf"


def _nginx() -> str:
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        message = "nginx not found: install the Debian package nginx (scripts/system-packages)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class Site:
    """nginx's files for one test: its main configuration around the site, and the ports."""

    folder: Path
    https: int
    http: int

    @property
    def config(self) -> Path:
        return self.folder / "nginx.conf"


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, f"deploy/nginx/fieldhub.conf no longer has {old!r}: update this test"
    return text.replace(old, new)


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, made with the openssl CLI."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def _site(folder: Path, hub_port: int, site_text: str | None = None) -> Site:
    """The shipped site, edited only where an installation edits it, inside a main config."""
    cert, key = _certificate(folder)
    site = Site(folder, https=free_port(), http=free_port())
    text = SITE.read_text() if site_text is None else site_text
    text = _edit(text, "server 127.0.0.1:8080;", f"server 127.0.0.1:{hub_port};")
    text = _edit(text, "    listen 80;\n", f"    listen 127.0.0.1:{site.http};\n")
    text = _edit(
        text, "    listen 443 ssl http2;\n", f"    listen 127.0.0.1:{site.https} ssl http2;\n"
    )
    text = _edit(text, "    listen [::]:80;\n", "")  # this machine may have no IPv6
    text = _edit(text, "    listen [::]:443 ssl http2;\n", "")
    text = _edit(text, "/etc/letsencrypt/live/fieldhub.example.net/fullchain.pem", str(cert))
    text = _edit(text, "/etc/letsencrypt/live/fieldhub.example.net/privkey.pem", str(key))
    text = _edit(text, "root /var/www/letsencrypt;", f"root {folder};")
    (folder / "site.conf").write_text(text)
    temporary = "\n".join(
        f"  {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                          "uwsgi", "scgi")
    )  # fmt: skip
    as_root = "user root;\n" if os.geteuid() == 0 else ""  # workers must read this 0700 folder
    site.config.write_text(
        f"{as_root}daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
        "error_log stderr warn;\nevents { worker_connections 256; }\n"
        f"http {{\n  access_log off;\n{temporary}\n  include {folder / 'site.conf'};\n}}\n"
    )
    return site


def _check(site: Site) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_nginx(), "-t", "-p", str(site.folder), "-c", str(site.config), "-e", "stderr"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_site_passes_nginx_t_and_a_broken_one_does_not(tmp_path: Path):
    good = tmp_path / "good"
    good.mkdir()
    checked = _check(_site(good, hub_port=free_port()))
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
    # The check is real: the same file with one directive misspelt fails it.
    bad = tmp_path / "bad"
    bad.mkdir()
    broken = SITE.read_text().replace("proxy_read_timeout", "proxy_raed_timeout", 1)
    refused = _check(_site(bad, hub_port=free_port(), site_text=broken))
    assert refused.returncode != 0
    assert 'unknown directive "proxy_raed_timeout"' in refused.stderr


def test_nginx_refuses_bodies_the_hub_would_refuse():
    """One limit, in two places: the site's client_max_body_size is the hub's own."""
    match = re.search(r"client_max_body_size (\d+)m;", SITE.read_text())
    assert match
    assert int(match.group(1)) * 1024 * 1024 == DEFAULT_MAX_BODY


@contextmanager
def _serving(site: Site) -> Iterator[None]:
    """nginx as a child process (not a daemon) until the block ends."""
    log = (site.folder / "nginx.log").open("w")
    process = subprocess.Popen(
        [_nginx(), "-p", str(site.folder), "-c", str(site.config), "-e", "stderr"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, (site.folder / "nginx.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", site.https), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen within 15 s"
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(15)
        log.close()


@pytest.mark.browser
@pytest.mark.slow
async def test_dashboard_rest_and_live_websocket_through_nginx_over_tls(tmp_path: Path):
    hub_port = free_port()
    args = ("demo", "--devices", "2", "--data", str(tmp_path / "demo"),
            "--http", f"127.0.0.1:{hub_port}", "--mqtt", f"127.0.0.1:{free_port()}")  # fmt: skip
    # The hub believes nginx's X-Forwarded-* (as deploy/fieldhub-hub.service runs it).
    env = {"FIELDHUB_TRUSTED_PROXIES": "127.0.0.1"}
    with running(*args, env=env) as (_, process):
        password = _demo_password(process)
        site = _site(tmp_path, hub_port)
        with _serving(site):
            base = f"https://localhost:{site.https}"
            trusted = ssl.create_default_context(cafile=tmp_path / "cert.pem")
            async with httpx.AsyncClient(
                base_url=base, verify=trusted, timeout=HTTP_TIMEOUT_S
            ) as client:
                health = await client.get("/api/health")
                assert health.status_code == 200
                assert health.json() == {"status": "ok"}
                assert health.headers["strict-transport-security"].startswith("max-age=")
                assert health.headers["x-frame-options"] == "DENY"  # the hub's, passed on
                assert "default-src 'self'" in health.headers["content-security-policy"]
                assert (await client.get("/api/devices")).status_code == 401
                too_big = await client.post(
                    "/api/auth/login", content=b"x" * (DEFAULT_MAX_BODY + 1)
                )
                assert too_big.status_code == 413
                docs = await client.get("/docs")
                assert docs.status_code == 200
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as plain:
                moved = await plain.get(f"http://127.0.0.1:{site.http}/devices/x?y=1")
            assert moved.status_code == 301
            assert moved.headers["location"] == "https://127.0.0.1/devices/x?y=1"
            await _browse(base, password)


async def _browse(base: str, password: str) -> None:
    """Log in over https and watch the fleet live (the WebSocket over wss through nginx)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(base_url=base, ignore_https_errors=True)
            page = await context.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            sockets: list[str] = []
            page.on("websocket", lambda ws: sockets.append(ws.url))
            await page.goto("/")
            await expect(page).to_have_url(re.compile(r"/login\?next="), timeout=20_000)
            await page.get_by_label("Name").fill("admin")
            await page.get_by_label("Password").fill(password)
            await page.get_by_role("button", name="Log in").click()
            await expect(page).to_have_url(base + "/", timeout=20_000)
            row = page.locator("#device-rows tr").filter(has_text="demo-001")
            await expect(row.locator(".presence")).to_have_text(
                re.compile(r"^online · "), timeout=30_000
            )
            await expect(page.locator("#live-state")).to_have_text("live", timeout=20_000)
            assert any(url.startswith("wss://localhost:") for url in sockets), sockets
            assert problems == []
        finally:
            await browser.close()
