#!/usr/bin/env bash
# Rebuilds every shipped demo asset from nothing (about 75 min of pretraining on 2 CPU cores).
# Usage: bash assets/make_demo_assets.sh   (from the repository root, with .venv set up)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m engine data synth work/synth --size 128 --seed 0 --force              # 1000 unlabelled + 20 train + 100 test
$PY -m engine data synth assets/demo_data --size 128 --seed 0 --n-unlabelled 0 --force  # the same 120 labelled frames
$PY -m engine pretrain --data work/synth --preset demo --out work/demo_run --max-steps 4000
$PY -m engine export-run --run work/demo_run --out assets/demo_run      # EMA weights as fp16 + config + loss log
$PY -m engine sample --run assets/demo_run --n 16 --sampler ddpm --sampling-steps 500 --seed 1 --out work/demo_samples
cp work/demo_samples/grid.png assets/demo_samples.png
# the sweep is scored by 4-fold cross-validation over the 20 train frames (no test frame is read)
$PY -m engine sweep --run assets/demo_run --data assets/demo_data --steps 20,50,150,250 --json assets/demo_sweep.json --cache-dir work/cache
# timesteps, blocks and techniques chosen by the same cross-validation (greedy search, reuses the sweep's cells;
# techniques scored with the final 10-member fit; self-training left out: its CV costs ~13 min a score here)
$PY -m engine fit --run assets/demo_run --data assets/demo_data --recipe auto --sweep assets/demo_sweep.json --techniques n_noise,flip_tta,rgb_window,class_balanced --technique-seconds 1800 --out assets/demo_classifier --cache-dir work/cache
$PY -m engine evaluate --classifier assets/demo_classifier --data assets/demo_data --split test --json assets/demo_metrics.json --cache-dir work/cache
# uncertainty: the unfamiliar-input detector beside the run, the classifier's temperature + review calibration
$PY -m engine familiarity fit --run assets/demo_run --data work/synth --max-frames 250
$PY -m engine calibrate --classifier assets/demo_classifier --data assets/demo_data --pool work/synth --max-pool 60 --folds 2
# ablation of each technique on the plain thesis recipe (test mIoU, bootstrap intervals, paired tests)
$PY bench/ablation.py --run assets/demo_run --data assets/demo_data --pool work/synth --auto assets/demo_classifier --seeds 0,1,2 --out assets/demo_ablation.json --cache-dir work/cache
# the label-count curve (ddpm and unet; unet at 60 steps to fit the 2-core budget)
$PY -m engine compare --data assets/demo_data --run assets/demo_run --methods ddpm,unet --budget quick --label-counts 1,2,5,10,20 \
    --label-draws 2 --seeds 0,1 --set unet.steps=60 --cache-dir work/cache --json assets/demo_label_curve.json --work work/curve_work
# conditional diffusion joins the curve at fewer points (one quick fit per point; --add-to keeps the ddpm/unet runs)
$PY -m engine compare --data assets/demo_data --run assets/demo_run --methods conddiff --budget quick --label-counts 1,5,20 \
    --label-draws 1 --seeds 0 --json work/curve_cd.json --work work/curve_cd_work --add-to assets/demo_label_curve.json
# the quick comparison (about 26 min) and the fitted methods behind it
$PY -m engine compare --data assets/demo_data --run assets/demo_run --methods ddpm,unet,mae,swav,gan,datasetddpm,conddiff \
    --budget quick --pool work/synth --k-study-frames 4 --seeds 0,1,2 --seed-methods ddpm,unet,mae,swav,gan \
    --cache-dir work/cache --json assets/demo_compare.json --work work/compare_work
rm -rf assets/demo_methods && mkdir -p assets/demo_methods
$PY - <<'PYEOF'
import json, shutil
report = json.load(open("assets/demo_compare.json"))
for name, result in report["methods"].items():   # the first seed's fitted method of each
    shutil.copytree(result["dir"], f"assets/demo_methods/{name}")
    result["dir"] = f"demo_methods/{name}"
json.dump(report, open("assets/demo_compare.json", "w"), indent=1)
PYEOF
# conddiff's review flag for K = 1..10 samples (compare's scorecard calibrated K = 1..5 on the same 60 frames)
$PY -m engine calibrate --method assets/demo_methods/conddiff --pool work/synth --max-pool 60 --k-max 10
