"""FileStorage against the real file system: layouts, sparse files, the fd LRU, errors."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.errors import StorageError
from core.storage import (
    DataMissingError,
    FileStorage,
    Layout,
    LayoutFile,
    Storage,
    UnsafePathError,
)

BLOCK = 16 * 1024


def build_layout(
    root: Path, sizes: list[int], piece_length: int, pad_to_piece: bool = False
) -> tuple[Layout, bytes]:
    """Files ``t/f<i>`` of the given sizes laid end to end, plus random payload bytes.

    With ``pad_to_piece`` a BEP 47 padding file follows every file not ending
    on a piece boundary (as hybrid torrents do).  The payload is the whole
    piece space with zeros where padding is.
    """
    rng = random.Random(sum(sizes) * 31 + piece_length)
    files: list[LayoutFile] = []
    space = bytearray()
    for i, size in enumerate(sizes):
        files.append(LayoutFile(("t", f"d{i % 3}", f"f{i}"), size, len(space)))
        space += rng.randbytes(size)
        tail = len(space) % piece_length
        if pad_to_piece and tail and size:
            pad = piece_length - tail
            files.append(LayoutFile(("t", ".pad", str(pad)), pad, len(space), True))
            space += bytes(pad)
    return Layout(files, piece_length, root=root), bytes(space)


def blocks(layout: Layout, block: int) -> list[tuple[int, int, int]]:
    out = []
    for p in range(layout.num_pieces):
        size = layout.piece_size(p)
        out += [(p, b, min(block, size - b)) for b in range(0, size, block)]
    return out


def write_all(storage: Storage, layout: Layout, space: bytes, block: int, seed: int = 1) -> None:
    todo = blocks(layout, block)
    random.Random(seed).shuffle(todo)
    for p, b, n in todo:
        at = p * layout.piece_length + b
        storage.write_block(p, b, space[at : at + n])


def check_files(root: Path, layout: Layout, space: bytes) -> None:
    for f in layout.files:
        path = root.joinpath(*f.path)
        if f.is_padding:
            assert not path.exists()
        else:
            assert path.read_bytes() == space[f.offset : f.end], f.path


def test_spanning_blocks_many_small_and_empty_files(tmp_path: Path) -> None:
    sizes = [0, 1, 7, 0, 100, 16383, 16385, 0, 3, 40000, 0, 5, 70001, 0]
    layout, space = build_layout(tmp_path, sizes, piece_length=32 * 1024)
    assert layout.piece_size(layout.num_pieces - 1) == len(space) % (32 * 1024)  # odd last piece
    st = FileStorage(layout)
    # 5000-byte blocks straddle several files and piece-internal file boundaries.
    write_all(st, layout, space, block=5000)
    st.ensure_files()
    check_files(tmp_path, layout, space)
    for p in range(layout.num_pieces):
        start = p * layout.piece_length
        piece = space[start : start + layout.piece_size(p)]
        assert st.hash_piece(p) == hashlib.sha1(piece).digest()
        assert st.hash_piece(p, "sha256") == hashlib.sha256(piece).digest()
        assert st.read_piece(p) == piece
    # A block covering a zero-length file and many tiny ones in one read.
    assert st.read_block(0, 0, 200) == space[:200]
    st.close()


def test_zero_length_files_appear_only_on_ensure_files(tmp_path: Path) -> None:
    layout, space = build_layout(tmp_path, [0, 10, 0], piece_length=BLOCK)
    st = FileStorage(layout)
    st.write_block(0, 0, space)
    assert not (tmp_path / "t/d0/f0").exists()
    assert (tmp_path / "t/d1/f1").read_bytes() == space
    st.ensure_files()
    assert (tmp_path / "t/d0/f0").stat().st_size == 0
    assert (tmp_path / "t/d2/f2").stat().st_size == 0
    st.close()


def test_padding_files_never_created_read_as_zeros(tmp_path: Path) -> None:
    layout, space = build_layout(tmp_path, [1000, 20000, 5], piece_length=BLOCK, pad_to_piece=True)
    assert any(f.is_padding for f in layout.files)
    st = FileStorage(layout)
    # Peers send padding bytes too; even non-zero ones must never reach disk.
    noisy = bytearray(space)
    for f in layout.files:
        if f.is_padding:
            noisy[f.offset : f.end] = b"\xff" * f.length
    write_all(st, layout, bytes(noisy), block=BLOCK)
    st.ensure_files()
    assert not (tmp_path / "t/.pad").exists()
    check_files(tmp_path, layout, space)
    for p in range(layout.num_pieces):
        start = p * layout.piece_length
        assert st.hash_piece(p) == hashlib.sha1(space[start : start + BLOCK]).digest()
    st.close()


def test_v2_style_gaps_short_last_piece_per_file(tmp_path: Path) -> None:
    # Pure v2: each file starts on a piece boundary, no padding entries.
    pl = BLOCK
    files = [
        LayoutFile(("t", "a"), 20000, 0),
        LayoutFile(("t", "b"), 100, 2 * pl),
        LayoutFile(("t", "c"), pl, 3 * pl),
    ]
    layout = Layout(files, pl, total_length=4 * pl, root=tmp_path)
    assert [layout.piece_size(p) for p in range(4)] == [pl, 20000 - pl, 100, pl]
    st = FileStorage(layout)
    data_a, data_b = os.urandom(20000), os.urandom(100)
    st.write_block(0, 0, data_a[:pl])
    st.write_block(1, 0, data_a[pl:])
    st.write_block(2, 0, data_b)
    assert st.hash_piece(1) == hashlib.sha1(data_a[pl:]).digest()
    assert st.read_piece(2) == data_b
    with pytest.raises(StorageError):
        st.write_block(2, 0, bytes(101))  # past the file, into the gap
    st.close()


def test_lru_eviction_many_files_every_byte_verified(tmp_path: Path) -> None:
    rng = random.Random(7)
    sizes = [rng.randrange(0, 3000) for _ in range(300)]
    layout, space = build_layout(tmp_path, sizes, piece_length=BLOCK)
    fds_before = len(os.listdir("/proc/self/fd"))
    st = FileStorage(layout, max_open=16)
    write_all(st, layout, space, block=4096, seed=3)
    assert st.open_count() <= 16
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 16
    # Reads in another random order force evictions again.
    order = blocks(layout, 1000)
    rng.shuffle(order)
    for p, b, n in order:
        at = p * layout.piece_length + b
        assert st.read_block(p, b, n) == space[at : at + n]
        assert st.open_count() <= 16
    st.ensure_files()
    assert st.open_count() <= 16
    check_files(tmp_path, layout, space)
    st.close()
    assert st.open_count() == 0
    assert len(os.listdir("/proc/self/fd")) <= fds_before


def test_sparse_file_only_last_block_written(tmp_path: Path) -> None:
    length = 256 << 20
    layout = Layout([LayoutFile(("big.bin",), length, 0)], 1 << 20, root=tmp_path)
    st = FileStorage(layout)
    last = layout.num_pieces - 1
    st.write_block(last, (1 << 20) - BLOCK, b"\x01" * BLOCK)
    st.close()
    info = (tmp_path / "big.bin").stat()
    assert info.st_size == length
    assert info.st_blocks * 512 < 1 << 20  # only the written block is allocated
    have = layout.pieces_with_data_on_disk()
    assert have.count() == 1 and have[last]


def test_missing_data_is_data_missing_error(tmp_path: Path) -> None:
    layout, _ = build_layout(tmp_path, [BLOCK, BLOCK], piece_length=BLOCK)
    st = FileStorage(layout)
    with pytest.raises(DataMissingError) as ei:
        st.read_block(1, 0, 10)
    assert ei.value.errno == errno.ENOENT
    assert ei.value.filename.endswith("f1")
    with pytest.raises(DataMissingError):
        st.hash_piece(0)
    # A file shorter than the torrent says (someone else's copy) is "missing" past its end.
    path = tmp_path / "t/d0/f0"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 100)
    with pytest.raises(DataMissingError):
        st.read_block(0, 50, 100)
    assert st.read_block(0, 0, 100) == b"x" * 100
    st.close()


def test_existing_complete_copy_is_read_and_hashes(tmp_path: Path) -> None:
    layout, space = build_layout(tmp_path, [5000, 0, 30000], piece_length=BLOCK)
    for f in layout.files:
        path = tmp_path.joinpath(*f.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(space[f.offset : f.end])
    st = FileStorage(layout)
    assert layout.pieces_with_data_on_disk().all()
    for p in range(layout.num_pieces):
        start = p * BLOCK
        assert st.hash_piece(p) == hashlib.sha1(space[start : start + BLOCK]).digest()
    st.close()


def test_symlinked_directory_escaping_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "t").symlink_to(outside, target_is_directory=True)
    layout, space = build_layout(root, [100], piece_length=BLOCK)
    st = FileStorage(layout)
    with pytest.raises(UnsafePathError) as ei:
        st.write_block(0, 0, space)
    assert ei.value.errno == errno.EXDEV
    with pytest.raises(UnsafePathError):
        st.ensure_files()
    assert list(outside.iterdir()) == []
    assert layout.file_sizes_and_mtimes() == [None]
    assert not layout.pieces_with_data_on_disk().any()
    st.close()


def test_symlinked_file_escaping_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "t" / "d0").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (root / "t" / "d0" / "f0").symlink_to(victim)
    layout, space = build_layout(root, [8], piece_length=BLOCK)
    st = FileStorage(layout)
    with pytest.raises(UnsafePathError):
        st.write_block(0, 0, space)
    with pytest.raises(UnsafePathError):
        st.read_block(0, 0, 8)
    assert victim.read_bytes() == b"precious"
    st.close()


def test_symlink_inside_root_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "t").symlink_to(tmp_path / "real", target_is_directory=True)
    layout, space = build_layout(tmp_path, [10], piece_length=BLOCK)
    st = FileStorage(layout)
    st.write_block(0, 0, space)
    assert (tmp_path / "real/d0/f0").read_bytes() == space
    st.close()


def test_unsafe_components_rejected_at_layout() -> None:
    for bad in [("..", "x"), ("a", ""), ("a/b",), ("a", "."), ("nul\x00",), ()]:
        with pytest.raises(UnsafePathError):
            Layout([LayoutFile(bad, 1, 0)], BLOCK, root="/tmp")
    # The root "/" must not turn the containment prefix into "//".
    top = Layout([LayoutFile(("tmp", "x"), 1, 0)], BLOCK, root="/")
    assert top.resolve(0) == os.path.join(os.path.realpath("/tmp"), "x")


def test_directory_in_place_of_file_is_storage_error(tmp_path: Path) -> None:
    layout, space = build_layout(tmp_path, [10], piece_length=BLOCK)
    (tmp_path / "t/d0/f0").mkdir(parents=True)
    st = FileStorage(layout)
    with pytest.raises(StorageError) as ei:
        st.write_block(0, 0, space)
    assert ei.value.errno == errno.EISDIR
    assert ei.value.filename == str(tmp_path / "t/d0/f0")
    assert "Is a directory" in str(ei.value)
    st.close()


@contextmanager
def mounted(args: list[str], target: Path) -> Iterator[None]:
    """Mount something for the duration of a test; skip if mounting is not allowed."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    r = subprocess.run(["mount", *args, str(target)], capture_output=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"mount not permitted: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_full_disk_is_storage_error_enospc(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted(["-t", "tmpfs", "-o", "size=1m", "tmpfs"], disk):
        layout = Layout([LayoutFile(("t", "huge"), 4 << 20, 0)], 1 << 20, root=disk)
        st = FileStorage(layout)
        with pytest.raises(StorageError) as ei:
            for p in range(4):
                for b in range(0, 1 << 20, BLOCK):
                    st.write_block(p, b, b"\xaa" * BLOCK)
        assert ei.value.errno == errno.ENOSPC
        assert "No space left on device" in str(ei.value)
        assert ei.value.filename == str(disk / "t" / "huge")
        st.close()


def test_read_only_filesystem_is_storage_error_erofs(tmp_path: Path) -> None:
    # Root ignores permission bits, so a read-only bind mount stands in for
    # an unwritable directory.
    ro = tmp_path / "ro"
    ro.mkdir()
    layout, space = build_layout(ro, [100], piece_length=BLOCK)
    with mounted(["--bind", str(ro)], ro):
        r = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True, check=False
        )
        if r.returncode != 0:
            pytest.skip("read-only remount not permitted")
        st = FileStorage(layout)
        with pytest.raises(StorageError) as ei:
            st.write_block(0, 0, space)
        assert ei.value.errno == errno.EROFS
        assert "Read-only file system" in str(ei.value)
        st.close()


