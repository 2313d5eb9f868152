"""The SQLite piece-completion store: persistence, batching, invalidation, threads."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest
from bitarray import bitarray

from core.errors import StorageError
from core.storage import CompletionStore, FileStorage, Layout, LayoutFile, MemoryStorage
from core.types import InfoHash

PL = 16 * 1024
IH = "AB" * 20
IH2 = "cd" * 20


def make(root: Path, sizes: list[int]) -> tuple[Layout, FileStorage]:
    """Files ``t/f<i>`` end to end, each filled with its own byte so pieces are real."""
    files, pos = [], 0
    for i, n in enumerate(sizes):
        files.append(LayoutFile(("t", f"f{i}"), n, pos))
        pos += n
    layout = Layout(files, PL, root=root)
    st = FileStorage(layout)
    space = b"".join(bytes([i + 1]) * n for i, n in enumerate(sizes))
    for p in range(layout.num_pieces):
        st.write_block(p, 0, space[p * PL : p * PL + layout.piece_size(p)])
    st.ensure_files()
    return layout, st


def bits(s: str) -> bitarray:
    return bitarray(s, endian="big")


def test_no_record_is_none_and_save_reopen_roundtrip(tmp_path: Path) -> None:
    layout, st = make(tmp_path / "data", [PL, 2 * PL, PL // 2])
    db = tmp_path / "state" / "completion.sqlite"
    with CompletionStore(db) as store:
        assert store.load(IH, layout) is None
        store.save_all(IH, layout, bits("1011"))
    with CompletionStore(db) as store:
        got = store.load(IH.lower(), layout)
        assert got is not None and got == bits("1011")
        assert store.known() == [IH.lower()]
        assert store.load(IH2, layout) is None
    # WAL mode was requested so readers never block the engine.
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    st.close()


def test_marks_are_batched_and_flushed(tmp_path: Path) -> None:
    layout, st = make(tmp_path / "data", [8 * PL])
    db = tmp_path / "c.sqlite"
    store = CompletionStore(db, batch_size=3)
    assert store.load(IH, layout) is None
    reader = CompletionStore(db)

    def on_disk() -> bitarray | None:
        return reader.load(IH, layout)

    store.mark(IH, 0, True)
    store.mark(IH, 1, True)
    assert on_disk() is None  # not committed yet: cheap per-piece marks
    store.mark(IH, 1, True)  # unchanged: does not count
    assert on_disk() is None
    store.mark(IH, 5, True)
    assert on_disk() == bits("11000100")
    store.mark(IH, 7, True)
    store.flush()
    assert on_disk() == bits("11000101")
    assert store.completed(IH) == bits("11000101")
    store.close()
    reader.close()
    st.close()


def test_mark_incomplete_commits_at_once(tmp_path: Path) -> None:
    layout, st = make(tmp_path / "data", [4 * PL])
    db = tmp_path / "c.sqlite"
    store = CompletionStore(db, batch_size=100)
    store.save_all(IH, layout, bits("1111"))
    store.mark(IH, 2, False)
    with CompletionStore(db) as other:
        assert other.load(IH, layout) == bits("1101")
    store.close()
    st.close()


def test_changed_mtime_size_or_missing_file_drops_its_pieces(tmp_path: Path) -> None:
    # f0: pieces 0-1; f1 spans pieces 1-3 (piece 1 shared); f2: piece 3-4; f3 empty.
    layout, st = make(tmp_path / "data", [PL + 100, 2 * PL, 2 * PL - 100, 0])
    st.close()
    db = tmp_path / "c.sqlite"
    with CompletionStore(db) as store:
        store.save_all(IH, layout, bits("11111"))
    with CompletionStore(db) as store:
        assert store.load(IH, layout) == bits("11111")  # nothing changed

    f0 = tmp_path / "data" / "t" / "f0"
    info = f0.stat()
    os.utime(f0, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
    with CompletionStore(db) as store:
        # f0's pieces 0 and 1 go, piece 1 even though it is shared with f1.
        assert store.load(IH, layout) == bits("00111")
        store.save_all(IH, layout, bits("11111"))  # re-verified: record the new mtime

    f2 = tmp_path / "data" / "t" / "f2"
    with f2.open("ab") as fh:
        fh.write(b"extra")
    with CompletionStore(db) as store:
        assert store.load(IH, layout) == bits("11100")
        store.save_all(IH, layout, bits("11111"))

    (tmp_path / "data" / "t" / "f1").unlink()
    (tmp_path / "data" / "t" / "f3").unlink()  # an empty file holds no piece
    with CompletionStore(db) as store:
        assert store.load(IH, layout) == bits("10001")


def test_pieces_completed_before_later_writes_survive_detach(tmp_path: Path) -> None:
    # Writing more of a file after its first pieces were recorded changes its
    # mtime; detach() (pause/shutdown) restats, so the next start trusts them.
    files = [LayoutFile(("t", "big"), 4 * PL, 0)]
    layout = Layout(files, PL, root=tmp_path / "data")
    st = FileStorage(layout)
    db = tmp_path / "c.sqlite"
    store = CompletionStore(db, batch_size=1)
    store.load(IH, st)
    st.write_block(0, 0, b"a" * PL)
    store.mark(IH, 0, True)
    big = tmp_path / "data" / "t" / "big"
    before = big.stat().st_mtime_ns
    st.write_block(2, 0, b"b" * PL)  # a partial piece elsewhere in the file
    os.utime(big, ns=(before + 5_000_000, before + 5_000_000))
    st.flush()
    store.detach(IH)
    with pytest.raises(KeyError):
        store.mark(IH, 1, True)
    store.close()
    with CompletionStore(db) as again:
        assert again.load(IH, st) == bits("1000")
    st.close()


def test_crash_without_detach_is_safe(tmp_path: Path) -> None:
    files = [LayoutFile(("t", "big"), 2 * PL, 0)]
    layout = Layout(files, PL, root=tmp_path / "data")
    st = FileStorage(layout)
    db = tmp_path / "c.sqlite"
    store = CompletionStore(db, batch_size=1)
    store.load(IH, layout)
    st.write_block(0, 0, b"a" * PL)
    store.mark(IH, 0, True)
    big = tmp_path / "data" / "t" / "big"
    t = big.stat().st_mtime_ns + 7_000_000
    os.utime(big, ns=(t, t))  # a later write nobody recorded
    # "crash": the store is never closed; a new process reads the database.
    with CompletionStore(db) as again:
        assert again.load(IH, layout) == bits("00")  # distrust, hash-check again
    assert layout.pieces_with_data_on_disk().tolist() == [True, False]
    st.close()


def test_piece_count_mismatch_and_forget(tmp_path: Path) -> None:
    layout, st = make(tmp_path / "data", [3 * PL])
    other, st2 = make(tmp_path / "other", [5 * PL])
    db = tmp_path / "c.sqlite"
    with CompletionStore(db) as store:
        store.save_all(IH, layout, bits("111"))
        store.save_all(IH2, other, bits("10101"))
        with pytest.raises(StorageError):
            store.save_all(IH, layout, bits("11"))
    with CompletionStore(db) as store:
        assert store.load(IH, other) is None  # a different torrent shape
        store.forget(IH)
        assert store.known() == [IH2]
        assert store.load(IH2, other) == bits("10101")
    with CompletionStore(db) as store:
        assert store.load(IH, layout) is None
    st.close()
    st2.close()


def test_info_hash_objects_and_memory_storage_source(tmp_path: Path) -> None:
    ih = InfoHash(v1=bytes(range(20)))
    layout = Layout([LayoutFile(("x",), 3 * PL, 0)], PL)
    mem = MemoryStorage(layout)
    mem.write_block(1, 0, b"q" * PL)
    db = tmp_path / "c.sqlite"
    with CompletionStore(db) as store:
        assert store.load(ih, mem) is None
        store.mark(ih, 1, True)
    with CompletionStore(db) as store:
        assert store.load(ih.hex(), mem) == bits("010")
    mem.write_block(2, 0, b"r")  # memory "mtime" is a write counter
    with CompletionStore(db) as store:
        assert store.load(ih, mem) == bits("000")


def test_bad_calls(tmp_path: Path) -> None:
    layout, st = make(tmp_path / "data", [2 * PL])
    with CompletionStore(tmp_path / "c.sqlite") as store:
        with pytest.raises(KeyError):
            store.mark(IH, 0, True)
        store.load(IH, layout)
        with pytest.raises(StorageError):
            store.mark(IH, 2, True)
    st.close()


def test_corrupt_database_is_storage_error(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError) as ei:
        CompletionStore(db)
    assert ei.value.filename == str(db)
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(StorageError):
        CompletionStore(tmp_path / "dir.sqlite")


def test_concurrent_marks_from_threads(tmp_path: Path) -> None:
    layouts = []
    for k in range(4):
        layout, st = make(tmp_path / f"d{k}", [40 * PL])
        st.close()
        layouts.append(layout)
    db = tmp_path / "c.sqlite"
    store = CompletionStore(db, batch_size=7)
    hashes = [f"{k:040x}" for k in range(4)]
    for h, layout in zip(hashes, layouts, strict=True):
        store.load(h, layout)
    errors: list[BaseException] = []

    def work(h: str, pieces: list[int]) -> None:
        try:
            for p in pieces:
                store.mark(h, p, True)
        except BaseException as e:
            errors.append(e)

    threads = [
        threading.Thread(target=work, args=(h, list(range(j, 40, 2))))
        for h in hashes
        for j in (0, 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store.close()
    with CompletionStore(db) as again:
        for h, layout in zip(hashes, layouts, strict=True):
            got = again.load(h, layout)
            assert got is not None and got.all()
