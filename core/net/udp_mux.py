"""The shared UDP socket: one per address family, datagrams routed by their first byte.

The DHT (KRPC, BEP 5) and uTP (BEP 29) listen on the same port, as every
BitTorrent client does, so one socket serves both.  A KRPC message is a
bencoded dictionary and starts with ``d``; a uTP packet starts with its
type/version byte (``0x01``, ``0x11``, ``0x21``, ``0x31``, ``0x41``: types 0-4,
version 1).  Anything else is counted as unknown and dropped.  Handlers are
plain synchronous callbacks run on the event loop (the DHT and uTP are
sans-IO state machines; the driver above them pulls their output), and a
handler that raises is logged and counted; it never stops the reader.

Why ``loop.add_reader`` + ``recvfrom_into`` and not asyncio-dgram (measured by
``python -m bench.udp_recv``: 1,400-byte datagrams on 127.0.0.1, a 2-vCPU VM).
asyncio's datagram transport, under asyncio-dgram and under any
``DatagramProtocol``, reads ONE datagram per selector wake-up, each into a
fresh 256 KiB buffer; asyncio-dgram adds a queue and a task wake-up on top.
Emptying a full receive buffer costs, in CPU per datagram: asyncio-dgram
8.7-9.6 us, ``DatagramProtocol`` 5.3-6.1 us, ``add_reader`` with up to 64
``recvfrom_into`` per wake-up into one preallocated buffer 2.4-2.7 us, this
mux (routing, counters included) 2.6-2.7 us.  With a sender blasting on an
otherwise idle machine the gap was wider: asyncio-dgram received 24-31 k
datagrams/s at 24-25 us each and let the kernel drop 77-80 %; the batched
reader (16-256 per wake-up) 105-154 k/s, the sender's limit, at 3.5-4.8 us
each, 1-5 % dropped.
``recvfrom(65536)`` into a fresh buffer measured like ``recvfrom_into``.
asyncio-dgram stays where rates are low and an ``await`` reads best (the
UDP tracker client); the DHT and uTP share this fast path.

At uTP's rates (100 k datagrams/s and more) the system calls were most of
the cost, so on Linux the mux batches them (``python -m bench.utp_loopback
--paths`` measures each end's CPU per packet):

- **GSO** (:meth:`UdpMux.sendmany`): runs of equal-sized datagrams to one
  address go in one ``sendmsg`` with ``UDP_SEGMENT``; on loopback a
  ``sendto`` cost 3.7-7 us a datagram, a GSO send 0.3-0.8 us.
- **GRO**: the kernel may hand one read several datagrams of one sender
  (only senders using GSO, such as this client, ever get coalesced); read
  with ``recvmsg_into`` for the segment size.  Since that call costs
  0.6 us a datagram more than ``recvfrom_into`` when nothing coalesces,
  GRO switches itself off after :data:`GRO_PROBE` plain reads in a row
  and back on :data:`GRO_RETRY` seconds later.
- **recvmmsg** (through ctypes: Python has no binding) for reads that
  cannot coalesce: up to :data:`BATCH` datagrams per system call, 1.3-1.6
  us a datagram against 2.1-2.4 for ``recvfrom_into``.
- **The uTP batch route** (:meth:`UdpMux.set_utp_batch_handler`): a
  wake-up's uTP datagrams go to uTP in one call, as views into the read
  buffer: no copy and no call per datagram.

Elsewhere (or with ``offload=False``) it is one ``recvfrom_into`` and one
``sendto`` per datagram, as before; every path delivers the same datagrams.

The bounded queue the issue asks for: there is no queue of ours at all.
Handlers run synchronously, so what waits is what the kernel holds in the
socket's receive buffer (``SO_RCVBUF``: 4 MiB asked; with
``net.core.rmem_max`` at 4 MiB Linux reports 8 MiB granted, which held 3,640
unread datagrams of 1,400 bytes on loopback) plus the at most :data:`BATCH`
datagrams handled per wake-up.  Past that the kernel drops, counted in
:attr:`UdpMuxStats.kernel_drops`; that is what UDP promises and what the DHT
(it retries) and uTP (loss is congestion) expect.  The per-wake-up bound
keeps one busy socket from starving the loop: after :data:`BATCH` datagrams
everything else that is ready runs before the socket is read again.

Sending is a non-blocking ``sendto`` (or GSO ``sendmsg``); when the kernel
refuses (``EAGAIN``, ``ENOBUFS``) the datagrams are dropped and counted,
never queued.  Measured:
100-250 k non-blocking ``sendto``/s of 1,400 bytes into a peer that reads
nothing, without a single ``EAGAIN`` (4 MiB ``SO_SNDBUF``).  The DHT sends a
few hundred per second and retries on timeout, uTP treats loss as
congestion: a queue drained by ``add_writer`` would add latency and code and
buy nothing.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError

from .stream import Address
from .udp_offload import (
    GRO_ANCILLARY,
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
    NO_OFFLOAD,
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    Recvmmsg,
    enable_offload,
)

__all__ = [
    "BATCH",
    "MAX_DATAGRAM",
    "Addr",
    "BatchHandler",
    "Handler",
    "UdpMux",
    "UdpMuxStats",
    "normalise_address",
]

log = logging.getLogger(__name__)

#: ``(ip, port)``: IPv6 without brackets or zone, IPv4-mapped shown as IPv4
#: (the shape of ``core.dht.types.Addr``).
Addr = Address
#: What a route delivers to: the datagram and where it came from.
Handler = Callable[[bytes, Addr], None]
#: What the uTP route may deliver to instead: a wake-up's datagrams and their
#: senders.  The datagrams are views into the mux's read buffer, valid only
#: during the call: a handler copies what it keeps.
BatchHandler = Callable[[list[memoryview], list[Addr]], None]

#: Datagrams read per wake-up of the socket before the loop gets a turn.
#: 1 costs 6-7 us per datagram, 16 about 3, 64 and 256 about 2.5 (the
#: epoll round trip shared out); 64 bounds a wake-up to about 3 ms even with
#: handlers costing 50 us per datagram.
BATCH = 64
#: Datagrams handled per wake-up when reads may coalesce (GRO): the reads
#: stop once this many were handled.  Bounds how long the loop waits, and how
#: many packets a uTP receiver takes in before its next ack goes out.
GRO_BATCH = 128
#: GRO off after this many reads in a row that coalesced nothing, back on
#: after :data:`GRO_RETRY` seconds.  A read that may coalesce needs
#: ``recvmsg_into`` and its control message, measured 0.6 us a datagram
#: dearer than ``recvfrom_into``; only senders using GSO (this client) ever
#: get coalesced, so with other peers GRO costs and buys nothing.
GRO_PROBE = 4096
GRO_RETRY = 30.0
#: How many bytes of uTP datagrams a wake-up keeps for its batch before the
#: batch is handed over early (the read buffer is this plus MAX_DATAGRAM).
ARENA = 256 << 10
#: The receive buffer: any UDP datagram fits (IPv4's largest payload is
#: 65,507 bytes, IPv6's without jumbograms 65,527).
MAX_DATAGRAM = 65536

_KRPC, _UTP, _UNKNOWN = 0, 1, 2
#: First byte -> route.  ``d`` opens a bencoded dict; uTP's first byte is
#: ``type << 4 | version`` with types ST_DATA..ST_SYN (0-4) and version 1.
_ROUTES = bytes(
    _KRPC if b == ord("d") else _UTP if b in (0x01, 0x11, 0x21, 0x31, 0x41) else _UNKNOWN
    for b in range(256)
)
#: ``sendto`` failures that mean "no room right now", not "this address is bad".
_CONGESTED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})


def normalise_address(sockaddr: tuple[Any, ...]) -> Addr:
    """``recvfrom``'s address -> ``(ip, port)`` as the DHT keys nodes.

    IPv4-mapped IPv6 (``::ffff:192.0.2.1``) becomes plain IPv4 and an IPv6
    zone (``fe80::1%eth0``) is dropped, so one node is never known under two
    spellings.  IPv6 text is the compressed form ``ipaddress`` gives (the
    kernel's ``inet_ntop`` agrees except for dotted forms, which are reparsed).
    """
    host = sockaddr[0]
    port = int(sockaddr[1])
    if ":" not in host:
        return (host, port)
    if "%" in host:
        host = host.partition("%")[0]
    if "." in host:  # ::ffff:a.b.c.d, or the deprecated ::a.b.c.d
        try:
            ip = ipaddress.IPv6Address(host)
        except ValueError:
            return (host, port)
        mapped = ip.ipv4_mapped
        return (str(mapped if mapped is not None else ip), port)
    return (host, port)


@dataclass(frozen=True, slots=True)
class UdpMuxStats:
    """One socket's counters since it opened (a sample; rates are the caller's).

    ``dropped_in`` is what reached us and went nowhere (unknown first byte,
    or a route without a handler); datagrams the kernel dropped because the
    receive buffer was full are ``kernel_drops`` (None where the platform
    does not tell).  ``dropped_out`` is ``sendto`` refused for lack of room
    or on a closed socket; ``send_errors`` is every other refusal (bad or
    unreachable address).
    """

    family: socket.AddressFamily
    port: int
    datagrams_in: int
    bytes_in: int
    datagrams_out: int
    bytes_out: int
    krpc_in: int
    krpc_bytes_in: int
    utp_in: int
    utp_bytes_in: int
    unknown_in: int
    unhandled_in: int
    handler_errors: int
    recv_errors: int
    dropped_out: int
    send_errors: int
    #: Wake-ups that used their whole :data:`BATCH` (more may have been waiting): load.
    full_batches: int
    #: Sends that carried several datagrams in one system call (UDP GSO), and
    #: reads that returned several (UDP GRO).
    gso_sends: int
    gro_reads: int
    #: Whether the socket offloads segmentation (GSO) / coalescing (GRO) now.
    gso: bool
    gro: bool
    #: What the kernel granted for SO_RCVBUF / SO_SNDBUF (Linux reports twice
    #: the usable payload room: the rest is its bookkeeping).
    recv_buffer: int
    send_buffer: int
    kernel_drops: int | None

    @property
    def dropped_in(self) -> int:
        return self.unknown_in + self.unhandled_in


class UdpMux:
    """One bound UDP socket, its datagrams routed to the KRPC and uTP handlers.

    Make one with :meth:`open`; the constructor takes an already bound,
    non-blocking datagram socket (tests and callers with special needs).
    """

    def __init__(self, sock: socket.socket, *, offload: bool = True) -> None:
        if sock.type != socket.SOCK_DGRAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise ConfigError(f"UdpMux needs an IPv4 or IPv6 datagram socket, not {sock!r}")
        sock.setblocking(False)
        #: Linux GSO for :meth:`sendmany` and GRO for reads, where the kernel has them.
        self._gso = offload and enable_offload(sock, UDP_SEGMENT, 0)
        self._gro = offload and GRO_ANCILLARY > 0 and enable_offload(sock, UDP_GRO, 1)
        self._gro_capable = self._gro
        #: reads go through recvmsg_into: GRO is on, or was until the queue drains
        self._gro_reading = self._gro
        self._plain_reads = 0  # reads in a row that coalesced nothing
        self._gro_off_at = 0.0
        self._gso_sends = 0
        self._gro_reads = 0
        #: recvmmsg for reads that cannot coalesce (Linux; None elsewhere)
        self._mmsg = (
            Recvmmsg.create(sock, BATCH, MAX_DATAGRAM, normalise_address) if offload else None
        )
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self.family: socket.AddressFamily = sock.family
        name = sock.getsockname()
        self.local_address: Addr = (str(name[0]), int(name[1]))
        self._recv_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self._send_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        # Reads land here; a wake-up's uTP datagrams stay in place until the
        # batch handler has run (ARENA bytes of them, then the batch goes
        # early), so every read has MAX_DATAGRAM bytes of room after them.
        self._buf = bytearray(ARENA + MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self._handlers: list[Handler | None] = [None, None, None]
        self._utp_batch: BatchHandler | None = None
        self._batch_data: list[memoryview] = []
        self._batch_addrs: list[Addr] = []
        self._route_in = [0, 0, 0]
        self._route_bytes = [0, 0, 0]
        self._unhandled = 0
        self._handler_errors = 0
        self._recv_errors = 0
        self._full_batches = 0
        self._datagrams_out = 0
        self._bytes_out = 0
        self._dropped_out = 0
        self._send_errors = 0
        self._last_drops: int | None = None
        self._loop.add_reader(self._fd, self._on_readable)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        recv_buffer: int = 4 << 20,
        send_buffer: int = 4 << 20,
        offload: bool = True,
    ) -> UdpMux:
        """Bind ``(host, port)`` (port 0: any free one) and start reading.

        ``host`` is an IP literal (``0.0.0.0``, ``::``, ``127.0.0.1``, ...); it
        picks the family.  IPv6 sockets are IPV6_V6ONLY: IPv4 has its own mux.
        ``offload=False`` keeps to one datagram per system call (no GSO/GRO).
        Raises :class:`~core.errors.ConfigError` for a bad host or port and
        ``OSError`` when the address cannot be bound (in use, not local).
        """
        family = _family_of(host)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise ConfigError(f"UDP port must be 0-65535, not {port!r}")
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _set_buffer(sock, socket.SO_RCVBUF, recv_buffer)
            _set_buffer(sock, socket.SO_SNDBUF, send_buffer)
            sock.bind((host.strip("[]"), port))
            return cls(sock, offload=offload)
        except BaseException:
            sock.close()
            raise

    # --- routes ------------------------------------------------------------------

    def set_krpc_handler(self, handler: Handler | None) -> None:
        """Datagrams starting with ``d`` go to ``handler`` (None: counted and dropped)."""
        self._handlers[_KRPC] = handler

    def set_utp_handler(self, handler: Handler | None) -> None:
        """uTP packets (first byte 0x01/0x11/0x21/0x31/0x41) go to ``handler``, one call each.

        Replaces a handler set with :meth:`set_utp_batch_handler`.
        """
        self._handlers[_UTP] = handler
        self._utp_batch = None

    def set_utp_batch_handler(self, handler: BatchHandler | None) -> None:
        """uTP packets go to ``handler`` a wake-up at a time: ``handler(datagrams, senders)``.

        One call after the reads of each wake-up (or one per
        :data:`ARENA` bytes of them), with every uTP datagram read, in
        order, and their senders: parallel lists, the datagrams as views
        into the read buffer that are only valid during the call.  Nothing
        is copied for the handler; it copies what it keeps.  What one call
        per datagram would cost again and again (the call, a clock
        reading, finding the connection, a copy) is paid once per batch;
        uTP handles a batch at a time anyway.  Replaces a handler set with
        :meth:`set_utp_handler`.
        """
        self._utp_batch = handler
        self._handlers[_UTP] = None

    @property
    def closed(self) -> bool:
        return self._sock is None

    def _on_readable(self) -> None:
        """Read until the socket is empty or a batch was handled, then the uTP batch."""
        sock = self._sock
        if sock is None:
            return
        if self._gro_reading:
            self._read_coalesced(sock)
        else:
            if self._mmsg is not None:
                self._read_multi(self._mmsg)
            else:
                self._read_single(sock)
            if self._gro_capable and self._loop.time() - self._gro_off_at >= GRO_RETRY:
                self._set_gro(True)
        if self._batch_data:
            self._dispatch_batch()

    def _dispatch_batch(self) -> None:
        """Hand the uTP batch read so far to its handler; the arena is free again after."""
        batch = self._batch_data
        addrs = self._batch_addrs
        self._batch_data = []
        self._batch_addrs = []
        handler = self._utp_batch
        if handler is not None:
            try:
                handler(batch, addrs)
            except Exception:
                self._handler_failed(_UTP)

    def _set_gro(self, on: bool) -> None:
        """Switch GRO; reads stay on recvmsg_into until what was coalesced is read."""
        sock = self._sock
        if sock is None or not enable_offload(sock, UDP_GRO, int(on)):
            self._gro = self._gro_capable = False
            return
        self._gro = on
        self._plain_reads = 0
        if on:
            self._gro_reading = True
        else:
            self._gro_off_at = self._loop.time()

    def _read_multi(self, reader: Recvmmsg) -> None:
        """Up to :data:`BATCH` datagrams in one ``recvmmsg``; what :meth:`_read_single` does."""
        for _ in range(3):  # a queued ICMP error is returned (and cleared) on its own
            try:
                count = reader.read()
                break
            except OSError:
                self._recv_errors += 1
        else:
            return
        if not count:
            return
        data = reader.data
        view = reader.data_view
        lengths = reader.lengths
        keys = reader.keys
        slot = reader.slot
        address = reader.address
        batch = self._utp_batch is not None
        routes_in = self._route_in
        route_bytes = self._route_bytes
        last_key = b""
        addr: Addr = ("", 0)
        for i in range(count):
            n = lengths[i]
            start = i * slot
            route = _ROUTES[data[start]] if n else _UNKNOWN
            routes_in[route] += 1
            route_bytes[route] += n
            key = keys[i]
            if key != last_key:
                addr = address(key)
                last_key = key
            if batch and route == _UTP:
                self._batch_data.append(view[start : start + n])
                self._batch_addrs.append(addr)
                continue
            handler = self._handlers[route]
            if handler is None:
                if route != _UNKNOWN:
                    self._unhandled += 1
                continue
            try:
                handler(bytes(view[start : start + n]), addr)
            except Exception:
                self._handler_failed(route)
        if count == BATCH:
            self._full_batches += 1

    def _read_single(self, sock: socket.socket) -> None:
        """Up to :data:`BATCH` datagrams, one ``recvfrom_into`` each.

        Each read lands in the arena after the uTP datagrams kept for the
        batch so far (they are handed over as views, never copied); other
        routes get a copy at once and their room is reused.
        """
        recv = sock.recvfrom_into
        buf = self._buf
        view = self._view
        v6 = self.family == socket.AF_INET6
        batch = self._utp_batch is not None
        off = 0
        for _ in range(BATCH):
            if off > ARENA:
                self._dispatch_batch()
                off = 0
            try:
                n, sockaddr = recv(view[off:])
            except BlockingIOError:
                return
            except OSError:
                # A queued ICMP error (port unreachable for something we
                # sent) surfaces here on some systems; the datagram
                # behind it is still there.
                self._recv_errors += 1
                continue
            route = _ROUTES[buf[off]] if n else _UNKNOWN
            self._route_in[route] += 1
            self._route_bytes[route] += n
            addr: Addr = normalise_address(sockaddr) if v6 else sockaddr
            if batch and route == _UTP:
                self._batch_data.append(view[off : off + n])
                self._batch_addrs.append(addr)
                off += n
                continue
            handler = self._handlers[route]
            if handler is None:
                if route != _UNKNOWN:
                    self._unhandled += 1
                continue
            try:
                handler(bytes(view[off : off + n]), addr)
            except Exception:
                self._handler_failed(route)
        self._full_batches += 1

    def _read_coalesced(self, sock: socket.socket) -> None:
        """:meth:`_read_single` with GRO: a read may hold several datagrams of one sender.

        The kernel coalesces only datagrams of one flow and one size (the
        last may be shorter) and says the size in a control message; each
        piece goes to its route as if it had been read alone.  A wake-up
        ends after :data:`BATCH` reads or :data:`GRO_BATCH` datagrams.
        """
        recv = sock.recvmsg_into
        buf = self._buf
        view = self._view
        v6 = self.family == socket.AF_INET6
        routes_in = self._route_in
        route_bytes = self._route_bytes
        handlers = self._handlers
        batch = self._utp_batch is not None
        budget = GRO_BATCH
        off = 0
        for _ in range(BATCH):
            if budget <= 0:
                break
            if off > ARENA:
                self._dispatch_batch()
                off = 0
            try:
                n, ancdata, _flags, sockaddr = recv([view[off:]], GRO_ANCILLARY)
            except BlockingIOError:
                if not self._gro:
                    # GRO was switched off and the queue is empty: nothing
                    # coalesced can be left, plain reads are safe again.
                    self._gro_reading = False
                return
            except OSError:
                self._recv_errors += 1
                continue
            size = n
            for level, kind, data in ancdata:
                if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
                    size = int.from_bytes(data[:4], sys.byteorder) or n
            addr: Addr = normalise_address(sockaddr) if v6 else sockaddr
            if size < n:
                self._gro_reads += 1
                self._plain_reads = 0
            else:
                self._plain_reads += 1
                if self._plain_reads >= GRO_PROBE and self._gro:
                    self._set_gro(False)
            start = off
            stop = off + n
            while True:
                end = start + size if start + size < stop else stop
                route = _ROUTES[buf[start]] if end > start else _UNKNOWN
                routes_in[route] += 1
                route_bytes[route] += end - start
                budget -= 1
                if batch and route == _UTP:
                    self._batch_data.append(view[start:end])
                    self._batch_addrs.append(addr)
                    off = end
                else:
                    handler = handlers[route]
                    if handler is None:
                        if route != _UNKNOWN:
                            self._unhandled += 1
                    else:
                        try:
                            handler(bytes(view[start:end]), addr)
                        except Exception:
                            self._handler_failed(route)
                start = end
                if start >= stop:
                    break
        self._full_batches += 1

    def _handler_failed(self, route: int) -> None:
        self._handler_errors += 1
        count = self._handler_errors
        # A handler that fails on every datagram of a flood must not flood the
        # log too: tracebacks for the 1st, 2nd, 4th, 8th, ... failure.
        if count & (count - 1) == 0:
            log.exception(
                "UDP %s handler failed (%d failures so far on %s)",
                "KRPC" if route == _KRPC else "uTP",
                count,
                self.local_address,
            )

    # --- sending -----------------------------------------------------------------

    def sendto(self, data: bytes, addr: Addr) -> bool:
        """Send one datagram now; False if it was dropped (never raises, never blocks).

        Dropped: the socket is closed or the kernel has no room (counted in
        ``dropped_out``), or the address is unusable for this socket: not an
        IP literal of its family (a host name would mean a blocking DNS
        lookup), unreachable, refused (counted in ``send_errors``).
        """
        sock = self._sock
        if sock is None:
            self._dropped_out += 1
            return False
        try:
            socket.inet_pton(self.family, addr[0])
            sock.sendto(data, addr)
        except OSError as exc:
            if exc.errno in _CONGESTED:
                self._dropped_out += 1
            else:
                self._send_errors += 1
            return False
        except (TypeError, ValueError, OverflowError, IndexError):
            self._send_errors += 1
            return False
        self._datagrams_out += 1
        self._bytes_out += len(data)
        return True

    def sendmany(self, datagrams: Sequence[bytes], addr: Addr) -> int:
        """Send ``datagrams`` to one address now, in order; how many went (never raises).

        Where the kernel has UDP GSO, runs of equal-sized datagrams (the last
        of a run may be shorter) go in one ``sendmsg`` each, up to
        :data:`GSO_MAX_SEGMENTS` and :data:`GSO_MAX_BYTES`: one system call
        instead of dozens, which is most of what sending costs.  The receiver
        sees the same datagrams either way.  A path that refuses offload
        (``EIO``: a device without checksum offload; ``EINVAL``) gets the run
        again one datagram at a time, and GSO is switched off for the socket
        once the single sends prove the address itself is fine.  A run the
        kernel has no room for is dropped whole (counted in ``dropped_out``).
        """
        count = len(datagrams)
        if count == 1 or not self._gso:
            sent = 0
            for datagram in datagrams:
                if self.sendto(datagram, addr):
                    sent += 1
            return sent
        sock = self._sock
        if sock is None:
            self._dropped_out += count
            return 0
        try:
            socket.inet_pton(self.family, addr[0])
        except (OSError, TypeError, ValueError, IndexError):
            self._send_errors += count
            return 0
        sent = 0
        start = 0
        while start < count:
            size = len(datagrams[start])
            limit = min(count, start + GSO_MAX_SEGMENTS, start + max(1, GSO_MAX_BYTES // size))
            end = start + 1
            while end < limit and len(datagrams[end]) == size:
                end += 1
            if end < limit and len(datagrams[end]) < size:
                end += 1  # a shorter last segment is allowed
            if end - start == 1:
                sent += self.sendto(datagrams[start], addr)
            else:
                sent += self._send_segments(sock, datagrams[start:end], size, addr)
            start = end
        return sent

    def _send_segments(
        self, sock: socket.socket, run: Sequence[bytes], size: int, addr: Addr
    ) -> int:
        """One GSO ``sendmsg`` for ``run`` (all ``size`` bytes, the last maybe shorter)."""
        try:
            sock.sendmsg(run, [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))], 0, addr)
        except OSError as exc:
            if exc.errno in _CONGESTED:
                self._dropped_out += len(run)
                return 0
            if exc.errno not in NO_OFFLOAD:
                self._send_errors += len(run)
                return 0
            sent = 0
            for datagram in run:
                sent += self.sendto(datagram, addr)
            if sent:
                log.debug("UDP GSO refused (%s); sending one datagram per call", exc)
                self._gso = False
            return sent
        except (TypeError, ValueError, OverflowError):
            self._send_errors += len(run)
            return 0
        self._gso_sends += 1
        self._datagrams_out += len(run)
        self._bytes_out += sum(map(len, run))
        return len(run)

    # --- state -------------------------------------------------------------------

    def stats(self) -> UdpMuxStats:
        """The counters now.

        Reads one procfs file for ``kernel_drops`` (40-120 us here): fine for
        sampling once a second, not for a per-datagram path.
        """
        routes, sizes = self._route_in, self._route_bytes
        return UdpMuxStats(
            family=self.family,
            port=self.local_address[1],
            datagrams_in=sum(routes),
            bytes_in=sum(sizes),
            datagrams_out=self._datagrams_out,
            bytes_out=self._bytes_out,
            krpc_in=routes[_KRPC],
            krpc_bytes_in=sizes[_KRPC],
            utp_in=routes[_UTP],
            utp_bytes_in=sizes[_UTP],
            unknown_in=routes[_UNKNOWN],
            unhandled_in=self._unhandled,
            handler_errors=self._handler_errors,
            recv_errors=self._recv_errors,
            dropped_out=self._dropped_out,
            send_errors=self._send_errors,
            full_batches=self._full_batches,
            gso_sends=self._gso_sends,
            gro_reads=self._gro_reads,
            gso=self._gso,
            gro=self._gro,
            recv_buffer=self._recv_buffer,
            send_buffer=self._send_buffer,
            kernel_drops=self._kernel_drops(),
        )

    def _kernel_drops(self) -> int | None:
        """Linux: the socket's ``drops`` column in /proc/self/net/udp[6] (procfs: no disk)."""
        sock = self._sock
        if sock is None:
            return self._last_drops
        try:
            inode = str(os.fstat(sock.fileno()).st_ino).encode()
            name = "udp6" if self.family == socket.AF_INET6 else "udp"
            with open(f"/proc/self/net/{name}", "rb") as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 13 and fields[9] == inode:
                        self._last_drops = int(fields[12])
                        return self._last_drops
        except (OSError, ValueError):
            pass
        return None

    async def aclose(self) -> None:
        """Stop reading and close the socket, freeing the port.  Idempotent."""
        sock = self._sock
        if sock is None:
            return
        self._kernel_drops()  # keep the last figure for stats() after closing
        self._sock = None
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        sock.close()

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else "open"
        return f"<UdpMux {self.local_address[0]}:{self.local_address[1]} {state}>"


def _family_of(host: str) -> socket.AddressFamily:
    """The address family of an IP literal (``""`` is IPv4's any address)."""
    if not isinstance(host, str):
        raise ConfigError(f"UDP bind address must be an IP address, not {host!r}")
    text = host.strip("[]")
    if text == "":
        return socket.AF_INET
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        raise ConfigError(f"UDP bind address must be an IP address, not {host!r}") from None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def _set_buffer(sock: socket.socket, option: int, size: int) -> None:
    """Ask for ``size`` bytes; the kernel caps it (``net.core.rmem_max``/``wmem_max``)."""
    if size > 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError as exc:
            log.debug("UDP socket buffer %d refused: %s", size, exc)
