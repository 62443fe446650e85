"""Is this frame like the ones the diffusion model was trained on? Multiscale denoising errors + a density model.

In the spirit of multiscale score-matching analysis (Mahmood et al., ICLR 2021): a frame is noised with ONE
fixed, seeded eps at several timesteps t, the pretrained DDPM predicts eps back, and the prediction error is
summarised per t at several spatial scales (the error averaged over s×s blocks before its mean square, so
coarse scales see low-frequency mistakes such as a wrong global colour). The log of each is one coordinate
of a small vector. A Gaussian with Ledoit–Wolf shrinkage covariance is fitted to the vectors of the run's own
unlabelled pool; a frame's squared Mahalanobis distance is turned into a percentile against the pool's
out-of-fold distances. Both tails count: a plain likelihood rates simple images as MORE likely (Nalisnick et
al., ICLR 2019), but a blank or cartoon-like frame has unusually SMALL errors at low t, which is as far from
the pool as unusually large ones.

Saved beside the run as RUN/familiarity.json (or FILE.familiarity.json next to a guided-diffusion .pt).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import write_json_atomic
from ..segmentation.features import shared_noise
from ..errors import UserError

log = logging.getLogger(__name__)
FILE_NAME = "familiarity.json"
FORMAT_VERSION = 1
UNUSUAL_PERCENTILE = 95.0  # "somewhat unusual" from here; the unfamiliar flag is the model's flag_percentile


@dataclass(frozen=True)
class FamiliaritySpec:
    """Which denoising errors make the vector: timesteps, spatial pooling scales, the noise seed."""

    steps: tuple[int, ...] = (20, 100, 300, 600)
    scales: tuple[int, ...] = (1, 2, 4)
    noise_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        object.__setattr__(self, "scales", tuple(int(s) for s in self.scales))
        if not self.steps or not self.scales or min(self.scales) < 1:
            raise UserError(f"a familiarity spec needs timesteps and scales >= 1, got {self.steps} / {self.scales}")

    @property
    def names(self) -> list[str]:
        return [f"t{t}_s{s}" for t in self.steps for s in self.scales]

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "scales": list(self.scales), "noise_seed": self.noise_seed}


@torch.inference_mode()
def denoising_errors(run: Any, image: torch.Tensor, spec: FamiliaritySpec) -> np.ndarray:
    """(3,H,W) image in [-1,1] → log mean-square eps error per (t, scale), t-major: shape (len(steps)·len(scales),)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise UserError(f"expected a (3, H, W) image tensor, got {tuple(image.shape)}")
    T = run.diffusion.num_timesteps
    bad = [t for t in spec.steps if not 0 <= t < T]
    if bad:
        raise UserError(f"familiarity timestep(s) {bad} out of range; valid timesteps are 0..{T - 1}")
    device = next(run.model.parameters()).device
    n = len(spec.steps)
    x0 = image.to(device, torch.float32)[None].expand(n, -1, -1, -1)
    eps = shared_noise(spec.noise_seed, tuple(image.shape)).to(device)[None].expand_as(x0)
    t = torch.tensor(spec.steps, device=device)
    xt = run.diffusion.q_sample(x0, t, eps)
    out = run.model(xt, run.diffusion.model_t(t))
    pred, _ = run.diffusion.split_output(out, xt)
    err = (pred.float() - eps).cpu()
    cols = []
    for i in range(n):
        for s in spec.scales:
            e = err[i:i + 1]
            if s > 1:
                e = F.avg_pool2d(e, s, ceil_mode=True)
            cols.append(float(e.pow(2).mean().clamp_min(1e-12).log()))
    return np.asarray(cols, dtype=np.float64)


