#!/usr/bin/env bash
# docs/figures/compare-cr12.png (+ .json, .csv): `rdkit compare` at CR 12 (2 bpp, whole files).
#
# Rows: CIFAR-10 images 2520, 2533 and 2581 of ../shared/data/cifar10-lossless/dev.npz (the first three of
# indices 2500-2999 that `rdkit train`'s default split, val_fraction 0.1 and seed 0, also holds out, so
# neither a model trained on images 0-2499 nor one trained on that split has seen them), and Kodak's
# kodim05 coded whole, shown by its most detailed 96x96 crop. Columns: original, WebP, each checkpoint.
#
# Usage (from the repository root): docs/figures/compare-cr12.sh [CHECKPOINT...]
#   default checkpoints: runs/fast-vr/best.pt runs/fast-vr-cb/best.pt (benchmarks/reproduce.sh trains them);
#   DATA=../shared/data
set -euo pipefail
DATA=${DATA:-../shared/data}
if [ "$#" -eq 0 ]; then
    set -- runs/fast-vr/best.pt runs/fast-vr-cb/best.pt
fi
models=()
for ckpt in "$@"; do models+=(-m "$ckpt"); done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python - "$DATA/cifar10-lossless/dev.npz" "$tmp" <<'EOF'
import sys

import numpy as np
from PIL import Image

x = np.load(sys.argv[1])["x"]
for i in (2520, 2533, 2581):
    Image.fromarray(x[i]).save(f"{sys.argv[2]}/cifar10-dev-{i}.png")
EOF
rdkit compare "$tmp"/cifar10-dev-2520.png "$tmp"/cifar10-dev-2533.png "$tmp"/cifar10-dev-2581.png \
    "$DATA/kodak/kodim05.png" "${models[@]}" --cr 12 --crop 96 --metrics psnr,ssim,haarpsi --codecs webp \
    -o docs/figures/compare-cr12.png --force
