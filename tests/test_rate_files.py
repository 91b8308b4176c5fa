"""Variable rate end to end: .rdk files record the operating point, CLI --lambda/--rate, bench rates on one training."""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from synthetic import smooth_images
from test_variable_rate import LAMBDAS, recipe, tiny_model
from typer.testing import CliRunner

from rdkit_ae.bench import run_sweep
from rdkit_ae.bench.spec import SpecError, load_spec
from rdkit_ae.checkpoint import save_checkpoint
from rdkit_ae.cli import app
from rdkit_ae.codec import Codec, container
from rdkit_ae.codec.container import MAGIC, VERSION, VERSION_CHECKED, VERSION_CHECKED_RATE, VERSION_RATE, pack, unpack
from rdkit_ae.codec.portability import entropy_path
from rdkit_ae.errors import FormatError, RdkitError
from rdkit_ae.model import build_model

MID = bytes.fromhex("01020304")
IMAGE = smooth_images(1, 32, 32, seed=3)[0]


def _crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def _v2(code: bytes, rest: bytes = b"\x20\x20\x01" + bytes(16)) -> bytes:
    """A version 2 file with this raw rate field (H = W = 32, one 16-byte stream)."""
    return _crc(MAGIC + bytes([VERSION_RATE]) + MID + code + rest)


# -- the container field ---------------------------------------------------------------------------
def test_rate_field_round_trips_and_costs_one_byte_on_the_quarter_grid():
    compressed = {"strings": [[bytes(range(40))], [b"z" * 8]], "size": (32, 32)}
    fixed = pack(MID, compressed)
    assert fixed[2] == VERSION and unpack(fixed).rate is None and unpack(fixed).version == VERSION
    measured = {}
    for t in (0, 1, 2.5, 3.25, 15.75, 16, 63, 1 / 3, math.log(0.01 / 0.0064) / math.log(2)):
        data = pack(MID, compressed, rate=t)
        p = unpack(data)
        assert data[2] == VERSION_RATE and p.version == VERSION_RATE
        assert p.rate == struct.unpack(">f", struct.pack(">f", t))[0]  # the float32 the gains are computed from
        assert p.strings == unpack(fixed).strings and p.size == (32, 32) and p.model_id == MID
        assert p.header_bytes == container.overhead(32, 32, [40, 8], rate=t) == len(data) - 48
        measured[t] = p.header_bytes - unpack(fixed).header_bytes
    # integer, half and quarter indices below 16: one byte; up to 63.75: two; any other float32: five
    assert [measured[t] for t in (0, 1, 2.5, 3.25, 15.75)] == [1] * 5
    assert measured[16] == measured[63] == 2
    assert measured[1 / 3] == 5 and list(measured.values())[-1] == 5


@pytest.mark.parametrize(
    "code, message",
    [
        (b"\x80\x80\x80", "truncated file: it ends inside the rate field"),
        (b"\x83\x80\x80\x80\x80\x01", "longer than 5 bytes"),
        (b"\x82\x00", "overlong encoding of the rate"),
        (container._varint(2 * 1021), "outside 0..255"),  # t = 255.25
        (container._varint(2 * 0x7FC00000 + 1), "outside 0..255"),  # NaN
        (container._varint(2 * 0x7F800000 + 1), "outside 0..255"),  # inf
        (container._varint(2 * 0x80000000 + 1), "outside 0..255"),  # -0.0
        (container._varint(2 * 0xBF800000 + 1), "outside 0..255"),  # -1.0
        (container._varint(2 * 0x40000000 + 1), "non-canonical"),  # 2.0 spelled as float bits
        (container._varint(2 * (1 << 32) + 1), "not a float32"),
    ],
)
def test_crafted_rate_fields_are_refused_in_one_line(code, message):
    data = _v2(code, b"") if message.startswith("truncated") else _v2(code)
    with pytest.raises(FormatError, match=message) as err:
        unpack(data)
    assert "\n" not in str(err.value)


def test_pack_refuses_rate_positions_outside_the_field():
    for bad in (-1.0, -0.0, math.nan, math.inf, 256, True):
        with pytest.raises(FormatError, match="rate position"):
            pack(MID, {"strings": [[b"x" * 8]], "size": (4, 4)}, rate=bad)


# -- files of a variable-rate model ---------------------------------------------------------------
@pytest.fixture(scope="module")
def vr_checkpoint(tmp_path_factory):
    model = tiny_model()
    model.eval().update(force=True)
    path = tmp_path_factory.mktemp("vr") / "vr.pt"
    save_checkpoint(path, model, model.recipe)
    return path


