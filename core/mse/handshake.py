"""The MSE/PE handshake as two sans-IO state machines: initiator and responder.

The exchange (A initiates, B responds; ``HASH`` is SHA-1, ``S`` the 96-byte
DH secret, ``SKEY`` the torrent's 20-byte info-hash, ``VC`` 8 zero bytes)::

    1 A->B  Ya, PadA
    2 B->A  Yb, PadB
    3 A->B  HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
            ENCRYPT_A(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT_A(IA)
    4 B->A  ENCRYPT_B(VC, crypto_select, len(PadD), PadD), ENCRYPT2_B(payload...)
    5 A->B  ENCRYPT2_A(payload...)

``ENCRYPT_A`` is RC4 keyed with ``HASH('keyA', S, SKEY)``, ``ENCRYPT_B`` with
``HASH('keyB', S, SKEY)``, both after discarding 1,024 keystream bytes.  The
initiator encrypts with keyA and decrypts with keyB.  ``ENCRYPT2`` is the
same keystream continued when RC4 was selected, nothing at all when
plaintext was: the handshake itself (and the initial payload ``IA``, the
initiator's BitTorrent handshake) is always RC4.  crypto_provide and
crypto_select are 32-bit big-endian bit sets, the lengths 16-bit.

The pads (0-512 bytes) make the lengths of steps 1 and 2 random, so each
side has to find where the other's next step starts: the *sync markers*.

- The responder looks for ``HASH('req1', S)`` after Ya.  It may start at
  most 512 bytes (PadA) after the 96-byte key, so it must end within the
  first ``96 + 512 + 20 = 628`` bytes of the stream
  (:data:`RESPONDER_SYNC_WINDOW`).
- The initiator looks for ``ENCRYPT_B(VC)``, 8 bytes it can compute once it
  knows S, after Yb: at most 512 bytes of PadB then 8 bytes, so it must end
  within the first ``96 + 512 + 8 = 616`` bytes (:data:`INITIATOR_SYNC_WINDOW`).

Past those bounds the peer is not speaking MSE (or is hostile), and the
handshake fails with ``MseError("mse: no sync marker within N bytes")``
instead of buffering without end.  These are the spec's "fail fast"
conditions; libtorrent and anacrolix use the same bounds.

Policy stays with the caller: the initiator says what it ``provide``s, the
responder what it ``allowed``s.  The responder selects RC4 when the peer
provides it and we allow it, else plaintext when both do.  That is
libtorrent's ``prefer_rc4`` behaviour: a peer that offers RC4 gets it, so a
shaped link stays obfuscated.  anacrolix prefers plaintext to save CPU,
which RC4 at ~850 MB/s (``python -m bench.mse``) does not justify here.
Every way the remote can get it wrong raises :class:`MseError`, a
:class:`RemoteProtocolError`.

Incoming connections must be told apart from plain BitTorrent ones before
any of this: :func:`is_plain_bittorrent` tests for the 20-byte
``\\x13BitTorrent protocol`` prefix, which a random DH key matches with
probability 2^-160.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

from ..errors import LocalProtocolError, RemoteProtocolError
from .dh import KEY_BYTES, new_private_key, public_key, shared_secret
from .rc4 import Rc4

__all__ = [
    "BITTORRENT_PREFIX",
    "CRYPTO_PLAINTEXT",
    "CRYPTO_RC4",
    "INITIATOR_SYNC_WINDOW",
    "MAX_PAD",
    "RESPONDER_SYNC_WINDOW",
    "VC",
    "MseError",
    "MseInitiator",
    "MseResponder",
    "MseResult",
    "SkeyIndex",
    "is_plain_bittorrent",
    "req2_hash",
]

CRYPTO_PLAINTEXT = 0x01
CRYPTO_RC4 = 0x02
_KNOWN_CRYPTO = CRYPTO_PLAINTEXT | CRYPTO_RC4

#: The verification constant: 8 zero bytes, encrypted, proves both sides share the keys.
VC = bytes(8)
#: Longest PadA/PadB/PadC/PadD the spec allows.
MAX_PAD = 512
_HASH_LEN = 20
#: HASH('req1', S) must end within this many bytes from the start of the stream.
RESPONDER_SYNC_WINDOW = KEY_BYTES + MAX_PAD + _HASH_LEN  # 628
#: ENCRYPT_B(VC) must end within this many bytes from the start of the stream.
INITIATOR_SYNC_WINDOW = KEY_BYTES + MAX_PAD + len(VC)  # 616

#: The first 20 bytes of a plain BitTorrent handshake (BEP 3).
BITTORRENT_PREFIX = b"\x13BitTorrent protocol"


class MseError(RemoteProtocolError):
    """The remote broke the MSE handshake; the message starts with ``"mse: "``."""


@dataclass(frozen=True, slots=True)
class MseResult:
    """A completed handshake: what was agreed and the ciphers to use from now on."""

    selected: int  # CRYPTO_PLAINTEXT or CRYPTO_RC4
    info_hash: bytes  # the SKEY: found (responder) or given (initiator)
    encryptor: Rc4 | None  # None for plaintext
    decryptor: Rc4 | None
    initial_payload: bytes  # IA received (responder), decrypted; b"" for the initiator
    remainder: bytes  # bytes received after the handshake, decrypted if RC4


def is_plain_bittorrent(first_bytes: bytes | bytearray | memoryview) -> bool:
    """True when ``first_bytes`` starts with the plain BitTorrent handshake's 20-byte prefix."""
    return bytes(first_bytes[: len(BITTORRENT_PREFIX)]) == BITTORRENT_PREFIX


