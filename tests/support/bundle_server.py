"""A real HTTP(S) server that hands out bundle files, as the hub's download route would."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count

from tests.support.certs import CertFiles


class BundleServer:
    """Serves offered bytes at ``/bundles/<n>?token=...``; counts the requests."""

    def __init__(self, server: ThreadingHTTPServer, scheme: str) -> None:
        self._server = server
        self._scheme = scheme
        self._files: dict[str, bytes] = {}
        self._numbers = count()
        self.requests = 0

    def offer(self, data: bytes) -> str:
        """The URL of ``data`` (each offer gets its own)."""
        path = f"/bundles/{next(self._numbers)}"
        self._files[path] = data
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}{path}?token=secret-token"

    def _get(self, path: str) -> bytes | None:
        self.requests += 1
        return self._files.get(path.split("?", 1)[0])


@contextmanager
def bundle_server(tls: CertFiles | None = None) -> Iterator[BundleServer]:
    """A :class:`BundleServer` on a free local port for the block; HTTPS with ``tls``."""
    holder: list[BundleServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = holder[0]._get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert, tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    holder.append(BundleServer(server, "https" if tls else "http"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
