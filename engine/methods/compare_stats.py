"""Statistics a `compare` report adds to single numbers: mean ± sd over seeds, paired tests against ddpm.

The paired test pools seeds: each test frame's confusion matrix is summed over a method's seeds, so the
tested mIoU is the seeds' pooled score and the resampling unit stays the test frame (engine/scoring/bootstrap.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..scoring.bootstrap import DEFAULT_SEED, paired_bootstrap


def seed_summary(seeds: Sequence[int], results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{"seeds", "miou_per_seed", "mean", "sd" (sample sd, ddof 1; 0 for one seed), "n"} of per-seed results."""
    vals = [float(r["miou"]) for r in results]
    return {"seeds": [int(s) for s in seeds], "miou_per_seed": vals, "mean": float(np.mean(vals)),
            "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "n": len(vals)}


def paired_vs(frame_cms: dict[str, list[np.ndarray]], reference: str = "ddpm",
              seed: int = DEFAULT_SEED) -> dict[str, dict[str, Any]]:
    """name → paired bootstrap of mIoU(name) − mIoU(reference) on the same frames ({} without the reference)."""
    if reference not in frame_cms:
        return {}
    ref = np.sum(frame_cms[reference], axis=0)
    out = {}
    for name, cms in frame_cms.items():
        if name == reference:
            continue
        out[name] = {"reference": reference, **paired_bootstrap(np.sum(cms, axis=0), ref, seed=seed)}
    return out


def stats_markdown(report: dict[str, Any]) -> list[str]:
    """Markdown lines: each method's mIoU with its interval and seeds, and the paired tests (empty if none)."""
    methods = report.get("methods", {})
    if not any("miou_ci95" in r for r in methods.values()):
        return []
    boot = report.get("bootstrap", {})
    lines = ["", f"Uncertainty: 95 % bootstrap interval over the {report.get('n_test', '?')} test frames "
             f"({boot.get('n_boot', '?')} resamples, seed {boot.get('seed', '?')})"
             + (f"; mean ± sd over seeds {report['seeds']}" if report.get("seeds") else "") + ".", "",
             "| method | mIoU [95 % CI]" + (" (first seed)" if report.get("seeds") else "")
             + " | seeds: mean ± sd | Δ vs ddpm [95 % CI] | p (paired) |", "|---|---|---|---|---|"]
    paired = report.get("paired_vs_ddpm") or {}
    for name, r in methods.items():
        ci = r.get("miou_ci95")
        cis = "–" if not ci else f"{r['miou']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]"
        sd = r.get("seeds")
        sds = "–" if not sd else f"{sd['mean']:.3f} ± {sd['sd']:.3f} (n={sd['n']})"
        p = paired.get(name)
        ds = "–" if not p else f"{p['diff']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}]"
        ps = "–" if not p else f"{p['p_value']:.3g}"
        lines.append(f"| {name} | {cis} | {sds} | {ds} | {ps} |")
    return lines


def stats_rows(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per method with an interval: mIoU, CI bounds, seeds mean/sd, paired Δ vs ddpm and p (dashboard)."""
    if not report:
        return []
    paired = report.get("paired_vs_ddpm") or {}
    rows = []
    for name, r in (report.get("methods") or {}).items():
        ci = r.get("miou_ci95") if isinstance(r, dict) else None
        if not ci:
            continue
        sd, p = r.get("seeds") or {}, paired.get(name) or {}
        several = (sd.get("n") or 0) > 1  # one seed has no spread: its sd is left empty, not shown as 0
        rows.append({"method": name, "mIoU": r["miou"], "CI low": ci["lo"], "CI high": ci["hi"],
                     "seeds mean": sd.get("mean") if several else None, "seeds sd": sd.get("sd") if several else None,
                     "seeds": sd.get("n") or 1,
                     "Δ vs ddpm": p.get("diff"), "Δ CI low": p.get("lo"), "Δ CI high": p.get("hi"),
                     "p vs ddpm": p.get("p_value")})
    return rows


def label_curve_path(compare_json: Path | None) -> Path | None:
    """The label-count curve shipped next to a compare report (demo_label_curve.json or label_curve.json)."""
    if compare_json is None:
        return None
    for name in ("demo_label_curve.json", "label_curve.json"):
        cand = Path(compare_json).with_name(name)
        if cand.is_file():
            return cand
    return None
