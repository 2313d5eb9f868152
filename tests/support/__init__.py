"""Test-only helpers: third-party interop peers and payload/torrent builders.

Nothing here is imported by the engine; it exists so interop tests and
benchmarks can drive a real libtorrent peer in a separate process.
"""
