"""MSE/PE as a stream layer: a ``ByteStream`` to the peer driver, a consumer of TCP or uTP.

The stack is ``socket -> (TCP | uTP) -> MseStream -> PeerDriver``.  The
driver never learns the layer is there: it hears ``stream_opened`` only once
the MSE handshake (:mod:`core.mse.handshake`) is complete, so the handshake
bytes never reach it, and from then on it reads and writes plaintext.

Reading keeps the seam's zero-copy shape.  Once the handshake is done,
``get_buffer`` hands the lower stream the driver's own receive buffer, the
socket writes ciphertext straight into it, and ``buffer_updated`` decrypts
that region in place (:meth:`Rc4.process_into`) before passing the count
up.  Writes are encrypted into one new buffer per call (``writelines``
encrypts each part into its place: no joined plaintext in between).  With
plaintext selected (or a plain BitTorrent connection on an incoming
stream) the layer passes everything through untouched.

During the handshake the layer reads into a small scratch buffer of its
own and feeds the sans-IO state machine.  What arrived after the handshake
(``remainder``) and, on the accepting side, the initiator's initial payload
(its BitTorrent handshake, carried inside MSE step 3) reach the driver as
the first bytes it reads, in that order: IA, then the remainder.

Outgoing connections send no initial payload: the driver's BitTorrent
handshake is written when it hears ``stream_opened``, i.e. after the MSE
handshake, one round trip later than libtorrent's IA trick.  Incoming
connections are told apart by their first 20 bytes: the plain BitTorrent
prefix means no MSE at all (passed through when ``allow_plaintext_handshake``,
refused otherwise), anything else is taken for an MSE Ya.

Every failure (a handshake error, the timeout, the lower stream closing
mid-handshake) becomes ``upper.stream_closed("mse: ...")`` with the lower
stream aborted: the reason is what the engine records as the drop reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from ..mse.handshake import (
    BITTORRENT_PREFIX,
    CRYPTO_RC4,
    MseError,
    MseInitiator,
    MseResponder,
    MseResult,
)
from ..mse.rc4 import Rc4
from .stream import Address, ByteStream, StreamConsumer, WriteData

__all__ = ["HANDSHAKE_TIMEOUT", "MseStream"]

#: Seconds from the lower stream opening to a completed MSE handshake.
HANDSHAKE_TIMEOUT = 10.0
#: The handshake-phase read buffer: step 3 with a full pad and IA fits easily.
_SCRATCH = 16 << 10

# Phases
_CONNECTING = "connecting"  # lower stream not open yet
_DETECTING = "detecting"  # incoming: plain BitTorrent or MSE?
_HANDSHAKE = "handshake"
_OPEN = "open"  # upper has the stream
_CLOSED = "closed"


class MseStream:
    """One connection's MSE layer; build it with :meth:`outgoing` or :meth:`incoming`."""

    def __init__(
        self,
        upper: StreamConsumer,
        *,
        info_hash: bytes | None = None,
        provide: int = 0,
        find_skey: Callable[[bytes], bytes | None] | None = None,
        allowed: int = 0,
        allow_plaintext_handshake: bool = False,
        timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.upper = upper
        self.lower: ByteStream | None = None
        #: After the handshake: RC4 was selected (False for plaintext or a plain BitTorrent peer).
        self.encrypted = False
        #: After the handshake: the torrent named by the SKEY (None for a plain BitTorrent peer).
        self.info_hash: bytes | None = info_hash
        self._provide = provide
        self._find_skey = find_skey
        self._allowed = allowed
        self._allow_plain = allow_plaintext_handshake
        self._timeout = timeout
        self._phase = _CONNECTING
        self._handshake: MseInitiator | MseResponder | None = None
        self._encryptor: Rc4 | None = None
        self._decryptor: Rc4 | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._scratch: bytearray | None = None
        self._detected = bytearray()  # incoming: the first bytes, until we know what they are
        self._pending = bytearray()  # plaintext for the upper, before anything newer
        self._view: memoryview | None = None  # the upper's buffer lent to the lower stream
        self._reading_paused = False
        self._delivery: asyncio.Handle | None = None

    @classmethod
    def outgoing(
        cls,
        upper: StreamConsumer,
        info_hash: bytes,
        *,
        provide: int,
        timeout: float = HANDSHAKE_TIMEOUT,
    ) -> MseStream:
        """We connect: handshake as the initiator for ``info_hash``, offering ``provide``."""
        return cls(upper, info_hash=info_hash, provide=provide, timeout=timeout)

    @classmethod
    def incoming(
        cls,
        upper: StreamConsumer,
        find_skey: Callable[[bytes], bytes | None],
        *,
        allowed: int,
        allow_plaintext_handshake: bool,
        timeout: float = HANDSHAKE_TIMEOUT,
    ) -> MseStream:
        """They connected: plain BitTorrent (if allowed) or an MSE handshake as the responder."""
        return cls(
            upper,
            find_skey=find_skey,
            allowed=allowed,
            allow_plaintext_handshake=allow_plaintext_handshake,
            timeout=timeout,
        )

    # --- StreamConsumer of the stream below ----------------------------------------

    def stream_opened(self, stream: ByteStream) -> None:
        self.lower = stream
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._on_timeout)
        if self._find_skey is None:
            assert self.info_hash is not None
            self._start(MseInitiator(self.info_hash, provide=self._provide))
        else:
            self._phase = _DETECTING

    def get_buffer(self, sizehint: int) -> memoryview:
        # A read that found nothing (EAGAIN) never reports: forget that loan.
        self._view = None
        if self._phase == _OPEN and not self._pending:
            self._view = self.upper.get_buffer(sizehint)
            return self._view
        if self._scratch is None:
            self._scratch = bytearray(_SCRATCH)
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        view, self._view = self._view, None
        if view is not None:
            # The zero-copy path: ciphertext landed in the upper's buffer.
            if self._decryptor is not None:
                self._decryptor.process_into(view[:nbytes])
            del view  # not release(): the view may be one the upper keeps and hands out again
            if self._phase == _OPEN:
                self.upper.buffer_updated(nbytes)
            return
        if self._scratch is None or self._phase == _CLOSED:
            return
        data = bytes(memoryview(self._scratch)[:nbytes])
        if self._phase == _OPEN:  # behind undelivered bytes: queue after them
            self._pending += self._decryptor.process(data) if self._decryptor else data
            self._deliver()
        elif self._phase == _DETECTING:
            self._detect(data)
        elif self._phase == _HANDSHAKE:
            self._feed(data)

    def stream_writable(self) -> None:
        if self._phase == _OPEN:
            self.upper.stream_writable()

    def stream_closed(self, reason: str) -> None:
        if self._phase == _OPEN:
            self._phase = _CLOSED
            self._cancel_timers()
            self.upper.stream_closed(reason)
        elif self._phase != _CLOSED:
            if self._handshake is not None:
                try:
                    self._handshake.eof()
                except MseError as exc:
                    reason = f"{exc}: {reason}"
            else:
                reason = f"mse: connection closed before the handshake: {reason}"
            self._phase = _CLOSED
            self._cancel_timers()
            self.upper.stream_closed(reason)

    # --- the handshake ---------------------------------------------------------------

    def _detect(self, data: bytes) -> None:
        seen = self._detected
        seen += data
        prefix = BITTORRENT_PREFIX
        if len(seen) < len(prefix) and prefix.startswith(seen):
            return  # could still be either
        if seen.startswith(prefix):
            if not self._allow_plain:
                self._fail("mse: plaintext connection refused by policy")
                return
            self._pending += seen
            self._detected = bytearray()
            self._open()
            return
        assert self._find_skey is not None
        self._detected = bytearray()
        self._start(MseResponder(self._find_skey, allowed=self._allowed), bytes(seen))

    def _start(self, handshake: MseInitiator | MseResponder, first: bytes = b"") -> None:
        self._phase = _HANDSHAKE
        self._handshake = handshake
        self._send_handshake()
        if first and self._phase == _HANDSHAKE:
            self._feed(first)

    def _send_handshake(self) -> None:
        assert self._handshake is not None and self.lower is not None
        out = self._handshake.data_to_send()
        if out:
            self.lower.write(out)

    def _feed(self, data: bytes) -> None:
        assert self._handshake is not None
        try:
            result = self._handshake.receive(data)
        except MseError as exc:
            self._fail(str(exc))
            return
        self._send_handshake()
        if result is not None:
            self._complete(result)

    def _complete(self, result: MseResult) -> None:
        self._handshake = None
        self.info_hash = result.info_hash
        if result.selected == CRYPTO_RC4:
            self.encrypted = True
            self._encryptor, self._decryptor = result.encryptor, result.decryptor
        self._pending += result.initial_payload
        self._pending += result.remainder
        self._open()

    def _open(self) -> None:
        self._phase = _OPEN
        self._cancel_timers()
        self.upper.stream_opened(self)
        self._deliver()

    def _deliver_later(self) -> None:
        self._delivery = None
        self._deliver()

    def _deliver(self) -> None:
        """Hand queued plaintext (IA, remainder) to the upper through its own buffers."""
        pending = self._pending
        while pending and self._phase == _OPEN and not self._reading_paused:
            buf = self.upper.get_buffer(len(pending))
            n = min(len(buf), len(pending))
            buf[:n] = pending[:n]
            del buf
            del pending[:n]
            self.upper.buffer_updated(n)
        if not pending:
            self._scratch = None  # the zero-copy path takes over

    def _on_timeout(self) -> None:
        self._timer = None
        if self._phase in (_CONNECTING, _DETECTING, _HANDSHAKE):
            self._fail("mse: handshake timeout")

    def _fail(self, reason: str) -> None:
        if self._phase == _CLOSED:
            return
        self._phase = _CLOSED
        self._handshake = None
        self._cancel_timers()
        if self.lower is not None:
            self.lower.abort()
        self.upper.stream_closed(reason)

    def _cancel_timers(self) -> None:
        for handle in (self._timer, self._delivery):
            if handle is not None:
                handle.cancel()
        self._timer = self._delivery = None

    # --- ByteStream to the consumer above --------------------------------------------

    @property
    def remote_address(self) -> Address:
        return self.lower.remote_address if self.lower is not None else ("?", 0)

    @property
    def write_paused(self) -> bool:
        return self.lower is not None and self.lower.write_paused

    def write(self, data: WriteData) -> None:
        if self._phase != _OPEN or self.lower is None:
            return
        if self._encryptor is not None:
            self.lower.write(self._encryptor.process(data))
        else:
            self.lower.write(data)

    def writelines(self, parts: Iterable[WriteData]) -> None:
        if self._phase != _OPEN or self.lower is None:
            return
        if self._encryptor is not None:
            self.lower.write(self._encryptor.process_join(parts))
        else:
            self.lower.writelines(parts)

    def pause_reading(self) -> None:
        self._reading_paused = True
        if self.lower is not None:
            self.lower.pause_reading()

    def resume_reading(self) -> None:
        self._reading_paused = False
        if self._pending and self._delivery is None and self._phase == _OPEN:
            # Not from inside the caller's frame: the upper resumes from its own callbacks.
            self._delivery = asyncio.get_running_loop().call_soon(self._deliver_later)
        if self.lower is not None:
            self.lower.resume_reading()

    def close(self) -> None:
        if self.lower is not None and self._phase != _CLOSED:
            self.lower.close()

    def abort(self) -> None:
        was = self._phase
        self._phase = _CLOSED
        self._cancel_timers()
        if self.lower is not None and was != _CLOSED:
            self.lower.abort()
