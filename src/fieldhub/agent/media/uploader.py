"""The uploader: delivers spooled objects to the hub, one at a time, and only then deletes them.

An object is announced by an event in the outbox. The hub accepts an upload only for an
object a *stored* event of the device announced, so the uploader first waits until the
outbox has lost every report it held when the object arrived (``Outbox.gone``: the hub
acknowledged them; rarely, they were dropped or refused, and the hub then answers
``unknown_object``). Then, per object (docs/agent-media.md):

1. ask on ``upload`` with a fresh ``req``; the hub answers on ``media``;
2. ``done``: the hub has it all, delete it here; a refusal: delete it when the hub says asking
   again is useless (``retry`` false), else wait and ask again; a ``url``: PUT the bytes from
   ``received`` (the hub keeps what an interrupted upload delivered; a resumed PUT says
   ``Content-Range``);
3. ``201``: delivered, delete it here; ``202``, ``409`` and ``410`` (partial, offset moved,
   URL used or expired): ask again at once, for a new URL and offset; ``413``, ``415``,
   ``422``: the hub will never take these bytes, delete them; anything else, or a dropped
   connection: wait and ask again.

With ``media.upload: mqtt`` (a device with no HTTP route to the hub), step 3 sends the bytes
from ``received`` on ``upload`` instead, 48 KiB at a time, each chunk answered on ``media`` with
what the hub holds now (``done`` after the last one).

Waits double from ``retry_min_s`` to ``retry_max_s`` and reset after a delivery. Everything is
counted (:class:`UploaderStats`, on the technician page), and nothing the hub has not
confirmed is ever deleted but for those refusals. Answers arrive on the event loop; the PUT runs
in a worker thread (``_put.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from fieldhub.agent.media.spool import MediaSpool
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.protocol import MediaAnswer, MediaRef, Upload
from fieldhub.protocol.media import MAX_CHUNK_BYTES

if TYPE_CHECKING:
    import ssl

    from fieldhub.agent.outbox import Outbox

__all__ = ["Uploader", "UploaderSettings", "UploaderStats"]

log = logging.getLogger(__name__)

_ASK_AGAIN: Final = frozenset({202, 409, 410})
"""PUT answers after which a new URL and offset are asked for at once."""
_NEVER: Final = {413: "too_large", 415: "wrong_type", 422: "hash_mismatch"}
"""PUT answers after which the hub will never take these bytes."""
_QUICK_ASKS: Final = 5
"""Asks in a row without a wait (``_ASK_AGAIN``) before the uploader waits after all."""


class UploadLink(Protocol):
    """The uplink's side the uploader uses (``agent/uplink.py``)."""

    def publish_upload(self, request: Upload) -> None:
        """Send a request on ``upload``."""

    def on_media(self, callback: Callable[[MediaAnswer], None]) -> None:
        """Call ``callback`` with every answer on ``media``."""


@dataclass(frozen=True, slots=True)
class UploaderSettings:
    """How patient the uploader is; the defaults suit a Pi on a mobile line.

    Attributes:
        answer_timeout_s: an ask without an answer this long is asked again.
        put_timeout_s: a PUT's connection silent this long is given up (and resumed later).
        retry_min_s: first wait after an error; doubles per error in a row.
        retry_max_s: longest wait.
        chunks: send objects over MQTT in chunks instead of HTTP PUTs (``media.upload:
            mqtt``: a device with no HTTP route to the hub).
    """

    answer_timeout_s: float = 30.0
    put_timeout_s: float = 60.0
    retry_min_s: float = 1.0
    retry_max_s: float = 300.0
    chunks: bool = False


@dataclass(slots=True)
class UploaderStats:
    """What the uploader did, for the technician page and the status API.

    Attributes:
        uploading: the name of the object being delivered now, if any.
        asked: requests sent on ``upload``.
        puts: PUTs started.
        chunks: chunks sent over MQTT (``media.upload: mqtt``).
        resumed: uploads started from an offset other than 0 (the hub kept a part).
        sent_bytes: bytes sent in PUTs and chunks.
        delivered: objects the hub confirmed (``201`` or ``done``).
        refused: objects the hub refused for good, by reason.
        errors: failed asks or PUTs (retried after a wait).
        last_error: the latest of those, while it lasts.
    """

    uploading: str | None = None
    asked: int = 0
    puts: int = 0
    chunks: int = 0
    resumed: int = 0
    sent_bytes: int = 0
    delivered: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    last_error: str = ""


class _Retry(Exception):
    """This round failed; wait (``wait``) and ask again."""

    def __init__(self, reason: str, *, wait: bool = True) -> None:
        super().__init__(reason)
        self.wait = wait


