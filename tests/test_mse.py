"""MSE/PE, sans-IO: RC4 against RFC 6229, DH against a hand-rolled modexp, the handshake both ways.

The handshake is checked three ways: our initiator against our responder
for every provide/allowed pair; each side against a step written out here
from the spec (so the two cannot agree on a mistake); and the recorded
byte streams fed back in arbitrary chunks (hypothesis).  The bounds the
issue asks for (the sync-marker windows, truncated and out-of-range DH
keys, unknown SKEYs, crypto mismatches) each have a case, and the responder
and initiator are fuzzed: any bytes give need-more or ``MseError``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import LocalProtocolError, RemoteProtocolError
from core.mse import dh
from core.mse.handshake import (
    BITTORRENT_PREFIX,
    CRYPTO_PLAINTEXT,
    CRYPTO_RC4,
    INITIATOR_SYNC_WINDOW,
    RESPONDER_SYNC_WINDOW,
    VC,
    MseError,
    MseInitiator,
    MseResponder,
    MseResult,
    SkeyIndex,
    is_plain_bittorrent,
    req2_hash,
)
from core.mse.rc4 import Rc4

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))
INFO_HASH = hashlib.sha1(b"the torrent").digest()
# Fixed secrets make the recorded streams replayable against fresh endpoints.
XA = 0x1234567890ABCDEF1234567890ABCDEF12345678
XB = 0xFEDCBA0987654321FEDCBA0987654321FEDCBA09
KEY = hashlib.sha1(b"a 160-bit key, as MSE derives them").digest()
BT_HANDSHAKE = BITTORRENT_PREFIX + bytes(8) + INFO_HASH + b"-PT0001-abcdefghijkl"


def sha1(*parts: bytes) -> bytes:
    return hashlib.sha1(b"".join(parts)).digest()


# --- RC4 ---------------------------------------------------------------------------

# RFC 6229 section 2, keystream bytes at offsets >= 1024: with MSE's discard
# of 1,024 bytes, RFC offset 1024 + k is our keystream's offset k.
RFC6229 = {
    bytes.fromhex("0102030405"): {
        0x400: "30abbcc7c20b01609f23ee2d5f6bb7df",
        0x5F0: "3294f744d8f9790507e70f62e5bbceea",
        0x600: "d8729db41882259bee4f825325f5a130",
        0x7F0: "1eb14a0c13b3bf47fa2a0ba93ad45b8b",
        0x800: "cc582f8ba9f265e2b1be9112e975d2d7",
        0xBF0: "f2e30f9bd102ecbf75aaade9bc35c43c",
        0xC00: "ec0e11c479dc329dc8da7968fe965681",
        0xFF0: "068326a2118416d21f9d04b2cd1ca050",
        0x1000: "ff25b58995996707e51fbdf08b34d875",
    },
    bytes.fromhex("0102030405060708090a0b0c0d0e0f10"): {
        0x400: "bdf0324e6083dcc6d3cedd3ca8c53c16",
        0x5F0: "b40110c4190b5622a96116b0017ed297",
        0x600: "ffa0b514647ec04f6306b892ae661181",
        0x7F0: "d03d1bc03cd33d70dff9fa5d71963ebd",
        0x800: "8a44126411eaa78bd51e8d87a8879bf5",
        0xBF0: "fabeb76028ade2d0e48722e46c4615a3",
        0xC00: "c05d88abd50357f935a63c59ee537623",
        0xFF0: "ff38265c1642c1abe8d3c2fe5e572bf8",
        0x1000: "a36a4c301ae8ac13610ccbc12256cacc",
    },
    bytes.fromhex("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"): {
        0x400: "7fec5bfd9f9b89ce6548309092d7e958",
        0x5F0: "40f250b26d1f096a4afd4c340a588815",
        0x600: "3e34135c79db010200767651cf263073",
        0x7F0: "f656abccf88dd827027b2ce917d464ec",
        0x800: "18b62503bfbc077fbabb98f20d98ab34",
        0xBF0: "8aed95ee5b0dcbfbef4eb21d3a3f52f9",
        0xC00: "625a1ab00ee39a5327346bddb01a9c18",
        0xFF0: "a13a7c79c7e119b5ab0296ab28c300b9",
        0x1000: "f3e4c0a2e02d1d01f7f0a74618af2b48",
    },
}


@pytest.mark.parametrize("key", list(RFC6229), ids=lambda k: f"{len(k) * 8}-bit")
def test_rc4_matches_rfc6229_after_the_1024_byte_discard(key: bytes) -> None:
    keystream = Rc4(key).process(bytes(0x1010 - 1024))
    for offset, expected in RFC6229[key].items():
        at = offset - 1024
        assert keystream[at : at + 16].hex() == expected, hex(offset)


def test_rc4_is_its_own_inverse_and_a_single_stream() -> None:
    data = os.urandom(50_000)
    enc = Rc4(KEY).process(data)
    assert enc != data
    assert Rc4(KEY).process(enc) == data
    # Pieces through one instance == the whole through another: one keystream.
    one = Rc4(KEY)
    assert b"".join(one.process(data[i : i + 777]) for i in range(0, len(data), 777)) == enc


def test_rc4_process_into_and_process_join_agree_with_process() -> None:
    data = os.urandom(40_000)
    expected = Rc4(KEY).process(data)

    buf = bytearray(data)
    c = Rc4(KEY)
    view = memoryview(buf)
    c.process_into(view[:10_000])
    c.process_into(view[10_000:])
    assert bytes(buf) == expected

    parts: list[bytes | bytearray | memoryview] = [
        data[:3],
        memoryview(data)[3:16387],
        b"",
        bytearray(data[16387:]),
    ]
    joined = Rc4(KEY).process_join(parts)
    assert isinstance(joined, bytearray) and bytes(joined) == expected


# --- DH ------------------------------------------------------------------------------


def modexp(base: int, exponent: int, modulus: int) -> int:
    """Left-to-right square-and-multiply, written out: the reference for ``dh``."""
    result = 1
    for bit in bin(exponent)[2:]:
        result = result * result % modulus
        if bit == "1":
            result = result * base % modulus
    return result


def test_dh_group_is_the_specs() -> None:
    assert dh.PRIME.bit_length() == 768 and dh.KEY_BYTES == 96 and dh.GENERATOR == 2
    assert hex(dh.PRIME).startswith("0xffffffffffffffffc90fdaa22168c234")
    assert hex(dh.PRIME).endswith("a63a36210000000000090563")
    assert pow(2, dh.PRIME - 1, dh.PRIME) == 1  # (Fermat: consistent with a prime)


def test_dh_agrees_with_a_reference_modexp() -> None:
    for xa, xb in [(XA, XB), (dh.new_private_key(), dh.new_private_key())]:
        ya, yb = dh.public_key(xa), dh.public_key(xb)
        assert len(ya) == len(yb) == 96
        assert int.from_bytes(ya, "big") == modexp(2, xa, dh.PRIME)
        s = dh.shared_secret(xa, yb)
        assert s == dh.shared_secret(xb, ya)
        assert int.from_bytes(s, "big") == modexp(int.from_bytes(yb, "big"), xa, dh.PRIME)
        assert len(s) == 96


def test_dh_private_keys_are_160_random_bits() -> None:
    keys = {dh.new_private_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(2 <= k < 1 << 160 for k in keys)
    assert max(k.bit_length() for k in keys) > 150


def test_dh_shared_secret_is_left_padded_to_96_bytes() -> None:
    # Y = 2 with x = 8 gives S = 256: two significant bytes, 94 zeros in front.
    s = dh.shared_secret(8, (2).to_bytes(96, "big"))
    assert s == bytes(94) + b"\x01\x00"


@pytest.mark.parametrize(
    "y", [0, 1, dh.PRIME - 1, dh.PRIME, (1 << 768) - 1], ids=["0", "1", "P-1", "P", "2^768-1"]
)
def test_dh_rejects_public_keys_outside_2_to_p_minus_2(y: int) -> None:
    with pytest.raises(ValueError, match=r"outside \[2, P-2\]"):
        dh.shared_secret(XA, y.to_bytes(96, "big"))


def test_dh_rejects_short_keys() -> None:
    with pytest.raises(ValueError, match="95 bytes"):
        dh.shared_secret(XA, bytes(95))


# --- handshake: helpers ---------------------------------------------------------------


@dataclass
class Run:
    """One handshake between two endpoints, with every byte each side sent."""

    a: MseInitiator
    b: MseResponder
    a_result: MseResult | None = None
    b_result: MseResult | None = None
    a_sent: bytes = b""
    b_sent: bytes = b""


def converse(a: MseInitiator, b: MseResponder, *, a_extra: bytes = b"") -> Run:
    """Shuttle bytes until neither side has anything to say.

    ``a_extra`` is appended after the initiator's first flight (garbage
    before the sync marker, from the responder's point of view).
    """
    run = Run(a, b)
    first = True
    for _ in range(10):
        out_a = a.data_to_send() + (a_extra if first else b"")
        first = False
        if out_a:
            run.a_sent += out_a
            run.b_result = b.receive(out_a) or run.b_result
        out_b = b.data_to_send()
        if out_b:
            run.b_sent += out_b
            run.a_result = a.receive(out_b) or run.a_result
        if not out_a and not out_b:
            break
    return run


def pair(
    provide: int = CRYPTO_RC4,
    allowed: int = CRYPTO_RC4,
    *,
    ia: bytes = BT_HANDSHAKE,
    find_skey: SkeyIndex | None = None,
    pad_a: int | None = None,
    pad_b: int | None = None,
    pad_c: int = 0,
    pad_d: int = 0,
) -> tuple[MseInitiator, MseResponder]:
    a = MseInitiator(
        INFO_HASH,
        provide=provide,
        initial_payload=ia,
        private_key=XA,
        pad_len=pad_a,
        inner_pad_len=pad_c,
    )
    b = MseResponder(
        find_skey if find_skey is not None else SkeyIndex([INFO_HASH]),
        allowed=allowed,
        private_key=XB,
        pad_len=pad_b,
        inner_pad_len=pad_d,
    )
    return a, b


def check_link(ra: MseResult, rb: MseResult) -> None:
    """Both directions carry bytes after the handshake, through the agreed method."""
    if ra.selected == CRYPTO_RC4:
        assert ra.encryptor and ra.decryptor and rb.encryptor and rb.decryptor
        msg = b"interested" * 10
        wire = ra.encryptor.process(msg)
        assert wire != msg and rb.decryptor.process(wire) == msg
        wire = rb.encryptor.process(msg)
        assert wire != msg and ra.decryptor.process(wire) == msg
    else:
        assert ra.encryptor is ra.decryptor is rb.encryptor is rb.decryptor is None


# --- handshake: policies ----------------------------------------------------------------

BOTH = CRYPTO_PLAINTEXT | CRYPTO_RC4
# (provide, allowed) -> the method the responder selects, or None: it refuses.
POLICIES = {
    (CRYPTO_PLAINTEXT, CRYPTO_PLAINTEXT): CRYPTO_PLAINTEXT,
    (CRYPTO_PLAINTEXT, CRYPTO_RC4): None,
    (CRYPTO_PLAINTEXT, BOTH): CRYPTO_PLAINTEXT,
    (CRYPTO_RC4, CRYPTO_PLAINTEXT): None,
    (CRYPTO_RC4, CRYPTO_RC4): CRYPTO_RC4,
    (CRYPTO_RC4, BOTH): CRYPTO_RC4,
    (BOTH, CRYPTO_PLAINTEXT): CRYPTO_PLAINTEXT,
    (BOTH, CRYPTO_RC4): CRYPTO_RC4,
    (BOTH, BOTH): CRYPTO_RC4,  # RC4 preferred when both sides can
    (CRYPTO_PLAINTEXT, 0): None,
    (BOTH, 0): None,
}


@pytest.mark.parametrize(("provide", "allowed"), list(POLICIES))
def test_every_provide_allowed_pair(provide: int, allowed: int) -> None:
    expected = POLICIES[(provide, allowed)]
    a, b = pair(provide, allowed)
    if expected is None:
        with pytest.raises(MseError) as err:
            converse(a, b)
        assert str(err.value) == (
            f"mse: peer provides crypto 0x{provide:x}, we allow 0x{allowed:x}"
        )
        assert isinstance(err.value, RemoteProtocolError)
        return
    run = converse(a, b)
    ra, rb = run.a_result, run.b_result
    assert ra is not None and rb is not None
    assert ra.selected == rb.selected == expected
    assert ra.info_hash == rb.info_hash == INFO_HASH
    assert rb.initial_payload == BT_HANDSHAKE and ra.initial_payload == b""
    assert ra.remainder == rb.remainder == b""
    check_link(ra, rb)
    # The BitTorrent handshake never crosses in the clear: IA is always RC4.
    assert b"BitTorrent protocol" not in run.a_sent
    assert INFO_HASH not in run.a_sent


def test_the_error_is_latched() -> None:
    a, b = pair(CRYPTO_RC4, CRYPTO_PLAINTEXT)
    with pytest.raises(MseError):
        converse(a, b)
    with pytest.raises(MseError, match="we allow 0x1"):
        b.receive(b"more")


def test_receive_after_completion_is_our_bug() -> None:
    a, b = pair()
    converse(a, b)
    with pytest.raises(LocalProtocolError):
        b.receive(b"x")


def test_bad_arguments_are_local_errors() -> None:
    with pytest.raises(LocalProtocolError, match="no crypto method"):
        MseInitiator(INFO_HASH, provide=0)
    with pytest.raises(LocalProtocolError, match="unknown crypto bits"):
        MseInitiator(INFO_HASH, provide=0x04)
    with pytest.raises(LocalProtocolError, match="unknown crypto bits"):
        MseResponder(SkeyIndex(), allowed=0x13)
    with pytest.raises(LocalProtocolError, match="20"):
        MseInitiator(b"short", provide=CRYPTO_RC4)
    with pytest.raises(LocalProtocolError, match="65535"):
        MseInitiator(INFO_HASH, provide=CRYPTO_RC4, initial_payload=bytes(1 << 16))
    with pytest.raises(LocalProtocolError, match="pad length"):
        MseInitiator(INFO_HASH, provide=CRYPTO_RC4, pad_len=513)


# --- handshake: the wire format, against steps written out from the spec ---------------


def spec_responder_step4(yb_x: int, ya: bytes, select: int, pad_d: bytes) -> tuple[bytes, Rc4]:
    """B's half written out here: Yb, then ENCRYPT_B(VC, crypto_select, len(PadD), PadD)."""
    s = pow(int.from_bytes(ya, "big"), yb_x, dh.PRIME).to_bytes(96, "big")
    enc_b = Rc4(sha1(b"keyB", s, INFO_HASH))
    body = VC + select.to_bytes(4, "big") + len(pad_d).to_bytes(2, "big") + pad_d
    return enc_b.process(body), enc_b


