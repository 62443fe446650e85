"""`python -m engine scorecard`: add the uncertainty scorecard to an existing compare JSON from its fitted
methods, without retraining anything (the test frames are predicted again, per frame)."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_json_atomic, write_text_atomic
from ..segmentation.classifier import load_labelled
from ..methods.compare_report import load_methods, method_dirs, method_results
from ..data.folder import open_dataset
from .scorecard import Collector, ScorecardContext, markdown
from ..errors import UserError


def add_scorecard(compare_json: str | Path, data: str | Path, run_path: str | Path | None = None,
                  methods_dir: str | Path | None = None, pool_dir: str | Path | None = None, n_typical: int = 60,
                  per_kind: int = 4, max_test: int | None = None, device: str = "cpu",
                  say: Callable[[str], None] | None = None, only: list[str] | None = None,
                  familiarity: bool = True) -> dict[str, Any]:
    """Compute every loadable method's scorecard and the run's familiarity figures; merge them into the JSON
    (and rewrite the scorecard section of its .md)."""
    from ..methods.compare import load_pool, markdown_table

    say = say or (lambda m: None)
    path = Path(compare_json)
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read the compare JSON ({e})") from None
    if not method_results(report):
        raise UserError(f"{path}: no method results to add a scorecard to")
    ds = open_dataset(data)
    run = None
    if run_path is not None:
        from ..models.run import load_run

        run = load_run(run_path, device)
    size = int(report.get("image_size") or (run.image_size if run else 64))
    dirs = method_dirs(report, Path(methods_dir) if methods_dir else None, path.parent)
    if only:  # a subset (e.g. several processes in parallel, each on its own copy, merged afterwards)
        dirs = {n: d for n, d in dirs.items() if n in only}
    methods = load_methods(dirs, ds.classes, size, device, run)
    missing = sorted(set(only or method_results(report)) - set(methods))
    if missing:
        say(f"scorecard: skipping {missing} (fitted method not found or not loadable here)")
    tr_img, tr_mask, _ = load_labelled(ds, "train", size, size)
    te_img, te_mask, te_stems = load_labelled(ds, "test", size, size)
    if max_test:
        te_img, te_mask, te_stems = te_img[:max_test], te_mask[:max_test], te_stems[:max_test]
    pool, pool_src = load_pool(ds, size, pool_dir)
    ctx = ScorecardContext.build(pool, pool_src, [ds.image(s) for s in te_stems], size, (tr_img, tr_mask), run,
                                 n_typical=n_typical, per_kind=per_kind)
    for name, m in methods.items():
        ctx.calibrate_review(m, dirs.get(name), say)
        col = Collector(ds.classes.num_classes)
        say(f"{name}: predicting {len(te_img)} test frames")
        with torch.inference_mode():
            for img, mask in zip(te_img, te_mask):
                col.add(m.predict(img), mask.numpy())
        report["methods"][name]["uncertainty_scorecard"] = ctx.finish(m, col, say)
    if familiarity:
        report["uncertainty"] = {"familiarity": ctx.familiarity(say),
                                 "unfamiliar_set": {"per_kind": per_kind, "seed": ctx.unfamiliar_seed,
                                                    "kinds": sorted({it.kind for it in ctx.unfamiliar})}}
    write_json_atomic(path, _finite(report))
    write_text_atomic(path.with_suffix(".md"), markdown_table(report) + markdown(report))
    return report


def _finite(obj: Any) -> Any:
    """NaN → None so the JSON stays standard."""
    if isinstance(obj, float):
        return None if not np.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def merge_scorecards(target: str | Path, parts: list[str | Path]) -> dict[str, Any]:
    """Copy the scorecards (and the run-level figures) of partial reports into `target`; rewrite its .md."""
    from ..methods.compare import markdown_table

    path = Path(target)
    report = json.loads(path.read_text())
    for part in parts:
        other = json.loads(Path(part).read_text())
        for name, r in other.get("methods", {}).items():
            if isinstance(r, dict) and r.get("uncertainty_scorecard") and name in report["methods"]:
                report["methods"][name]["uncertainty_scorecard"] = r["uncertainty_scorecard"]
        if other.get("uncertainty"):
            report["uncertainty"] = other["uncertainty"]
    write_json_atomic(path, _finite(report))
    write_text_atomic(path.with_suffix(".md"), markdown_table(report) + markdown(report))
    return report