@pytest.fixture(scope="module")
def fixed_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("factorized", ["encoder.N=8", "encoder.M=8"])
    model.eval().update(force=True)
    path = tmp_path_factory.mktemp("fixed") / "fixed.pt"
    save_checkpoint(path, model, model.recipe)
    return path


def test_files_at_several_rates_decode_without_being_told_the_rate(vr_checkpoint):
    encoder = Codec.load(vr_checkpoint)
    decoder = Codec.load(vr_checkpoint)  # at its default, the middle: never told the files' rates
    assert encoder.rate == decoder.rate == 2.5 and encoder.operating_point == "rate 2.5 of 0..5 (lambda 0.009051)"
    lmbda = 0.01  # between trained lambdas: a position off the quarter grid
    sizes = {}
    for kwargs in ({"rate": 0}, {"rate": 1.5}, {"rate": 5}, {"lmbda": lmbda}):
        t = encoder.set_rate(**kwargs)
        data = encoder.compress(IMAGE)
        p = unpack(data)
        assert p.version == VERSION_CHECKED_RATE and p.rate == t == encoder.rate
        decoded = decoder.decompress(data)
        assert np.array_equal(decoded, encoder.reconstruct(IMAGE))
        assert decoder.rate == 2.5  # decoding restores the decoder's own operating point
        fixed_bytes = container.overhead(32, 32, [len(s[0]) for s in p.strings])
        sizes[tuple(kwargs.items())] = (len(data), p.header_bytes - fixed_bytes)
    assert sizes[(("rate", 0),)][0] < sizes[(("rate", 1.5),)][0] < sizes[(("rate", 5),)][0]
    assert [extra for _, extra in sizes.values()] == [1, 1, 1, 5]  # the rate field's cost, measured
    assert encoder.model.latent_codec.lmbda == pytest.approx(lmbda, rel=1e-6)
    # The same image at the same point through Codec.load(lmbda=...) gives the same bytes.
    assert Codec.load(vr_checkpoint, lmbda=lmbda).compress(IMAGE) == data
    assert Codec.load(vr_checkpoint, rate=5).rate == 5.0


def test_version_1_files_of_a_variable_rate_model_decode_as_before(vr_checkpoint):
    codec = Codec.load(vr_checkpoint, rate=1)
    with entropy_path(codec.model, portable=False):  # what rdkit-ae wrote before: the float path, no rate field
        old = unpack(codec.compress(IMAGE))
        expected = codec.reconstruct(IMAGE)
    v1 = pack(codec.id, {"strings": old.strings, "size": old.size})
    assert v1[2] == VERSION
    assert np.array_equal(codec.decompress(v1), expected)  # at the decoder's point, as before


def test_crafted_rate_outside_the_model_or_on_a_fixed_rate_model_is_refused(vr_checkpoint, fixed_checkpoint):
    codec = Codec.load(vr_checkpoint)
    p = unpack(codec.compress(IMAGE))
    for t, message in ((5.25, "rate position 5.25 does not fit the model.*outside 0..5"), (63, "outside 0..5")):
        data = pack(codec.id, {"strings": p.strings, "size": p.size}, rate=t)
        with pytest.raises(FormatError, match=message) as err:
            codec.decompress(data)
        assert "\n" not in str(err.value) and codec.rate == 2.5
    fixed = Codec.load(fixed_checkpoint)
    f = unpack(fixed.compress(IMAGE))
    with pytest.raises(FormatError, match="stores rate position 1, but the model has a single rate"):
        fixed.decompress(pack(fixed.id, {"strings": f.strings, "size": f.size}, rate=1))
    # The model id check stays first: a file of the variable-rate model is another model's.
    with pytest.raises(FormatError, match="made by model"):
        fixed.decompress(pack(codec.id, {"strings": p.strings, "size": p.size}, rate=1))
    with pytest.raises(RdkitError, match="single rate"):
        Codec.load(fixed_checkpoint, rate=0)
    assert fixed.rate is None and fixed.operating_point == "" and fixed.compress(IMAGE)[2] == VERSION_CHECKED