def test_unwritable_directory_is_storage_error_eacces() -> None:
    # Root ignores permission bits: as root, run the write as user "nobody".
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root ignores permission bits and setpriv is missing")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    base = Path(tempfile.mkdtemp(prefix="storage-eacces-"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir()
        if prefix:
            os.chown(locked, 65534, 65534)
        locked.chmod(0o500)
        script = textwrap.dedent(
            f"""
            from core.errors import StorageError
            from core.storage import FileStorage, Layout, LayoutFile
            layout = Layout([LayoutFile(("t", "x"), 10, 0)], 16384, root={str(locked)!r})
            try:
                FileStorage(layout).write_block(0, 0, b"a" * 10)
            except StorageError as e:
                print(e.errno, e.filename)
            """
        )
        r = subprocess.run(
            [*prefix, sys.executable, "-c", script],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent.parent,
            timeout=30,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [str(errno.EACCES), str(locked / "t")]
    finally:
        locked.chmod(0o700)
        shutil.rmtree(base)


def test_file_size_limit_is_storage_error_efbig(tmp_path: Path) -> None:
    # RLIMIT_FSIZE in a child process: the kernel refuses to grow a file past
    # the limit (SIGXFSZ is ignored by Python, so the write fails with EFBIG).
    script = textwrap.dedent(
        f"""
        import errno, resource
        from core.errors import StorageError
        from core.storage import FileStorage, Layout, LayoutFile
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        layout = Layout([LayoutFile(("small",), 1000, 0), LayoutFile(("big",), 2 << 20, 1000)],
                        1 << 20, root={str(tmp_path)!r})
        st = FileStorage(layout)
        st.write_block(0, 0, b"a" * 1000)
        try:
            st.write_block(0, 1000, b"b" * 100)
        except StorageError as e:
            print(e.errno == errno.EFBIG, e.filename)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", str(tmp_path / "big")]
    assert (tmp_path / "small").read_bytes() == b"a" * 1000


def test_concurrent_writers_and_readers(tmp_path: Path) -> None:
    rng = random.Random(11)
    sizes = [rng.randrange(0, 50000) for _ in range(60)]
    layout, space = build_layout(tmp_path, sizes, piece_length=32 * 1024)
    st = FileStorage(layout, max_open=4)  # tiny cache: eviction races with use
    todo = blocks(layout, 6000)
    rng.shuffle(todo)
    errors: list[BaseException] = []

    def work(part: list[tuple[int, int, int]]) -> None:
        try:
            for p, b, n in part:
                at = p * layout.piece_length + b
                st.write_block(p, b, space[at : at + n])
                assert st.read_block(p, b, n) == space[at : at + n]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(todo[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for p in range(layout.num_pieces):
        start = p * layout.piece_length
        want = hashlib.sha1(space[start : start + layout.piece_size(p)]).digest()
        assert st.hash_piece(p) == want
    st.flush()
    st.ensure_files()
    st.close()
    assert st.open_count() == 0
    check_files(tmp_path, layout, space)


def test_bad_ranges_and_closed_storage(tmp_path: Path) -> None:
    layout, _ = build_layout(tmp_path, [BLOCK + 10], piece_length=BLOCK)
    st = FileStorage(layout)
    for piece, begin, n in [(2, 0, 1), (-1, 0, 1), (1, 0, 11), (0, -1, 1), (0, BLOCK, 1)]:
        with pytest.raises(StorageError):
            st.write_block(piece, begin, bytes(n))
        with pytest.raises(StorageError):
            st.read_block(piece, begin, n)
    st.write_block(1, 0, b"z" * 10)
    st.close()
    with pytest.raises(StorageError) as ei:
        st.read_block(1, 0, 10)
    assert ei.value.errno == errno.EBADF


def test_delete_data_removes_only_our_files(tmp_path: Path) -> None:
    layout, space = build_layout(tmp_path, [10, 0, 20], piece_length=BLOCK)
    st = FileStorage(layout)
    write_all(st, layout, space, BLOCK)
    st.ensure_files()
    (tmp_path / "t" / "d2" / "theirs.txt").write_text("keep")
    (tmp_path / "unrelated").write_text("keep")
    st.delete_data()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d2", "t", "theirs.txt", "unrelated"]


def test_flush_and_reopen_after_close(tmp_path: Path) -> None:
    layout, space = build_layout(tmp_path, [3000, 3000], piece_length=BLOCK)
    st = FileStorage(layout)
    st.write_block(0, 0, space)
    st.flush()
    st.close()
    again = FileStorage(layout)
    assert again.read_piece(0) == space
    assert [s is not None for s in again.file_sizes_and_mtimes()] == [True, True]
    again.close()


def _split(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


def test_hash_blocks_streams_merkle_leaves(tmp_path: Path) -> None:
    # A 4 MiB piece spanning two files and a padding file: leaves are computed
    # in bounded chunks yet match hashing the whole piece block by block.
    pl = 4 << 20
    layout, space = build_layout(tmp_path, [3 << 20, 100, 5000], piece_length=pl)
    st: Storage = FileStorage(layout)  # mypy checks the protocol here
    assert isinstance(st, Storage)
    write_all(st, layout, space, block=BLOCK)
    piece = space[:pl]
    assert st.hash_blocks(0) == [hashlib.sha256(b).digest() for b in _split(piece, BLOCK)]
    assert st.hash_blocks(0, 1000, "sha1") == [
        hashlib.sha1(b).digest() for b in _split(piece, 1000)
    ]
    st.close()


def test_layout_from_info_matches_metainfo_paths(tmp_path: Path) -> None:
    create = pytest.importorskip("core.formats.create")
    src = tmp_path / "src" / "album"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(40000))
    (src / "empty").write_bytes(b"")
    (src / "sub" / "b.bin").write_bytes(os.urandom(70000))
    for version in ("v1", "hybrid", "v2"):
        meta = create.create_torrent(src, piece_length=BLOCK, version=version)
        info = meta.info
        layout = Layout.from_info(info, tmp_path / "src")
        assert layout.num_pieces == info.num_pieces
        for i, entry in enumerate(info.files):
            if not entry.is_padding:
                assert layout.resolve(i) == str(info.file_path(entry, tmp_path / "src"))
        st = FileStorage(layout)
        for p in range(layout.num_pieces):
            assert layout.piece_size(p) == info.piece_size(p)
            if info.is_v1:
                assert st.hash_piece(p) == info.piece_hash_v1(p)
            else:
                assert meta.verify_piece_v2(p, st.read_piece(p))
                leaves = [hashlib.sha256(b).digest() for b in _split(st.read_piece(p), BLOCK)]
                assert st.hash_blocks(p) == leaves
        st.close()


# -- BEP 47 attributes: symlinks and executables ----------------------------------


def _link_layout(root: Path) -> Layout:
    files = [
        LayoutFile(("t", "d", "a"), 10, 0),
        LayoutFile(("t", "to_a"), 0, 10, symlink=("t", "d", "a")),
        LayoutFile(("t", "d", "to_dir"), 0, 10, symlink=("t", "d")),
        LayoutFile(("t", "run"), 5, 10, executable=True),
    ]
    return Layout(files, BLOCK, root=root)


def test_symlinks_created_relative_and_deleted_as_links(tmp_path: Path) -> None:
    s = FileStorage(_link_layout(tmp_path))
    s.ensure_files()
    assert os.readlink(tmp_path / "t" / "to_a") == "d/a"
    assert os.readlink(tmp_path / "t" / "d" / "to_dir") == "."
    assert os.stat(tmp_path / "t" / "run").st_mode & 0o100
    assert s.file_sizes_and_mtimes()[1] is None  # a link holds no data to track
    s.ensure_files()  # idempotent: existing links are left alone
    s.delete_data()
    assert list(tmp_path.iterdir()) == []


def test_symlink_refused_by_the_file_system_becomes_an_empty_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> None:
        raise OSError(errno.EPERM, "symlinks not supported")

    monkeypatch.setattr(os, "symlink", refuse)
    s = FileStorage(_link_layout(tmp_path))
    try:
        s.ensure_files()
    finally:
        s.close()
    link = tmp_path / "t" / "to_a"
    assert not link.is_symlink() and link.stat().st_size == 0


def test_symlink_layout_checks_its_target() -> None:
    with pytest.raises(UnsafePathError):
        Layout([LayoutFile(("t", "l"), 0, 0, symlink=("t", ".."))], BLOCK)
    with pytest.raises(StorageError, match="symlink"):
        Layout([LayoutFile(("t", "l"), 5, 0, symlink=("t", "a"))], BLOCK)


def test_symlink_path_is_not_followed_when_resolved(tmp_path: Path) -> None:
    # a link at a symlink entry's path that points outside is never written
    # through: resolve() names the link itself
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "t").mkdir(parents=True)
    (root / "t" / "to_a").symlink_to(outside)
    layout = _link_layout(root)
    assert layout.resolve(1) == str(root.resolve() / "t" / "to_a")
    s = FileStorage(layout)
    try:
        s.ensure_files()
    finally:
        s.close()
    assert list(outside.iterdir()) == []
