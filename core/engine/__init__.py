"""The engine: a client's torrents, their peers, and everything that moves pieces.

``Client`` (listeners, limits, bans, the bus) owns ``Torrent``s; a torrent's
concerns live in their own modules: ``swarm`` (dialing, accepting, interest,
request filling, choking), ``peer`` (one peer's wire events to actions),
``picker`` with ``piece_order``/``piece_geometry``/``chunk_ledger`` (what
to ask for), ``piece_pipeline`` and ``blame`` (blocks to verified pieces,
who lied), ``upload`` (serving requests), ``checking`` (data on disk),
``peer_extensions``/``magnet_phase``/``metadata``/``pex`` (BEP 9, 10, 11),
``reader``/``streaming``/``files`` (readers and priorities), ``choker``;
``dht_service`` (the client's DHT node on its UDP sockets) and
``dht_torrent`` (one torrent's get_peers/announce rounds over it).

It may import every layer below it (``core.tracker``, ``core.dht``, ``core.storage``,
``core.net``, ``core.wire``, ``core.formats``) and the shared leaves
(``core.errors``, ``core.types``, ``core.events``, ``core.bus``,
``core.config``, ``core.stats``, ``core.piecestate``, ``core.ratelimit``);
nothing below imports it (``tests/test_layering.py``).  Its public names are
re-exported by ``core`` itself: ``from core import Client, Torrent``.
"""
