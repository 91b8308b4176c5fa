"""Property-based fuzzing: malformed .rdk files give clean errors, never crashes, hangs or other exceptions.

Three layers: the container parser alone (random, mutated and truncated
files); the full decode path on small real models, with the checksum fixed
after mutating so the corrupt strings reach CompressAI's rANS decoder; and
large corrupt streams in a child process (an over-read there would be a
segmentation fault, which must not take the test run down with it).
"""

from __future__ import annotations

import faulthandler
import zlib

import numpy as np
import pytest
import test_codec_support as support
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codec_support import run_python, smooth_image

from rdkit_ae.codec import Codec, container
from rdkit_ae.errors import FormatError
from rdkit_ae.guards import _pad_bytes

# Shared session fixtures (pytest finds them as attributes of this module).
tiny_checkpoints = support.tiny_checkpoints

MID = b"\x0b\xad\xc0\xde"
HANG_LIMIT_S = 240  # a whole fuzz test; far beyond its normal few seconds


@pytest.fixture(autouse=True)
def hang_guard():
    """Kill the run with a traceback instead of hanging forever if a decoder loops."""
    faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _valid_files() -> list[bytes]:
    out = []
    for streams, size in [
        ([b"\x01" * 40], (32, 32)),
        ([b"\x02" * 300, b"\x03" * 9], (512, 768)),
        ([b"a", b"", b"bc"], (1, 70)),
        ([bytes(range(256)) * 2], (33, 65535 // 33)),
    ]:
        out.append(container.pack(MID, {"strings": [[s] for s in streams], "size": size}))
    return out


VALID = _valid_files()


def _fix_crc(data: bytes) -> bytes:
    if len(data) < 4:
        return data
    return data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "big")


@st.composite
def mutated(draw, bases: list[bytes]):
    """A valid file damaged by a few random edits; often with its checksum recomputed."""
    data = bytearray(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "append", "splice_int"]))
        n = len(data)
        pos = draw(st.integers(0, max(n - 1, 0)))
        if op == "flip" and n:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and n:
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=16))
        elif op == "splice_int":  # big varint-looking values where sizes live
            data[pos:pos] = draw(st.sampled_from([b"\xff\xff\xff\xff\x0f", b"\x80\x80\x04", b"\xff\xff\x03", b"\x00"]))
    data = bytes(data)
    return _fix_crc(data) if draw(st.booleans()) else data