def error_vectors(run: Any, images: torch.Tensor | list[torch.Tensor], spec: FamiliaritySpec,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Denoising-error vectors of several frames → (N, D)."""
    rows = []
    for i, img in enumerate(images):
        rows.append(denoising_errors(run, img, spec))
        if progress:
            progress(i + 1, len(images))
    return np.stack(rows)


def ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """Shrunk covariance of standardised rows (scikit-learn's Ledoit–Wolf estimator)."""
    from sklearn.covariance import LedoitWolf

    return LedoitWolf(assume_centered=True).fit(x).covariance_


@dataclass
class GaussianDensity:
    """Gaussian on standardised vectors; `pool_scores` = sorted out-of-fold squared distances of the pool."""

    mean: np.ndarray
    scale: np.ndarray
    precision: np.ndarray
    pool_scores: np.ndarray

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row of (N, D) (or one D-vector) to the pool's Gaussian."""
        z = (np.atleast_2d(x) - self.mean) / self.scale
        return np.einsum("nd,de,ne->n", z, self.precision, z)

    def percentile(self, d2: float) -> float:
        """Share (%) of pool frames that are closer to the pool's centre than a frame at distance d2."""
        return float(100.0 * np.searchsorted(self.pool_scores, d2, side="right") / len(self.pool_scores))


def _fit_gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, scale = x.mean(0), x.std(0) + 1e-6
    return mean, scale, np.linalg.inv(ledoit_wolf((x - mean) / scale))


def fit_density(x: np.ndarray, folds: int = 5, seed: int = 0) -> GaussianDensity:
    """Fit on all rows; the reference distances come from `folds`-fold cross-fitting (each row scored by a
    Gaussian that did not see it), so a new frame's percentile is not flattered by in-sample fit."""
    if len(x) < 2 * folds or len(x) < x.shape[1] // 2:
        raise UserError(f"need at least {max(2 * folds, x.shape[1] // 2)} pool frames to fit the density, got {len(x)}")
    order = np.random.default_rng(seed).permutation(len(x))
    oof = np.empty(len(x))
    for k in range(folds):
        held = order[k::folds]
        keep = np.setdiff1d(order, held)
        m, s, p = _fit_gaussian(x[keep])
        z = (x[held] - m) / s
        oof[held] = np.einsum("nd,de,ne->n", z, p, z)
    mean, scale, precision = _fit_gaussian(x)
    return GaussianDensity(mean, scale, precision, np.sort(oof))


@dataclass
class Verdict:
    """How familiar one frame looks to the run's diffusion model, in numbers and in words."""

    available: bool
    unfamiliar: bool = False
    level: str = "not available"  # familiar | unusual | unfamiliar | not available
    percentile: float | None = None  # % of pool frames more typical than this one
    distance: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FamiliarityModel:
    """The fitted density of one run's denoising-error vectors (saved as JSON beside the run)."""

    spec: FamiliaritySpec
    density: GaussianDensity
    run_weights_hash: str
    flag_percentile: float = 99.0
    meta: dict[str, Any] = field(default_factory=dict)
    run_identity_scheme: int = 2  # how run_weights_hash was made (engine/models/run.py); files without it: scheme 1

    def assess_vector(self, vec: np.ndarray) -> Verdict:
        d2 = float(self.density.distance(vec)[0])
        pct = self.density.percentile(d2)
        return verdict(pct, d2, self.flag_percentile)

    def assess(self, run: Any, image: torch.Tensor) -> Verdict:
        """Verdict for one model-ready (3,H,W) tensor in [-1,1]."""
        return self.assess_vector(denoising_errors(run, image, self.spec))

    def to_dict(self) -> dict[str, Any]:
        d = self.density
        return {"format_version": FORMAT_VERSION, "run_weights_hash": self.run_weights_hash,
                "run_identity_scheme": self.run_identity_scheme,
                "spec": self.spec.to_dict(), "feature_names": self.spec.names, "flag_percentile": self.flag_percentile,
                "mean": d.mean.tolist(), "scale": d.scale.tolist(), "precision": d.precision.tolist(),
                "pool_scores": d.pool_scores.tolist(), "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "familiarity.json") -> FamiliarityModel:
        if d.get("format_version", 0) > FORMAT_VERSION:
            raise UserError(f"{source}: format_version {d.get('format_version')} is newer than supported "
                             f"({FORMAT_VERSION}); upgrade DiffSeg Studio")
        try:
            spec = FamiliaritySpec(tuple(d["spec"]["steps"]), tuple(d["spec"]["scales"]), int(d["spec"]["noise_seed"]))
            dens = GaussianDensity(np.asarray(d["mean"], float), np.asarray(d["scale"], float),
                                   np.asarray(d["precision"], float), np.sort(np.asarray(d["pool_scores"], float)))
            n = len(spec.names)
            if dens.mean.shape != (n,) or dens.precision.shape != (n, n) or not len(dens.pool_scores):
                raise UserError("array sizes do not match the spec")
            scheme = d.get("run_identity_scheme", 1)
            if scheme not in (1, 2) or isinstance(scheme, bool):
                raise UserError(f"run_identity_scheme must be 1 or 2, got {scheme!r}")
            return cls(spec, dens, str(d["run_weights_hash"]), float(d.get("flag_percentile", 99.0)), d.get("meta", {}),
                       int(scheme))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{source}: not a familiarity model ({e})") from None

    def save(self, path: str | Path) -> Path:
        write_json_atomic(path, self.to_dict())
        return Path(path)


def verdict(percentile: float, distance: float, flag_percentile: float = 99.0) -> Verdict:
    """Plain words for a percentile against the pool."""
    if percentile >= flag_percentile:
        level = "unfamiliar"
        msg = (f"Unlike the training frames: this frame is further from what the diffusion model was trained on than "
               f"{percentile:.1f} % of its training frames. The mask and its confidence below may be meaningless; "
               "check that this is the kind of frame the model is meant for.")
    elif percentile >= UNUSUAL_PERCENTILE:
        level = "unusual"
        msg = (f"Somewhat unusual: further from the training frames than {percentile:.1f} % of them, but within the "
               "range the model has seen.")
    else:
        level = "familiar"
        msg = f"Looks like the training frames (more typical than {100 - percentile:.0f} % of them)."
    return Verdict(True, level == "unfamiliar", level, round(percentile, 2), round(distance, 3), msg)


def model_path(run_path: str | Path) -> Path:
    """Where a run's familiarity model lives: RUN/familiarity.json, or FILE.familiarity.json for a .pt run."""
    p = Path(run_path)
    return p / FILE_NAME if p.is_dir() else p.with_name(p.name + "." + FILE_NAME)


def not_available(run_path: str | Path, reason: str = "") -> Verdict:
    cmd = f"python -m engine familiarity fit --run {run_path} --data POOL_DATA"
    why = reason or "no familiarity model was fitted for this run"
    return Verdict(False, message=f"Unfamiliar-input check not available: {why}. Make one with `{cmd}`.")


def load_for_run(run: Any) -> tuple[FamiliarityModel | None, str]:
    """(the run's familiarity model, "") or (None, why not): missing, unreadable or fitted on other weights."""
    path = model_path(run.path)
    if not path.is_file():
        return None, f"no {path.name} beside the run"
    try:
        model = FamiliarityModel.from_dict(json.loads(path.read_text()), str(path))
    except (OSError, json.JSONDecodeError, ValueError) as e:
        return None, f"{path} is unreadable ({str(e)[:120]})"
    if model.run_weights_hash != run.identity(model.run_identity_scheme):
        return None, f"{path} was fitted on other weights than this run's"
    return model, ""


def assess_frame(run: Any, image: torch.Tensor, model: FamiliarityModel | None = None,
                 why: str = "") -> Verdict:
    """The verdict for a frame, or a 'not available' one that says how to make the model."""
    if model is None:
        model, why = load_for_run(run)
    if model is None:
        return not_available(run.path, why)
    return model.assess(run, image)


def fit_familiarity(run: Any, pool: torch.Tensor, spec: FamiliaritySpec | None = None, folds: int = 5,
                    flag_percentile: float = 99.0, pool_source: str = "",
                    progress: Callable[[int, int], None] | None = None) -> FamiliarityModel:
    """Error vectors of the pool (N,3,S,S) and the density fitted to them."""
    spec = spec or FamiliaritySpec()
    t0 = time.time()
    x = error_vectors(run, pool, spec, progress)
    density = fit_density(x, folds, seed=spec.noise_seed)
    meta = {"n_pool": len(pool), "pool_source": pool_source, "folds": folds, "seconds": round(time.time() - t0, 1)}
    log.info("familiarity: %d pool frames in %.1f s", len(pool), meta["seconds"])
    return FamiliarityModel(spec, density, run.weights_hash, flag_percentile, meta)
