"""Incoming peer connections: the layers between an accepted stream and the peer driver.

TCP and uTP connections accepted on the listen port reach the same place:
the peer driver, whose handshake router finds the torrent.  Between them
sits the encryption policy (:class:`~core.net.dialer.TransportPolicy`, read
at each accept, so a settings change applies to the next connection):

* ``"prefer"``: an :class:`~core.net.mse_stream.MseStream` in detection
  mode: a plain BitTorrent handshake passes straight through, anything else
  is taken for MSE and answered as its responder (crypto per
  ``allowed_crypto``).  Either kind of peer gets in, as in libtorrent.
* ``"require"``: the same layer, refusing the plain handshake
  (``"mse: plaintext connection refused by policy"``).
* ``"disable"``: no layer at all; an MSE initiator's key looks like a broken
  BitTorrent handshake to the driver and is dropped by it.

The responder finds the torrent from the SKEY hash with ``find_skey``
(``HASH('req2', info_hash) -> info_hash`` over every torrent's 20-byte wire
hashes; :class:`~core.mse.handshake.SkeyIndex`).  Once the driver's
handshake names the torrent, :attr:`Accepted.link` says what the connection
turned out to be, for the peer table.
"""

from __future__ import annotations

from collections.abc import Callable

from .dialer import Link, TransportPolicy
from .mse_stream import MseStream
from .stream import StreamConsumer

__all__ = ["Accepted"]


class Accepted:
    """One accepted connection's layers under ``upper`` (the driver); see the module docstring.

    Give :attr:`consumer` to the accepted stream (TCP's protocol, or uTP's
    ``set_consumer``).
    """

    def __init__(
        self,
        upper: StreamConsumer,
        *,
        transport: str,
        policy: TransportPolicy,
        find_skey: Callable[[bytes], bytes | None],
    ) -> None:
        self.transport = transport
        self._mse: MseStream | None = None
        self.consumer: StreamConsumer = upper
        if policy.encryption != "disable":
            self._mse = MseStream.incoming(
                upper,
                find_skey,
                allowed=policy.crypto,
                allow_plaintext_handshake=policy.encryption != "require",
                timeout=policy.handshake_timeout,
            )
            self.consumer = self._mse

    @property
    def link(self) -> Link:
        """TCP or uTP, and whether RC4 was selected (meaningful once the stream opened)."""
        return Link(self.transport, self._mse is not None and self._mse.encrypted)
