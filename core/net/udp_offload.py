"""Linux UDP offloads for the shared UDP socket: GSO and GRO options, ``recvmmsg`` via ctypes.

What the kernel can do to cut system calls at uTP's packet rates, kept
apart from :mod:`.udp_mux` (which decides when to use them and falls back
when they are missing): the ``<linux/udp.h>`` option numbers Python's socket
module does not name, a helper that turns an option on where the kernel has
it, and :class:`Recvmmsg`, many datagrams per system call.  Everything here
degrades to "not available" off Linux or on old kernels.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

Addr = tuple[str, int]

__all__ = [
    "GRO_ANCILLARY",
    "GSO_MAX_BYTES",
    "GSO_MAX_SEGMENTS",
    "NO_OFFLOAD",
    "SOL_UDP",
    "UDP_GRO",
    "UDP_SEGMENT",
    "Recvmmsg",
    "enable_offload",
]

#: Linux UDP segmentation offload (``<linux/udp.h>``; Python 3.11's socket
#: module does not name them).  ``UDP_SEGMENT`` as a control message on
#: ``sendmsg`` makes one call send many equal-sized datagrams (the last may
#: be shorter); ``UDP_GRO`` lets the kernel hand several datagrams of one
#: flow to one ``recvmsg``, their size in a control message.
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
#: Segments per GSO send: the kernel's UDP_MAX_SEGMENTS (64 before Linux 6.9).
GSO_MAX_SEGMENTS = 64
#: Bytes per GSO send: the whole must fit one IP packet (65,535 less headers).
GSO_MAX_BYTES = 65000
#: ``recvmsg`` room for the UDP_GRO control message (an int).
GRO_ANCILLARY = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
#: GSO sends that fail this way mean "this path cannot offload": send one by one.
NO_OFFLOAD = frozenset({errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT})


def enable_offload(sock: socket.socket, option: int, value: int) -> bool:
    """Set a Linux UDP offload option; False where the platform or kernel lacks it.

    ``UDP_SEGMENT`` set to 0 changes nothing (each ``sendmsg`` asks for its
    own segment size) but fails where the kernel has no UDP GSO (before 4.18);
    ``UDP_GRO`` needs 5.0.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.setsockopt(SOL_UDP, option, value)
    except OSError:
        return False
    return True


class Recvmmsg:
    """``recvmmsg(2)`` through ctypes: up to ``count`` datagrams in one system call (Linux).

    Python's socket module has no ``recvmmsg``; one ``recvfrom_into`` per
    datagram measured 2.1-2.4 us, this 1.3-1.6 us, most of the difference
    being system calls (``python -m bench.utp_loopback --paths``).  Each
    message gets a ``slot``-byte part of one buffer (the mux gives its
    largest datagram, 64 KiB), so nothing is ever truncated
    (only the pages a datagram touches are ever resident), and its sender's
    ``sockaddr`` a slot of another; both are read in place by the mux.
    The fields are public for the mux's loop, the one user; ``normalise``
    is the mux's address spelling, so both read paths report senders alike.
    """

    NAME = 28  # sockaddr_in6; sockaddr_in uses the first 16

    def __init__(
        self, sock: socket.socket, count: int, slot: int, normalise: Callable[[Any], Addr]
    ) -> None:
        self.slot = slot
        self._normalise = normalise
        import ctypes

        class IoVec(ctypes.Structure):
            _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]

        class MsgHdr(ctypes.Structure):
            _fields_ = [
                ("msg_name", ctypes.c_void_p),
                ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.c_void_p),
                ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p),
                ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int),
            ]

        class MMsgHdr(ctypes.Structure):
            _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]

        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.recvmmsg  # AttributeError where the C library lacks it
        call.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        call.restype = ctypes.c_int
        self._call = call
        self._get_errno = ctypes.get_errno
        self._fd = sock.fileno()
        self._count = count
        self.v6 = sock.family == socket.AF_INET6
        self.data = bytearray(count * self.slot)
        self.data_view = memoryview(self.data)
        self.names = bytearray(count * self.NAME)
        self.names_view = memoryview(self.names)
        self._iovs = (IoVec * count)()
        self._msgs = (MMsgHdr * count)()
        data_at = ctypes.addressof((ctypes.c_char * len(self.data)).from_buffer(self.data))
        names_at = ctypes.addressof((ctypes.c_char * len(self.names)).from_buffer(self.names))
        iovs_at = ctypes.addressof(self._iovs)
        name_len = 28 if self.v6 else 16
        for i in range(count):
            self._iovs[i].iov_base = data_at + i * self.slot
            self._iovs[i].iov_len = self.slot
            hdr = self._msgs[i].msg_hdr
            hdr.msg_name = names_at + i * self.NAME
            hdr.msg_namelen = name_len  # the kernel writes back the same for this family
            hdr.msg_iov = iovs_at + i * ctypes.sizeof(IoVec)
            hdr.msg_iovlen = 1
        self._msgs_at = ctypes.addressof(self._msgs)
        # Every message's msg_len, and every sender's port and address, in
        # one unpack each (a tuple per read instead of a call per datagram).
        stride = ctypes.sizeof(MMsgHdr)
        len_at = MMsgHdr.msg_len.offset
        self._lengths = struct.Struct("=" + f"{len_at}xI{stride - len_at - 4}x" * count).unpack_from
        key_size = 22 if self.v6 else 6  # port (+ flow info) + address
        self._keys = struct.Struct(
            "=" + f"2x{key_size}s{self.NAME - 2 - key_size}x" * count
        ).unpack_from
        self._msgs_view = memoryview(self._msgs).cast("B")
        self._addresses: dict[bytes, Addr] = {}
        #: after :meth:`read`: each message's length and sender key (first ``n`` valid)
        self.lengths: tuple[int, ...] = ()
        self.keys: tuple[bytes, ...] = ()

    @classmethod
    def create(
        cls, sock: socket.socket, count: int, slot: int, normalise: Callable[[Any], Addr]
    ) -> Recvmmsg | None:
        """The reader, or None where there is no ``recvmmsg`` to call."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            return cls(sock, count, slot, normalise)
        except (ImportError, OSError, AttributeError, ValueError):
            return None

    def read(self) -> int:
        """Datagrams read into the slots (0: none waiting); ``OSError`` for a queued error."""
        n: int = self._call(self._fd, self._msgs_at, self._count, socket.MSG_DONTWAIT, None)
        if n > 0:
            self.lengths = self._lengths(self._msgs_view)
            self.keys = self._keys(self.names)
            return n
        if n == 0:
            return 0
        err = self._get_errno()
        if err in (errno.EAGAIN, errno.EWOULDBLOCK):
            return 0
        raise OSError(err, os.strerror(err))

    def address(self, key: bytes) -> Addr:
        """A sender from its key in :attr:`keys`, normalised (cached: few peers, many packets)."""
        addr = self._addresses.get(key)
        if addr is None:
            port = int.from_bytes(key[:2], "big")
            if self.v6:
                addr = self._normalise((socket.inet_ntop(socket.AF_INET6, key[6:22]), port))
            else:
                addr = (socket.inet_ntop(socket.AF_INET, key[2:6]), port)
            if len(self._addresses) >= 4096:
                self._addresses.clear()  # a DHT sees many senders: stay bounded
            self._addresses[key] = addr
        return addr