def _hash(*parts: bytes | bytearray) -> bytes:
    h = hashlib.sha1()
    for part in parts:
        h.update(part)
    return h.digest()


def _xor(a: bytes | bytearray, b: bytes | bytearray) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def req2_hash(info_hash: bytes) -> bytes:
    """``HASH('req2', SKEY)``: what a responder recovers from step 3 to name the torrent."""
    return _hash(b"req2", info_hash)


class SkeyIndex:
    """The responder's SKEY lookup: ``HASH('req2', info_hash) -> info_hash`` for our torrents.

    An instance is the ``find_skey`` callable :class:`MseResponder` wants.
    Hashing each info-hash once when it is added makes a lookup one dict
    probe, whatever the number of torrents.  Add every 20-byte hash a peer
    may use in its handshake (a hybrid torrent's v1 hash and its truncated
    v2 hash).
    """

    def __init__(self, info_hashes: Iterable[bytes] = ()) -> None:
        self._by_req2: dict[bytes, bytes] = {}
        for info_hash in info_hashes:
            self.add(info_hash)

    def add(self, info_hash: bytes) -> None:
        self._by_req2[req2_hash(info_hash)] = info_hash

    def discard(self, info_hash: bytes) -> None:
        self._by_req2.pop(req2_hash(info_hash), None)

    def __len__(self) -> int:
        return len(self._by_req2)

    def __call__(self, req2: bytes) -> bytes | None:
        return self._by_req2.get(req2)


def _pad_length(pad_len: int | None) -> int:
    if pad_len is None:
        return secrets.randbelow(MAX_PAD + 1)
    if not 0 <= pad_len <= MAX_PAD:
        raise LocalProtocolError(f"mse: pad length {pad_len} outside 0..{MAX_PAD}")
    return pad_len


def _check_crypto_bits(bits: int, what: str) -> None:
    if bits & ~_KNOWN_CRYPTO:
        raise LocalProtocolError(f"mse: unknown crypto bits in {what} 0x{bits:x}")


class _Endpoint:
    """What both sides share: the receive buffer, the output queue, error latching."""

    def __init__(self, private_key: int | None, pad_len: int | None) -> None:
        self._x = new_private_key() if private_key is None else private_key
        self._pad_len = _pad_length(pad_len)
        self._in = bytearray()  # received, not yet consumed
        self._out = bytearray()
        self._received = 0
        self._error: MseError | None = None
        self._done = False

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer now (empties the queue)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive(self, data: bytes | bytearray | memoryview) -> MseResult | None:
        """Feed received bytes; the result once the handshake is complete, else None.

        Raises :class:`MseError` when the peer breaks the handshake (and again
        on every later call).  After a result, the stream belongs to the
        result's ciphers: feeding more is a bug (``LocalProtocolError``).
        """
        if self._error is not None:
            raise self._error
        if self._done:
            raise LocalProtocolError("mse: receive() after the handshake completed")
        self._in += data
        self._received += len(data)
        try:
            result = self._advance()
        except MseError as exc:
            self._error = exc
            self._in.clear()
            raise
        if result is not None:
            self._done = True
            self._in = bytearray()
        return result

    def eof(self) -> NoReturn:
        """The stream ended mid-handshake: raise the :class:`MseError` that says where."""
        raise MseError(self._eof_reason())

    def _advance(self) -> MseResult | None:
        raise NotImplementedError

    def _eof_reason(self) -> str:
        raise NotImplementedError

    def _take(self, n: int) -> bytes:
        out = bytes(self._in[:n])
        del self._in[:n]
        return out

    def _secret(self, key: bytes) -> bytes:
        try:
            return shared_secret(self._x, key)
        except ValueError as exc:
            raise MseError(f"mse: invalid DH public key ({exc})") from None

    def _truncated_key(self) -> str:
        return (
            f"mse: truncated DH key (connection closed after {len(self._in)} of {KEY_BYTES} bytes)"
        )

    def _closed_after(self, where: str) -> str:
        return f"mse: connection closed {where} ({self._received} bytes received)"

    def _result(
        self,
        selected: int,
        info_hash: bytes,
        encryptor: Rc4,
        decryptor: Rc4,
        initial_payload: bytes = b"",
    ) -> MseResult:
        rest = bytes(self._in)
        if selected == CRYPTO_RC4:
            return MseResult(
                selected, info_hash, encryptor, decryptor, initial_payload, decryptor.process(rest)
            )
        return MseResult(selected, info_hash, None, None, initial_payload, rest)


