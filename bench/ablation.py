"""Ablation of the techniques added to the study's recipe: each alone on top of the plain thesis recipe, and
the recipe `fit --recipe auto` chose by cross-validation, all scored on the test split with 95 % bootstrap
intervals and a paired bootstrap test against the plain recipe (same frames).

Test frames are only scored here; nothing is chosen from them (the auto recipe comes from its classifier
directory, chosen by CV on train frames). Prints the Markdown table and writes JSON + Markdown.

`--seeds 0,1,2` fits every row once per fit seed (member initialisation and pixel draws): a row's mIoU, interval
and paired test use the per-frame confusion matrices summed over its seeds (the seed-averaged classifier's
errors), and the table adds the mean ± sd of the seeds' own mIoUs — the fit-to-fit spread that a one-seed
difference between two rows has to beat.

    python bench/ablation.py --run assets/demo_run --data assets/demo_data --pool work/synth \
        --auto assets/demo_classifier --out work/ablation.json --cache-dir work/cache
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.atomic import json_text, write_text_atomic
from engine.scoring.bootstrap import bootstrap_miou, miou_of_counts, paired_bootstrap
from engine.segmentation.classifier import fit_classifier, load_labelled
from engine.segmentation.classifier_training import FitConfig
from engine.data.folder import open_dataset
from engine.segmentation.features import FeatureSpec, default_cache
from engine.scoring.metrics import ConfusionMatrix, summarize
from engine.models.run import load_run
from engine.segmentation.self_training import pool_frames

THESIS = {"steps": [20, 50, 250], "blocks": [5, 6, 7, 8, 10]}


def write_compact(path: str, report: dict) -> None:
    """The JSON on one line: 11 rows × 3 seeds × 100 frames of confusion matrices are 2.9 MB indented, 0.5 MB not."""
    write_text_atomic(path, json_text(report, what=path) + "\n")


def variants(autos: list[dict]) -> list[tuple[str, dict, dict]]:
    """(label, spec overrides, fit overrides) of every row; the first auto classifier also gets a row without its
    techniques, later ones (other candidate sets) only their CV-chosen row, after the augmentation rows."""
    rows = [("thesis recipe (t=20,50,250 × blocks 5,6,7,8,10, one noise)", {}, {}),
            ("+ multi-noise (3 noises)", {"n_noise": 3}, {}),
            ("+ test-time flip averaging", {}, {"flip_tta": True}),
            ("+ class-balanced loss", {}, {"class_balanced": True}),
            ("+ self-training (60 pool frames, p ≥ 0.9)", {}, {"self_train": 60}),
            ("+ the frame's RGB in a 3×3 window", {"rgb_window": 3}, {})]
    # after the first auto classifier's rows (8, 9, 10 with one, else 6 and 7): augmentation, its optimiser steps
    # without it, and the first auto classifier's techniques with augmentation
    extra = [("+ augmentation (3 copies: warp, mirror, colour)", {}, {"augment": 3}),
             ("thesis recipe, 32 epochs (the optimiser steps of 3 copies, no augmentation)", {}, {"max_epochs": 32})]

    def chosen_row(auto: dict) -> tuple[str, dict, dict]:
        return (f"auto recipe + CV-chosen techniques ({auto['techniques'] or 'none'})",
                {k: auto["spec"].get(k, 0) for k in ("steps", "blocks", "n_noise", "rgb_window")},
                {k: auto["fit"][k] for k in ("flip_tta", "class_balanced", "self_train", "augment")})

    if autos:
        first = autos[0]
        rows.append(("auto recipe, no techniques", {"steps": first["spec"]["steps"], "blocks": first["spec"]["blocks"]},
                     {}))
        label, spec_o, fit_o = chosen_row(first)
        rows.append((label, spec_o, fit_o))
        extra.append((f"{label} + augmentation (3 copies)", spec_o, {**fit_o, "augment": 3}))
    return rows + extra + [chosen_row(a) for a in autos[1:]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--pool", help="folder data set whose unlabeled split is the self-training pool")
    ap.add_argument("--auto", action="append", default=[],
                    help="classifier directory fitted with --recipe auto (its recipe is a row); repeat for auto "
                         "classifiers searched over other technique sets")
    ap.add_argument("--out", required=True, help="JSON to write (Markdown next to it)")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--max-pool", type=int, default=200)
    ap.add_argument("--cache-dir")
    ap.add_argument("--device", default="cpu", help="torch device for the run and the ensembles")
    ap.add_argument("--order", default="0,7,2,3,6,5,1,4,8,9,10,11,12,13",
                    help="row numbers in the order to run (row 0, the thesis recipe, always first); the JSON and "
                         "Markdown are rewritten after every row, so an interrupted run keeps what it finished")
    ap.add_argument("--seeds", default="0", help="fit seeds, comma-separated (every row is fitted once per seed)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows already in --out (same data, run, members, epochs; their per-frame confusion "
                         "matrices are stored, so the paired tests need no refit) and run only the missing ones")
    a = ap.parse_args()
    run = load_run(a.run, a.device)
    cache = default_cache(run, a.cache_dir)
    ds = open_dataset(a.data)
    pool = pool_frames(ds, run.image_size, a.pool, a.max_pool) if a.pool or ds.stems("unlabeled") else None
    autos = []
    for path in a.auto:
        cfg = json.loads((Path(path) / "config.json").read_text())
        chosen = cfg.get("stats", {}).get("recipe_search", {}).get("techniques", {}).get("chosen", {})
        autos.append({"spec": cfg["spec"], "fit": {"flip_tta": False, "self_train": 0, "augment": 0, **cfg["fit"]},
                      "techniques": ", ".join(chosen) if chosen else ""})
    te_img, te_mask, te_stems = load_labelled(ds, "test", run.image_size, run.image_size)
    rows, ref_cms = [], None
    table = variants(autos)
    order = [0] + [int(x) for x in a.order.split(",") if x.strip() and int(x) != 0 and int(x) < len(table)]
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    report = {"data": a.data, "run": a.run, "n_test": len(te_stems), "members": a.members, "epochs": a.epochs,
              "pool": a.pool, "seeds": seeds, "rows": rows}
    done: dict[tuple[str, int], dict] = {}  # (variant, seed) → {"frame_cms", "fit_seconds"} measured before
    if a.resume and Path(a.out).is_file():
        old = json.loads(Path(a.out).read_text())
        same = {k: old.get(k) for k in ("data", "run", "n_test", "members", "epochs", "pool")}
        if same != {k: report[k] for k in same}:
            raise SystemExit(f"{a.out}: --resume with other settings than the stored rows ({same})")
        for r in old["rows"]:
            per_seed = r.get("per_seed") or ([{"seed": r["fit"].get("seed", 0), "frame_cms": r["frame_cms"],
                                               "fit_seconds": r["fit_seconds"]}] if "frame_cms" in r else [])
            for ps in per_seed:  # rows written before --seeds hold one seed (their fit's)
                done[r["variant"], int(ps["seed"])] = ps
    n_classes = ds.classes.num_classes
    for i in order:
        label, spec_o, fit_o = table[i]
        spec = FeatureSpec(**{"steps": THESIS["steps"], "blocks": THESIS["blocks"], "noise_seed": 0, "n_noise": 1,
                              **spec_o})
        per_seed = []
        t0 = time.time()
        for seed in seeds:
            if (label, seed) in done:  # measured before: keep it as it was
                per_seed.append(done[label, seed])
                continue
            fcfg = FitConfig(**{"members": a.members, "max_epochs": a.epochs, "seed": seed, **fit_o})
            t_fit = time.time()
            clf = fit_classifier(run, ds, spec, fcfg, cache=cache, pool=pool if fcfg.self_train else None)
            fit_s = time.time() - t_fit
            cms = [ConfusionMatrix(n_classes).update(clf.predict_tensor(img, tuple(mask.shape)).labels.numpy(),
                                                     mask.numpy()).matrix for img, mask in zip(te_img, te_mask)]
            per_seed.append({"seed": seed, "frame_cms": np.stack(cms).tolist(), "fit_seconds": fit_s})
            print(f"{label}, seed {seed}: mIoU {float(miou_of_counts(np.stack(cms).sum(0))):.3f} ({fit_s:.0f} s fit)",
                  file=sys.stderr, flush=True)
        cms_arr = np.sum([np.array(ps["frame_cms"]) for ps in per_seed], axis=0)  # summed over seeds, per frame
        total = ConfusionMatrix(n_classes)
        total.matrix = cms_arr.sum(0)
        res = summarize(total, ds.classes.names)
        seed_mious = [float(miou_of_counts(np.array(ps["frame_cms"]).sum(0))) for ps in per_seed]
        row = {"variant": label, "spec": spec.to_dict(),
               "fit": FitConfig(**{"members": a.members, "max_epochs": a.epochs, **fit_o}).to_dict(),
               "miou": res["miou"], "per_class_iou": res["per_class_iou"], "ci95": bootstrap_miou(cms_arr),
               "seed_mious": seed_mious, "seed_sd": float(np.std(seed_mious, ddof=1)) if len(seeds) > 1 else None,
               "fit_seconds": float(np.mean([ps["fit_seconds"] for ps in per_seed])),
               "seconds": time.time() - t0, "frame_cms": cms_arr.tolist(), "per_seed": per_seed}
        if ref_cms is None:
            ref_cms = cms_arr
        else:
            row["vs_thesis"] = paired_bootstrap(cms_arr, ref_cms)
        rows.append(row)
        print(f"{label}: mIoU {row['miou']:.3f} [{row['ci95']['lo']:.3f}, {row['ci95']['hi']:.3f}] over "
              f"{len(seeds)} seed(s) ({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
        md = markdown(report)
        write_compact(a.out, report)
        write_text_atomic(Path(a.out).with_suffix(".md"), md)
    write_compact(a.out, report)  # also when the last rows were kept from --resume (not rewritten in the loop)
    write_text_atomic(Path(a.out).with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    seeds = report.get("seeds", [0])
    pooled = "; mIoU, interval and Δ from the per-frame confusion matrices summed over the seeds" \
        if len(seeds) > 1 else ""
    lines = [f"Ablation on {report['n_test']} test frames ({report['members']} members, {report['epochs']} epochs; "
             f"fit seeds {', '.join(map(str, seeds))}{pooled}; 95 % bootstrap intervals over test frames; "
             "Δ = paired bootstrap against the thesis recipe).", "",
             "| variant | test mIoU [95 % CI] | seeds: mean ± sd | Δ vs thesis [95 % CI] | p | instrument IoU | fit s |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        ci, v = r["ci95"], r.get("vs_thesis")
        d = "–" if not v else f"{v['diff']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]"
        p = "–" if not v else f"{v['p_value']:.3g}"
        inst = r["per_class_iou"].get("instrument")
        sm = r.get("seed_mious") or [r["miou"]]
        spread = f"{np.mean(sm):.3f} ± {np.std(sm, ddof=1):.3f}" if len(sm) > 1 else "–"
        lines.append(f"| {r['variant']} | {r['miou']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}] | {spread} | {d} | {p} | "
                     f"{'–' if inst is None else f'{inst:.3f}'} | {r['fit_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
