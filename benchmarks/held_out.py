"""Held-out check: trained checkpoints at each of their operating points against WebP on the same images.

For images no model saw (Kodak, CIFAR-10's test set, your own folder): every
checkpoint is evaluated at every trained rate (a variable-rate model's lambdas,
or its one point) with real ``.rdk`` files, WebP (Pillow, method 6) at every
quality 0-100 (in steps of ``--webp-step``) on the same images, and BD-rate / BD-PSNR against WebP over
``--window`` bpp (default 1-3; the points inside plus the nearest outside on
each side, on the range both curves cover). Writes a markdown table and the
curves as JSON.

    python benchmarks/held_out.py runs/fast-vr/best.pt --images ../shared/data/kodak
    python benchmarks/held_out.py a.pt b.pt --images cifar10 --split val --limit 1000   # CIFAR-10 test images
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from time_to_quality import RATE_WINDOW, ROOT, fmt, rd_points, summarize, webp_curve  # same folder

DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "kodak"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", type=Path, nargs="+")
    ap.add_argument("--images", default=str(DEFAULT_IMAGES), help="image folder, .npz, or cifar10")
    ap.add_argument("--split", default="all", help="all | train | val (cifar10: val is the test set)")
    ap.add_argument("--limit", type=int, default=None, help="first N images of the split")
    ap.add_argument("--window", type=float, nargs=2, default=RATE_WINDOW, metavar=("LO", "HI"), help="BD range (bpp)")
    ap.add_argument("--webp-step", type=int, default=5, help="WebP qualities 0-100 in steps of this [default: 5]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "held_out")
    args = ap.parse_args()
    missing = [str(c) for c in args.checkpoints if not c.is_file()]
    if missing:
        sys.exit(f"checkpoint not found: {', '.join(missing)}")
    import torch

    from rdkit_ae.data.sources import load_images
    from rdkit_ae.errors import RdkitError
    from rdkit_ae.files import write_json

    torch.set_num_threads(args.threads)
    try:
        images = load_images(args.images, args.split, limit=args.limit, download=False)
    except RdkitError as e:
        sys.exit(str(e))
    t0 = time.perf_counter()
    webp = webp_curve(images, range(0, 101, args.webp_step))
    print(f"WebP on {len(images)} images of {images.name}: {time.perf_counter() - t0:.0f} s", flush=True)

    rows = []
    for ckpt in args.checkpoints:
        curve = rd_points(ckpt, images)
        rows.append(summarize(ckpt.stem, curve, webp, {}, rates=tuple(args.window)))
    lo, hi = args.window
    lines = [
        f"Held-out check on {len(images)} images of `{images.name}` (split {args.split}): real .rdk files "
        f"against WebP (method 6, qualities 0-100 in steps of {args.webp_step}) on the same images; "
        f"BD over {lo:g}-{hi:g} bpp.",
        "",
        "| checkpoint | BD-rate vs WebP | BD-PSNR | PSNR at 2.0 bpp (WebP) | bpp range | PSNR range |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, p = r["results"]["bpp"], r["results"]["psnr-rgb"]
        lines.append(
            f"| {r['name']} | {fmt(r['bd_rate_vs_webp'], '+.1f')}% | {fmt(r['bd_psnr_vs_webp'], '+.2f')} dB "
            f"| {fmt(r['psnr_at_2bpp'], '.2f')} ({fmt(r['webp_psnr_at_2bpp'], '.2f')}) "
            f"| {min(b):.2f}-{max(b):.2f} | {min(p):.2f}-{max(p):.2f} |"
        )
    notes = sorted({n for r in rows for n in r["bd_notes"]})
    lines += (["", "Notes: " + "; ".join(notes)] if notes else []) + [""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{images.name}.md").write_text("\n".join(lines), encoding="utf-8")
    write_json(args.out / f"{images.name}.json", {"images": images.name, "webp": webp, "curves": rows})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