def test_initiator_output_is_the_specs_step_3() -> None:
    a = MseInitiator(
        INFO_HASH, provide=BOTH, initial_payload=b"IA!", private_key=XA, pad_len=7, inner_pad_len=5
    )
    first = a.data_to_send()
    assert len(first) == 96 + 7
    assert first[:96] == pow(2, XA, dh.PRIME).to_bytes(96, "big")
    yb = pow(2, XB, dh.PRIME).to_bytes(96, "big")
    assert a.receive(yb) is None
    step3 = a.data_to_send()
    s = pow(int.from_bytes(first[:96], "big"), XB, dh.PRIME).to_bytes(96, "big")
    assert step3[:20] == sha1(b"req1", s)
    assert step3[20:40] == bytes(
        x ^ y for x, y in zip(sha1(b"req2", INFO_HASH), sha1(b"req3", s), strict=True)
    )
    dec_a = Rc4(sha1(b"keyA", s, INFO_HASH))
    plain = dec_a.process(step3[40:])
    assert plain == VC + b"\x00\x00\x00\x03" + b"\x00\x05" + bytes(5) + b"\x00\x03" + b"IA!"


@pytest.mark.parametrize("select", [CRYPTO_PLAINTEXT, CRYPTO_RC4])
def test_initiator_accepts_a_spec_built_step_4_with_pad_d_and_payload(select: int) -> None:
    a = MseInitiator(INFO_HASH, provide=BOTH, private_key=XA, pad_len=0)
    ya = a.data_to_send()
    step4, enc_b = spec_responder_step4(XB, ya, select, pad_d=b"\x99" * 300)
    payload = b"payload after the handshake"
    wire_payload = enc_b.process(payload) if select == CRYPTO_RC4 else payload
    yb = pow(2, XB, dh.PRIME).to_bytes(96, "big")
    result = a.receive(yb + secrets.token_bytes(100) + step4 + wire_payload)
    assert result is not None
    assert result.selected == select
    assert result.remainder == payload
    assert (result.decryptor is None) == (select == CRYPTO_PLAINTEXT)


