"""Portability of .rdk files: encode here, decode as other machines would (other oneDNN kernels, oneDNN off, threads).

For each checkpoint, each image and each rate (lowest and highest), the
image is encoded twice on this machine's default kernels: on the portable
(integer) entropy-parameter path that version 3/4 files use, and on the
float path of version 1/2 files. Each file is decoded in child processes
under every condition of ``rdkit_ae.codec.crosscheck.CONDITIONS``, and
compared with the decode on this machine: "broken" is a refused file (the
symbol check) or any pixel more than one level off; the table also gives the
largest pixel difference of the files that decoded.

    python benchmarks/portability.py --checkpoint runs/fast-vr/best.pt --images ../shared/data/kodak \\
        --npz ../shared/data/cifar10-lossless/dev.npz --npz-range 2900:3000 --out benchmarks/results/portability
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from rdkit_ae.codec import Codec
from rdkit_ae.codec.crosscheck import CONDITIONS, decode_elsewhere
from rdkit_ae.codec.portability import entropy_path
from rdkit_ae.data.sources import read_image
from rdkit_ae.machine import machine_summary


def encode_all(
    codec: Codec, images: list[tuple[str, np.ndarray]], rates: list[float | None], tmp: Path, portable: bool
) -> list[dict]:
    """Write one file per (image, rate); return records with the path and this machine's decode."""
    records = []
    for rate in rates:
        if rate is not None:
            codec.set_rate(rate=rate)
        for name, image in images:
            with entropy_path(codec.model, portable):
                data = codec.compress(image)
                here = codec.decompress(data, trusted=True)
            path = tmp / f"{name}-r{rate}-{'exact' if portable else 'float'}.rdk"
            path.write_bytes(data)
            records.append({"image": name, "rate": rate, "path": str(path), "here": here})
    return records


def load_set(
    folder: Path | None, limit: int, npz: Path | None, npz_range: str
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Named image sets: photographs from a folder, and CIFAR-10 images from an npz slice ``start:stop``."""
    sets = {}
    if folder is not None:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".ppm"))[:limit]
        sets[folder.name] = [(p.stem, read_image(p)[0]) for p in paths]
    if npz is not None:
        start, stop = (int(v) for v in npz_range.split(":"))
        with np.load(npz) as data:
            x = data["x"][start:stop]
        sets[f"{npz.stem}[{npz_range}]"] = [
            (f"{npz.stem}-{start + i}", np.ascontiguousarray(im)) for i, im in enumerate(x)
        ]
    return sets


def check(checkpoint: Path, records: list[dict], float_path: bool) -> dict[str, dict]:
    """Per condition: files broken (refused or > 1 level off) and the largest difference of the others."""
    table = {}
    for condition in CONDITIONS:
        if condition == "default":
            continue
        decoded = decode_elsewhere(checkpoint, [r["path"] for r in records], condition, float_path=float_path)
        broken, worst = 0, 0
        for rec, dec in zip(records, decoded):
            if dec.image is None:
                broken += 1
                continue
            diff = int(np.abs(dec.image.astype(np.int16) - rec["here"].astype(np.int16)).max())
            if diff > 1:
                broken += 1
            else:
                worst = max(worst, diff)
        table[condition] = {"files": len(records), "broken": broken, "max_diff_of_others": worst}
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, action="append", required=True)
    ap.add_argument("--images", type=Path, help="a folder of images (e.g. ../shared/data/kodak)")
    ap.add_argument("--limit", type=int, default=12, help="first N images of the folder")
    ap.add_argument("--npz", type=Path, help="an npz of images (e.g. ../shared/data/cifar10-lossless/dev.npz)")
    ap.add_argument("--npz-range", default="2900:3000", help="start:stop of the npz images")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/portability"))
    args = ap.parse_args()
    sets = load_set(args.images, args.limit, args.npz, args.npz_range)
    results: dict = {"machine": machine_summary(threads=1), "sets": {k: len(v) for k, v in sets.items()}, "models": {}}
    for ck in args.checkpoint:
        codec = Codec.load(ck)
        model = codec.model
        rates = [0.0, float(len(model.latent_codec.lambdas) - 1)] if model.variable_rate else [None]
        for set_name, images in sets.items():
            entry = {}
            with tempfile.TemporaryDirectory() as tmp:
                for portable in (True, False):
                    records = encode_all(codec, images, rates, Path(tmp), portable)
                    entry["exact" if portable else "float"] = check(ck, records, float_path=not portable)
            results["models"][f"{ck.parent.name}/{ck.name} on {set_name}"] = entry
            print(json.dumps({f"{ck} on {set_name}": entry}, indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(write_table(results, args.out))


def write_table(results: dict, out: Path) -> str:
    """results.md beside results.json: broken files per condition, for each model, image set and path."""
    others = [c for c in CONDITIONS if c != "default"]
    lines = ["| files | path | " + " | ".join(others) + " |", "|---|---|" + "---|" * len(others)]
    for what, entry in results["models"].items():
        for path, table in entry.items():
            cells = [
                f"{t['broken']} of {t['files']} broken (max diff {t['max_diff_of_others']})" for t in table.values()
            ]
            lines.append(f"| {what} | {path} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + f"\n\nEncoded and decoded on: {results['machine']}\n"
    (out / "results.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
