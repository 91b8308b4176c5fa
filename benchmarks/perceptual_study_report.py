"""The perceptual study's numbers and table: CR 12 rows, BD-rate on each metric, the Kodak check.

Used by benchmarks/perceptual_study.py. Curves are lists of points sorted by
bpp, each ``{"label", "bpp", "n_images", <metric key>: value, ...}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rdkit_ae.evaluation.bdrate import bjontegaard, psnr_at
from rdkit_ae.evaluation.perceptual import BY_KEY

CONV = ("conv-mse", "conv-hybrid")
VR = ("fast-vr", "fast-vr-hybrid")
METRICS = ("psnr", "ssim", "haarpsi", "ms_gmsd", "vsi", "mdsi")  # summary keys; MS-SSIM is n/a at 32x32
KODAK_METRICS = ("psnr", "ms_ssim", "haarpsi", "ms_gmsd", "vsi", "mdsi")
PAIRS = (("fast-vr-hybrid", "fast-vr"), ("fast-vr", "WebP"), ("fast-vr-hybrid", "WebP"))
LABEL = {"psnr": "PSNR dB", "ssim": "SSIM", "ms_ssim": "MS-SSIM", "haarpsi": "HaarPSI", "ms_gmsd": "MS-GMSD"}
LABEL.update(vsi="VSI", mdsi="MDSI")
CR12_BPP = 2.0


def arrow(key: str) -> str:
    return "↑" if BY_KEY[key].higher_is_better else "↓"


def curve_of(points, bpp_key: str = "bpp") -> list[dict[str, Any]]:
    """A bench curve's PointResults (or EvalResults) as plain points, by bpp."""
    out = []
    for p in points:
        s = p.summary
        label = getattr(p, "label", "") or str(s.get("quality", ""))
        row = {"label": label, "bpp": float(s[bpp_key]), "n_images": s.get("n_images")}
        row.update({k: s[k] for k in (*METRICS, "ms_ssim") if s.get(k) is not None})
        out.append(row)
    return sorted(out, key=lambda r: r["bpp"])


def at_cr12(name: str, curve: list[dict[str, Any]], interpolate: bool = False) -> dict[str, Any]:
    """The point closest to 2.0 bpp (the conv models' only one, WebP's closest quality), or with ``interpolate``
    every metric read at 2.0 bpp, linear between the two points around it (a variable-rate model's rates)."""
    if not interpolate:
        return dict(min(curve, key=lambda p: abs(p["bpp"] - CR12_BPP)), curve=name)
    rates = [p["bpp"] for p in curve]
    row: dict[str, Any] = {"curve": name, "bpp": CR12_BPP, "label": "interpolated"}
    for k in METRICS:
        if all(k in p for p in curve):
            row[k] = psnr_at(rates, [p[k] for p in curve], CR12_BPP)
    return row


def bd(anchor: list[dict], test: list[dict], key: str, window: tuple[float, float]) -> dict[str, Any]:
    """BD-rate (%) of ``test`` against ``anchor`` on one metric; lower-is-better metrics negated for the fit."""
    sign = 1.0 if BY_KEY[key].higher_is_better else -1.0
    a = [(p["bpp"], sign * p[key]) for p in anchor if key in p]
    t = [(p["bpp"], sign * p[key]) for p in test if key in p]
    r = bjontegaard([b for b, _ in a], [q for _, q in a], [b for b, _ in t], [q for _, q in t], window=window)
    quality = None if r.bd_psnr is None else sign * r.bd_psnr  # in the metric's own units, test minus anchor
    return {"bd_rate": r.bd_rate, "bd_quality": quality, "method": r.method, "notes": r.notes}


def bd_table(curves: dict[str, list[dict]], window: tuple[float, float], metrics=METRICS) -> dict[str, Any]:
    return {
        f"{test} vs {anchor}": {k: bd(curves[anchor], curves[test], k, window) for k in metrics}
        for test, anchor in PAIRS
        if test in curves and anchor in curves
    }