@pytest.mark.parametrize("select", [0, CRYPTO_PLAINTEXT | CRYPTO_RC4, 0x04, CRYPTO_PLAINTEXT])
def test_initiator_rejects_a_selection_it_did_not_provide(select: int) -> None:
    a = MseInitiator(INFO_HASH, provide=CRYPTO_RC4, private_key=XA, pad_len=0)
    step4, _ = spec_responder_step4(XB, a.data_to_send(), select, b"")
    with pytest.raises(MseError, match=f"selected crypto 0x{select:x}, we provided 0x2"):
        a.receive(pow(2, XB, dh.PRIME).to_bytes(96, "big") + step4)


def test_initiator_rejects_pad_d_over_512() -> None:
    a = MseInitiator(INFO_HASH, provide=CRYPTO_RC4, private_key=XA, pad_len=0)
    step4, _ = spec_responder_step4(XB, a.data_to_send(), CRYPTO_RC4, bytes(513))
    with pytest.raises(MseError, match="PadD of 513 bytes"):
        a.receive(pow(2, XB, dh.PRIME).to_bytes(96, "big") + step4)


def spec_initiator_stream(
    ya_x: int,
    yb: bytes,
    *,
    provide: int = CRYPTO_RC4,
    pad_a: bytes = b"",
    pad_c: bytes = b"",
    ia: bytes = b"",
    vc: bytes = VC,
    skey: bytes = INFO_HASH,
) -> tuple[bytes, Rc4]:
    """A's whole side written out here: Ya, PadA, step 3 (the caller knows Yb)."""
    ya = pow(2, ya_x, dh.PRIME).to_bytes(96, "big")
    s = pow(int.from_bytes(yb, "big"), ya_x, dh.PRIME).to_bytes(96, "big")
    enc_a = Rc4(sha1(b"keyA", s, skey))
    req = sha1(b"req1", s) + bytes(
        x ^ y for x, y in zip(sha1(b"req2", skey), sha1(b"req3", s), strict=True)
    )
    body = vc + provide.to_bytes(4, "big") + len(pad_c).to_bytes(2, "big") + pad_c
    body += len(ia).to_bytes(2, "big") + ia
    return ya + pad_a + req + enc_a.process(body), enc_a