# -- the CLI -------------------------------------------------------------------------------------------
def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_compress_at_a_rate_decompress_without_flags(tmp_path, vr_checkpoint, fixed_checkpoint):
    from PIL import Image

    src = tmp_path / "im.png"
    Image.fromarray(IMAGE).save(src)
    res = _cli("compress", src, "-m", vr_checkpoint, "-o", tmp_path / "a.rdk")
    assert res.exit_code == 0 and "rate 2.5 of 0..5 (lambda 0.009051)" in res.output  # the default, printed
    res = _cli("compress", src, "-m", vr_checkpoint, "-o", tmp_path / "b.rdk", "--rate", "1", "--verify")
    assert res.exit_code == 0 and "verified, rate 1 of 0..5 (lambda 0.0032)" in res.output, res.output
    assert unpack((tmp_path / "b.rdk").read_bytes()).rate == 1.0
    res = _cli("compress", src, "-m", vr_checkpoint, "-o", tmp_path / "c.rdk", "--lambda", "0.0512")
    assert res.exit_code == 0 and "rate 5 of 0..5" in res.output
    res = _cli("decompress", tmp_path / "b.rdk", "-m", vr_checkpoint, "-o", tmp_path / "b.png")
    assert res.exit_code == 0 and "rate 1" in res.output
    expected = Codec.load(vr_checkpoint, rate=1).reconstruct(IMAGE)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), expected)
    for args, message in [
        (("--rate", "6"), "error: --rate: rate index 6.0 is outside 0..5"),
        (("--lambda", "0.1"), "error: --lambda: lambda 0.1 is outside the trained range 0.0016..0.0512"),
        (("--rate", "1", "--lambda", "0.01"), "error: use either --lambda or --rate, not both"),
        (("--rate", "nan"), "error: --rate: rate index must be a finite number; got nan"),
    ]:
        res = _cli("compress", src, "-m", vr_checkpoint, "-o", tmp_path / "x.rdk", *args)
        assert res.exit_code == 1 and message in res.output and res.output.count("\n") == 1, res.output
    res = _cli("compress", src, "-m", fixed_checkpoint, "-o", tmp_path / "x.rdk", "--rate", "0")
    assert res.exit_code == 1 and f"--rate needs a variable-rate model, but {fixed_checkpoint} has a single rate" in (
        res.output
    )
    assert not (tmp_path / "x.rdk").exists()
    assert _cli("decompress", tmp_path / "b.rdk", "-m", vr_checkpoint, "--rate", "1").exit_code == 2  # no such option


def test_cli_eval_one_curve_from_one_checkpoint(tmp_path, vr_checkpoint, fixed_checkpoint):
    npz = tmp_path / "d.npz"
    np.savez(npz, x=smooth_images(3, 32, 32, seed=4))
    out = tmp_path / "curve.json"
    res = _cli("eval", vr_checkpoint, "--data", npz, "--rate", "0,2", "--rate", "5", "-o", out, "--csv", tmp_path / "c")
    assert res.exit_code == 0, res.output
    results = json.loads(out.read_text())["results"]
    assert results["rate"] == [0, 2, 5] and results["lambda"] == pytest.approx([LAMBDAS[0], LAMBDAS[2], LAMBDAS[5]])
    assert results["bpp"] == sorted(results["bpp"]) and len(set(results["bpp"])) == 3
    # Container bytes per image: a two-stream v1 header is 15-16 bytes at 32x32, plus one for the rate field.
    assert all(16 <= (c - b) * 1024 / 8 <= 17 for c, b in zip(results["container-bpp"], results["bpp"]))
    assert "variable rate: rate 5 (lambda 0.0512)" in res.output
    assert (tmp_path / "c").read_text().splitlines()[0].startswith("checkpoint,rate,lambda,name")
    res = _cli("eval", vr_checkpoint, "--data", npz)
    assert res.exit_code == 0 and "variable rate: rate 2.5 (lambda 0.009051) (the quantizer's default" in res.output
    lam = _cli("eval", vr_checkpoint, "--data", npz, "--lambda", "0.0016", "-o", tmp_path / "l.json")
    assert lam.exit_code == 0 and json.loads((tmp_path / "l.json").read_text())["results"]["bpp"] == results["bpp"][:1]
    for args, message in [
        ((vr_checkpoint, "--rate", "0,7"), f"error: {vr_checkpoint}: rate index 7.0 is outside 0..5"),
        ((vr_checkpoint, "--rate", "x"), "error: --rate: 'x' is not a number"),
        ((vr_checkpoint, "--rate", "1", "--lambda", "0.01"), "error: use either --lambda or --rate"),
        ((vr_checkpoint, fixed_checkpoint, "--rate", "1"), f"needs a variable-rate model, but {fixed_checkpoint}"),
    ]:
        res = _cli("eval", *args, "--data", npz)
        assert res.exit_code == 1 and message in res.output and res.output.count("\n") == 1, res.output
    fixed = _cli("eval", fixed_checkpoint, "--data", npz, "-o", tmp_path / "f.json")
    assert fixed.exit_code == 0 and "variable rate" not in fixed.output
    assert not {"rate", "lambda"} & set(json.loads((tmp_path / "f.json").read_text())["results"])


