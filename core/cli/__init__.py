"""The ``torrent`` command: one module per subcommand, over the public engine.

A user of the engine, like ``tui/``: it may import every layer (``core.engine``
through ``core``'s face or directly, ``core.formats``, ``core.tracker``), and
nothing in ``core`` imports it back.
"""