YB = pow(2, XB, dh.PRIME).to_bytes(96, "big")


@pytest.mark.parametrize("provide", [CRYPTO_PLAINTEXT, CRYPTO_RC4, BOTH])
def test_responder_accepts_a_spec_built_step_3_with_pads_ia_and_payload(provide: int) -> None:
    stream, enc_a = spec_initiator_stream(
        XA, YB, provide=provide, pad_a=os.urandom(512), pad_c=os.urandom(512), ia=BT_HANDSHAKE
    )
    b = MseResponder(SkeyIndex([INFO_HASH]), allowed=BOTH, private_key=XB, pad_len=11)
    payload = b"\x00\x00\x00\x01\x02"  # interested, sent right after IA
    selected = CRYPTO_RC4 if provide & CRYPTO_RC4 else CRYPTO_PLAINTEXT
    result = b.receive(stream + (enc_a.process(payload) if selected == CRYPTO_RC4 else payload))
    assert result is not None
    assert result.selected == selected
    assert result.initial_payload == BT_HANDSHAKE
    assert result.remainder == payload
    out = b.data_to_send()
    assert out[:96] == YB and len(out) == 96 + 11 + 8 + 4 + 2
    # Step 4 decodes with keyB, as the spec's initiator would.
    s = dh.shared_secret(XA, YB)
    dec_b = Rc4(sha1(b"keyB", s, INFO_HASH))
    assert dec_b.process(out[107:]) == VC + selected.to_bytes(4, "big") + b"\x00\x00"


