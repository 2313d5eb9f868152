"""Outgoing peer connections: which transport, which handshake, and the fallbacks between them.

The engine asks for "a connection to this address for this info-hash"; the
:class:`Dialer` decides how, from a :class:`TransportPolicy` read at each
dial (so a settings change applies to the next connection), and hands the
open stream to a consumer the engine makes only once it knows what the
connection is (its :class:`Link`: TCP or uTP, encrypted or not, which the
peer table shows).

The order of attempts follows libtorrent and anacrolix:

* **uTP first** when it is enabled and there is a uTP socket for the
  address's family (libtorrent's default preference: most of a real swarm
  speaks uTP and it yields to other traffic), then **TCP** when uTP could
  not connect (no answer within ``utp_timeout``, refused, reset) and TCP is
  enabled.  A uTP connection that opened but whose handshake failed is not
  retried over TCP: the peer is there and refused us; TCP would be refused
  the same way, only slower.
* **Encryption** (MSE/PE): ``"require"`` runs the MSE handshake offering
  ``allowed_crypto`` (RC4 and/or MSE's plaintext mode) and nothing else.
  ``"prefer"`` runs MSE first and, when that handshake fails (the peer closes,
  answers garbage or stays silent), connects again over the same transport
  with the plain BitTorrent handshake, once: anacrolix's
  ``HeaderObfuscationPolicy{Preferred: true, RequirePreferred: false}``.
  ``"disable"`` speaks plain BitTorrent only and never retries with MSE: a
  user who disabled encryption does not want it tried behind their back
  (a peer that only accepts MSE is simply unreachable, as in qBittorrent).

The dialer remembers, per address, a fallback that was needed (uTP did not
answer but TCP did; MSE failed but plain worked) and goes straight to what
worked on the next dial of that address, for an hour and for the last
4,096 addresses: libtorrent's per-peer ``supports_utp`` / ``pe_support``.
Without it every redial of a TCP-only peer would first wait out the uTP
connect timeout.  A dial where the remembered choice fails too forgets it.

A failed dial raises :class:`DialError` whose ``reason`` lists every attempt
in order (``"utp: connect timeout; tcp: Connection refused"``), so the drop
reason the engine records says what was tried.

Until the hand-over, the dialer's own consumer holds the stream: an MSE
failure must not reach the peer driver (it would count as a closed peer),
and bytes the remote sends right after its side of the MSE handshake must
wait for the driver.  At the hand-over the stream is re-pointed at the
driver (the ``consumer`` of TCP and uTP streams, the MSE layer's ``upper``),
so the receive path has no extra hop.

Engine-free: the caller passes the uTP socket lookup, the policy values and
a factory for the consumer; nothing here knows torrents or the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import TorrentError
from ..mse.handshake import CRYPTO_PLAINTEXT, CRYPTO_RC4
from .mse_stream import MseStream
from .stream import Address, ByteStream, StreamConsumer
from .tcp import TcpStream
from .utp_socket import UtpSocket, UtpStream

__all__ = [
    "ALLOWED_CRYPTO",
    "ENCRYPTION_POLICIES",
    "HINT_NO_UTP",
    "HINT_PLAIN",
    "MEMORY_SECONDS",
    "MEMORY_SIZE",
    "PLAIN_TCP",
    "TRANSPORTS",
    "ConsumerFactory",
    "DialError",
    "Dialer",
    "Link",
    "TransportPolicy",
    "UtpLookup",
    "crypto_bits",
]

#: Transport names, as :class:`Link` and the peer table spell them.
TRANSPORTS = ("tcp", "utp")
#: The encryption policies (``ClientConfig.encryption``).
ENCRYPTION_POLICIES = ("prefer", "require", "disable")
#: What an MSE handshake may select (``ClientConfig.allowed_crypto``).
ALLOWED_CRYPTO = ("both", "rc4", "plaintext")
#: Extra time the dialer waits past the MSE layer's own handshake timeout
#: before it gives up on the layer itself (it should have reported by then).
_HANDSHAKE_GRACE = 1.0
#: Room offered per read while bytes are held for the consumer to come.
_HOLD_CHUNK = 64 << 10
#: How long, and for how many addresses, a needed fallback is remembered.
MEMORY_SECONDS = 3600.0
MEMORY_SIZE = 4096
#: The fallbacks remembered (see :meth:`Dialer.hints`).
HINT_NO_UTP = "no-utp"  # uTP did not connect, TCP did: dial TCP only
HINT_PLAIN = "plain"  # MSE failed, plain BitTorrent worked: dial plain only


@dataclass(frozen=True, slots=True)
class Link:
    """How one peer connection is carried: what the peer table and PEX flags say.

    ``encrypted`` means RC4 after an MSE handshake; an MSE handshake that
    selected its plaintext mode only hid the BitTorrent handshake, so it
    counts as not encrypted (qBittorrent's ``E`` is the same).
    """

    transport: str = "tcp"
    encrypted: bool = False


#: A plain TCP connection (what every connection was before uTP and MSE).
PLAIN_TCP = Link()


@dataclass(frozen=True, slots=True)
class TransportPolicy:
    """The settings that shape a connection (``ClientConfig``'s, read at each dial or accept).

    Times are seconds: ``tcp_timeout`` for the TCP connect, ``utp_timeout``
    for the uTP one (then TCP is tried), ``handshake_timeout`` for the MSE
    handshake.
    """

    tcp: bool = True
    utp: bool = True
    encryption: str = "prefer"
    allowed_crypto: str = "both"
    tcp_timeout: float = 20.0
    utp_timeout: float = 3.0
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.encryption not in ENCRYPTION_POLICIES:
            raise ValueError(f"encryption must be one of {ENCRYPTION_POLICIES}")
        if self.allowed_crypto not in ALLOWED_CRYPTO:
            raise ValueError(f"allowed_crypto must be one of {ALLOWED_CRYPTO}")

    @property
    def crypto(self) -> int:
        """The MSE crypto bits we offer (outgoing) or accept (incoming)."""
        return crypto_bits(self.allowed_crypto)

    def handshakes(self) -> tuple[bool, ...]:
        """Per transport, the handshakes to try in order: True is MSE, False plain."""
        if self.encryption == "require":
            return (True,)
        if self.encryption == "prefer":
            return (True, False)
        return (False,)


def crypto_bits(allowed: str) -> int:
    """``"rc4"`` / ``"plaintext"`` / ``"both"`` as MSE ``crypto_provide`` bits."""
    if allowed == "rc4":
        return CRYPTO_RC4
    if allowed == "plaintext":
        return CRYPTO_PLAINTEXT
    if allowed == "both":
        return CRYPTO_RC4 | CRYPTO_PLAINTEXT
    raise ValueError(f"allowed_crypto must be one of {ALLOWED_CRYPTO}, not {allowed!r}")


class DialError(TorrentError):
    """No attempt connected; ``reason`` lists each attempt's failure in order."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = tuple(reasons)
        self.reason = "; ".join(reasons) if reasons else "no transport enabled"
        super().__init__(self.reason)


class _ConnectFailed(Exception):
    """The transport did not connect: try the next transport."""


class _HandshakeFailed(Exception):
    """Connected, but the (MSE) handshake failed: try the next handshake on this transport."""


class _Ended(Exception):
    """The stream ended before it opened (the reason is the stream's)."""


ConsumerFactory = Callable[[Link], StreamConsumer | None]
UtpLookup = Callable[[str], UtpSocket | None]
#: Where one attempt goes: the address, and the uTP socket to use (None: TCP).
_Target = tuple[Address, UtpSocket | None]


class _Holder:
    """The stream's consumer from the dial until the hand-over (see the module docstring).

    ``opened`` resolves with the top stream (TCP, uTP or the MSE layer) once
    it is usable, or fails with :class:`_Ended` when it ends first.  Bytes
    and an end that arrive after that but before :meth:`hand_over` are kept
    and replayed to the new consumer in order.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.opened: asyncio.Future[ByteStream] = loop.create_future()
        self._target: StreamConsumer | None = None
        self._held = bytearray()
        self._room = bytearray()
        self._ended: str | None = None

    # --- StreamConsumer --------------------------------------------------------

    def stream_opened(self, stream: ByteStream) -> None:
        if not self.opened.done():
            self.opened.set_result(stream)

    def get_buffer(self, sizehint: int) -> memoryview:
        target = self._target
        if target is not None:
            return target.get_buffer(sizehint)
        need = max(sizehint, _HOLD_CHUNK)
        if len(self._room) < need:
            self._room = bytearray(need)
        return memoryview(self._room)

    def buffer_updated(self, nbytes: int) -> None:
        target = self._target
        if target is not None:
            target.buffer_updated(nbytes)
        else:
            self._held += memoryview(self._room)[:nbytes]

    def stream_writable(self) -> None:
        target = self._target
        if target is not None:
            target.stream_writable()

    def stream_closed(self, reason: str) -> None:
        target = self._target
        if target is not None:
            target.stream_closed(reason)
        elif not self.opened.done():
            self.opened.set_exception(_Ended(reason))
        elif self._ended is None:
            self._ended = reason

    # --- the hand-over ---------------------------------------------------------

    def hand_over(self, stream: ByteStream, target: StreamConsumer) -> None:
        """``target`` consumes ``stream`` from now on: opened, held bytes, any end, then live."""
        self._target = target
        target.stream_opened(stream)
        held, self._held, self._room = self._held, bytearray(), bytearray()
        view = memoryview(held)
        while view and self._ended is None:
            room = target.get_buffer(len(view))
            n = min(len(room), len(view))
            room[:n] = view[:n]
            target.buffer_updated(n)
            view = view[n:]
        if self._ended is not None:
            target.stream_closed(self._ended)
            return
        # From now on the stream delivers straight to the target (no hop through here).
        if isinstance(stream, TcpStream | UtpStream):
            stream.consumer = target
        elif isinstance(stream, MseStream):
            stream.upper = target

    def forget(self) -> None:
        """Nobody will await ``opened`` again: a late failure must not be reported as unhandled."""
        if self.opened.done():
            if not self.opened.cancelled():
                self.opened.exception()
        else:
            self.opened.cancel()


class Dialer:
    """Opens outgoing peer connections by a :class:`TransportPolicy` (see the module docstring).

    ``utp_for(ip)`` gives the uTP socket for an IP address's family, or None
    (no uTP there).  Its only state is the fallbacks it remembers, so one
    serves a whole client.
    """

    def __init__(self, utp_for: UtpLookup | None = None) -> None:
        self._utp_for = utp_for
        self._memory: OrderedDict[Address, tuple[float, frozenset[str]]] = OrderedDict()

    def hints(self, address: Address) -> frozenset[str]:
        """The fallbacks remembered for ``address`` (:data:`HINT_NO_UTP`, :data:`HINT_PLAIN`)."""
        entry = self._memory.get(address)
        if entry is None:
            return frozenset()
        if entry[0] < asyncio.get_running_loop().time():
            del self._memory[address]
            return frozenset()
        return entry[1]

    def _remember(self, address: Address, hints: frozenset[str]) -> None:
        memory = self._memory
        memory.pop(address, None)
        if hints:
            memory[address] = (asyncio.get_running_loop().time() + MEMORY_SECONDS, hints)
            while len(memory) > MEMORY_SIZE:
                memory.popitem(last=False)

    def _forget(self, address: Address) -> None:
        """The remembered choice failed too (or the peer is gone): start afresh next time."""
        self._memory.pop(address, None)

    async def dial(
        self,
        address: Address,
        info_hash: bytes,
        policy: TransportPolicy,
        make_consumer: ConsumerFactory,
    ) -> Link:
        """Connect to ``address`` for ``info_hash`` and hand the stream to ``make_consumer(link)``.

        Returns the :class:`Link` the connection runs on.  ``make_consumer``
        may return None to refuse the connection after all (the torrent went
        away meanwhile): it is then aborted.  Raises :class:`DialError`.
        """
        failures: list[str] = []
        hints = self.hints(address)
        handshakes = policy.handshakes()
        if HINT_PLAIN in hints and handshakes == (True, False):
            handshakes = (False,)
        plan = await self._plan(address, policy, failures, skip_utp=HINT_NO_UTP in hints)
        learned: set[str] = set()
        for transport, target in plan:
            for mse in handshakes:
                try:
                    attempt = await self._attempt(transport, target, info_hash, mse, policy)
                except _ConnectFailed as exc:
                    failures.append(str(exc))
                    if transport == "utp":
                        learned.add(HINT_NO_UTP)
                    break  # the next transport
                except _HandshakeFailed as exc:
                    failures.append(str(exc))
                    learned.add(HINT_PLAIN)
                    continue  # the next handshake on this transport
                # Remember the fallbacks this dial needed; forget those it
                # disproved; a hint that held keeps its expiry (uTP and MSE
                # get another chance within the hour).
                disproved = {HINT_NO_UTP} if transport == "utp" else set()
                if mse:
                    disproved.add(HINT_PLAIN)
                now_known = (hints - disproved) | (learned - disproved)
                if now_known != hints:
                    self._remember(address, frozenset(now_known))
                stream = attempt.stream
                link = Link(transport, isinstance(stream, MseStream) and stream.encrypted)
                consumer = make_consumer(link)
                if consumer is None:
                    attempt.abort()
                    raise DialError([*failures, "refused by the caller"])
                attempt.holder.hand_over(stream, consumer)
                return link
            else:
                # Every handshake failed on a transport that connected: the
                # peer is there and refuses us; another transport would too.
                self._forget(address)
                raise DialError(failures)
        self._forget(address)
        raise DialError(failures)

    async def _plan(
        self, address: Address, policy: TransportPolicy, failures: list[str], *, skip_utp: bool
    ) -> list[tuple[str, _Target]]:
        """The transports to try, in order, each with the address and socket to dial.

        ``skip_utp``: uTP failed with this peer lately and TCP worked: TCP
        only (unless TCP is off).
        """
        plan: list[tuple[str, _Target]] = []
        if policy.utp and self._utp_for is not None and not (skip_utp and policy.tcp):
            target = await self._utp_target(address)
            if target is not None:
                plan.append(("utp", target))
        if policy.tcp:
            plan.append(("tcp", (address, None)))
        if not plan:
            failures.append(
                "utp: no uTP socket for this address" if policy.utp else "no transport enabled"
            )
        return plan

    async def _utp_target(self, address: Address) -> _Target | None:
        """The IP literal to send uTP to and the socket of its family (names are resolved)."""
        assert self._utp_for is not None
        host, port = address
        try:
            ipaddress.ip_address(host)
        except ValueError:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError:
                return None
            for family, _type, _proto, _name, sockaddr in infos:
                if family in (socket.AF_INET, socket.AF_INET6):
                    host = str(sockaddr[0])
                    break
            else:
                return None
        utp = self._utp_for(host)
        return None if utp is None else ((host, port), utp)

    async def _attempt(
        self,
        transport: str,
        target: _Target,
        info_hash: bytes,
        mse: bool,
        policy: TransportPolicy,
    ) -> _Attempt:
        """One connection and handshake: the open stream, or an exception."""
        loop = asyncio.get_running_loop()
        holder = _Holder(loop)
        consumer: StreamConsumer = holder
        layer: MseStream | None = None
        if mse:
            layer = MseStream.outgoing(
                holder, info_hash, provide=policy.crypto, timeout=policy.handshake_timeout
            )
            consumer = layer
        address, utp = target
        lower: ByteStream | None = None
        try:
            try:
                if utp is not None:
                    lower = await utp.connect(address, consumer, timeout=policy.utp_timeout)
                else:
                    async with asyncio.timeout(policy.tcp_timeout):
                        _, lower = await loop.create_connection(
                            lambda: TcpStream(consumer), address[0], address[1]
                        )
            except (OSError, TimeoutError) as exc:
                raise _ConnectFailed(_connect_reason(transport, exc)) from None
            try:
                async with asyncio.timeout(policy.handshake_timeout + _HANDSHAKE_GRACE):
                    stream = await holder.opened
            except TimeoutError:
                raise _HandshakeFailed(
                    "mse: no answer to the handshake" if mse else f"{transport}: not opened"
                ) from None
            except _Ended as exc:
                reason = str(exc) or "connection closed"
                if mse and not reason.startswith("mse:"):
                    reason = f"mse: {reason}"
                if not mse:  # a plain stream only ends before it opens when it never connected
                    raise _ConnectFailed(f"{transport}: {reason}") from None
                raise _HandshakeFailed(reason) from None
        except BaseException:
            _abort(holder, layer, lower)
            raise
        return _Attempt(stream, holder, layer, lower)


@dataclass(slots=True)
class _Attempt:
    """An open connection before its hand-over: the top stream and what is under it."""

    stream: ByteStream
    holder: _Holder
    layer: MseStream | None
    lower: ByteStream | None

    def abort(self) -> None:
        """Drop it (the MSE layer and the transport under it), reporting nothing."""
        _abort(self.holder, self.layer, self.lower)


def _abort(holder: _Holder, layer: MseStream | None, lower: ByteStream | None) -> None:
    holder.forget()
    for part in (layer, lower):
        if part is not None:
            with contextlib.suppress(Exception):  # half-made streams: never fail a cleanup
                part.abort()


def _connect_reason(transport: str, exc: OSError | TimeoutError) -> str:
    """``"utp: connect timeout"``, ``"tcp: Connection refused"``: the transport, then why."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or "connect timeout"
    return text if text.startswith(f"{transport}:") else f"{transport}: {text}"
