"""``torrent bencode json|spew FILE``: look inside any bencoded file."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .inputs import load_bencode


def to_jsonable(value: Any) -> Any:
    """Bytes become text when they are UTF-8, otherwise a string of hex digits."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {to_jsonable(k): to_jsonable(v) for k, v in value.items()}
    return value


_PREVIEW = 48


def _spew_bytes(value: bytes) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        hexed = value[:_PREVIEW].hex()
        more = "..." if len(value) > _PREVIEW else ""
        return f"bytes[{len(value)}] 0x{hexed}{more}"
    shown = text if len(text) <= 2 * _PREVIEW else text[: 2 * _PREVIEW] + "..."
    return f"str[{len(value)}] {json.dumps(shown, ensure_ascii=False)}"


def spew(value: Any, indent: int = 0) -> list[str]:
    """An indented listing of ``value`` with the type and length of every node."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = [f"dict ({len(value)} keys)"]
        for k, v in value.items():
            sub = spew(v, indent + 1)
            lines.append(f"{pad}  {_spew_bytes(k).split(' ', 1)[1]}: {sub[0]}")
            lines.extend(sub[1:])
        return lines
    if isinstance(value, list):
        lines = [f"list ({len(value)} items)"]
        for i, v in enumerate(value):
            sub = spew(v, indent + 1)
            lines.append(f"{pad}  [{i}] {sub[0]}")
            lines.extend(sub[1:])
        return lines
    if isinstance(value, bytes):
        return [_spew_bytes(value)]
    return [f"int {value}"]


def run(args: argparse.Namespace) -> int:
    value = load_bencode(args.file)
    if args.action == "json":
        json.dump(to_jsonable(value), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(spew(value)) + "\n")
    return 0
