"""Held-out check: trained checkpoints at each of their operating points against WebP on the same images.

For images no model saw (Kodak, CIFAR-10's test set, your own folder): every
checkpoint is evaluated at every trained rate (a variable-rate model's lambdas,
or its one point: ``rdkit eval --rate all``, here through
``rdkit_ae.evaluation.evaluate_operating_points``) with real ``.rdk`` files,
WebP (Pillow, method 6) at qualities 0-100 in steps of ``--webp-step`` on the
same images, and BD-rate / BD-PSNR against WebP over ``--window`` bpp (default
1-3; the points inside plus the nearest outside on each side, on the range
both curves cover). Writes a markdown table and the curves as JSON.

    python benchmarks/held_out.py runs/fast-vr/best.pt --images ../shared/data/kodak
    python benchmarks/held_out.py a.pt b.pt --images cifar10 --split val --limit 1000   # CIFAR-10 test images
    python benchmarks/held_out.py a.pt --images ../shared/data/cifar10-lossless/dev.npz --start 2500  # dev's held-out
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "kodak"
CR12_BPP = 2.0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", type=Path, nargs="+")
    ap.add_argument("--images", default=str(DEFAULT_IMAGES), help="image folder, .npz, or cifar10")
    ap.add_argument("--split", default="all", help="all | train | val (cifar10: val is the test set)")
    ap.add_argument("--start", type=int, default=0, help="skip the first N images (dev.npz: 2500, the held-out ones)")
    ap.add_argument("--limit", type=int, default=None, help="N images of the split (from --start)")
    ap.add_argument("--window", type=float, nargs=2, default=(1.0, 3.0), metavar=("LO", "HI"), help="BD range (bpp)")
    ap.add_argument("--webp-step", type=int, default=5, help="WebP qualities 0-100 in steps of this [default: 5]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "held_out")
    args = ap.parse_args(argv)
    missing = [str(c) for c in args.checkpoints if not c.is_file()]
    if missing:
        sys.exit(f"checkpoint not found: {', '.join(missing)}")
    import torch

    from rdkit_ae.data.sources import load_images
    from rdkit_ae.errors import RdkitError
    from rdkit_ae.evaluation import classic, evaluate_operating_points
    from rdkit_ae.evaluation.bdrate import bjontegaard, psnr_at
    from rdkit_ae.files import write_json
    from rdkit_ae.machine import machine_info, machine_summary
    from rdkit_ae.text import fmt
    from rdkit_ae.training.state import run_name

    torch.set_num_threads(args.threads)
    try:
        images = load_images(args.images, args.split, start=args.start, limit=args.limit, download=False)
    except RdkitError as e:
        sys.exit(str(e))
    t0 = time.perf_counter()
    sweep = classic.sweep(images, "webp", list(range(0, 101, args.webp_step)), options={"method": 6})
    webp = {"bpp": [r.summary["bpp"] for r in sweep], "psnr-rgb": [r.summary["psnr"] for r in sweep]}
    print(f"WebP on {len(images)} images of {images.name}: {time.perf_counter() - t0:.0f} s", flush=True)

    window = (float(args.window[0]), float(args.window[1]))
    rows = []
    for ckpt in args.checkpoints:
        points = evaluate_operating_points(ckpt, images, batch_size=100, check_exact=False)  # every trained point
        curve = {
            "bpp": [float(r.summary["container_bpp"]) for r in points],  # whole .rdk files
            "psnr-rgb": [float(r.summary["psnr"]) for r in points],
            "lambda": [r.meta["lambda"] for r in points if "lambda" in r.meta],
        }
        bd = bjontegaard(webp["bpp"], webp["psnr-rgb"], curve["bpp"], curve["psnr-rgb"], window=window)
        rows.append(
            {
                "name": run_name(ckpt),
                "bd_rate_vs_webp": bd.bd_rate,
                "bd_psnr_vs_webp": bd.bd_psnr,
                "bd_method": bd.method,
                "bd_notes": bd.notes,
                "psnr_at_2bpp": psnr_at(curve["bpp"], curve["psnr-rgb"], CR12_BPP),
                "webp_psnr_at_2bpp": psnr_at(webp["bpp"], webp["psnr-rgb"], CR12_BPP),
                "results": curve,
            }
        )
    lo, hi = window
    lines = [
        f"Held-out check on {len(images)} images of `{images.name}` (split {args.split}): real .rdk files "
        f"against WebP (method 6, qualities 0-100 in steps of {args.webp_step}) on the same images; "
        f"BD over {lo:g}-{hi:g} bpp. Machine: {machine_summary(threads=args.threads)}.",
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
    result = {"images": images.name, "window": list(window), "machine": machine_info(), "webp": webp, "curves": rows}
    write_json(args.out / f"{images.name}.json", result)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
