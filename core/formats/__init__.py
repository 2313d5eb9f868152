"""The file formats: bencode, ``.torrent`` metainfo (v1, v2, hybrid), magnet links, creation.

Pure functions and immutable values over bytes: no asyncio, no sockets, no
engine.  Every fault in untrusted input raises a typed error from
:mod:`core.errors` (``BencodeError``, ``MetainfoError``, ``MagnetError``)
naming where it is.  May import only the standard library, its third-party
codecs (bencode.py, bitarray), :mod:`core.errors` and :mod:`core.types`;
``tests/test_layering.py`` checks it.

- :mod:`.bencoding`: strict bencode with byte offsets and raw spans;
- :mod:`.metainfo`, :mod:`.info`: a ``.torrent`` and its info dict;
- :mod:`.safepath`: names from untrusted torrents made safe (libtorrent's rules);
- :mod:`.merkle`: BEP 52 SHA-256 merkle trees;
- :mod:`.magnet`: magnet links (BEP 9, 53, ``btmh``);
- :mod:`.compact`: peer addresses as trackers, PEX and the DHT send them (BEP 23, 7);
- :mod:`.create`: new torrents from files, hashing in threads.
"""
