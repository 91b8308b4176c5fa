"""The .rdk container: exact layout, limits and refusals (no model involved)."""

from __future__ import annotations

import zlib

import pytest

from rdkit_ae.codec import container
from rdkit_ae.codec.container import MAGIC, VERSION, pack, unpack
from rdkit_ae.errors import FormatError

MID = b"\x12\x34\x56\x78"


def _compressed(streams: list[bytes], size=(32, 32)) -> dict:
    return {"strings": [[s] for s in streams], "shape": None, "size": size}


def _with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_layout_byte_by_byte():
    data = pack(MID, _compressed([b"\xaa" * 300, b"\xbb\xcc"], size=(32, 200)))
    expected_head = (
        b"RK"
        + bytes([VERSION])
        + MID
        + b"\x20"  # H = 32
        + b"\xc8\x01"  # W = 200 as LEB128
        + b"\x02"  # two streams
        + b"\xac\x02"  # first stream: 300 bytes; the last is implicit
    )
    assert data.startswith(expected_head)
    assert data[len(expected_head) : -4] == b"\xaa" * 300 + b"\xbb\xcc"
    assert data[-4:] == zlib.crc32(data[:-4]).to_bytes(4, "big")


@pytest.mark.parametrize("streams", [[b""], [b"x"], [b"abc" * 100], [b"a" * 200, b"b" * 70, b""], [b"q"] * 8])
@pytest.mark.parametrize("size", [(1, 1), (32, 32), (512, 768), (65535, 1)])
def test_round_trip(streams, size):
    data = pack(MID, _compressed(streams, size), max_pixels=1 << 20)
    p = unpack(data, max_pixels=1 << 20, pixels_per_byte=None)  # the format, not the bomb bound (tested below)
    assert p.model_id == MID and p.size == size and p.version == VERSION
    assert p.strings == [[s] for s in streams]
    assert p.header_bytes == len(data) - sum(map(len, streams)) == container.header_size(data, max_pixels=1 << 20)
    assert container.overhead(*size, [len(s) for s in streams]) == p.header_bytes


def test_pack_takes_the_indexed_image_of_a_batch():
    batch = {"strings": [[b"img0-y", b"img1-y"], [b"img0-z", b"img1-z"]], "size": (8, 8), "shape": None}
    p = unpack(pack(MID, batch, 1))
    assert p.strings == [[b"img1-y"], [b"img1-z"]]