@st.composite
def corrupt_streams(draw, bases: list[bytes]):
    """A valid file whose quantizer strings are damaged and repacked intact: corruption aimed at the decoder."""
    packed = container.unpack(draw(st.sampled_from(bases)))
    streams = []
    for (s,) in packed.strings:
        b = bytearray(s)
        op = draw(st.sampled_from(["keep", "flip", "words", "truncate", "extend", "random"]))
        if op == "flip" and b:
            for _ in range(draw(st.integers(1, 8))):
                b[draw(st.integers(0, len(b) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "words" and len(b) >= 4:
            i = draw(st.integers(0, len(b) // 4 - 1)) * 4
            b[i : i + 4] = draw(st.binary(min_size=4, max_size=4))
        elif op == "truncate":
            del b[draw(st.integers(0, len(b))) // 4 * 4 :]
        elif op == "extend":
            b += draw(st.binary(min_size=1, max_size=64))
        elif op == "random":
            b = bytearray(draw(st.binary(min_size=0, max_size=2 * len(b) + 8)))
        streams.append(bytes(b))
    return container.pack(packed.model_id, {"strings": [[s] for s in streams], "size": packed.size})


FILES = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=8).map(lambda b: b"RK\x01" + b),
    st.binary(max_size=64).map(lambda b: _fix_crc(b"RK\x01" + b)),
    mutated(VALID),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FILES)
def test_unpack_only_raises_format_error(data):
    try:
        packed = container.unpack(data)
    except FormatError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    # Whatever parses is self-consistent and within the limits.
    h, w = packed.size
    assert 1 <= h <= 65535 and 1 <= w <= 65535 and h * w <= container.MAX_PIXELS
    assert 1 <= len(packed.strings) <= container.MAX_STREAMS
    assert packed.payload_bytes + packed.header_bytes == len(data)


# -- the full decode path on small real models --------------------------------------------
@pytest.fixture(scope="module")
def fuzz_targets(tiny_checkpoints):
    """Each tiny model's codec and a few valid files it made (various sizes)."""
    targets = {}
    for key, path in tiny_checkpoints.items():
        codec = Codec.load(path)
        files = [codec.compress(smooth_image(h, w, seed=i)) for i, (h, w) in enumerate([(32, 32), (24, 40), (5, 9)])]
        targets[key] = (codec, files)
    return targets


def test_decode_fuzz_reaches_the_entropy_decoder(fuzz_targets):
    """>= 1000 corrupt files per run through codec.decompress; only FormatError, never a crash."""
    outcomes = {"error": 0, "decoded": 0}
    keys = sorted(fuzz_targets)

    @settings(
        max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )
    @given(st.data())
    def run(data):
        key = data.draw(st.sampled_from(keys))
        codec, files = fuzz_targets[key]
        blob = data.draw(st.one_of(mutated(files), corrupt_streams(files)))
        try:
            image = codec.decompress(blob)
        except FormatError as exc:
            assert str(exc) and "\n" not in str(exc)
            outcomes["error"] += 1
            return
        packed = container.unpack(blob)
        assert image.dtype == np.uint8 and image.shape == (*packed.size, 3)
        outcomes["decoded"] += 1

    run()
    print("decode fuzz outcomes:", outcomes)
    assert sum(outcomes.values()) >= 1000
    # Checksum-fixed corruptions of entropy-coded payloads do decode (to garbage), so the
    # rANS decoder itself was exercised, not only the parser's refusals.
    assert outcomes["decoded"] > 0 and outcomes["error"] > 0


# -- large corrupt streams, in a child process ------------------------------------------------
CHILD = r"""
import sys, zlib
import numpy as np
from rdkit_ae.codec import Codec
from rdkit_ae.codec import container
from rdkit_ae.errors import FormatError
codec = Codec.load(sys.argv[1], pixels_per_byte=None)  # the decoder on corrupt streams, past the bomb bound
h, w = 512, 768
layout_streams = len(container.unpack(codec.compress(np.full((8, 8, 3), 128, np.uint8))).strings)
def rdk(streams):
    return container.pack(codec.id, {"strings": [[s] for s in streams], "size": (h, w)})
cases = {
    "8 bytes": [b"\x00" * 8] * layout_streams,
    "all 0xff": [b"\xff" * 4096] * layout_streams,
    "random": [np.random.default_rng(0).integers(0, 256, 65536, dtype=np.uint8).tobytes()] * layout_streams,
    "empty": [b""] * layout_streams,
    "odd length": [b"\x01" * 13] * layout_streams,
}
for name, streams in cases.items():
    try:
        img = codec.decompress(rdk(streams))
        print(name, "decoded", img.shape, flush=True)
    except FormatError as exc:
        print(name, "refused:", exc, flush=True)
print("survived")
"""


@pytest.mark.parametrize("key", ["factorized", "hyperprior"])
def test_large_corrupt_streams_do_not_crash_the_decoder(tiny_checkpoints, key):
    """Without padding, an 8-byte stream for a 512x768 latent made CompressAI's decoder segfault."""
    res = run_python(CHILD, str(tiny_checkpoints[key]))
    assert res.returncode == 0, f"child died with {res.returncode}: {res.stderr[-2000:]}"
    assert "survived" in res.stdout
    assert "8 bytes decoded (512, 768, 3)" in res.stdout
    assert "empty refused" in res.stdout and "odd length refused" in res.stdout


# -- the padding bound, checked on a model of CompressAI's rANS decoder ------------------------
RANS64_L = 1 << 31
MASK64 = (1 << 64) - 1


def _rans_overread(data: bytes, indexes: list[int], cdfs: list[list[int]], lengths: list[int]) -> int:
    """Words CompressAI's ``decode_with_indexes`` reads past the end of ``data`` (zeros there).

    A line-by-line Python model of compressai/cpp_exts/rans/rans_interface.cpp
    (precision 16, 4-bit bypass) and ryg_rans's Rans64 decoder.
    """
    words = np.frombuffer(data + b"\0" * (-len(data) % 4), dtype="<u4").tolist()
    pos = 0

    def read() -> int:
        nonlocal pos
        v = words[pos] if pos < len(words) else 0
        pos += 1
        return v

    x = read() | (read() << 32)

    def get_bits(n: int) -> int:
        nonlocal x
        val = x & ((1 << n) - 1)
        x >>= n
        if x < RANS64_L:
            x = ((x << 32) | read()) & MASK64
        return val

    for idx in indexes:
        cdf, max_value = cdfs[idx], lengths[idx] - 2
        cum = x & 0xFFFF
        s = 0
        while cdf[s + 1] <= cum:
            s += 1
        x = ((cdf[s + 1] - cdf[s]) * (x >> 16) + (x & 0xFFFF) - cdf[s]) & MASK64
        if x < RANS64_L:
            x = ((x << 32) | read()) & MASK64
        if s == max_value:
            val = get_bits(4)
            n_bypass = val
            while val == 15:
                val = get_bits(4)
                n_bypass += val
            for _ in range(n_bypass):
                get_bits(4)
    return max(0, pos - len(words))


@pytest.fixture(scope="module")
def factorized_tables(tiny_checkpoints):
    codec = Codec.load(tiny_checkpoints["factorized"])
    eb = codec.model.latent_codec.entropy_bottleneck
    cdfs = eb._quantized_cdf.tolist()
    lengths = eb._cdf_length.tolist()
    _, h, w = codec.model.latent_shape(32, 32)
    indexes = [c for c in range(len(cdfs)) for _ in range(h * w)]
    image = smooth_image(32, 32)
    real = container.unpack(codec.compress(image)).strings[0][0]
    return real, indexes, cdfs, lengths


def test_python_model_reads_valid_streams_exactly(factorized_tables):
    real, indexes, cdfs, lengths = factorized_tables
    assert _rans_overread(real, indexes, cdfs, lengths) == 0


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_padding_covers_every_overread(factorized_tables, data):
    real, indexes, cdfs, lengths = factorized_tables
    kind = data.draw(st.sampled_from(["random", "pattern", "truncated", "flipped"]))
    if kind == "random":
        blob = data.draw(st.binary(min_size=8, max_size=len(real) + 64))
    elif kind == "pattern":  # escape-heavy words make the decoder read the most
        blob = data.draw(st.sampled_from([b"\xff", b"\xff\xff\xff\x7f", b"\xf0", b"\x0f", b"\x80"])) * data.draw(
            st.integers(8, 2048)
        )
    elif kind == "truncated":
        blob = real[: data.draw(st.integers(8, len(real)))]
    else:
        b = bytearray(real)
        b[data.draw(st.integers(0, len(b) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        blob = bytes(b)
    blob = blob[: len(blob) // 4 * 4] or b"\0" * 8
    over = _rans_overread(blob, indexes, cdfs, lengths)
    assert 4 * over <= _pad_bytes(len(indexes), len(blob))
