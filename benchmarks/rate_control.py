"""What rate control costs against fixed-lambda coding: encode time (passes x encode) and BD-rate.

On the same images, a variable-rate checkpoint is coded two ways:

- fixed: every image at each trained rate position (one lambda for all
  images: the usual RD curve), one compress each;
- rate-controlled: every image at each target bpp (default: 5
  spread over the bpp range every image reaches, the highest rate-0 bpp of
  an image to the lowest top-rate bpp; BD-rate is over the overlap), by
  ``Codec.compress_to(bpp=...)``, a search of up to ``--passes`` compresses
  per image.

Bytes are whole ``.rdk`` files, PSNR is of the decoded image. The BD-rate of
the rate-controlled curve against the fixed one is what equal-bpp coding costs
(every image at one bpp instead of one lambda, plus 4 more bytes for a rate
field that is any float32); the time ratio is the cost of the search.

    python benchmarks/rate_control.py --checkpoint runs/fast-vr/best.pt \\
        --images ../shared/data/kodak --out benchmarks/results/rate_control/kodak
    python benchmarks/rate_control.py --checkpoint runs/fast-vr/best.pt \\
        --images ../shared/data/cifar10-lossless/dev.npz --start 2500 --limit 100 \\
        --out benchmarks/results/rate_control/cifar
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rdkit_ae.codec import Codec
from rdkit_ae.data.sources import iter_images, load_images
from rdkit_ae.evaluation.bdrate import bjontegaard
from rdkit_ae.evaluation.metrics import psnr
from rdkit_ae.machine import machine_summary


def _point(codec: Codec, images: list[np.ndarray], code) -> dict[str, float]:
    """Mean bpp, PSNR, encode seconds and passes per image of ``code(image) -> (bytes, passes)``."""
    bits, pixels, scores, seconds, passes, each = 0, 0, [], 0.0, 0, []
    for image in images:
        t0 = time.perf_counter()
        data, n = code(image)
        seconds += time.perf_counter() - t0
        bits += 8 * len(data)
        each.append(8 * len(data) / (image.shape[0] * image.shape[1]))
        pixels += image.shape[0] * image.shape[1]
        passes += n
        scores.append(psnr(image[None], codec.decompress(data, trusted=True)[None])[0])
    k = len(images)
    return {
        "bpp": bits / pixels, "psnr": float(np.mean(scores)), "encode_s": seconds / k, "passes": passes / k,
        "min_bpp": min(each), "max_bpp": max(each),
    }  # fmt: skip


def fixed_curve(codec: Codec, images: list[np.ndarray]) -> list[dict[str, float]]:
    def at(t: float):
        codec.set_rate(rate=t)
        return lambda image: (codec.compress(image), 1)

    K = len(codec.model.latent_codec.lambdas)
    return [{"rate": float(t), **_point(codec, images, at(float(t)))} for t in range(K)]


def controlled_curve(codec: Codec, images: list[np.ndarray], targets, passes: int) -> list[dict[str, float]]:
    def at(bpp: float):
        def code(image):
            data, report = codec.compress_to(image, bpp=bpp, max_passes=passes)
            return data, len(report.passes)

        return code

    return [{"target_bpp": b, **_point(codec, images, at(b))} for b in targets]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="a variable-rate checkpoint")
    ap.add_argument("--images", required=True, help="images no model was trained on (anything --data takes)")
    ap.add_argument("--start", type=int, default=0, help="skip the first N images (dev.npz: 2500, the held-out ones)")
    ap.add_argument("--limit", type=int, default=None, help="N images only (from --start)")
    ap.add_argument("--targets", type=float, nargs="*", default=None, help="bpp targets (default: see above)")
    ap.add_argument("--passes", type=int, default=12)
    ap.add_argument("--n-targets", type=int, default=5, help="default targets: this many")
    ap.add_argument("--out", type=Path, default=None, help="write results.json and results.md here")
    args = ap.parse_args()
    images = [im for _, im in iter_images(load_images(args.images, start=args.start, limit=args.limit, download=False))]
    codec = Codec.load(args.checkpoint)
    fixed = fixed_curve(codec, images)
    # a target some image cannot reach stops with the nearest value: by default, n targets inside every image's range
    low, high = fixed[0]["max_bpp"], fixed[-1]["min_bpp"]
    n = args.n_targets
    targets = args.targets or [round(low + (high - low) * (0.05 + 0.9 * i / (n - 1)), 3) for i in range(n)]
    controlled = controlled_curve(codec, images, targets, args.passes)
    bd = bjontegaard([p["bpp"] for p in fixed], [p["psnr"] for p in fixed], *_curve(controlled))
    fixed_s = float(np.mean([p["encode_s"] for p in fixed]))
    rc_s = float(np.mean([p["encode_s"] for p in controlled]))
    results = {
        "machine": machine_summary(threads=1),
        "checkpoint": str(args.checkpoint),
        "images": f"{args.images} [{args.start}:{args.start + len(images)}] ({len(images)})",
        "fixed": fixed,
        "controlled": controlled,
        "bd_rate": bd.bd_rate,
        "bd_psnr": bd.bd_psnr,
        "encode_time_ratio": rc_s / fixed_s,
    }
    lines = [
        "| curve | point | bpp | PSNR dB | encode s/image | passes |",
        "|---|---|---|---|---|---|",
        *(
            f"| fixed | rate {p['rate']:g} | {p['bpp']:.4f} | {p['psnr']:.2f} | {p['encode_s']:.4f} | 1 |"
            for p in fixed
        ),
        *(
            f"| rate control | bpp {p['target_bpp']:g} | {p['bpp']:.4f} | {p['psnr']:.2f} | {p['encode_s']:.4f} | "
            f"{p['passes']:.1f} |"
            for p in controlled
        ),
        "",
        f"BD-rate of rate control vs fixed rate positions: {bd.bd_rate:+.3f}% (BD-PSNR {bd.bd_psnr:+.4f} dB); "
        f"encode time x{rc_s / fixed_s:.2f}",
        f"{results['images']}; {results['machine']}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "results.md").write_text(text)


def _curve(points) -> tuple[list[float], list[float]]:
    return [p["bpp"] for p in points], [p["psnr"] for p in points]


if __name__ == "__main__":
    main()