def test_responder_rejects_a_bad_verification_constant() -> None:
    stream, _ = spec_initiator_stream(XA, YB, vc=b"\x00" * 7 + b"\x01")
    b = MseResponder(SkeyIndex([INFO_HASH]), allowed=BOTH, private_key=XB)
    with pytest.raises(MseError, match="bad verification constant"):
        b.receive(stream)


def test_responder_rejects_pad_c_over_512() -> None:
    stream, _ = spec_initiator_stream(XA, YB, pad_c=bytes(513))
    b = MseResponder(SkeyIndex([INFO_HASH]), allowed=BOTH, private_key=XB)
    with pytest.raises(MseError, match="PadC of 513 bytes"):
        b.receive(stream)


def test_responder_rejects_a_zero_crypto_provide() -> None:
    stream, _ = spec_initiator_stream(XA, YB, provide=0)
    b = MseResponder(SkeyIndex([INFO_HASH]), allowed=BOTH, private_key=XB)
    with pytest.raises(MseError, match="provides crypto 0x0"):
        b.receive(stream)


def test_unknown_provide_bits_are_ignored_when_a_known_one_is_there() -> None:
    stream, _ = spec_initiator_stream(XA, YB, provide=0xF0 | CRYPTO_RC4)
    b = MseResponder(SkeyIndex([INFO_HASH]), allowed=BOTH, private_key=XB)
    result = b.receive(stream)
    assert result is not None and result.selected == CRYPTO_RC4


