"""The usage error shared by all subcommands (exit status 2, like argparse's own)."""

from __future__ import annotations


class UsageError(Exception):
    """Bad arguments that argparse could not catch by itself."""