class MseInitiator(_Endpoint):
    """The side that connects: it knows the torrent and offers crypto methods (``provide``).

    ``data_to_send()`` holds Ya and PadA from the start.  ``initial_payload``
    (IA) rides in step 3, encrypted, saving a round trip for the BitTorrent
    handshake.  ``pad_len`` fixes PadA's length (random in 0..512 by
    default), ``inner_pad_len`` PadC's (0 by default: it is encrypted, so
    its length hides nothing a random PadA does not already).
    """

    def __init__(
        self,
        info_hash: bytes,
        *,
        provide: int,
        initial_payload: bytes = b"",
        private_key: int | None = None,
        pad_len: int | None = None,
        inner_pad_len: int = 0,
    ) -> None:
        if len(info_hash) != _HASH_LEN:
            raise LocalProtocolError(f"mse: info-hash of {len(info_hash)} bytes, expected 20")
        _check_crypto_bits(provide, "provide")
        if not provide:
            raise LocalProtocolError("mse: provide offers no crypto method")
        if len(initial_payload) > 0xFFFF:
            raise LocalProtocolError("mse: initial payload over 65535 bytes")
        super().__init__(private_key, pad_len)
        self.info_hash = bytes(info_hash)
        self.provide = provide
        self._ia = bytes(initial_payload)
        self._pad_c = _pad_length(inner_pad_len)
        self._state = "key"
        self._encryptor: Rc4 | None = None
        self._decryptor: Rc4 | None = None
        self._marker = b""
        self._selected = 0
        self._pad_d = 0
        self._out += public_key(self._x) + secrets.token_bytes(self._pad_len)

    def _advance(self) -> MseResult | None:
        buf = self._in
        if self._state == "key":
            if len(buf) < KEY_BYTES:
                return None
            s = self._secret(self._take(KEY_BYTES))
            skey = self.info_hash
            self._encryptor = Rc4(_hash(b"keyA", s, skey))
            self._decryptor = Rc4(_hash(b"keyB", s, skey))
            # ENCRYPT_B(VC) is the first 8 bytes of keyB's keystream: our marker.
            self._marker = self._decryptor.process(VC)
            header = (
                VC
                + self.provide.to_bytes(4, "big")
                + self._pad_c.to_bytes(2, "big")
                + bytes(self._pad_c)
                + len(self._ia).to_bytes(2, "big")
                + self._ia
            )
            self._out += _hash(b"req1", s)
            self._out += _xor(req2_hash(skey), _hash(b"req3", s))
            self._out += self._encryptor.process(header)
            self._state = "sync"
        if self._state == "sync":
            limit = INITIATOR_SYNC_WINDOW - KEY_BYTES  # bytes after Yb: PadB then the marker
            at = buf.find(self._marker, 0, limit)
            if at < 0:
                if len(buf) >= limit:
                    raise MseError(f"mse: no sync marker within {INITIATOR_SYNC_WINDOW} bytes")
                return None
            del buf[: at + len(self._marker)]
            self._state = "select"
        assert self._encryptor is not None and self._decryptor is not None
        if self._state == "select":
            if len(buf) < 6:
                return None
            head = self._decryptor.process(self._take(6))
            selected = int.from_bytes(head[:4], "big")
            pad_d = int.from_bytes(head[4:], "big")
            if selected not in (CRYPTO_PLAINTEXT, CRYPTO_RC4) or not selected & self.provide:
                raise MseError(
                    f"mse: peer selected crypto 0x{selected:x}, we provided 0x{self.provide:x}"
                )
            if pad_d > MAX_PAD:
                raise MseError(f"mse: PadD of {pad_d} bytes (at most {MAX_PAD})")
            self._selected, self._pad_d = selected, pad_d
            self._state = "pad"
        if len(buf) < self._pad_d:
            return None
        self._decryptor.process(self._take(self._pad_d))
        return self._result(self._selected, self.info_hash, self._encryptor, self._decryptor)

    def _eof_reason(self) -> str:
        if self._state == "key":
            return self._truncated_key()
        if self._state == "sync":
            return self._closed_after("before the sync marker")
        return self._closed_after("during the handshake")