# -- rdkit bench: one training, a whole curve --------------------------------------------------------
SPEC = """
name = "vr"
anchor = "WebP"
[data]
train = {{ path = "d.npz", stop = 24 }}
eval = {{ path = "d.npz", start = 24 }}
[budget]
max_steps = 2
limit_val = 4
[[model]]
recipe = "vr.toml"
name = "vr"
{rates}
[classical]
webp = [10, 90]
"""


def _spec(tmp_path, rates: str):
    if not (tmp_path / "d.npz").exists():
        np.savez(tmp_path / "d.npz", x=smooth_images(28, 16, 16, seed=5))
        (tmp_path / "vr.toml").write_text(recipe(N=8, M=12).to_toml())
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(rates=rates))
    return path


def test_bench_rates_make_one_curve_from_one_training(tmp_path):
    res = run_sweep(_spec(tmp_path, "rates = [0, 2.5, 5]"), tmp_path / "out")
    assert res.trained == 1 and not res.failures
    points = res.curves["vr"]["points"]
    assert [p.label for p in points] == ["rate=0", "rate=2.5", "rate=5"]  # sorted by bpp: rate order
    assert [p.summary["rate"] for p in points] == [0, 2.5, 5] and len({p.checkpoint for p in points}) == 1
    runs = list((tmp_path / "out" / "runs").iterdir())
    assert len(runs) == 1 and len(list(runs[0].glob("eval-*.json"))) == 3
    entry = next(e for e in json.loads(res.files["results.json"].read_text()) if e["name"] == "vr")
    assert entry["results"]["rate"] == [0, 2.5, 5] and len(entry["results"]["bpp"]) == 3
    assert res.bd["curves"]["vr"]["points"] == 3
    # A second run takes everything from the cache; lambdas naming the same positions share the training.
    again = run_sweep(_spec(tmp_path, f"lambdas = [{LAMBDAS[0]}, {LAMBDAS[5]}]"), tmp_path / "out")
    assert again.trained == 0 and [p.label for p in again.curves["vr"]["points"]] == ["lambda=0.0016", "lambda=0.0512"]
    assert [p.summary["bpp"] for p in again.curves["vr"]["points"]] == [
        points[0].summary["bpp"],
        points[2].summary["bpp"],
    ]


@pytest.mark.parametrize(
    "rates, message",
    [
        ("rates = [0, 6]", r"\(vr\): rate index 6.0 is outside 0..5"),
        ("lambdas = [0.001]", "lambda 0.001 is outside the trained range"),
        ("rates = [1]\nlambdas = [0.01]", "give either rates or lambdas, not both"),
        ("rates = []", "rates must be a non-empty array of distinct numbers"),
        ("rates = [1, 1]", "rates must be a non-empty array of distinct numbers"),
        ('rates = ["1"]', "rates must be a non-empty array"),
        ('rates = [1]\ngrid = { "quantizer.inner.N" = [4, 8] }', "cannot be combined with grid or points"),
    ],
)
def test_bench_rate_errors_before_any_work(tmp_path, rates, message):
    with pytest.raises(SpecError, match=message) as err:
        load_spec(_spec(tmp_path, rates))
    assert "\n" not in str(err.value)


def test_bench_rates_need_a_variable_rate_model(tmp_path):
    path = _spec(tmp_path, "rates = [0]")
    path.write_text(path.read_text().replace('recipe = "vr.toml"', 'recipe = "factorized"'))
    with pytest.raises(SpecError, match="rates need a variable-rate model .* this recipe has a single rate"):
        load_spec(path)


def test_bench_rates_in_worker_processes_give_the_serial_curve(tmp_path):
    from rdkit_ae.bench.local_executor import LocalProcesses

    spec = _spec(tmp_path, "rates = [0, 5]")
    serial = run_sweep(spec, tmp_path / "one")
    two = run_sweep(spec, tmp_path / "two", executor=LocalProcesses(jobs=2, threads=1))
    assert two.trained == 1 and not two.failures
    assert [p.label for p in two.curves["vr"]["points"]] == ["rate=0", "rate=5"]
    assert [p.summary["bpp"] for p in two.curves["vr"]["points"]] == [
        p.summary["bpp"] for p in serial.curves["vr"]["points"]
    ]
