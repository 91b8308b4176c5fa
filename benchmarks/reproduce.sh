#!/usr/bin/env bash
# Regenerate every figure the README quotes, from the repository root, with
# ../shared beside the repository (real CIFAR-10 images, Kodak, VGG weights).
# About 3.5 hours on a quiet 2-core CPU. Results land in benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
# An absolute path: [env] values are part of the sweep's cache keys, and the
# spec resolves the same file to this path (so runs of `rdkit bench` alone share them).
export RDKIT_VGG_WEIGHTS=${RDKIT_VGG_WEIGHTS:-$(realpath -m ../shared/models/vgg16-caffe-features-conv1_1-conv4_3.pth)}
export RDKIT_VGG_PREPROCESSING=${RDKIT_VGG_PREPROCESSING:-caffe}
mkdir -p benchmarks/results

python benchmarks/cli_startup.py | tee benchmarks/results/cli_startup.txt
python benchmarks/train_speed.py --threads 2 --markdown benchmarks/results/train_speed.md --json benchmarks/results/train_speed.json
python benchmarks/eval_speed.py | tee benchmarks/results/eval_speed.txt

# The RD sweep (cached and resumable: rerunning continues where it stopped).
rdkit bench benchmarks/cifar10-rd.toml --out runs/bench-cifar10-rd
mkdir -p benchmarks/results/cifar10-rd
cp runs/bench-cifar10-rd/{bd_rate.json,bd_rate.md,rd.png,results.csv,results.json,sweep.json} benchmarks/results/cifar10-rd/

python benchmarks/hybrid_vs_mse.py --runs runs/hybrid-vs-mse

# conv-hybrid at CR 12 with and without the linear shortcut (one thread: the README's run shared the cores).
python benchmarks/hybrid_vs_mse.py --recipes conv-hybrid --variant "linear shortcut" encoder.shortcut=linear \
  decoder.shortcut=linear --threads 1 --runs runs/hybrid-shortcut --markdown benchmarks/results/hybrid_shortcut.md

# Does the VGG term pay? MSE vs MSE + VGG at CR 12 and over 1-3 bpp, WebP, every metric (~30 min, alone).
python benchmarks/perceptual_study.py --out runs/perceptual-study

# Time to quality of the CPU recipe against WebP (training budgets in wall-clock minutes, ~55 min),
# then the ablations at 15 minutes, two trainings at a time on one core each (~75 min; [parallel] in the spec);
# the report keeps every checkpoint, named by curve, for the held-out check on Kodak.
rdkit bench benchmarks/time_to_quality.toml --out runs/ttq
rdkit bench benchmarks/time_to_quality_ablations.toml --out runs/ttq-ablations
python benchmarks/time_to_quality_report.py --budgets runs/ttq --ablations runs/ttq-ablations --keep runs/ttq-models
python benchmarks/held_out.py runs/ttq-models/fast-vr-all-levers-on.pt --images ../shared/data/kodak
# Parallel sweeps: --jobs 1 against --jobs 2, one thread per job.
python benchmarks/parallel_sweep.py | tee benchmarks/results/parallel_sweep.txt

# Portable files (~25 min): two short trainings, then the portable path against the float path:
# decoding under other kernels (child processes), its rate cost, the ONNX decode and the CR-12 picture.
DEV=../shared/data/cifar10-lossless/dev.npz
rdkit train --recipe fast-vr --data "$DEV" --time-budget 5 --out runs/fast-vr --no-eval -q
rdkit train --recipe fast-vr-checkerboard --data "$DEV" --time-budget 4 --out runs/fast-vr-cb --no-eval -q
python benchmarks/portability.py --checkpoint runs/fast-vr/best.pt --checkpoint runs/fast-vr-cb/best.pt \
  --images ../shared/data/kodak --npz "$DEV" --npz-range 2900:3000 --out benchmarks/results/portability
python benchmarks/exact_rate_cost.py --checkpoint runs/fast-vr/best.pt --checkpoint runs/fast-vr-cb/best.pt \
  --images ../shared/data/kodak --out benchmarks/results/exact_rate_cost
python benchmarks/onnx_decode.py --checkpoint runs/fast-vr/best.pt --checkpoint runs/fast-vr-cb/best.pt \
  --images ../shared/data/kodak --out benchmarks/results/onnx_decode  # needs the [onnx] extra
bash docs/figures/compare-cr12.sh runs/fast-vr/best.pt runs/fast-vr-cb/best.pt  # README's CR-12 grid (rdkit compare)

# Shipping (issue #19), one thread, alone (two models built for decode speed trained first: 8x8 blocks, fast-decode):
rdkit train --recipe fast-vr --set encoder.factor=8 --data "$DEV" --time-budget 5 --out runs/fast-vr-f8 --no-eval -q
rdkit train --recipe fast-decode --data "$DEV" --time-budget 5 --out runs/fast-decode --no-eval -q
# codec speed beside 0.3.0, WebP and CompressAI, the stage profile with
# each network's floor, and rate control (landing per image; cost against one lambda).
export OMP_NUM_THREADS=1
python benchmarks/codec_speed.py --checkpoint fast-vr=runs/fast-vr/best.pt \
  --checkpoint fast-vr-checkerboard=runs/fast-vr-cb/best.pt --checkpoint fast-vr-f8=runs/fast-vr-f8/best.pt \
  --rate 3 --images ../shared/data/kodak --baseline a463f78 --out benchmarks/results/codec_speed
python benchmarks/profile_codec.py --checkpoint runs/fast-vr/best.pt --checkpoint runs/fast-vr-cb/best.pt --rate 3 \
  --images ../shared/data/kodak --out benchmarks/results/codec_speed/profile.md
python benchmarks/compile_speed.py --checkpoint runs/fast-vr/best.pt --checkpoint runs/fast-vr-cb/best.pt \
  --out benchmarks/results/compile_speed.md  # cold; add --cache-dir DIR (twice) for the warm case
python benchmarks/rate_targets.py --checkpoint runs/fast-vr/best.pt --images ../shared/data/kodak \
  --images "$DEV:2500:2600" --out benchmarks/results/rate_targets
python benchmarks/rate_control.py --checkpoint runs/fast-vr/best.pt --images ../shared/data/kodak \
  --out benchmarks/results/rate_control/kodak
python benchmarks/rate_control.py --checkpoint runs/fast-vr/best.pt --images "$DEV" --start 2500 --limit 100 \
  --out benchmarks/results/rate_control/cifar
unset OMP_NUM_THREADS
# fast-vr against the models built for decode speed: speed beside WebP, quality held out.
OMP_NUM_THREADS=1 python benchmarks/codec_speed.py --checkpoint fast-vr=runs/fast-vr/best.pt \
  --checkpoint fast-vr-f8=runs/fast-vr-f8/best.pt --checkpoint fast-decode=runs/fast-decode/best.pt --rate 3 \
  --images ../shared/data/kodak --out benchmarks/results/fast-decode/speed
FAST="runs/fast-vr/best.pt runs/fast-vr-f8/best.pt runs/fast-decode/best.pt"
python benchmarks/held_out.py $FAST --images ../shared/data/kodak --window 0.5 2 --out benchmarks/results/fast-decode/kodak
python benchmarks/held_out.py $FAST --images "$DEV" --start 2500 --out benchmarks/results/fast-decode/cifar
