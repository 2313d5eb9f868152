"""ClientConfig: defaults, validation messages, peer ids, TOML load/dump round trips."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import platformdirs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import (
    DEFAULT_BOOTSTRAP,
    ClientConfig,
    config_from_dict,
    default_config_path,
    default_data_dir,
    default_download_dir,
    dump_config,
    generate_peer_id,
    load_config,
    parse_endpoint,
    save_config,
)
from core.errors import ConfigError

# --- defaults and paths ---------------------------------------------------------------


def test_defaults() -> None:
    cfg = ClientConfig()
    assert cfg.listen_addresses == ("0.0.0.0", "::")
    assert cfg.listen_port == 0
    assert cfg.data_dir == platformdirs.user_data_path("pytorrent")
    assert cfg.download_dir == platformdirs.user_downloads_path()
    assert cfg.default_storage == "file"
    assert (cfg.max_connections_per_torrent, cfg.max_connections) == (50, 200)
    assert cfg.download_rate_limit is None and cfg.upload_rate_limit is None
    assert cfg.seed and not cfg.no_upload
    assert cfg.max_unverified_bytes == 64 * 1024 * 1024
    assert cfg.pex_interval == 60.0
    assert cfg.client_name == "pytorrent 0.1"


def test_dht_defaults() -> None:
    cfg = ClientConfig()
    assert cfg.dht and not cfg.dht_read_only and not cfg.dht_enforce_node_id
    assert cfg.dht_bootstrap_nodes == DEFAULT_BOOTSTRAP
    assert "router.bittorrent.com:6881" in DEFAULT_BOOTSTRAP
    assert ClientConfig(dht_bootstrap_nodes=[]).dht_bootstrap_nodes == ()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("router.bittorrent.com:6881", ("router.bittorrent.com", 6881)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[2001:db8::1]:65535", ("2001:db8::1", 65535)),
        (" dht.example:25401 ", ("dht.example", 25401)),
    ],
)
def test_parse_endpoint(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    "text", ["", "host", ":6881", "host:", "host:65536", "host:x1", "a b:1", "[::1]6881", "[::1]"]
)
def test_parse_endpoint_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_endpoint(text)


def test_dht_settings_round_trip_through_toml() -> None:
    cfg = ClientConfig(
        dht_bootstrap_nodes=("127.0.0.1:6881", "[::1]:7000"),
        dht_read_only=True,
        dht_enforce_node_id=True,
    )
    assert config_from_dict(tomllib.loads(dump_config(cfg))) == cfg


def test_platform_paths() -> None:
    assert default_config_path() == platformdirs.user_config_path("pytorrent") / "config.toml"
    assert default_data_dir() == platformdirs.user_data_path("pytorrent")
    assert default_download_dir() == platformdirs.user_downloads_path()


def test_config_is_frozen_and_replace_revalidates() -> None:
    cfg = ClientConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.listen_port = 1  # type: ignore[misc]
    assert dataclasses.replace(cfg, listen_port=6881).listen_port == 6881
    with pytest.raises(ConfigError, match="listen_port"):
        dataclasses.replace(cfg, listen_port=70000)


def test_normalises_toml_forms() -> None:
    cfg = ClientConfig(
        data_dir="~/x",  # type: ignore[arg-type]
        listen_addresses=["127.0.0.1"],  # type: ignore[arg-type]
        handshake_timeout=5,
    )
    assert cfg.data_dir == Path("~/x").expanduser()
    assert cfg.listen_addresses == ("127.0.0.1",)
    assert isinstance(cfg.handshake_timeout, float) and cfg.handshake_timeout == 5.0


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"listen_port": -1}, "listen_port"),
        ({"listen_addresses": ()}, "listen_addresses"),
        ({"default_storage": "mmap"}, "default_storage"),
        ({"max_connections": 0}, "max_connections"),
        ({"max_connections_per_torrent": 300}, "exceeds max_connections"),
        ({"max_half_open_per_torrent": 500}, "exceeds max_half_open"),
        ({"torrent_peers_low_water": 1000}, "torrent_peers_high_water"),
        ({"download_rate_limit": 0}, "download_rate_limit"),
        ({"upload_rate_limit": -5}, "upload_rate_limit"),
        ({"handshake_timeout": 0.0}, "handshake_timeout"),
        ({"pex_interval": float("inf")}, "pex_interval"),
        ({"choke_interval": float("nan")}, "choke_interval"),
        ({"idle_timeout": 30.0}, "idle_timeout"),
        ({"unchoke_slots": -1}, "unchoke_slots"),
        ({"peer_id_prefix": "-PY0100-" * 3}, "peer_id_prefix"),
        ({"peer_id_prefix": "-PY 01-"}, "peer_id_prefix"),
        ({"peer_id_prefix": "-PYé-"}, "peer_id_prefix"),
        ({"client_name": ""}, "client_name"),
        ({"client_name": "a\nb"}, "client_name"),
        ({"tcp": False, "utp": False}, "tcp and utp"),
        ({"request_queue_len": 0}, "request_queue_len"),
        ({"max_unverified_bytes": 0}, "max_unverified_bytes"),
        ({"dht_bootstrap_nodes": ("router.example",)}, "dht_bootstrap_nodes: 'router.example'"),
        ({"dht_bootstrap_nodes": ("h:0",)}, "dht_bootstrap_nodes: 'h:0': the port"),
        ({"dht_bootstrap_nodes": ("::1:6881",)}, "dht_bootstrap_nodes: .*brackets"),
        ({"dht_bootstrap_nodes": ("[nope]:6881",)}, "dht_bootstrap_nodes: .*IPv6"),
    ],
)
def test_invalid_values_name_the_setting(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        ClientConfig(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("listen_port", "6881", "an integer"),
        ("listen_port", True, "an integer"),
        ("listen_port", 1.5, "an integer"),
        ("seed", 1, "true or false"),
        ("seed", "yes", "true or false"),
        ("handshake_timeout", "10", "a number"),
        ("handshake_timeout", False, "a number"),
        ("client_name", 3, "a string"),
        ("data_dir", 3, "a path string"),
        ("data_dir", "", "a path string"),
        ("listen_addresses", "0.0.0.0", "a list of strings"),
        ("listen_addresses", ["::", 1], "a list of strings"),
        ("download_rate_limit", 1.5, "an integer"),
        ("dht_bootstrap_nodes", "router.example:6881", "a list of strings"),
        ("dht_read_only", "yes", "true or false"),
    ],
)
def test_bad_types_name_key_and_expected_type(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}: expected {expected}"):
        ClientConfig(**{key: value})  # type: ignore[arg-type]


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ConfigError, match="unknown setting\\(s\\): bogus, listen_prot"):
        config_from_dict({"listen_prot": 1, "bogus": True, "seed": False})


# --- peer ids -------------------------------------------------------------------------


def test_generate_peer_id() -> None:
    a = generate_peer_id("-PY0100-")
    b = generate_peer_id(b"-PY0100-")
    assert len(a) == len(b) == 20
    assert a.startswith(b"-PY0100-") and b.startswith(b"-PY0100-")
    assert a != b  # 12 random alphanumerics: a collision is ~1 in 3e21
    assert a[8:].isalnum() and a.isascii()
    assert len(generate_peer_id("")) == 20
    assert generate_peer_id("x" * 20) == b"x" * 20


def test_generate_peer_id_rejects_long_prefix() -> None:
    with pytest.raises(ConfigError, match="20"):
        generate_peer_id("x" * 21)


# --- TOML -----------------------------------------------------------------------------


def test_dump_is_valid_toml_and_round_trips(tmp_path: Path) -> None:
    cfg = ClientConfig(
        listen_addresses=("127.0.0.1", "::1"),
        listen_port=51413,
        data_dir=tmp_path / 'data "quoted" \\ dir',
        download_dir=tmp_path / "dl\tx",
        default_storage="memory",
        upload_rate_limit=100_000,
        seed=False,
        handshake_timeout=7.5,
        keepalive_interval=0.1,
        client_name='pytorrent "test" \\ ü',
    )
    text = dump_config(cfg)
    parsed = tomllib.loads(text)
    assert parsed["listen_port"] == 51413
    assert "download_rate_limit" not in parsed  # unset: written as a comment
    assert "# download_rate_limit" in text
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    assert load_config(path) == cfg


def test_only_changed_writes_just_the_differences(tmp_path: Path) -> None:
    cfg = ClientConfig(listen_port=6881, no_upload=True)
    parsed = tomllib.loads(dump_config(cfg, only_changed=True))
    assert parsed == {"listen_port": 6881, "no_upload": True}
    path = tmp_path / "sub" / "config.toml"
    save_config(cfg, path, only_changed=True)
    assert load_config(path) == cfg
    assert not (tmp_path / "sub" / "config.toml.tmp").exists()


def test_load_errors_are_config_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="no such file"):
        load_config(missing)
    assert load_config(missing, missing_ok=True) == ClientConfig()

    bad = tmp_path / "bad.toml"
    bad.write_text("listen_port = = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)

    bad.write_bytes(b"client_name = '\xff'\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(bad)

    bad.write_text("[network]\nenabled = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown setting\\(s\\): network"):
        load_config(bad)

    bad.write_text("dht = { enabled = true }\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="dht: expected true or false, got dict"):
        load_config(bad)

    bad.write_text('seed = "no"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="seed: expected true or false"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(bad)

    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)  # a directory


def test_home_directory_is_expanded() -> None:
    assert ClientConfig(download_dir=Path("~/dl")).download_dir == Path.home() / "dl"
    with pytest.raises(ConfigError, match="download_dir: cannot expand"):
        ClientConfig(download_dir=Path("~no-such-user-here/dl"))


def test_unwritable_string_is_a_config_error() -> None:
    cfg = ClientConfig(download_dir=Path("/tmp/\udcff"))
    with pytest.raises(ConfigError, match="not valid Unicode"):
        dump_config(cfg)


#: Hypothesis text never holds lone surrogates (which UTF-8 TOML cannot
#: carry; that case is tested above) but does hold control characters.
_text = st.text(min_size=1, max_size=30)


@settings(max_examples=300)
@given(
    name=_text.filter(str.isprintable),
    addresses=st.lists(st.text(max_size=10), max_size=3),
    directory=_text.filter(lambda s: not s.startswith("~")),
    timeout=st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False),
    limit=st.none() | st.integers(1, 1 << 62),
)
def test_round_trip_property(
    name: str, addresses: list[str], directory: str, timeout: float, limit: int | None
) -> None:
    cfg = ClientConfig(
        client_name=name,
        listen_addresses=tuple(addresses) or ("::",),
        download_dir=Path(directory),
        handshake_timeout=timeout,
        download_rate_limit=limit,
    )
    assert config_from_dict(tomllib.loads(dump_config(cfg))) == cfg
