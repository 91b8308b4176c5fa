"""Portability of .rdk files: encode here, decode as other machines would (other oneDNN kernels, oneDNN off, threads).

For each checkpoint, each image and each rate (lowest and highest), the
image is encoded twice on this machine's default kernels: on the portable
(integer) entropy-parameter path that version 3/4 files use, and on the
float path of version 1/2 files. Each file is decoded in child processes
under every condition of ``rdkit_ae.codec.crosscheck.CONDITIONS``, and
compared with the decode on this machine: "broken" is a refused file (the
symbol check) or any pixel more than one level off; the table also gives the
largest pixel difference of the files that decoded.

    python benchmarks/portability.py --checkpoint runs/fast-vr/best.pt \\
        --images ../shared/data/kodak --out benchmarks/results/portability
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
from rdkit_ae.machine import machine_info


def encode_all(codec: Codec, images: list[Path], rates: list[float | None], tmp: Path, portable: bool) -> list[dict]:
    """Write one file per (image, rate); return records with the path and this machine's decode."""
    records = []
    for rate in rates:
        if rate is not None:
            codec.set_rate(rate=rate)
        for image_path in images:
            image, _ = read_image(image_path)
            with entropy_path(codec.model, portable):
                data = codec.compress(image)
                here = codec.decompress(data, trusted=True)
            path = tmp / f"{image_path.stem}-r{rate}-{'exact' if portable else 'float'}.rdk"
            path.write_bytes(data)
            records.append({"image": image_path.name, "rate": rate, "path": str(path), "here": here})
    return records


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
    ap.add_argument("--images", type=Path, required=True, help="a folder of images (e.g. ../shared/data/kodak)")
    ap.add_argument("--limit", type=int, default=12, help="first N images of the folder")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/portability"))
    args = ap.parse_args()
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".ppm"))[: args.limit]
    results = {"machine": machine_info(), "images": [p.name for p in images], "models": {}}
    for ck in args.checkpoint:
        codec = Codec.load(ck)
        model = codec.model
        rates = [0.0, float(len(model.latent_codec.lambdas) - 1)] if model.variable_rate else [None]
        entry = {}
        with tempfile.TemporaryDirectory() as tmp:
            for portable in (True, False):
                records = encode_all(codec, images, rates, Path(tmp), portable)
                entry["exact" if portable else "float"] = check(ck, records, float_path=not portable)
        results["models"][str(ck)] = entry
        print(json.dumps({str(ck): entry}, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "| checkpoint | path | " + " | ".join(c for c in CONDITIONS if c != "default") + " |",
        "|---|---|---|---|---|---|",
    ]
    for ck, entry in results["models"].items():
        for path, table in entry.items():
            cells = [
                f"{t['broken']} of {t['files']} broken (others max diff {t['max_diff_of_others']})"
                for t in table.values()
            ]
            lines.append(f"| {Path(ck).parent.name}/{Path(ck).name} | {path} | " + " | ".join(cells) + " |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
