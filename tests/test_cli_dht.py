"""``torrent dht ...`` and the DHT flags of ``download``, ``cat`` and ``metainfo-from-magnet``.

Argument errors run ``main()`` in-process and need no network.  The output
format and the exit statuses are pinned against a scripted stand-in for the
DHT node (injected through ``dht_cmd.open_service``), so a case can make
the DHT answer, fail or hang at will.  The end-to-end cases run the real
command (``main()`` in a worker thread, its own event loop) against real
:class:`~core.engine.dht_service.DhtService` nodes on 127.0.0.1 in the test's
loop: get-peers finding an announcer, announce, sample, and BEP 44 put/get
round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import socket
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from core.cli import dht_cmd
from core.cli.download_cmd import build_config
from core.cli.main import build_parser, main
from core.dht.events import LookupFinished
from core.dht.items import Item, public_key
from core.dht.types import DhtSettings
from core.engine.dht_service import DhtService
from core.errors import DhtError
from core.formats import bencoding
from core.formats.create import create_torrent

IH = bytes.fromhex("00112233445566778899aabbccddeeff00112233")


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The exit status of ``torrent ARGV`` (argparse's SystemExit included) and its stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


# --------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["ping", "nonsense"], "'nonsense': expected HOST:PORT"),
        (["ping", "127.0.0.1:0"], "port must be 1-65535"),
        (["ping", "::1:6881"], "[ADDR]:PORT"),
        (["sample", "127.0.0.1:99999"], "port must be 1-65535"),
        (["sample", "127.0.0.1:6881", "--target", "abc"], "--target 'abc': expected 40 hex"),
        (["ping", "127.0.0.1:6881", "--timeout", "0"], "--timeout must be positive"),
        (["ping", "127.0.0.1:6881", "--port", "70000"], "--dht-port must be 0-65535"),
        (["get-peers", "xyz"], "'xyz' is not an info-hash"),
        (["get-peers", IH.hex(), "--dht-bootstrap", "router"], "--dht-bootstrap 'router'"),
        (["get-peers", IH.hex()[:-1] + "g"], "is not an info-hash"),
        (["announce", IH.hex()], "give --port N"),
        (["announce", IH.hex(), "--port", "0"], "--port must be 1-65535"),
        (["put"], "give VALUE"),
        (["put", "x" * 1000], "bytes bencoded; BEP 44 allows 1000"),
        (["put", "v", "--seq", "1"], "--seq and --salt need --key"),
        (["put", "v", "--key", "k.seed"], "needs --seq N"),
        (["put", "v", "--key", "k.seed", "--seq", "-1"], "--seq must be 0-"),
        (["put", "v", "--key", "k.seed", "--seq", "1", "--salt", "s" * 65], "--salt is 65 bytes"),
        (["put", "v", "--key-gen", "k.seed"], "--key-gen SEEDFILE only creates a key"),
        (["get"], "give TARGET"),
        (["get", "00" * 19], "TARGET '" + "00" * 19 + "': expected 40 hex digits"),
        (["get", "--key", "ab"], "--key 'ab': expected 64 hex digits"),
        (["get", "00" * 20, "--key", "11" * 32], "is not the target of --key"),
    ],
)
def test_bad_arguments_are_usage_errors(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _exit(["dht", *argv], capsys)
    assert code == 2
    assert err.startswith("torrent: error: ") and err.count("\n") == 1, err
    assert named in err


@pytest.mark.parametrize(
    "argv",
    [
        ["ping"],
        ["ping", "127.0.0.1:1", "--port", "http"],
        ["frobnicate"],
        ["announce", IH.hex(), "--timeout", "soon"],
    ],
)
def test_argparse_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit(["dht", *argv], capsys)
    assert code == 2 and "Traceback" not in err


def test_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "dht" in out and "get-peers" in out
    with pytest.raises(SystemExit):
        main(["dht", "--help"])
    out = capsys.readouterr().out
    for action in ("ping", "get-peers", "announce", "sample", "put", "get"):
        assert action in out
    with pytest.raises(SystemExit):
        main(["dht", "announce", "--help"])
    out = capsys.readouterr().out
    for option in ("--port", "--dht-port", "--implied-port", "--dht-bootstrap", "--state-dir"):
        assert option in out
    for flags in (["download", "x"], ["cat", "x", "y"], ["metainfo-from-magnet", "m", "-o", "f"]):
        with pytest.raises(SystemExit):
            main([*flags[:1], "--help"])
        out = capsys.readouterr().out
        assert "--no-dht" in out and "--dht-bootstrap" in out


def _ns(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["dht", *argv])


def test_service_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTORRENT_STATE_DIR", raising=False)
    # Direct queries: no table, no state file, IPv6 only when the target is IPv6.
    opts = dht_cmd.service_options(_ns("ping", "1.2.3.4:5"), named=(("1.2.3.4", 5),), lookup=False)
    assert opts == dht_cmd.ServiceOptions(("0.0.0.0",), 0, lookup=False)
    opts = dht_cmd.service_options(
        _ns("ping", "[::1]:5", "--dht-port", "7"), named=(("::1", 5),), lookup=False
    )
    assert opts.addresses == ("0.0.0.0", "::") and opts.port == 7
    # Lookups: the given bootstrap nodes replace the default routers.
    args = _ns(
        "get-peers",
        IH.hex(),
        "--dht-bootstrap",
        "127.0.0.1:6881",
        "--dht-bootstrap",
        " [::1]:6882",
        "--state-dir",
        str(tmp_path),
        "--listen",
        "127.0.0.1",
    )
    opts = dht_cmd.service_options(args, lookup=True)
    assert opts.lookup and opts.bootstrap == ("127.0.0.1:6881", "[::1]:6882")
    assert opts.state_path == tmp_path / "dht.dat" and opts.addresses == ("127.0.0.1",)
    # Without them, the config's default routers and the default data dir (or the env's).
    from core.config import DEFAULT_BOOTSTRAP

    monkeypatch.setenv("PYTORRENT_STATE_DIR", str(tmp_path / "env"))
    opts = dht_cmd.service_options(_ns("get", "00" * 20), lookup=True)
    assert opts.bootstrap == DEFAULT_BOOTSTRAP and opts.state_path == tmp_path / "env" / "dht.dat"


def test_download_dht_flags_reach_the_config(tmp_path: Path) -> None:
    def config(*argv: str) -> Any:
        args = build_parser().parse_args(["download", "x.torrent", "--state-dir", "s", *argv])
        return build_config(args, tmp_path)

    cfg = config()
    assert cfg.dht
    default = cfg.dht_bootstrap_nodes
    assert len(default) > 0
    cfg = config("--dht-bootstrap", "127.0.0.1:6881", "--dht-bootstrap", "[::1]:7")
    assert cfg.dht and cfg.dht_bootstrap_nodes == ("127.0.0.1:6881", "[::1]:7")
    cfg = config("--no-dht")
    assert not cfg.dht and cfg.dht_bootstrap_nodes == default


@pytest.mark.parametrize(
    "argv",
    [
        ["download", "x.torrent", "--no-dht", "--dht-bootstrap", "127.0.0.1:1"],
        ["download", "x.torrent", "--dht-bootstrap", "nope"],
        ["cat", "x.torrent", "f", "--dht-bootstrap", "127.0.0.1:0"],
        ["metainfo-from-magnet", "magnet:?xt=urn:btih:" + IH.hex(), "-o", "f", "--no-dht"],
    ],
)
def test_download_dht_flag_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit(argv, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "--dht-bootstrap" in err or "--no-dht" in err


def test_trackerless_magnet_without_dht_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    magnet = "magnet:?xt=urn:btih:" + IH.hex()
    code, err = _exit(
        ["metainfo-from-magnet", magnet, "-o", str(tmp_path / "f"), "--no-dht"], capsys
    )
    assert code == 2 and "--no-dht turns the DHT off" in err


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("private", "flags"), [(True, []), (False, ["--no-dht"])])
def test_trackerless_torrent_the_dht_cannot_serve_fails_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], private: bool, flags: list[str]
) -> None:
    """No trackers, no --peer, and no DHT (private, or --no-dht): nobody to ask, said at once."""
    payload = tmp_path / "src" / "p.bin"
    payload.parent.mkdir()
    payload.write_bytes(os.urandom(40_000))
    tf = tmp_path / "p.torrent"
    tf.write_bytes(create_torrent(payload, piece_length=16384, private=private).to_bytes())
    base = ["--listen", "127.0.0.1", "--state-dir", str(tmp_path / "s"), *flags]
    argv = ["download", str(tf), "-o", str(tmp_path / "out"), "-q", *base]
    assert main(argv) == 1
    why = "it is private, which rules out the DHT" if private else "--no-dht turns the DHT off"
    assert capsys.readouterr().err == (
        "torrent: error: no peers to download from: give --peer HOST:PORT "
        f"(the torrent has no trackers and {why})\n"
    )
    assert main(["cat", str(tf), "p.bin", *base]) == 1
    assert capsys.readouterr().err == (
        "torrent: error: no peers to read from: give --peer HOST:PORT "
        f"(the torrent has no trackers and {why})\n"
    )


# --------------------------------------------------------------------- seed files


def test_key_gen_makes_a_private_seed_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_file = tmp_path / "me.seed"
    assert main(["dht", "put", "--key-gen", str(seed_file)]) == 0
    out = capsys.readouterr().out.strip()
    seed = seed_file.read_bytes()
    assert len(seed) == 32 and out == public_key(seed).hex()
    assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600
    code, err = _exit(["dht", "put", "--key-gen", str(seed_file)], capsys)
    assert code == 1 and f"{seed_file}: already exists" in err
    assert seed_file.read_bytes() == seed


def test_seed_files_raw_or_hex(tmp_path: Path) -> None:
    seed = os.urandom(32)
    (tmp_path / "raw").write_bytes(seed)
    (tmp_path / "hex").write_text(seed.hex() + "\n")
    assert dht_cmd.read_seed(str(tmp_path / "raw")) == seed
    assert dht_cmd.read_seed(str(tmp_path / "hex")) == seed


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "got 0 bytes"),
        (b"x" * 31, "got 31 bytes"),
        (b"z" * 64, "got 64 bytes"),
        (b"\x00" * 4096, "got more"),
    ],
)
def test_bad_seed_file_is_a_bad_input(
    tmp_path: Path, content: bytes, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_file = tmp_path / "bad.seed"
    seed_file.write_bytes(content)
    code, err = _exit(["dht", "put", "v", "--key", str(seed_file), "--seq", "1"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"torrent: error: {seed_file}: not an ed25519 seed") and says in err


def test_missing_seed_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.seed"
    code, err = _exit(["dht", "put", "v", "--key", str(missing), "--seq", "1"], capsys)
    assert code == 1 and str(missing) in err and "Traceback" not in err


def test_show_value() -> None:
    assert dht_cmd.show_value(b"12:Hello World!") == "Hello World!"
    assert dht_cmd.show_value(bencoding.encode(b"\xff\x00")) == '"ff00"'
    assert dht_cmd.show_value(bencoding.encode({b"a": [1, b"b"]})) == '{"a": [1, "b"]}'
    assert dht_cmd.show_value(b"i42e") == "42"


# --------------------------------------------------------------------- against a stand-in node


class FakeDht:
    """What the commands use of DhtService, answering as a test scripts it."""

    def __init__(self, options: dht_cmd.ServiceOptions) -> None:
        self.options = options
        self.port = 40000
        self.node_id = b"\x01" * 20
        self.closed = False
        self.bootstrapped = True
        self.calls: list[tuple[str, Any]] = []
        self.ping_answer: bytes | Exception = b"\xab" * 20
        self.peer_batches: list[tuple[tuple[str, int], ...]] = []
        self.lookup_hangs = False
        self.announced = 3
        self.items: dict[bytes, Item] = {}

    async def wait_bootstrapped(self, timeout: float) -> bool:
        self.calls.append(("wait_bootstrapped", timeout))
        return self.bootstrapped

    async def ping(self, addr: tuple[str, int], *, timeout: float = 5.0) -> bytes:
        self.calls.append(("ping", addr))
        if isinstance(self.ping_answer, Exception):
            raise self.ping_answer
        return self.ping_answer

    async def get_peers(
        self,
        info_hash: bytes,
        *,
        announce_port: int | None = None,
        implied_port: bool = False,
        on_peers: Callable[[tuple[tuple[str, int], ...]], None] | None = None,
    ) -> LookupFinished:
        self.calls.append(("get_peers", (info_hash, announce_port, implied_port)))
        for batch in self.peer_batches:
            if on_peers is not None:
                on_peers(batch)
            await asyncio.sleep(0)
        if self.lookup_hangs:
            await asyncio.sleep(3600)
        peers = len({p for b in self.peer_batches for p in b})
        announced = self.announced if announce_port is not None else 0
        kind = "announce" if announce_port is not None else "get_peers"
        return LookupFinished(1, kind, info_hash, (), peers, announced, 4, 17)

    async def get_item(self, target: bytes, *, salt: bytes = b"") -> Item | None:
        self.calls.append(("get_item", (target, salt)))
        return self.items.get(target)

    async def put_item(self, item: Item) -> int:
        self.calls.append(("put_item", item))
        self.items[item.target] = item
        return 5

    async def aclose(self) -> None:
        self.closed = True


class Fakes(list[FakeDht]):
    """Every stand-in node the commands opened, in order; ``script`` shapes the next ones."""

    def __init__(self) -> None:
        super().__init__()
        self.setups: list[Callable[[FakeDht], None]] = []

    def script(self, setup: Callable[[FakeDht], None]) -> None:
        self.setups.append(setup)

    async def open(self, options: dht_cmd.ServiceOptions) -> FakeDht:
        node = FakeDht(options)
        for setup in self.setups:
            setup(node)
        self.append(node)
        return node


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Fakes:
    fakes = Fakes()
    monkeypatch.setattr(dht_cmd, "open_service", fakes.open)
    monkeypatch.setenv("PYTORRENT_STATE_DIR", str(tmp_path / "state"))
    return fakes


def test_ping_prints_id_and_rtt(fake: Fakes, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dht", "ping", "127.0.0.1:6881"]) == 0
    out = capsys.readouterr().out
    head, rtt = out.strip().rsplit(" rtt=", 1)
    assert head == "127.0.0.1:6881 id=" + "ab" * 20
    assert rtt.endswith("ms") and float(rtt[:-2]) >= 0
    (node,) = fake
    assert node.calls == [("ping", ("127.0.0.1", 6881))]  # no bootstrap for a direct query
    assert not node.options.lookup and node.closed


def test_ping_resolves_names_and_fails_naming_the_node(
    fake: Fakes, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dht", "ping", "localhost:6881"]) == 0
    assert capsys.readouterr().out.startswith("127.0.0.1:6881 id=")
    fake.script(lambda n: setattr(n, "ping_answer", DhtError("timeout")))
    code, err = _exit(["dht", "ping", "127.0.0.1:6881"], capsys)
    assert code == 1 and err == "torrent: error: 127.0.0.1:6881: timeout\n"
    assert all(n.closed for n in fake)


def test_get_peers_streams_peers_then_a_summary(
    fake: Fakes, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    batches = [(("10.0.0.1", 1), ("10.0.0.2", 2)), (("10.0.0.1", 1), ("2001:db8::1", 3))]
    fake.script(lambda n: setattr(n, "peer_batches", batches))
    argv = ["dht", "get-peers", IH.hex(), "--dht-bootstrap", "127.0.0.1:1"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    assert cap.out.splitlines() == ["10.0.0.1:1", "10.0.0.2:2", "[2001:db8::1]:3"]
    assert cap.err.startswith("3 peers; 17 nodes queried, 4 rounds, ")
    (node,) = fake
    assert node.options.bootstrap == ("127.0.0.1:1",)
    assert node.options.state_path == tmp_path / "state" / "dht.dat"
    assert [c[0] for c in node.calls] == ["wait_bootstrapped", "get_peers"]
    assert node.calls[1][1] == (IH, None, False)


def test_get_peers_finding_nothing_exits_1(fake: Fakes, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit(["dht", "get-peers", IH.hex()], capsys)
    assert code == 1 and err.startswith(f"torrent: error: {IH.hex()}: no peers found: 0 peers;")
    assert err.count("\n") == 1


def test_get_peers_timeout_keeps_what_was_found(
    fake: Fakes, capsys: pytest.CaptureFixture[str]
) -> None:
    def hang(node: FakeDht) -> None:
        node.lookup_hangs = True
        node.peer_batches = [(("10.0.0.9", 9),)]

    fake.script(hang)
    assert main(["dht", "get-peers", IH.hex(), "--timeout", "0.5"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "10.0.0.9:9\n" and "stopped after --timeout 0.5s" in cap.err
    assert fake[0].closed


def test_get_peers_stops_when_its_reader_goes_away(fake: Fakes) -> None:
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    def hang(node: FakeDht) -> None:
        node.lookup_hangs = True
        node.peer_batches = [(("10.0.0.9", 9),)]

    fake.script(hang)
    args = build_parser().parse_args(["dht", "get-peers", IH.hex(), "--timeout", "30"])
    assert dht_cmd.run_get_peers(args, out=ClosedPipe()) == 0  # at once, not after 30 s
    assert fake[0].closed


def test_bootstrap_failure_names_the_nodes(fake: Fakes, capsys: pytest.CaptureFixture[str]) -> None:
    fake.script(lambda n: setattr(n, "bootstrapped", False))
    argv = ["dht", "get-peers", IH.hex(), "--dht-bootstrap", "127.0.0.1:9"]
    code, err = _exit(argv, capsys)
    assert code == 1
    assert err == "torrent: error: bootstrap failed: no DHT node answered (127.0.0.1:9)\n"
    assert [c[0] for c in fake[0].calls] == ["wait_bootstrapped"]


def test_announce_port_and_implied_port(fake: Fakes, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dht", "announce", IH.hex(), "--port", "6881"]) == 0
    assert capsys.readouterr().out == "announced to 3 nodes\n"
    assert fake[-1].calls[-1] == ("get_peers", (IH, 6881, False))
    assert main(["dht", "announce", IH.hex(), "--implied-port", "--dht-port", "0"]) == 0
    assert fake[-1].calls[-1] == ("get_peers", (IH, 40000, True))  # the node's own port
    fake.script(lambda n: setattr(n, "announced", 0))
    code, err = _exit(["dht", "announce", IH.hex(), "--port", "6881"], capsys)
    assert code == 1 and "no node accepted the announce" in err


def test_put_get_immutable_and_mutable(
    fake: Fakes, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stored: dict[bytes, Item] = {}
    fake.script(lambda n: setattr(n, "items", stored))
    assert main(["dht", "put", "Hello World!"]) == 0
    target = capsys.readouterr().out.strip()
    assert target == hashlib.sha1(b"12:Hello World!").hexdigest()  # BEP 44's example
    assert main(["dht", "get", target]) == 0
    cap = capsys.readouterr()
    assert cap.out == "Hello World!\n" and cap.err == ""
    seed_file = tmp_path / "k"
    assert main(["dht", "put", "--key-gen", str(seed_file)]) == 0
    pub = capsys.readouterr().out.strip()
    argv = ["dht", "put", "v2", "--key", str(seed_file), "--seq", "7", "--salt", "s"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    mtarget = cap.out.strip()
    assert mtarget == hashlib.sha1(bytes.fromhex(pub) + b"s").hexdigest()
    assert f"key {pub}, seq 7, salt 's'" in cap.err
    assert main(["dht", "get", "--key", pub, "--salt", "s"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "v2\n" and cap.err == f"seq 7  key {pub}  salt 's'\n"
    code, err = _exit(["dht", "get", "ff" * 20], capsys)
    assert code == 1 and err == f"torrent: error: {'ff' * 20}: not found\n"


# --------------------------------------------------------------------- end to end, real nodes

#: The remote nodes all share 127.0.0.1, so their per-IP query limit is lifted.
NET_SETTINGS = DhtSettings(query_timeout=0.5, query_rate_per_ip=10_000.0)
LOCAL = ("127.0.0.1",)


@pytest.fixture
async def net() -> AsyncIterator[list[DhtService]]:
    """Five DhtService nodes on 127.0.0.1, each with the others in its table."""
    nodes: list[DhtService] = []
    try:
        for _ in range(5):
            nodes.append(await DhtService.open(NET_SETTINGS, addresses=LOCAL))
        for node in nodes:
            node.add_nodes([f"127.0.0.1:{n.port}" for n in nodes if n is not node])
        async with asyncio.timeout(10):
            while any(n.stats().dht.nodes_total < len(nodes) - 1 for n in nodes):
                await asyncio.sleep(0.02)
        yield nodes
    finally:
        await asyncio.gather(*(n.aclose() for n in nodes))


async def _cli(tmp: Path, net: list[DhtService], *argv: str) -> int:
    """``torrent dht ARGV`` in a worker thread (its own loop), bootstrapped from ``net``."""
    args = ["dht", *argv, "--listen", "127.0.0.1"]
    if argv[0] not in ("ping", "sample"):
        args += ["--dht-bootstrap", f"127.0.0.1:{net[0].port}", "--state-dir", str(tmp)]
    args += [] if "--timeout" in argv else ["--timeout", "20"]

    def run() -> int:
        try:
            return main(args)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1

    return await asyncio.to_thread(run)


async def test_ping_a_real_node(
    net: list[DhtService], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _cli(tmp_path, net, "ping", f"127.0.0.1:{net[2].port}") == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"127.0.0.1:{net[2].port} id={net[2].node_id.hex()} rtt=")
    silent = _free_udp_port()
    assert await _cli(tmp_path, net, "ping", f"127.0.0.1:{silent}", "--timeout", "1") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"torrent: error: 127.0.0.1:{silent}: ") and err.count("\n") == 1


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_get_peers_finds_an_announcer(
    net: list[DhtService], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = await net[3].get_peers(IH, announce_port=6881)
    assert done.announced >= 1
    assert await _cli(tmp_path, net, "get-peers", IH.hex()) == 0
    cap = capsys.readouterr()
    assert "127.0.0.1:6881" in cap.out.splitlines()
    assert " nodes queried, " in cap.err and (tmp_path / "dht.dat").exists()
    # A torrent nobody announced: exit 1, one line.
    assert await _cli(tmp_path, net, "get-peers", "ee" * 20) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"torrent: error: {'ee' * 20}: no peers found") and err.count("\n") == 1


async def test_announce_then_others_find_us_and_sample_lists_it(
    net: list[DhtService], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = bytes.fromhex("aa" * 20)
    assert await _cli(tmp_path, net, "announce", other.hex(), "--port", "7777") == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("announced to ") and int(line.split()[2]) >= 1
    found: list[tuple[str, int]] = []
    await net[1].get_peers(other, on_peers=found.extend)
    assert ("127.0.0.1", 7777) in found
    # --implied-port: the nodes record the UDP port the command sent from.
    udp = _free_udp_port()
    third = bytes.fromhex("bb" * 20)
    argv = ["announce", third.hex(), "--implied-port", "--dht-port", str(udp)]
    assert await _cli(tmp_path, net, *argv) == 0
    found.clear()
    await net[2].get_peers(third, on_peers=found.extend)
    assert ("127.0.0.1", udp) in found
    # BEP 51: a node that stores the announce lists the info-hash.
    capsys.readouterr()
    assert await _cli(tmp_path, net, "sample", f"127.0.0.1:{net[0].port}") == 0
    cap = capsys.readouterr()
    assert other.hex() in cap.out.splitlines()
    assert cap.err.startswith(f"{len(cap.out.splitlines())} samples from 127.0.0.1:{net[0].port}")
    assert "interval " in cap.err and "num " in cap.err


async def test_put_get_round_trips(
    net: list[DhtService], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _cli(tmp_path, net, "put", "Hello World!") == 0
    target = capsys.readouterr().out.strip()
    assert target == hashlib.sha1(b"12:Hello World!").hexdigest()
    item = await net[4].get_item(bytes.fromhex(target))
    assert item is not None and item.value == b"12:Hello World!"
    assert await _cli(tmp_path, net, "get", target) == 0
    assert capsys.readouterr().out == "Hello World!\n"

    seed_file = tmp_path / "me.seed"
    assert main(["dht", "put", "--key-gen", str(seed_file)]) == 0
    pub = capsys.readouterr().out.strip()
    for seq, value in ((1, "first"), (2, "second")):
        argv = ["put", value, "--key", str(seed_file), "--seq", str(seq), "--salt", "s"]
        assert await _cli(tmp_path, net, *argv) == 0
        mtarget = capsys.readouterr().out.strip()
        assert mtarget == hashlib.sha1(bytes.fromhex(pub) + b"s").hexdigest()
        assert await _cli(tmp_path, net, "get", "--key", pub, "--salt", "s") == 0
        cap = capsys.readouterr()
        assert cap.out == f"{value}\n" and cap.err == f"seq {seq}  key {pub}  salt 's'\n"
    stored = await net[0].get_item(bytes.fromhex(mtarget), salt=b"s")
    assert stored is not None and stored.seq == 2 and stored.key == bytes.fromhex(pub)
    assert await _cli(tmp_path, net, "get", mtarget, "--salt", "s") == 0
    assert capsys.readouterr().out == "second\n"
    # Nothing stored there: exit 1, naming the target.
    assert await _cli(tmp_path, net, "get", "cd" * 20) == 1
    assert capsys.readouterr().err == f"torrent: error: {'cd' * 20}: not found\n"


async def test_bootstrap_from_a_silent_node_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    silent = _free_udp_port()
    argv = ["dht", "get-peers", IH.hex(), "--listen", "127.0.0.1", "--state-dir", str(tmp_path)]
    argv += ["--dht-bootstrap", f"127.0.0.1:{silent}", "--timeout", "10"]
    assert await asyncio.to_thread(main, argv) == 1
    err = capsys.readouterr().err
    assert err == f"torrent: error: bootstrap failed: no DHT node answered (127.0.0.1:{silent})\n"