class MseResponder(_Endpoint):
    """The side that accepts: it finds the torrent from the SKEY hash and picks the crypto.

    ``find_skey`` maps ``HASH('req2', SKEY)`` (recovered from step 3) to the
    info-hash, or None for a torrent we do not have: a :class:`SkeyIndex`.
    ``allowed`` is the bit set of methods we accept; the selection prefers
    RC4 (see the module docstring).  Yb and PadB are sent once Ya has
    arrived, so a scanner that sends nothing learns nothing.
    """

    def __init__(
        self,
        find_skey: Callable[[bytes], bytes | None],
        *,
        allowed: int,
        private_key: int | None = None,
        pad_len: int | None = None,
        inner_pad_len: int = 0,
    ) -> None:
        _check_crypto_bits(allowed, "allowed")
        super().__init__(private_key, pad_len)
        self.allowed = allowed
        self._find_skey = find_skey
        self._pad_d = _pad_length(inner_pad_len)
        self._state = "key"
        self._s = b""
        self._marker = b""
        self._info_hash = b""
        self._encryptor: Rc4 | None = None
        self._decryptor: Rc4 | None = None
        self._selected = 0
        self._pad_c = 0
        self._ia_len = 0

    def _advance(self) -> MseResult | None:
        buf = self._in
        if self._state == "key":
            if len(buf) < KEY_BYTES:
                return None
            self._s = self._secret(self._take(KEY_BYTES))
            self._out += public_key(self._x) + secrets.token_bytes(self._pad_len)
            self._marker = _hash(b"req1", self._s)
            self._state = "sync"
        if self._state == "sync":
            limit = RESPONDER_SYNC_WINDOW - KEY_BYTES  # bytes after Ya: PadA then the marker
            at = buf.find(self._marker, 0, limit)
            if at < 0:
                if len(buf) >= limit:
                    raise MseError(f"mse: no sync marker within {RESPONDER_SYNC_WINDOW} bytes")
                return None
            del buf[: at + len(self._marker)]
            self._state = "skey"
        if self._state == "skey":
            if len(buf) < _HASH_LEN:
                return None
            target = _xor(self._take(_HASH_LEN), _hash(b"req3", self._s))
            info_hash = self._find_skey(target)
            if info_hash is None:
                raise MseError("mse: unknown SKEY (no torrent of ours matches the req2 hash)")
            self._info_hash = info_hash
            self._decryptor = Rc4(_hash(b"keyA", self._s, info_hash))
            self._encryptor = Rc4(_hash(b"keyB", self._s, info_hash))
            self._state = "provide"
        assert self._encryptor is not None and self._decryptor is not None
        if self._state == "provide":
            if len(buf) < 14:
                return None
            head = self._decryptor.process(self._take(14))
            if head[:8] != VC:
                raise MseError("mse: bad verification constant (the peer's keys differ)")
            provide = int.from_bytes(head[8:12], "big")
            pad_c = int.from_bytes(head[12:], "big")
            common = provide & self.allowed
            if common & CRYPTO_RC4:
                self._selected = CRYPTO_RC4
            elif common & CRYPTO_PLAINTEXT:
                self._selected = CRYPTO_PLAINTEXT
            else:
                raise MseError(
                    f"mse: peer provides crypto 0x{provide:x}, we allow 0x{self.allowed:x}"
                )
            if pad_c > MAX_PAD:
                raise MseError(f"mse: PadC of {pad_c} bytes (at most {MAX_PAD})")
            self._pad_c = pad_c
            self._state = "pad"
        if self._state == "pad":
            if len(buf) < self._pad_c + 2:
                return None
            self._decryptor.process(self._take(self._pad_c))
            self._ia_len = int.from_bytes(self._decryptor.process(self._take(2)), "big")
            self._state = "ia"
        if len(buf) < self._ia_len:
            return None
        ia = self._decryptor.process(self._take(self._ia_len))
        self._out += self._encryptor.process(
            VC
            + self._selected.to_bytes(4, "big")
            + self._pad_d.to_bytes(2, "big")
            + bytes(self._pad_d)
        )
        return self._result(self._selected, self._info_hash, self._encryptor, self._decryptor, ia)

    def _eof_reason(self) -> str:
        if self._state == "key":
            return self._truncated_key()
        if self._state == "sync":
            return self._closed_after("before the sync marker")
        return self._closed_after("during the handshake")
