"""The uncertainty scorecard of each compared method, and the run's unfamiliar-input figures.

Per method: pixel ECE of its probabilities (15 bins) with the reliability diagram; for the DDPM-feature
ensemble also the temperature from out-of-fold train pixels and the ECE after it (other methods train on
every labelled frame, so they have no held-out labelled pixels without refitting: "n/a"); the review flag's
AUROC / risk–coverage / AURC on the test frames with the threshold from typical pool frames ("flags about
10 % of typical frames"); and how well the method's own score separates the unfamiliar-input set from the
test frames. Run level: the DDPM familiarity detector on the same frames.

Used by `compare` (a small hook: `Collector.add` per test frame, `ScorecardContext.finish` per method) and
by `python -m engine scorecard`, which adds the scorecard to an existing compare JSON from the fitted methods.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.transforms import fit_square, resize_shorter, to_tensor
from . import familiarity as fam
from .calibration import Reliability, apply_temperature
from .method_review import frame_score, typical_scores
from .review import (
    DEFAULT_PERCENT,
    FIXED_BAR,
    ReviewCalibration,
    auroc,
    frame_miou,
    review_quality,
)
from .unfamiliar_set import TestImage, build_set

log = logging.getLogger(__name__)
Say = Callable[[str], None]


@dataclass
class Collector:
    """Per test frame of one method: probabilities (for ECE), frame mIoU and score."""

    num_classes: int
    probs: list[torch.Tensor] = field(default_factory=list)
    truths: list[np.ndarray] = field(default_factory=list)
    mious: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    own_score: bool = True  # False once a frame came without the method's own score (entropy used instead)

    def add(self, out: Any, truth: np.ndarray) -> None:
        self.own_score = self.own_score and out.score is not None
        self.probs.append(out.probs.detach().float().cpu())
        self.truths.append(np.asarray(truth))
        self.mious.append(frame_miou(out.labels.numpy(), truth, self.num_classes))
        self.scores.append(frame_score(out))


def score_name(method: Any, own_score: bool = True) -> str:
    if method.name == "conddiff" and own_score:
        return f"sample variance, top 10 % pixels (K = {method.config['samples']})"
    return "class-averaged entropy + (1 − expected mIoU) of its probabilities"


def familiarity_input(image: np.ndarray, run: Any) -> torch.Tensor:
    """The tensor the familiarity check sees for a frame: exactly what `segment` feeds the DDPM."""
    small, _ = resize_shorter(image, run.image_size, multiple=run.model.downsample_factor)
    return to_tensor(small)


@dataclass
class ScorecardContext:
    """What every method's scorecard shares: typical frames, the unfamiliar set, train frames, the run."""

    typical: torch.Tensor  # (N,3,S,S) unlabelled pool frames: neither test nor train
    typical_source: str
    unfamiliar: list[TestImage]
    test_images: list[np.ndarray]  # original-size test frames (for the familiarity check)
    size: int
    train: tuple[torch.Tensor, torch.Tensor] | None = None
    run: Any = None
    percent: float = DEFAULT_PERCENT
    unfamiliar_seed: int = 0
    calibrations: dict[str, ReviewCalibration] = field(default_factory=dict)

    @classmethod
    def build(cls, pool: torch.Tensor, pool_source: str, test_images: Sequence[np.ndarray], size: int,
              train: tuple[torch.Tensor, torch.Tensor] | None = None, run: Any = None, n_typical: int = 60,
              per_kind: int = 4, seed: int = 0) -> ScorecardContext:
        typical = pool[::max(1, len(pool) // n_typical)][:n_typical]  # the selection `calibrate --max-pool N` makes
        items = build_set(list(test_images), per_kind=per_kind, seed=seed)
        return cls(typical, f"{len(typical)} frames of the unlabelled pool ({pool_source})", items, list(test_images),
                   size, train, run, unfamiliar_seed=seed)

    def method_input(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor(fit_square(image, self.size))

    # ---- per method --------------------------------------------------------------------------------
    def calibrate_review(self, method: Any, method_dir: Any = None, say: Say | None = None) -> ReviewCalibration:
        """Score the typical frames, keep the calibration (and save it beside the method, where conddiff's own
        review flag reads it: K = 1..its sample count)."""
        from . import method_review

        digest = method_review.frames_digest(self.typical)
        score = method_review.score_id(method.name)
        saved = method_review.load(method_dir, method.name)  # only calibrations of the method's current score
        if saved.get("default") is not None and saved["default"].meta.get("frames_digest") == digest:
            calibs = {k: v.to_dict() for k, v in saved.items()}  # the same frames were scored before: reuse
            if say:
                say(f"{method.name}: review calibration on these {len(self.typical)} typical frames reused")
        else:
            if say:
                say(f"{method.name}: scoring {len(self.typical)} typical frames for the review threshold")
            scores = typical_scores(method, self.typical, k_max=int(method.config.get("samples", 5)))
            calibs = method_review.calibrations(scores, self.typical_source, digest, score)
            if method_dir is not None:  # keep other K of the same frames written meanwhile (calibrate --k-max 10)
                again = method_review.load(method_dir, method.name)
                same = {k: v.to_dict() for k, v in again.items() if v.meta.get("frames_digest") == digest}
                method_review.save(method_dir, {**same, **calibs})
        if hasattr(method, "review_calibrations"):
            method.review_calibrations = {k: ReviewCalibration.from_dict(v) for k, v in calibs.items()}
        self.calibrations[method.name] = ReviewCalibration.from_dict(calibs["default"])  # type: ignore[assignment]
        return self.calibrations[method.name]

    def finish(self, method: Any, col: Collector, say: Say | None = None) -> dict[str, Any]:
        say = say or (lambda m: log.info("%s", m))
        rel = Reliability()
        for p, t in zip(col.probs, col.truths):
            rel.update(p, t)
        card: dict[str, Any] = {"score": score_name(method, col.own_score), "ece": rel.ece, "reliability": rel.to_dict()["bins"],
                                "n_test": len(col.mious)}
        card.update(self._temperature(method, col, say))
        calib = self.calibrations.get(method.name) or self.calibrate_review(method, None, say)
        thr = calib.threshold(self.percent)
        flagged = np.asarray(col.scores) > thr
        m = np.asarray(col.mious)
        card["review"] = {**review_quality(col.scores, col.mious), "percent_flagged_typical": self.percent,
                          "threshold": thr, "typical_source": self.typical_source,
                          "test_flagged_share": float(flagged.mean()),
                          "miou_flagged": float(m[flagged].mean()) if flagged.any() else None,
                          "miou_unflagged": float(m[~flagged].mean()) if (~flagged).any() else None}
        items = [it for it in self.unfamiliar if it.group == "unfamiliar"]
        say(f"{method.name}: scoring {len(items)} unfamiliar images")
        with torch.inference_mode():
            un = np.asarray([frame_score(method.predict(self.method_input(it.image))) for it in items])
        card["unfamiliar_auroc"] = auroc(np.r_[col.scores, un], np.r_[np.zeros(len(col.scores)), np.ones(len(un))])
        card["unfamiliar_flagged_share"] = float((un > thr).mean()) if len(un) else None
        return card

    def _temperature(self, method: Any, col: Collector, say: Say) -> dict[str, Any]:
        clf = getattr(method, "clf", None)
        if clf is None or self.train is None:
            return {"temperature": None, "ece_after_temperature": None,
                    "temperature_note": "n/a: the method trains on every labelled frame, so there are no held-out "
                                        "labelled pixels without refitting it"}
        from .classifier_calibration import out_of_fold, temperature_report

        if clf.calibration is not None and clf.temperature != 1.0:  # fitted by `calibrate` the same way: reuse it
            t, note = float(clf.temperature), f"the classifier's own temperature ({clf.calibration.get('method', '')})"
        else:
            say(f"{method.name}: out-of-fold refits on the train frames for a temperature")
            images, masks = self.train
            maps = clf.extractor().many(images)
            probs, _ = out_of_fold(maps, masks, clf.classes.num_classes, clf.fit_config, folds=4)
            t = float(temperature_report(probs, [x.numpy() for x in masks])["temperature"])
            note = "fitted on out-of-fold predictions of the train frames (4 folds), never test"
        after = Reliability()
        for p, tr in zip(col.probs, col.truths):
            after.update(apply_temperature(p, t), tr)
        return {"temperature": t, "ece_after_temperature": after.ece, "reliability_after": after.to_dict()["bins"],
                "temperature_note": note}

    # ---- run level ---------------------------------------------------------------------------------
    def familiarity(self, say: Say | None = None) -> dict[str, Any]:
        """The DDPM familiarity detector on the test frames vs the unfamiliar set (and mild shifts)."""
        if self.run is None:
            return {"available": False, "why": "no DDPM run"}
        model, why = fam.load_for_run(self.run)
        if model is None:
            return {"available": False, "why": why}
        if say:
            say(f"familiarity: {len(self.test_images)} test frames + {len(self.unfamiliar)} set images")
        with torch.inference_mode():
            test = [model.assess(self.run, familiarity_input(im, self.run)) for im in self.test_images]
            items = [model.assess(self.run, familiarity_input(it.image, self.run)) for it in self.unfamiliar]
        return familiarity_summary(test, items, self.unfamiliar, model.flag_percentile)


def familiarity_summary(test: list[fam.Verdict], items: list[fam.Verdict], set_items: list[TestImage],
                        flag_percentile: float) -> dict[str, Any]:
    """AUROC (unfamiliar vs test), share flagged per kind, and the mild shifts' share flagged."""
    d_test = np.asarray([v.distance for v in test])
    un = [(v, it) for v, it in zip(items, set_items) if it.group == "unfamiliar"]
    d_un = np.asarray([v.distance for v, _ in un])
    kinds: dict[str, dict[str, Any]] = {}
    for v, it in zip(items, set_items):
        k = kinds.setdefault(it.kind, {"group": it.group, "n": 0, "flagged": 0, "percentiles": []})
        k["n"] += 1
        k["flagged"] += int(v.unfamiliar)
        k["percentiles"].append(v.percentile)
    for k in kinds.values():
        k["flagged_share"] = k["flagged"] / k["n"]
        k["median_percentile"] = float(np.median(k.pop("percentiles")))
    mild = [v for v, it in zip(items, set_items) if it.group == "mild"]
    return {"available": True, "flag_percentile": flag_percentile,
            "auroc_unfamiliar_vs_test": auroc(np.r_[d_test, d_un], np.r_[np.zeros(len(d_test)), np.ones(len(d_un))]),
            "test_flagged_share": float(np.mean([v.unfamiliar for v in test])),
            "unfamiliar_flagged_share": float(np.mean([v.unfamiliar for v, _ in un])) if un else None,
            "mild_flagged_share": float(np.mean([v.unfamiliar for v in mild])) if mild else None,
            "n_test": len(test), "n_unfamiliar": len(un), "n_mild": len(mild), "by_kind": kinds}


def _f(v: Any, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def markdown(report: dict[str, Any]) -> str:
    """The scorecard section appended to compare's Markdown."""
    rows = [(n, r["uncertainty_scorecard"]) for n, r in report.get("methods", {}).items()
            if isinstance(r, dict) and r.get("uncertainty_scorecard")]
    if not rows:
        return ""
    pct = rows[0][1]["review"]["percent_flagged_typical"]
    lines = ["", "## Uncertainty scorecard", "",
             (f"Review threshold for every method: the score above which {pct:g} % of typical frames lie "
             f"({rows[0][1]['review']['typical_source']}). ECE: 15 equal-width bins over test pixels. AUROC: the "
             f"score ranking frames whose mIoU is below the test median (or below {FIXED_BAR}). AURC: area under "
             "risk (1 − mean frame mIoU) vs coverage, lower is better (oracle / random order in brackets)."), "",
             ("| method | test frames | score | ECE | ECE after T (T) | review AUROC < median | AUROC < 0.6 "
              "| AURC (oracle / random) | test flagged | unfamiliar AUROC |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for n, c in rows:
        rv = c["review"]
        after = f"{_f(c.get('ece_after_temperature'))} ({_f(c.get('temperature'), 2)})" \
            if c.get("temperature") is not None else "n/a"
        lines.append(f"| {n} | {c.get('n_test', '?')} | {c['score']} | {_f(c['ece'])} | {after} | "
                     f"{_f(rv['auroc_below_median'])} | "
                     f"{_f(rv['auroc_below_bar'])} | {_f(rv['aurc'])} ({_f(rv['aurc_oracle'])} / {_f(rv['aurc_random'])}) "
                     f"| {rv['test_flagged_share']:.0%} | {_f(c.get('unfamiliar_auroc'))} |")
    fam_ = report.get("uncertainty", {}).get("familiarity", {})
    if fam_.get("available"):
        lines += ["", (f"DDPM familiarity check (flag above the pool's {fam_['flag_percentile']:g}th percentile): AUROC "
                  f"{_f(fam_['auroc_unfamiliar_vs_test'])} for the {fam_['n_unfamiliar']} unfamiliar images vs the "
                  f"{fam_['n_test']} test frames; flagged: {fam_['unfamiliar_flagged_share']:.0%} of unfamiliar images, "
                  f"{fam_['test_flagged_share']:.0%} of test frames, {fam_['mild_flagged_share']:.0%} of mildly shifted "
                  "frames (slight blur, JPEG, brightness).")]
    elif fam_:
        lines += ["", f"DDPM familiarity check not available: {fam_.get('why')}."]
    return "\n".join(lines) + "\n"


# ---- flat views for display (the Compare page) -------------------------------------------------------
def scorecard_rows(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per method that has a scorecard: the figures the Compare page tabulates."""
    rows = []
    for n, r in ((report or {}).get("methods") or {}).items():
        c = r.get("uncertainty_scorecard") if isinstance(r, dict) else None
        if not c:
            continue
        rv = c["review"]
        rows.append({"method": n, "test frames": c.get("n_test"), "per-frame score": c["score"], "ECE": c["ece"],
                     "ECE after temperature": c.get("ece_after_temperature"), "temperature": c.get("temperature"),
                     "review AUROC (mIoU < median)": rv["auroc_below_median"],
                     f"review AUROC (mIoU < {rv['fixed_bar']})": rv["auroc_below_bar"], "AURC": rv["aurc"],
                     "AURC oracle": rv["aurc_oracle"], "AURC random": rv["aurc_random"],
                     "test frames flagged": rv["test_flagged_share"], "unfamiliar-input AUROC": c.get("unfamiliar_auroc")})
    return rows


def reliability_points(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """(method, stage, confidence, accuracy, pixels) per non-empty bin, before and after temperature."""
    pts = []
    for n, r in ((report or {}).get("methods") or {}).items():
        c = r.get("uncertainty_scorecard") if isinstance(r, dict) else None
        if not c:
            continue
        for stage, key in (("as trained", "reliability"), ("after temperature", "reliability_after")):
            for b in c.get(key) or []:
                if b["count"]:
                    pts.append({"method": n, "stage": stage, "confidence": b["confidence"], "accuracy": b["accuracy"],
                                "pixels": b["count"]})
    return pts


def risk_coverage_points(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """(method, share kept, mean mIoU of the frames kept) along each method's risk–coverage curve."""
    pts = []
    for n, r in ((report or {}).get("methods") or {}).items():
        c = r.get("uncertainty_scorecard") if isinstance(r, dict) else None
        if not c:
            continue
        rc = c["review"]["risk_coverage"]
        pts += [{"method": n, "share of frames kept": cov, "mIoU of kept frames": m}
                for cov, m in zip(rc["coverage"], rc["miou_kept"])]
    return pts
