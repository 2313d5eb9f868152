"""Layout arithmetic (no disk) and MemoryStorage, which must behave like FileStorage."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Collection

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import StorageError
from core.storage import (
    GAP,
    DataMissingError,
    Layout,
    LayoutFile,
    MemoryStorage,
    Storage,
)

PL = 16 * 1024


def contiguous(sizes: list[int], piece_length: int, padding: Collection[int] = ()) -> Layout:
    files: list[LayoutFile] = []
    pos = 0
    for i, n in enumerate(sizes):
        files.append(LayoutFile(("t", f"f{i}"), n, pos, i in padding))
        pos += n
    return Layout(files, piece_length)


# -- layout ----------------------------------------------------------------------


def test_segments_split_across_files_skipping_empty_ones() -> None:
    layout = contiguous([3, 0, 5, 0, 0, 10], piece_length=8)
    assert layout.num_pieces == 3
    assert [layout.piece_size(p) for p in range(3)] == [8, 8, 2]
    assert layout.segments(0, 18) == [(0, 0, 3), (2, 0, 5), (5, 0, 10)]
    assert layout.segments(4, 6) == [(2, 1, 4), (5, 0, 2)]
    assert layout.piece_files(0) == [0, 2]
    assert layout.piece_files(1) == [5]
    assert layout.piece_files(2) == [5]
    assert [layout.file_pieces(i) for i in range(6)] == [
        range(0, 1),
        range(0),
        range(0, 1),
        range(0),
        range(0),
        range(1, 3),
    ]


def test_gaps_are_reported_and_trim_piece_size() -> None:
    files = [LayoutFile(("a",), 10, 0), LayoutFile(("b",), 20, 32)]
    layout = Layout(files, 16, total_length=64)
    assert layout.num_pieces == 4
    assert [layout.piece_size(p) for p in range(4)] == [10, 16, 16, 4]
    assert layout.segments(5, 30) == [(0, 5, 5), (GAP, 0, 22), (1, 0, 3)]
    assert layout.segments(60, 4) == [(GAP, 0, 4)]


def test_v2_layout_piece_sizes_end_at_each_file() -> None:
    files = [LayoutFile(("a",), 40, 0), LayoutFile(("b",), 5, 48), LayoutFile(("c",), 16, 64)]
    layout = Layout(files, 16, total_length=80)
    assert [layout.piece_size(p) for p in range(5)] == [16, 16, 8, 5, 16]


@pytest.mark.parametrize(
    "files, total",
    [
        ([LayoutFile(("a",), 10, 0), LayoutFile(("b",), 10, 5)], None),  # overlap
        ([LayoutFile(("a",), 10, 0), LayoutFile(("a",), 10, 10)], None),  # duplicate path
        ([LayoutFile(("a",), -1, 0)], None),
        ([LayoutFile(("a",), 10, 0)], 5),  # total shorter than files
    ],
)
def test_inconsistent_layouts_rejected(files: list[LayoutFile], total: int | None) -> None:
    with pytest.raises(StorageError):
        Layout(files, 16, total_length=total)


def test_bad_piece_length_and_diskless_layout() -> None:
    with pytest.raises(StorageError):
        Layout([], 0)
    layout = contiguous([10], 16)
    with pytest.raises(StorageError):
        layout.resolve(0)
    with pytest.raises(StorageError):
        layout.piece_size(1)


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 70), min_size=1, max_size=12),
    piece_length=st.integers(1, 40),
    data=st.data(),
)
def test_segments_cover_range_exactly(
    sizes: list[int], piece_length: int, data: st.DataObject
) -> None:
    layout = contiguous(sizes, piece_length)
    total = layout.total_length
    offset = data.draw(st.integers(0, total))
    length = data.draw(st.integers(0, total - offset))
    segs = layout.segments(offset, length)
    assert sum(n for _, _, n in segs) == length
    pos = offset
    for index, at, n in segs:
        assert n > 0
        f = layout.files[index]
        assert f.offset + at == pos and at + n <= f.length
        pos += n


# -- memory storage ---------------------------------------------------------------


def fill(layout: Layout, seed: int) -> bytes:
    rng = random.Random(seed)
    space = bytearray(rng.randbytes(layout.total_length))
    for f in layout.files:
        if f.is_padding:
            space[f.offset : f.end] = bytes(f.length)
    return bytes(space)


def test_memory_storage_is_a_storage() -> None:
    mem: Storage = MemoryStorage(contiguous([1], PL))  # mypy checks the protocol here
    assert isinstance(mem, Storage)


def test_memory_roundtrip_spanning_padding_and_empty_files() -> None:
    layout = contiguous([5, 0, 11, 7, 0, 40000, 1], piece_length=PL, padding={3})
    space = fill(layout, 1)
    mem = MemoryStorage(layout)
    noisy = bytearray(space)
    pad = layout.files[3]
    noisy[pad.offset : pad.end] = b"\xff" * pad.length  # peers' padding bytes are dropped
    for p in range(layout.num_pieces):
        for b in range(0, layout.piece_size(p), 3000):
            n = min(3000, layout.piece_size(p) - b)
            at = p * PL + b
            mem.write_block(p, b, noisy[at : at + n])
    for p in range(layout.num_pieces):
        piece = space[p * PL : p * PL + layout.piece_size(p)]
        assert mem.read_piece(p) == piece
        assert mem.hash_piece(p) == hashlib.sha1(piece).digest()
    sizes = mem.file_sizes_and_mtimes()
    assert [s is not None for s in sizes] == [True, False, True, False, False, True, True]
    mem.ensure_files()
    assert [s is not None for s in mem.file_sizes_and_mtimes()] == [
        True,
        True,
        True,
        False,  # padding is never stored
        True,
        True,
        True,
    ]


def test_memory_missing_data_and_pieces_with_data() -> None:
    layout = contiguous([PL, PL, 10], piece_length=PL)
    mem = MemoryStorage(layout)
    with pytest.raises(DataMissingError):
        mem.read_block(0, 0, 1)
    assert not mem.pieces_with_data().any()
    mem.write_block(1, 5, b"abc")
    assert mem.pieces_with_data().tolist() == [False, True, False]
    assert mem.read_block(1, 0, 9) == b"\0" * 5 + b"abc\0"
    before = mem.file_sizes_and_mtimes([1])
    mem.write_block(1, 0, b"x")
    assert mem.file_sizes_and_mtimes([1]) != before  # the write counter moves like an mtime


def test_memory_concurrent_writes() -> None:
    layout = contiguous([1000 * i for i in range(1, 30)], piece_length=PL)
    space = fill(layout, 2)
    mem = MemoryStorage(layout)
    pieces = list(range(layout.num_pieces))

    def work(part: list[int]) -> None:
        for p in part:
            at = p * PL
            mem.write_block(p, 0, space[at : at + layout.piece_size(p)])

    threads = [threading.Thread(target=work, args=(pieces[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in pieces:
        assert mem.read_piece(p) == space[p * PL : p * PL + layout.piece_size(p)]


def test_memory_close_and_delete() -> None:
    mem = MemoryStorage(contiguous([10], PL))
    mem.write_block(0, 0, b"0123456789")
    mem.flush()
    mem.delete_data()
    with pytest.raises(StorageError):
        mem.read_block(0, 0, 1)
    mem2 = MemoryStorage(contiguous([10], PL))
    mem2.close()
    with pytest.raises(StorageError):
        mem2.write_block(0, 0, b"x")
    with pytest.raises(StorageError):
        mem2.write_block(0, 5, b"x" * 6)  # out of range is checked too