def test_unpack_with_a_layout_fills_the_shape_and_checks_the_stream_count():
    data = pack(MID, _compressed([b"y" * 40, b"z" * 9], size=(24, 40)))
    asked = []

    def layout(height, width):
        asked.append((height, width))
        return container.Layout({"y": (3, 5), "hyper": (1, 2)}, 2)

    p = unpack(data, layout=layout)
    assert asked == [(24, 40)] and p.shape == {"y": (3, 5), "hyper": (1, 2)}
    assert p.strings == [[b"y" * 40], [b"z" * 9]] and unpack(data).shape is None
    with pytest.raises(FormatError, match="^corrupt file: 2 streams, the model codes 1$"):
        unpack(data, layout=lambda h, w: container.Layout((h // 8, w // 8), 1))


def test_overhead_on_32x32_is_at_most_16_bytes():
    # One stream (uniform, factorized): 14 bytes; two (hyperprior, first < 16 KiB): 16.
    assert container.overhead(32, 32, [256]) == 14
    assert container.overhead(32, 32, [4000, 180]) == 16
    assert container.overhead(512, 768, [1_600_000]) == 16


def test_model_id_must_be_4_bytes():
    with pytest.raises(ValueError):
        pack(b"\x01\x02", _compressed([b"x"]))


@pytest.mark.parametrize("size", [(0, 5), (5, 0), (65536, 1), (1, 65536)])
def test_pack_refuses_sizes_outside_the_format(size):
    with pytest.raises(FormatError, match="outside"):
        pack(MID, _compressed([b"x"], size))


def test_pack_refuses_too_many_streams():
    with pytest.raises(FormatError, match="streams"):
        pack(MID, _compressed([b"x"] * 9))


# -- refusals -------------------------------------------------------------------
GOOD = pack(MID, _compressed([b"\x01" * 40, b"\x02" * 12]))


def _err(data: bytes, **kw) -> str:
    with pytest.raises(FormatError) as info:
        unpack(data, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_empty():
    assert "empty" in _err(b"")


def test_wrong_magic():
    assert "not an .rdk file" in _err(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    assert "not an .rdk file" in _err(b"X")


def test_too_short():
    for n in range(1, container.MIN_SIZE):
        msg = _err(GOOD[:n])
        assert "truncated" in msg or "not an .rdk" in msg


def test_unknown_version():
    bad = GOOD[:2] + bytes([container.VERSION_CHECKED_RATE + 1]) + GOOD[3:]
    assert "unsupported .rdk version 5 (this rdkit-ae reads versions 1, 2, 3, 4)" in _err(bad)


def test_truncated_anywhere():
    for n in range(container.MIN_SIZE, len(GOOD)):
        msg = _err(GOOD[:n])
        assert "truncated" in msg or "checksum" in msg


def test_trailing_garbage():
    assert "checksum" in _err(GOOD + b"\0")
    assert "checksum" in _err(GOOD + GOOD)


def _caught(data: bytes, digest: int) -> bool:
    """Refused by the parser, or (a version 3/4 file) by the check of the decoded symbols' digest."""
    try:
        packed = unpack(data)
    except FormatError:
        return True
    try:
        packed.check_symbols(digest)
    except FormatError as exc:
        assert "\n" not in str(exc) and "checksum mismatch" in str(exc)
        return True
    return False


@pytest.mark.parametrize("digest", [None, 0x1234ABCD])
def test_any_bit_flip_is_caught(digest):
    good = pack(MID, _compressed([b"\x01" * 40, b"\x02" * 12]), symbols=digest)
    assert unpack(good).checked == (digest is not None)
    for i in range(len(good)):
        for bit in range(8):
            bad = bytearray(good)
            bad[i] ^= 1 << bit
            # A flip of version 1 to 3 makes an unchecked file a checked one: the symbol check refuses it.
            assert _caught(bytes(bad), digest or 0), (i, bit)


def test_checked_files_cost_no_byte_and_refuse_other_symbols():
    plain = pack(MID, _compressed([b"\x01" * 40, b"\x02" * 12]))
    checked = pack(MID, _compressed([b"\x01" * 40, b"\x02" * 12]), symbols=7)
    assert len(checked) == len(plain) and checked[2] == container.VERSION_CHECKED and plain[2] == VERSION
    rated = pack(MID, _compressed([b"\x01" * 40]), rate=1.5, symbols=7)
    assert rated[2] == container.VERSION_CHECKED_RATE and unpack(rated).rate == 1.5
    unpack(checked).check_symbols(7)
    with pytest.raises(FormatError, match="decoded other symbols"):
        unpack(checked).check_symbols(8)


def _body(h: bytes, w: bytes, rest: bytes) -> bytes:
    return _with_crc(MAGIC + bytes([VERSION]) + MID + h + w + rest)


def test_absurd_sizes_refused_before_anything_is_read():
    # 65535 x 65535 is within the format but above the default pixel limit.
    big = container._varint(65535)
    assert "above the limit" in _err(_body(big, big, b"\x01" + b"x" * 8))
    assert "outside" in _err(_body(container._varint(70000), b"\x01", b"\x01xx"))
    assert "outside" in _err(_body(b"\x00", b"\x01", b"\x01xx"))
    # A 5-byte varint of 2**34: refused by range, never used to allocate.
    assert "outside" in _err(_body(b"\x80\x80\x80\x80\x40", b"\x01", b"\x01xx"))


def test_varint_too_long_or_overlong():
    assert "longer than" in _err(_body(b"\xff" * 6, b"\x01", b"\x01xx"))
    assert "overlong" in _err(_body(b"\x81\x00", b"\x01", b"\x01xx"))


def test_stream_count_and_lengths_checked():
    assert "0 streams" in _err(_body(b"\x20", b"\x20", b"\x00xx"))
    assert "9 streams" in _err(_body(b"\x20", b"\x20", b"\x09xx"))
    # Declared lengths larger than the file.
    msg = _err(_body(b"\x20", b"\x20", b"\x02" + container._varint(10_000) + b"x" * 20))
    assert "declare 10,000 bytes but only" in msg
    # A length varint cut by the end of the file.
    assert "truncated" in _err(_body(b"\x20", b"\x20", b"\x03\x80"))


def test_max_pixels_is_configurable():
    data = pack(MID, _compressed([b"x"], (300, 300)))
    assert "above the limit" in _err(data, max_pixels=300 * 300 - 1)
    assert unpack(data, max_pixels=300 * 300).size == (300, 300)


def test_unpack_rejects_non_bytes():
    with pytest.raises(TypeError):
        unpack("RK")  # type: ignore[arg-type]


# -- decompression bombs: pixels claimed per coded byte ------------------------------------------
def test_bomb_files_from_the_issue_are_refused_from_their_header():
    """An 81-byte file claiming 65535x268 and a 24-byte one claiming 2048x2048 (issue #12): refused unparsed."""
    bomb = pack(MID, _compressed([b"\x00" * 64], (65535, 268)), max_pixels=1 << 26)
    small = pack(MID, _compressed([b"\x00" * 8], (2048, 2048)))
    assert (len(bomb), len(small)) == (81, 24)
    for data, pixels in ((bomb, 65535 * 268), (small, 2048 * 2048)):
        msg = _err(data)
        assert "refused" in msg and f"--max-pixels {pixels}" in msg and "pixels per byte" in msg
        # Trusted (an explicit limit in the CLI): the same bytes parse.
        assert unpack(data, max_pixels=1 << 26, pixels_per_byte=None).size[0] in (65535, 2048)


@pytest.mark.parametrize("payload", [0, 1, 100, 1000, 4096])
def test_claims_are_bounded_by_payload_bytes_with_a_floor(payload):
    per = container.PIXELS_PER_BYTE
    allowed = max(container.FREE_PIXELS, per * payload)
    width = 1000
    fits = (allowed // width, width)  # the largest claim of this width that passes
    over = (allowed // width + 1, width)
    assert unpack(pack(MID, _compressed([b"y" * payload], fits))).size == fits
    assert "pixels per byte" in _err(pack(MID, _compressed([b"y" * payload], over)))
    # A file of under 1 KB never claims more than 512 x 512 pixels' worth.
    if payload < 1024 - 20:
        assert fits[0] * fits[1] <= 512 * 512


def test_header_size_of_a_very_small_file_is_not_a_bomb_refusal():
    data = pack(MID, _compressed([b"\x00" * 8], (2048, 2048)))
    assert container.header_size(data) == len(data) - 8
    assert not container.claim_allowed(2048, 2048, 8) and container.claim_allowed(2048, 2048, 8, None)