def kodak_section(ckpts: dict[str, Path], folder: Path, window: tuple[float, float]) -> dict[str, Any]:
    """The variable-rate checkpoints at their trained rates and WebP (qualities 0-100, step 5) on Kodak."""
    from rdkit_ae.data.sources import load_images
    from rdkit_ae.evaluation import classic, evaluate_operating_points

    images = load_images(str(folder), download=False)
    extra = ("haarpsi", "ms-gmsd", "vsi", "mdsi")
    webp = [classic.evaluate_codec(images, "webp", q, options={"method": 6}, metrics=extra) for q in range(0, 101, 5)]
    curves = {"WebP": curve_of(webp)}
    for name, ckpt in ckpts.items():
        points = evaluate_operating_points(ckpt, images, batch_size=1, check_exact=False, metrics=extra)
        curves[name] = curve_of(points, bpp_key="container_bpp")  # whole .rdk files, as WebP's whole files
    return {
        "images": f"{folder.name} ({len(images)} images)",
        "curves": curves,
        "bd": bd_table(curves, window, KODAK_METRICS),
    }


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _metric_fmt(key: str) -> str:
    return ".2f" if key == "psnr" else ".4f"


def cr12_rows(info: dict[str, Any]) -> list[str]:
    head = "| model | training | bpp | " + " | ".join(f"{LABEL[k]} {arrow(k)}" for k in METRICS) + " |"
    lines = [head, "|" + "---|" * (3 + len(METRICS))]
    for name in [*CONV, *VR, "WebP"]:
        p = info["cr12"][name]
        t = info["train"].get(name)
        if t is None:
            train = f"quality {p['label']}"
        else:
            ms = 1e3 * t["seconds"] / max(t["steps"] or 1, 1)
            train = f"{t['seconds'] / 60:.1f} min, {t['steps']} steps, {ms:.0f} ms/step"
        vals = " | ".join(_fmt(p.get(k), _metric_fmt(k)) for k in METRICS)
        lines.append(f"| {name} | {train} | {p['bpp']:.3f} | {vals} |")
    return lines


def bd_rows(bd_by_pair: dict[str, Any], metrics) -> list[str]:
    lines = ["| BD-rate, 1-3 bpp | " + " | ".join(LABEL[k] for k in metrics) + " |", "|" + "---|" * (1 + len(metrics))]
    for pair, row in bd_by_pair.items():
        lines.append(f"| {pair} | " + " | ".join(_fmt(row[k]["bd_rate"], "+.1f") + "%" for k in metrics) + " |")
    return lines


def markdown(info: dict[str, Any], n_images: int) -> str:
    budget = info["train"]["fast-vr"]["budget"]
    epochs = info["train"]["conv-mse"]["budget"]
    lines = [
        "# Does the VGG term pay? (CR 12)",
        "",
        f"Held-out: {info['data']['eval']} ({n_images} images); trained on {info['data']['train']}. "
        f"Real bitstreams (bpp of the coded streams, as `rdkit bench`). conv models: {epochs['epochs']} planned "
        f"epochs each; fast-vr models: {budget['time_budget']:g} wall-clock minutes each (cosine fitted to it). "
        f"Machine: {info['machine_summary']}.",
        "",
        "At 2.0 bpp (CR 12): the conv models by construction (every image 2.0 bpp), the variable-rate models "
        "read off their curve at a mean of 2.0 bpp (linear between the two trained rates around it), WebP at "
        "its quality closest to 2.0 bpp. ↑ higher is better, ↓ lower is better; "
        "MS-SSIM is not defined on 32x32 images (5 scales need over 160 pixels a side).",
        "",
        *cr12_rows(info),
        "",
        "BD-rate over 1-3 bpp on each metric (the variable-rate models' 7 trained rates; negative: fewer bits "
        "for the same quality; lower-is-better metrics negated for the fit):",
        "",
        *bd_rows(info["bd"], METRICS),
    ]
    if info.get("kodak"):
        k = info["kodak"]
        lines += [
            "",
            f"Kodak ({k['images']}, whole .rdk files at the 7 trained rates, WebP qualities 0-100 step 5):",
            "",
            *bd_rows(k["bd"], KODAK_METRICS),
        ]
    notes = sorted({n for row in info["bd"].values() for r in row.values() for n in r["notes"]})
    if notes:
        lines += ["", "Notes: " + "; ".join(notes)]
    lines += ["", f"Command: `{info['command']}` ({info['minutes']:.0f} min)", ""]
    return "\n".join(lines)
