"""ONNX Runtime decoding against torch on real photographs: the same symbols, pixels within one level, and time.

For each checkpoint (default: the 5-minute ``fast-vr``), each photograph and
each rate position (lowest, middle, highest, and one between the quarter
grid), the image is encoded by torch (a version 4 file); the file is decoded
by the torch codec and by an ``OnnxDecoder`` of the checkpoint's export, both
on one thread. Reported per file: whether the symbols of every rANS string
are equal (torch's, recorded at its coder, against ONNX Runtime's; the file's
symbol check passing as well), the largest pixel difference, the share of
pixels that differ, and each decoder's time (best of ``--repeat``).

    python benchmarks/onnx_decode.py --checkpoint /work/runs/fast-vr/best.pt --images ../shared/data/kodak \\
        --out benchmarks/results/onnx_decode
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from compressai.entropy_models import EntropyModel

from rdkit_ae.codec import Codec, container, latent_layout
from rdkit_ae.codec.determinism import fixed_threads
from rdkit_ae.codec.rate import file_rate
from rdkit_ae.data.sources import read_image
from rdkit_ae.guards import SymbolLedger
from rdkit_ae.interop.onnx import OnnxDecoder, export_onnx
from rdkit_ae.machine import machine_summary


class Recorder(SymbolLedger):
    """A ledger that also keeps every symbol array the torch decoder's coders return."""

    def __init__(self) -> None:
        super().__init__("decode")
        self.arrays: list[np.ndarray] = []

    def add(self, symbols) -> None:
        self.arrays.append(np.array(symbols, dtype=np.int32).reshape(-1))
        super().add(symbols)


def torch_symbols(codec: Codec, data: bytes) -> list[np.ndarray]:
    packed = container.unpack(data, pixels_per_byte=None)
    coders = [m.entropy_coder for m in codec.model.modules() if isinstance(m, EntropyModel)]
    recorder = Recorder()
    for coder in coders:
        coder.ledger = recorder
    try:
        with file_rate(codec.model, packed.rate), fixed_threads():
            codec.model.decompress(packed.strings, latent_layout(codec.model, *packed.size).shape, packed.size)
    finally:
        for coder in coders:
            coder.ledger = None
    return recorder.arrays


def best_time(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, min(times)


def measure(codec: Codec, decoder: OnnxDecoder, image: np.ndarray, repeat: int) -> dict:
    data = codec.compress(image)
    reference, t_torch = best_time(lambda: codec.decompress(data, trusted=True), repeat)
    decoded, t_onnx = best_time(lambda: decoder.decode(data, trusted=True), repeat)
    symbols = torch_symbols(codec, data)
    same = len(symbols) == len(decoded.symbols) and all(
        np.array_equal(a, b.reshape(-1)) for a, b in zip(symbols, decoded.symbols)
    )
    diff = np.abs(decoded.image.astype(np.int16) - reference.astype(np.int16))
    h, w = image.shape[:2]
    return {
        "bytes": len(data),
        "bpp": round(8 * len(data) / (h * w), 4),
        "symbols_equal": bool(same),
        "symbols": int(sum(a.size for a in symbols)),
        "max_pixel_diff": int(diff.max()),
        "pixels_differing": round(float((diff > 0).any(axis=2).mean()), 6),
        "torch_s": round(t_torch, 4),
        "onnx_s": round(t_onnx, 4),
    }


def run(checkpoint: Path, images: list[tuple[str, np.ndarray]], repeat: int) -> dict:
    codec = Codec.load(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = export_onnx(checkpoint, Path(tmp) / "export")
        export_s = time.perf_counter() - start
        decoder = OnnxDecoder(report.folder, threads=1)
    k = len(codec.model.latent_codec.lambdas) if codec.model.variable_rate else 0
    rates = [0.0, (k - 1) / 2, float(k - 1), 2.3] if k else [None]
    rows = []
    for rate in rates:
        if rate is not None:
            codec.set_rate(rate=rate)
        for name, image in images:
            row = {"image": name, "rate": rate, **measure(codec, decoder, image, repeat)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {
        "model_id": codec.id_hex,
        "family": report.manifest.family,
        "export_s": round(export_s, 2),
        "export_bytes": report.nbytes,
        "files": rows,
    }


def summary(rows: list[dict]) -> dict:
    torch_s, onnx_s = sum(r["torch_s"] for r in rows), sum(r["onnx_s"] for r in rows)
    return {
        "files": len(rows),
        "symbols_equal": sum(r["symbols_equal"] for r in rows),
        "max_pixel_diff": max(r["max_pixel_diff"] for r in rows),
        "mean_pixels_differing": round(sum(r["pixels_differing"] for r in rows) / len(rows), 6),
        "torch_s_mean": round(torch_s / len(rows), 4),
        "onnx_s_mean": round(onnx_s / len(rows), 4),
    }


def markdown(results: dict) -> str:
    lines = [
        "# ONNX Runtime decode vs torch decode (`benchmarks/onnx_decode.py`)",
        "",
        f"Machine: {results['machine']}; both decoders on one thread; times are the best of {results['repeat']}.",
        f"Images: {results['images']} ({results['count']} photographs, held out: the models train on CIFAR-10).",
        "Each file is encoded by torch; `symbols equal` compares every rANS string's symbols of the two decoders",
        "(and the file's symbol check passed in both); pixel differences are ONNX Runtime's float32 synthesis",
        "against torch's.",
        "",
        "| checkpoint | family | files | symbols equal | max pixel diff | pixels differing | torch s/file "
        "| ONNX s/file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ck, entry in results["models"].items():
        s = entry["summary"]
        lines.append(
            f"| `{ck}` | {entry['family']} | {s['files']} | {s['symbols_equal']}/{s['files']} | {s['max_pixel_diff']} "
            f"| {100 * s['mean_pixels_differing']:.4f}% | {s['torch_s_mean']:.3f} | {s['onnx_s_mean']:.3f} |"
        )
    for ck, entry in results["models"].items():
        lines.append(f"\nExport of `{ck}`: {entry['export_s']} s, {entry['export_bytes']:,} bytes.")
    lines += ["", "Per file:", "", "| checkpoint | image | rate | bpp | symbols equal | max diff | torch s | ONNX s |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for ck, entry in results["models"].items():
        for r in entry["files"]:
            lines.append(
                f"| `{Path(ck).parent.name}` | {r['image']} | {r['rate']} | {r['bpp']} | {r['symbols_equal']} "
                f"| {r['max_pixel_diff']} | {r['torch_s']:.3f} | {r['onnx_s']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, action="append", help="default: /work/runs/fast-vr/best.pt")
    parser.add_argument("--images", type=Path, default=Path("../shared/data/kodak"))
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/onnx_decode"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoints = args.checkpoint or [Path("/work/runs/fast-vr/best.pt")]
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() == ".png")[: args.limit]
    images = [(p.stem, read_image(p)[0].copy()) for p in paths]
    results: dict = {
        "machine": machine_summary(threads=1),
        "images": str(args.images),
        "count": len(images),
        "repeat": args.repeat,
        "models": {},
    }
    for ck in checkpoints:
        entry = run(ck, images, args.repeat)
        entry["summary"] = summary(entry["files"])
        results["models"][str(ck)] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
