"""What the portable entropy path costs in rate: BD-rate of the exact (integer) path against the float path.

For each checkpoint of a variable-rate model, every image is coded at every
trained rate twice: on the float entropy-parameter path (what version 1/2
files used) and on the portable path (version 3/4 files). Bytes are whole
``.rdk`` files; PSNR is of the decoded image. The BD-rate of the portable
path against the float one, over the whole curve, is the price of files that
decode the same everywhere.

    python benchmarks/exact_rate_cost.py --checkpoint runs/fast-vr/best.pt \\
        --images ../shared/data/kodak --out benchmarks/results/exact_rate_cost
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rdkit_ae.codec import Codec
from rdkit_ae.codec.portability import entropy_path
from rdkit_ae.data.sources import read_image
from rdkit_ae.evaluation.bdrate import bjontegaard
from rdkit_ae.evaluation.metrics import psnr
from rdkit_ae.machine import machine_summary


def curve(codec: Codec, images: list[np.ndarray], portable: bool) -> dict[str, list[float]]:
    """Mean bpp (whole files) and mean PSNR at every trained rate, on one path."""
    out: dict[str, list[float]] = {"rate": [], "bpp": [], "psnr": []}
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    for t in range(len(codec.model.latent_codec.lambdas)):
        codec.set_rate(rate=float(t))
        total, scores = 0, []
        with entropy_path(codec.model, portable):
            for image in images:
                data = codec.compress(image)
                total += len(data)
                scores.append(psnr(image[None], codec.decompress(data, trusted=True)[None])[0])
        out["rate"].append(float(t))
        out["bpp"].append(8 * total / pixels)
        out["psnr"].append(float(np.mean(scores)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, action="append", required=True)
    ap.add_argument("--images", type=Path, required=True, help="a folder of images no model was trained on")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/exact_rate_cost"))
    args = ap.parse_args()
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".ppm"))
    images = [read_image(p)[0] for p in paths]
    results: dict = {"machine": machine_summary(threads=1), "images": [p.name for p in paths], "models": {}}
    lines = [
        "| checkpoint | BD-rate of the portable path vs float | bytes, per rate (portable / float - 1) |",
        "|---|---|---|",
    ]
    for ck in args.checkpoint:
        codec = Codec.load(ck)
        exact, flt = curve(codec, images, True), curve(codec, images, False)
        bd = bjontegaard(flt["bpp"], flt["psnr"], exact["bpp"], exact["psnr"])
        per_rate = [e / f - 1 for e, f in zip(exact["bpp"], flt["bpp"])]
        results["models"][str(ck)] = {"exact": exact, "float": flt, "bd_rate": bd.bd_rate, "bd_psnr": bd.bd_psnr}
        steps = ", ".join(f"{100 * v:+.2f}%" for v in per_rate)
        lines.append(f"| {ck.parent.name}/{ck.name} | {bd.bd_rate:+.3f}% (BD-PSNR {bd.bd_psnr:+.4f} dB) | {steps} |")
        print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = "\n".join(lines) + f"\n\n{len(images)} images from {args.images.name}; {results['machine']}\n"
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
