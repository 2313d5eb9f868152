"""The outgoing half of the peer state machine: what we may say, and what saying it changes.

Split from :mod:`core.wire.connection` (which owns the state and the
incoming half) so each file stays readable.  Misuse raises
:class:`~core.errors.LocalProtocolError` and changes nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from bitarray import bitarray

from ..errors import LocalProtocolError
from .events import ExtendedMessage
from .extensions import ExtensionHandshake, encode_extension_handshake
from .lengths import PieceSizes, block_error
from .messages import (
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Extended,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    NotInterested,
    Piece,
    Port,
    Reject,
    Request,
    Suggest,
    Unchoke,
    encode,
    encode_piece_header,
)

__all__ = ["MAX_CANCELLED", "Block", "Outgoing", "OutgoingMixin"]

#: Cancelled requests remembered so a late PIECE is tolerated (FIFO eviction).
MAX_CANCELLED = 4096

Block = tuple[int, int, int]
Outgoing = Message | ExtensionHandshake | ExtendedMessage
_KEEPALIVE_BYTES = encode(KeepAlive())
_CHOKE_BYTES = encode(Choke())


class OutgoingMixin:
    """Sending methods of :class:`~core.wire.connection.PeerConnection`."""

    # State owned by PeerConnection.__init__.
    _now: float
    _last_sent: float
    _lengths: PieceSizes | None
    fast_enabled: bool
    extended_enabled: bool
    am_choking: bool
    am_interested: bool
    peer_choking: bool
    _refused_requests: int
    _our_have: bitarray | None
    _our_have_sent: bool
    _remote_have: bitarray | None
    _our_requests: dict[Block, None]
    _cancelled: OrderedDict[Block, None]
    _their_requests: dict[Block, float]
    _last_piece_sent: float | None
    allowed_fast_in: set[int]
    allowed_fast_out: set[int]
    _local_ext: dict[int, str]
    remote_extensions: dict[str, int]
    _senders: dict[type, Callable[[Outgoing], bytes]]

    def _require_open(self, what: str) -> None:
        raise NotImplementedError

    def _build_senders(self) -> dict[type, Callable[[Outgoing], bytes]]:
        return {
            KeepAlive: lambda m: _KEEPALIVE_BYTES,
            Choke: self._send_choke,
            Unchoke: self._send_unchoke,
            Interested: self._send_interest,
            NotInterested: self._send_interest,
            Have: self._send_have,
            Bitfield: self._send_bitfield,
            HaveAll: self._send_have_all_none,
            HaveNone: self._send_have_all_none,
            Request: self._send_request,
            Cancel: self._send_cancel,
            Piece: self._send_piece,
            Reject: self._send_reject,
            AllowedFast: self._send_fast_index,
            Suggest: self._send_fast_index,
            Port: lambda m: encode(m) if isinstance(m, Port) else b"",
            ExtensionHandshake: self._send_ext_handshake,
            ExtendedMessage: self._send_extended,
            Extended: self._send_extended,
        }

    def _remember_cancelled(self, key: Block) -> None:
        self._cancelled[key] = None
        if len(self._cancelled) > MAX_CANCELLED:
            self._cancelled.popitem(last=False)

    def send(self, msg: Outgoing, now: float | None = None) -> bytes:
        """Encode ``msg`` and update our side of the state.

        Returns the bytes to write; ``b""`` when the message became moot (a
        PIECE, REJECT or CANCEL for a request no longer outstanding).  Sending
        CHOKE with the fast extension also rejects the peer's queued requests
        outside its allowed-fast set (BEP 6), so those rejects follow the choke
        in the returned bytes.
        """
        self._require_open(type(msg).__name__)
        sender = self._senders.get(type(msg))
        if sender is None:
            raise LocalProtocolError(f"cannot send {msg!r}")
        out = sender(msg)
        if out:
            self._last_sent = self._now if now is None else now
        return out

    def send_piece(
        self, index: int, begin: int, data: bytes | memoryview, now: float | None = None
    ) -> tuple[bytes | memoryview, ...]:
        """Like ``send(Piece(...))`` but returns ``(header, data)`` for ``writelines``: no copy."""
        self._require_open("a piece")
        key = (index, begin, len(data))
        if key not in self._their_requests:
            return ()
        del self._their_requests[key]
        self._refused_requests = 0  # we are serving it: what we refused was no flood
        self._last_sent = self._last_piece_sent = self._now if now is None else now
        return encode_piece_header(index, begin, len(data)), data

    def _need_fast(self, msg: Outgoing) -> None:
        if not self.fast_enabled:
            raise LocalProtocolError(f"{type(msg).__name__} needs the fast extension")

    def _need_lengths(self, what: str) -> PieceSizes:
        if self._lengths is None:
            raise LocalProtocolError(f"{what} before the piece count is known")
        return self._lengths

    def _check_local_index(self, index: int, what: str) -> None:
        n = self._need_lengths(what).num_pieces
        if not 0 <= index < n:
            raise LocalProtocolError(f"{what} for piece {index} of {n}")

    def _send_choke(self, msg: Outgoing) -> bytes:
        self.am_choking = True
        self._refused_requests = 0
        out = _CHOKE_BYTES
        if not self.fast_enabled:
            self._their_requests.clear()  # BEP 3: a choke discards their queue
            return out
        # BEP 6: choke first, then reject everything outside the allowed-fast set.
        rejects = [key for key in self._their_requests if key[0] not in self.allowed_fast_out]
        for key in rejects:
            del self._their_requests[key]
        return out + b"".join(encode(Reject(*key)) for key in rejects)

    def _send_unchoke(self, msg: Outgoing) -> bytes:
        self.am_choking = False
        self._refused_requests = 0
        return encode(Unchoke())

    def _send_interest(self, msg: Outgoing) -> bytes:
        self.am_interested = isinstance(msg, Interested)
        assert isinstance(msg, Interested | NotInterested)
        return encode(msg)

    def _send_have(self, msg: Outgoing) -> bytes:
        assert isinstance(msg, Have)
        self._check_local_index(msg.index, "have")
        assert self._our_have is not None
        self._our_have[msg.index] = 1
        self._our_have_sent = True
        return encode(msg)

    def _send_bitfield(self, msg: Outgoing) -> bytes:
        assert isinstance(msg, Bitfield)
        n = self._need_lengths("bitfield").num_pieces
        if self._our_have_sent:
            raise LocalProtocolError("bitfield must come before any have message")
        if len(msg.bits) != n:
            raise LocalProtocolError(f"bitfield of {len(msg.bits)} bits for {n} pieces")
        self._our_have = bitarray(msg.bits, endian="big")
        self._our_have_sent = True
        return encode(Bitfield(self._our_have))

    def _send_have_all_none(self, msg: Outgoing) -> bytes:
        self._need_fast(msg)
        if self._our_have_sent:
            raise LocalProtocolError("have all/none must come before any have message")
        if isinstance(msg, HaveAll):
            self._need_lengths("have all")
            assert self._our_have is not None
            self._our_have.setall(1)
        self._our_have_sent = True
        assert isinstance(msg, HaveAll | HaveNone)
        return encode(msg)

    def _send_request(self, msg: Outgoing) -> bytes:
        assert isinstance(msg, Request)
        key = (msg.index, msg.begin, msg.length)
        problem = block_error(self._need_lengths("request"), *key)
        if problem is not None:
            raise LocalProtocolError(f"bad request: {problem}")
        if self.peer_choking and msg.index not in self.allowed_fast_in:
            raise LocalProtocolError("request while choked and not allowed fast")
        if self._remote_have is not None and not self._remote_have[msg.index]:
            raise LocalProtocolError(f"request for piece {msg.index} the peer does not have")
        if key in self._our_requests:
            raise LocalProtocolError(f"duplicate request {key}")
        if key in self._cancelled:
            if self.fast_enabled:
                raise LocalProtocolError(f"re-request of {key} before its cancel was answered")
            del self._cancelled[key]
        self._our_requests[key] = None
        return encode(msg)

    def _send_cancel(self, msg: Outgoing) -> bytes:
        assert isinstance(msg, Cancel)
        key = (msg.index, msg.begin, msg.length)
        if key not in self._our_requests:
            return b""
        del self._our_requests[key]
        self._remember_cancelled(key)
        return encode(msg)

    def _send_piece(self, msg: Outgoing) -> bytes:
        assert isinstance(msg, Piece)
        key = (msg.index, msg.begin, len(msg.data))
        if key not in self._their_requests:
            return b""
        del self._their_requests[key]
        return encode(msg)

    def _send_reject(self, msg: Outgoing) -> bytes:
        self._need_fast(msg)
        assert isinstance(msg, Reject)
        key = (msg.index, msg.begin, msg.length)
        if key not in self._their_requests:
            return b""
        del self._their_requests[key]
        return encode(msg)

    def _send_fast_index(self, msg: Outgoing) -> bytes:
        self._need_fast(msg)
        assert isinstance(msg, AllowedFast | Suggest)
        self._check_local_index(msg.index, type(msg).__name__)
        if isinstance(msg, AllowedFast):
            self.allowed_fast_out.add(msg.index)
        return encode(msg)

    def _send_ext_handshake(self, msg: Outgoing) -> bytes:
        assert isinstance(msg, ExtensionHandshake)
        if not self.extended_enabled:
            raise LocalProtocolError("extension protocol not negotiated")
        for name, ext_id in msg.m.items():
            for old_id in [i for i, known in self._local_ext.items() if known == name]:
                del self._local_ext[old_id]
            if ext_id:
                self._local_ext[ext_id] = name
        return encode(Extended(0, encode_extension_handshake(msg)))

    def _send_extended(self, msg: Outgoing) -> bytes:
        if not self.extended_enabled:
            raise LocalProtocolError("extension protocol not negotiated")
        if isinstance(msg, Extended):
            return encode(msg)
        assert isinstance(msg, ExtendedMessage)
        ext_id = self.remote_extensions.get(msg.name)
        if ext_id is None:
            raise LocalProtocolError(f"peer does not support {msg.name}")
        return encode(Extended(ext_id, msg.payload))
