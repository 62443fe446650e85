"""Reading a `compare` report for display: metric rows, and the fitted methods behind it (for live masks).

A report's methods live where `compare` fitted them (`result["dir"]`); a shipped workspace carries copies
under WORKSPACE/demo_methods/<name>/. Used by the dashboard's Compare page; no UI code here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.classes import ClassTable
from .base import Method, MethodContext, load_method, method_title, reference_baseline


def method_results(report: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """name → result dict (miou, per_class_iou, …) of a compare report; {} for None or an empty report."""
    if not report:
        return {}
    methods = report.get("methods", report)
    return {k: v for k, v in methods.items() if isinstance(v, dict) and "miou" in v}


def baseline_of(report: dict[str, Any] | None) -> str | None:
    """The method a report's Δ column is taken against: as recorded, else the registry's reference baseline."""
    recorded = (report or {}).get("baseline")
    return recorded if isinstance(recorded, str) else reference_baseline()


def delta_label(baseline: str | None) -> str:
    return f"Δ vs {method_title(baseline) if baseline else 'baseline'}"


def metric_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per method: mIoU, Δ vs the reference baseline, per-class IoU, Dice, accuracy, timings."""
    results = method_results(report)
    baseline = baseline_of(report)
    base = results.get(baseline, {}).get("miou") if baseline else None
    rows = []
    for name, r in results.items():
        row = {"method": name, "mIoU": r["miou"],
               delta_label(baseline): None if base is None or name == baseline else r["miou"] - base}
        row.update({f"IoU {c}": v for c, v in (r.get("per_class_iou") or {}).items()})
        row.update({"Dice": r.get("dice"), "pixel accuracy": r.get("pixel_accuracy"),
                    "train s": r.get("train_seconds"), "infer s / image": r.get("infer_seconds_per_image")})
        rows.append(row)
    return rows


def method_dirs(report: dict[str, Any], shipped: Path | None = None, base: Path | None = None) -> dict[str, Path]:
    """name → directory of each fitted method that still exists (shipped copy first, then compare's dir;
    a relative dir is read against `base`, the report's folder)."""
    out = {}
    for name, r in method_results(report).items():
        given = [Path(base or ".") / r["dir"]] if r.get("dir") else []
        for cand in ([shipped / name] if shipped else []) + given:
            if (cand / "method.json").is_file():
                out[name] = cand
                break
    return out


def load_methods(dirs: dict[str, Path], classes: ClassTable, image_size: int, device: str | torch.device,
                 run: Any = None) -> dict[str, Method]:
    """Load each fitted method for `classes` at `image_size` onto `device`; methods that need the DDPM
    get `run` (loaded on the same device).

    Methods that cannot be loaded here (fitted for other classes / size, or on another run) are skipped.
    """
    ctx = MethodContext(classes, image_size, device, run)
    out = {}
    for name, d in dirs.items():
        try:
            out[name] = load_method(d, ctx)
        except (ValueError, FileNotFoundError, OSError, RuntimeError):
            continue
    return out


def frame_prediction(method: Method, image: torch.Tensor) -> dict[str, Any]:
    """One (3,S,S) frame → {"labels": uint8 (S,S), "variance": (S,S) array or None, "score": float or None}."""
    with torch.inference_mode():
        out = method.predict(image)
    var = out.uncertainty.get("variance")
    return {"labels": out.labels.numpy().astype(np.uint8), "variance": var.numpy() if var is not None else None,
            "score": out.score}


def delta_text(value: float | None, is_reference: bool) -> str:
    """The Δ-vs-UNet cell as text: '+0.084', '−0.043', 'reference' for the UNet row, '–' when unknown."""
    if is_reference:
        return "reference"
    if value is None:
        return "–"
    return f"{value:+.3f}".replace("-", "−")


def display_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """metric_rows for a table: Δ as text (no empty cells), plus what each score was measured on."""
    n_test = report.get("n_test")
    rows = []
    for row in metric_rows(report):
        r = dict(row)
        r["Δ vs UNet"] = delta_text(row["Δ vs UNet"], row["method"] == "unet")
        r["scored on"] = f"{n_test} test frames" if n_test else "test split"
        rows.append(r)
    return rows


def headline(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The winner by mIoU, its margin over the from-scratch UNet, and how many labels it took (None: no report)."""
    results = method_results(report)
    if not results:
        return None
    winner = max(results, key=lambda k: results[k]["miou"])
    base = results.get("unet", {}).get("miou")
    n_train, n_test = report.get("n_train"), report.get("n_test")  # type: ignore[union-attr]
    out = {"winner": winner, "miou": results[winner]["miou"], "unet_miou": base,
           "margin": None if base is None else results[winner]["miou"] - base, "n_train": n_train, "n_test": n_test}
    labels = f"{n_train} labelled frames" if n_train else "the labelled frames"
    if winner == "unet":
        text = f"The from-scratch UNet wins: mIoU {base:.3f} with {labels}."
    elif base is None:
        text = f"{winner} wins: mIoU {out['miou']:.3f} with {labels} (no UNet baseline in this comparison)."
    else:
        text = (f"{winner} wins: mIoU {out['miou']:.3f}, {out['margin']:+.3f} over the from-scratch UNet "
                f"({base:.3f}), with {labels}")
        text += f", scored on {n_test} test frames." if n_test else "."
    out["text"] = text.replace("+-", "−")
    return out


def method_provenance(name: str, result: dict[str, Any], report: dict[str, Any]) -> str:
    """One line saying how a compared method's score was obtained (recipe, fit, frames)."""
    cfg = result.get("config") or {}
    n = result.get("n_test") or report.get("n_test")
    parts = []
    if name.startswith("ddpm"):
        blocks = cfg.get("blocks")
        parts.append(f"t={','.join(map(str, cfg.get('steps', [])))}, blocks "
                     f"{','.join(map(str, blocks)) if blocks else 'the run default'}")
        if cfg.get("members"):
            parts.append(f"{cfg['members']} members × {cfg.get('epochs', '?')} epochs")
    elif cfg.get("steps"):
        parts.append(f"{cfg['steps']} training steps")
    parts.append(f"compare --budget {report.get('budget', '?')}")
    parts.append(f"{n} test frames" if n else "test split")
    return " · ".join(parts)


def k_study_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """conddiff's K study as rows (K, mean, std, per-seed mIoUs, frames): empty when absent."""
    study = result.get("k_study") or {}
    n = study.get("n_frames")
    rows = []
    for k, v in study.items():
        if isinstance(v, dict) and "mean" in v:
            rows.append({"K": int(k), "mean": v["mean"], "std": v.get("std", 0.0),
                         "seeds": len(v.get("miou_per_seed", [])), "frames": n})
    return sorted(rows, key=lambda r: r["K"])