# --- handshake: SKEY lookup -------------------------------------------------------------


def test_skey_lookup_among_a_thousand_torrents() -> None:
    hashes = [hashlib.sha1(i.to_bytes(4, "big")).digest() for i in range(1000)]
    index = SkeyIndex(hashes)
    assert len(index) == 1000
    for wanted in (hashes[0], hashes[737], hashes[999]):
        a = MseInitiator(wanted, provide=CRYPTO_RC4, initial_payload=b"hi")
        b = MseResponder(index, allowed=CRYPTO_RC4)
        run = converse(a, b)
        assert run.b_result is not None and run.a_result is not None
        assert run.b_result.info_hash == wanted
        check_link(run.a_result, run.b_result)
    assert index(req2_hash(hashes[5])) == hashes[5]
    index.discard(hashes[5])
    assert index(req2_hash(hashes[5])) is None and len(index) == 999


def test_unknown_skey_is_refused() -> None:
    index = SkeyIndex(hashlib.sha1(bytes([i])).digest() for i in range(50))
    a = MseInitiator(INFO_HASH, provide=CRYPTO_RC4)
    b = MseResponder(index, allowed=CRYPTO_RC4)
    with pytest.raises(MseError, match="unknown SKEY"):
        converse(a, b)


def test_find_skey_gets_the_req2_hash() -> None:
    seen: list[bytes] = []

    def find(req2: bytes) -> bytes | None:
        seen.append(req2)
        return INFO_HASH

    run = converse(pair()[0], MseResponder(find, allowed=BOTH))
    assert seen == [req2_hash(INFO_HASH)]
    assert run.b_result is not None


# --- handshake: sync markers and their bounds -------------------------------------------


def test_the_bounds_are_the_specs() -> None:
    assert RESPONDER_SYNC_WINDOW == 96 + 512 + 20 == 628
    assert INITIATOR_SYNC_WINDOW == 96 + 512 + 8 == 616


@pytest.mark.parametrize("pad", [0, 1, 300, 512])
def test_any_legal_pad_a_and_pad_b_is_found(pad: int) -> None:
    run = converse(*pair(pad_a=pad, pad_b=pad, pad_c=pad, pad_d=pad))
    assert run.a_result is not None and run.b_result is not None
    assert run.b_result.initial_payload == BT_HANDSHAKE
    check_link(run.a_result, run.b_result)


def test_garbage_before_req1_within_the_bound_is_skipped() -> None:
    # PadA of 200 plus 312 bytes of garbage: the marker ends at byte 628 exactly.
    run = converse(*pair(pad_a=200), a_extra=os.urandom(312))
    assert run.b_result is not None and run.b_result.initial_payload == BT_HANDSHAKE


def test_garbage_before_req1_beyond_the_bound_fails() -> None:
    a, b = pair(pad_a=200)
    with pytest.raises(MseError, match=r"^mse: no sync marker within 628 bytes$"):
        converse(a, b, a_extra=os.urandom(313))


def test_the_responder_gives_up_as_soon_as_628_bytes_hold_no_marker() -> None:
    b = MseResponder(SkeyIndex([INFO_HASH]), allowed=BOTH)
    ya = dh.public_key(XA)
    assert b.receive(ya + bytes(531)) is None  # 627 bytes: the marker could still end at 628
    with pytest.raises(MseError, match="within 628 bytes"):
        b.receive(b"\x00")
    # ... and at once when a single read carries more.
    b2 = MseResponder(SkeyIndex([INFO_HASH]), allowed=BOTH)
    with pytest.raises(MseError, match="within 628 bytes"):
        b2.receive(ya + bytes(5000))