class Uploader:
    """Runs as one task of the agent (:meth:`run`); :meth:`attach` it to the uplink.

    Args:
        spool: the objects to deliver.
        outbox: where their events wait for the hub's storage ack.
        tls: the context for ``https`` upload URLs (made by the caller from the agent's TLS
            settings, only when one is needed: ``ssl`` costs memory).
        settings: see :class:`UploaderSettings`.
    """

    def __init__(
        self,
        spool: MediaSpool,
        outbox: Outbox,
        *,
        tls: Callable[[], ssl.SSLContext] | None = None,
        settings: UploaderSettings | None = None,
    ) -> None:
        self._spool = spool
        self._outbox = outbox
        self._tls_factory = tls
        self._tls: ssl.SSLContext | None = None
        self._settings = settings or UploaderSettings()
        self.stats = UploaderStats()
        self._link: UploadLink | None = None
        self._marks: dict[str, int] = {}  # by sha256: the outbox's mark when it was noticed
        self._remarked: set[str] = set()
        self._answers: dict[str, asyncio.Future[MediaAnswer]] = {}
        self._added = asyncio.Event()
        self._throttle = LogThrottle()
        spool.on_added(lambda _ref: self._added.set())

    def attach(self, link: UploadLink) -> None:
        """Ask and hear through ``link`` (at start, or once a claim delivered credentials)."""
        self._link = link
        link.on_media(self._on_answer)

    async def run(self) -> None:
        """Deliver objects until cancelled."""
        wait_s = self._settings.retry_min_s
        quick = 0
        while True:
            ref = await self._next()
            try:
                await self._deliver(ref)
            except _Retry as exc:
                self.stats.errors += 1
                self.stats.last_error = str(exc)
                quick = quick + 1 if not exc.wait else _QUICK_ASKS
                if quick >= _QUICK_ASKS:
                    self._say(ref, str(exc), wait_s)
                    await asyncio.sleep(wait_s * random.uniform(0.5, 1.0))
                    wait_s = min(wait_s * 2, self._settings.retry_max_s)
                    quick = 0
                continue
            finally:
                self.stats.uploading = None
            wait_s, quick = self._settings.retry_min_s, 0
            self.stats.last_error = ""

    # -- which object next -----------------------------------------------------------------

    async def _next(self) -> MediaRef:
        """The oldest object whose announcing event has left the outbox."""
        while True:
            self._added.clear()
            waiting = self._spool.waiting()
            if not waiting:
                await self._added.wait()
                continue
            if any(ref.sha256 not in self._marks for ref in waiting):
                await self._outbox.sync()  # the events reported with them are stored now
                for ref in waiting:
                    self._marks.setdefault(ref.sha256, self._outbox.stored_through)
            ref = waiting[0]
            await self._outbox.gone(self._marks[ref.sha256])
            if ref in self._spool.waiting():
                return ref

    # -- one object ------------------------------------------------------------------------

    async def _deliver(self, ref: MediaRef) -> None:
        self.stats.uploading = ref.name
        answer = await self._ask(ref)
        if answer.done:
            self._delivered(ref)
        elif answer.error is not None:
            self._refused(ref, answer)
        elif self._settings.chunks:
            await self._send_chunks(ref, answer.received or 0)
        elif answer.url is not None:
            await self._put(ref, answer.url, answer.received or 0)

    async def _ask(self, ref: MediaRef) -> MediaAnswer:
        req = os.urandom(6).hex()  # not secrets: it loads OpenSSL (hmac)
        self.stats.asked += 1
        return await self._exchange(req, Upload(req=req, sha256=ref.sha256))

    async def _exchange(self, key: str, message: Upload) -> MediaAnswer:
        """Send ``message`` on ``upload`` and wait for the answer ``key`` names: a request's
        ``req``, or ``chunk:<sha256>`` (chunk answers carry no ``req``)."""
        link = self._link
        if link is None:
            raise _Retry("no connection to the hub yet")
        future: asyncio.Future[MediaAnswer] = asyncio.get_running_loop().create_future()
        self._answers[key] = future
        try:
            link.publish_upload(message)
            async with asyncio.timeout(self._settings.answer_timeout_s):
                return await future
        except TimeoutError:
            waited = self._settings.answer_timeout_s
            raise _Retry(f"no answer from the hub in {waited:g} s") from None
        finally:
            self._answers.pop(key, None)

    def _on_answer(self, answer: MediaAnswer) -> None:
        key = answer.req if answer.req is not None else f"chunk:{answer.sha256}"
        future = self._answers.get(key)
        if future is not None and not future.done():
            future.set_result(answer)

    async def _send_chunks(self, ref: MediaRef, offset: int) -> None:
        """Send the object over MQTT from ``offset`` (a device with no HTTP route to the hub),
        one chunk at a time, each answered with what the hub holds; ``bad_offset`` moves on
        from where the hub's copy ends."""
        path = self._spool.path(ref)
        self.stats.resumed += offset > 0
        while True:
            try:
                data = await asyncio.to_thread(_read_at, path, offset, MAX_CHUNK_BYTES)
            except OSError as exc:
                raise _Retry(f"cannot read {ref.name} from the spool: {exc}") from None
            if not data:
                raise _Retry(f"the hub holds {offset} bytes, the object has {ref.size}")
            answer = await self._exchange(
                f"chunk:{ref.sha256}", Upload(sha256=ref.sha256, offset=offset, data=data)
            )
            self.stats.chunks += 1
            if answer.done:
                self.stats.sent_bytes += len(data)
                self._delivered(ref)
                return
            if answer.error == "bad_offset" and answer.received is not None:
                offset = answer.received
            elif answer.error is not None:
                self._refused(ref, answer)
                return
            else:
                self.stats.sent_bytes += len(data)
                offset = answer.received if answer.received is not None else offset + len(data)

    def _refused(self, ref: MediaRef, answer: MediaAnswer) -> None:
        error = answer.error or "refused"
        if error == "unknown_object":
            # The hub says "maybe later" (the event may be on its way), but this agent asks only
            # once the event has left its outbox. Once more after the outbox drains again (a
            # race), then never: the event was dropped, or a crash came between picture and
            # event; asking forever would hold up every later picture.
            if ref.sha256 in self._remarked:
                self._give_up(ref, error, answer.detail)
                return
            self._remarked.add(ref.sha256)
            self._marks.pop(ref.sha256, None)
            raise _Retry("the hub has not stored the announcing event yet", wait=False)
        if answer.retry:
            raise _Retry(f"the hub cannot take {ref.name} now: {error} {answer.detail}".strip())
        self._give_up(ref, error, answer.detail)

    async def _put(self, ref: MediaRef, url: str, start: int) -> None:
        from fieldhub.agent.media._put import Abort, put_object  # http.client: when uploading

        if start > ref.size:
            raise _Retry(f"the hub says it has {start} of {ref.size} bytes")
        context = None
        if url.startswith("https:"):
            if self._tls is None and self._tls_factory is not None:
                try:
                    self._tls = self._tls_factory()
                except ValueError as exc:  # fieldhub.mqtt.tls.TlsSetupError: a file unreadable
                    raise _Retry(f"TLS for uploads: {exc}") from None
            context = self._tls
        self.stats.puts += 1
        self.stats.resumed += start > 0
        abort = Abort()
        try:
            result = await asyncio.to_thread(
                put_object,
                url,
                self._spool.path(ref),
                start=start,
                size=ref.size,
                media_type=ref.type,
                context=context,
                timeout_s=self._settings.put_timeout_s,
                abort=abort,
            )
        except asyncio.CancelledError:
            abort.abort()  # the agent stops: the hub keeps what arrived, the next start resumes
            raise
        except OSError as exc:
            raise _Retry(f"upload of {ref.name} interrupted: {exc}") from None
        if result.status == 201:
            self.stats.sent_bytes += ref.size - start
            self._delivered(ref)
        elif result.status in _ASK_AGAIN:
            raise _Retry(f"upload of {ref.name}: HTTP {result.status}", wait=False)
        elif result.status in _NEVER:
            self._give_up(ref, _NEVER[result.status], str(result.body.get("detail", ""))[:200])
        else:
            raise _Retry(f"upload of {ref.name}: HTTP {result.status}")

    def _delivered(self, ref: MediaRef) -> None:
        self.stats.delivered += 1
        self._forget(ref, delivered=True)

    def _give_up(self, ref: MediaRef, error: str, detail: str) -> None:
        self.stats.refused[error] = self.stats.refused.get(error, 0) + 1
        log.error(
            "the hub refused %s (%s, %d bytes) for good, deleted: %s %r",
            ref.name,
            ref.sha256[:12],
            ref.size,
            error,
            detail,
        )
        self._forget(ref, delivered=False)

    def _forget(self, ref: MediaRef, *, delivered: bool) -> None:
        self._marks.pop(ref.sha256, None)
        self._remarked.discard(ref.sha256)
        self._spool.forget(ref, delivered=delivered)

    def _say(self, ref: MediaRef, reason: str, wait_s: float) -> None:
        held = self._throttle.due("retry")
        if held is not None:
            log.warning(
                "media %s waits for the hub (%r); trying again in about %.0f s%s",
                ref.name,
                reason,
                wait_s,
                held_back(held),
            )


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(size)