@pytest.mark.parametrize(("extra", "ok"), [(0, True), (512, True), (513, False)])
def test_garbage_before_the_vc_within_and_beyond_the_bound(extra: int, ok: bool) -> None:
    # PadB plus garbage of 512 bytes is the most there may be before ENCRYPT(VC).
    a, b = pair(pad_b=0)
    assert b.receive(a.data_to_send()) is None
    yb = b.data_to_send()
    assert len(yb) == 96
    assert a.receive(yb + os.urandom(extra)) is None
    assert b.receive(a.data_to_send()) is not None
    step4 = b.data_to_send()
    if ok:
        result = a.receive(step4)
        assert result is not None and result.selected == CRYPTO_RC4
    else:
        with pytest.raises(MseError, match=r"^mse: no sync marker within 616 bytes$"):
            a.receive(step4)


def test_the_initiator_gives_up_as_soon_as_616_bytes_hold_no_marker() -> None:
    a = MseInitiator(INFO_HASH, provide=CRYPTO_RC4)
    assert a.receive(YB + bytes(519)) is None
    with pytest.raises(MseError, match="within 616 bytes"):
        a.receive(b"\x01")


# --- handshake: DH keys on the wire ------------------------------------------------------


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_truncated_dh_key_needs_more_then_fails_at_eof(side: str) -> None:
    end: MseInitiator | MseResponder = (
        MseInitiator(INFO_HASH, provide=CRYPTO_RC4)
        if side == "initiator"
        else MseResponder(SkeyIndex([INFO_HASH]), allowed=CRYPTO_RC4)
    )
    assert end.receive(YB[:50]) is None
    with pytest.raises(MseError, match=r"^mse: truncated DH key \(.* after 50 of 96 bytes\)$"):
        end.eof()


def test_eof_after_the_key_says_where() -> None:
    b = MseResponder(SkeyIndex([INFO_HASH]), allowed=CRYPTO_RC4)
    b.receive(YB + b"pad")
    with pytest.raises(MseError, match=r"before the sync marker \(99 bytes received\)"):
        b.eof()


@pytest.mark.parametrize("y", [0, 1, dh.PRIME - 1, dh.PRIME + 5])
@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_out_of_range_dh_keys_are_refused(side: str, y: int) -> None:
    end: MseInitiator | MseResponder = (
        MseInitiator(INFO_HASH, provide=CRYPTO_RC4)
        if side == "initiator"
        else MseResponder(SkeyIndex([INFO_HASH]), allowed=CRYPTO_RC4)
    )
    with pytest.raises(MseError, match=r"invalid DH public key"):
        end.receive(y.to_bytes(96, "big"))


def test_the_responder_says_nothing_before_ya() -> None:
    b = MseResponder(SkeyIndex([INFO_HASH]), allowed=CRYPTO_RC4, pad_len=0)
    assert b.data_to_send() == b""
    b.receive(dh.public_key(XA)[:95])
    assert b.data_to_send() == b""
    b.receive(dh.public_key(XA)[95:])
    assert len(b.data_to_send()) == 96


def test_is_plain_bittorrent() -> None:
    assert is_plain_bittorrent(BT_HANDSHAKE)
    assert is_plain_bittorrent(BITTORRENT_PREFIX)
    assert not is_plain_bittorrent(BITTORRENT_PREFIX[:19])
    assert not is_plain_bittorrent(dh.public_key(XA))


# --- recorded streams, replayed in any chunking --------------------------------------------

PAYLOAD_A = b"A-side payload " * 20
PAYLOAD_B = b"B-side payload " * 20


def _record(provide: int, allowed: int) -> tuple[bytes, bytes, int]:
    """Both sides' complete byte streams (handshake + payload) for XA/XB."""
    a, b = pair(provide, allowed, pad_a=333, pad_b=222, pad_c=17, pad_d=9)
    run = converse(a, b)
    ra, rb = run.a_result, run.b_result
    assert ra is not None and rb is not None
    a_stream = run.a_sent + (ra.encryptor.process(PAYLOAD_A) if ra.encryptor else PAYLOAD_A)
    b_stream = run.b_sent + (rb.encryptor.process(PAYLOAD_B) if rb.encryptor else PAYLOAD_B)
    return a_stream, b_stream, ra.selected


RECORDED = {p: _record(p, BOTH) for p in (CRYPTO_PLAINTEXT, CRYPTO_RC4)}


def _replay(
    end: MseInitiator | MseResponder, stream: bytes, cuts: list[int]
) -> tuple[MseResult, bytes]:
    """Feed ``stream`` cut at ``cuts``; the result and every payload byte, decrypted."""
    result = None
    payload = b""
    pos = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        chunk = stream[pos:cut]
        pos = max(pos, cut)
        if not chunk:
            continue
        if result is None:
            result = end.receive(chunk)
            if result is not None:
                payload = result.remainder
        else:
            payload += result.decryptor.process(chunk) if result.decryptor else chunk
    assert result is not None
    return result, payload


@settings(max_examples=max(100, EXAMPLES // 10), deadline=None)
@given(
    method=st.sampled_from([CRYPTO_PLAINTEXT, CRYPTO_RC4]),
    cuts=st.lists(st.integers(0, 1600), max_size=40),
)
def test_any_chunking_gives_the_same_handshake(method: int, cuts: list[int]) -> None:
    a_stream, b_stream, selected = RECORDED[method]
    assert selected == method
    b = MseResponder(SkeyIndex([INFO_HASH]), allowed=BOTH, private_key=XB, pad_len=222)
    rb, got_a = _replay(b, a_stream, cuts)
    assert rb.selected == method and rb.initial_payload == BT_HANDSHAKE
    assert got_a == PAYLOAD_A
    a = MseInitiator(
        INFO_HASH, provide=method, initial_payload=BT_HANDSHAKE, private_key=XA, pad_len=333
    )
    ra, got_b = _replay(a, b_stream, cuts)
    assert ra.selected == method and got_b == PAYLOAD_B


@pytest.mark.parametrize("method", [CRYPTO_PLAINTEXT, CRYPTO_RC4])
def test_one_byte_at_a_time(method: int) -> None:
    a_stream, b_stream, _ = RECORDED[method]
    b = MseResponder(SkeyIndex([INFO_HASH]), allowed=BOTH, private_key=XB)
    rb, got_a = _replay(b, a_stream, list(range(len(a_stream))))
    assert rb.initial_payload == BT_HANDSHAKE and got_a == PAYLOAD_A
    a = MseInitiator(INFO_HASH, provide=method, initial_payload=BT_HANDSHAKE, private_key=XA)
    ra, got_b = _replay(a, b_stream, list(range(len(b_stream))))
    assert ra.selected == method and got_b == PAYLOAD_B


# --- fuzz ------------------------------------------------------------------------------------


def _feed_all(end: MseInitiator | MseResponder, chunks: list[bytes]) -> None:
    """Need-more, a result or MseError: nothing else may come out."""
    for chunk in chunks:
        try:
            if end.receive(chunk) is not None:
                return
        except MseError as exc:
            assert str(exc).startswith("mse: ")
            return


@settings(max_examples=max(200, EXAMPLES // 5), deadline=None)
@given(st.lists(st.binary(max_size=700), max_size=4))
def test_fuzz_responder_with_arbitrary_bytes(chunks: list[bytes]) -> None:
    _feed_all(MseResponder(SkeyIndex([INFO_HASH]), allowed=BOTH, private_key=XB), chunks)


@settings(max_examples=max(200, EXAMPLES // 5), deadline=None)
@given(st.lists(st.binary(max_size=700), max_size=4))
def test_fuzz_initiator_with_arbitrary_bytes(chunks: list[bytes]) -> None:
    _feed_all(MseInitiator(INFO_HASH, provide=BOTH, private_key=XA), chunks)


@settings(max_examples=max(200, EXAMPLES // 5), deadline=None)
@given(
    method=st.sampled_from([CRYPTO_PLAINTEXT, CRYPTO_RC4]),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 2000),
)
def test_fuzz_responder_with_a_corrupted_real_stream(
    method: int, flips: list[tuple[int, int]], cut: int
) -> None:
    """A real initiator stream, bytes flipped: deep states (SKEY, VC, pads, IA) see bad input."""
    stream = bytearray(RECORDED[method][0])
    for at, xor in flips:
        stream[at % len(stream)] ^= xor
    cut %= len(stream)
    b = MseResponder(SkeyIndex([INFO_HASH]), allowed=BOTH, private_key=XB)
    _feed_all(b, [bytes(stream[:cut]), bytes(stream[cut:])])


@settings(max_examples=max(200, EXAMPLES // 5), deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_fuzz_initiator_with_a_corrupted_real_stream(flips: list[tuple[int, int]]) -> None:
    stream = bytearray(RECORDED[CRYPTO_RC4][1])
    for at, xor in flips:
        stream[at % len(stream)] ^= xor
    a = MseInitiator(INFO_HASH, provide=BOTH, private_key=XA)
    _feed_all(a, [bytes(stream)])
