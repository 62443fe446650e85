"""Helper for the colour-only vs spatial-context check on synthetic frames (kept small for CI)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from engine.data.synthetic import frame_seeds, generate_frame


def colour_features(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel RGB only."""
    return rgb.reshape(-1, 3).astype(np.float32) / 255.0


def spatial_features(rgb: np.ndarray) -> np.ndarray:
    """RGB + multi-scale blurred RGB + local contrast + distance to the frame centre."""
    f = rgb.astype(np.float32) / 255.0
    feats = [f]
    for s in (2.0, 4.0, 8.0, 16.0):
        feats.append(ndimage.gaussian_filter(f, (s, s, 0)))
    local_mean = feats[1]
    feats.append(np.sqrt(np.clip(ndimage.gaussian_filter(f * f, (2.0, 2.0, 0)) - local_mean**2, 0, None)))
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.hypot((yy + 0.5) / h - 0.5, (xx + 0.5) / w - 0.5)[..., None].astype(np.float32)
    feats.append(dist)
    return np.concatenate(feats, axis=2).reshape(h * w, -1)


def miou(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Mean IoU over classes present in prediction or truth."""
    ious = []
    for c in range(num_classes):
        inter = np.sum((pred == c) & (truth == c))
        union = np.sum((pred == c) | (truth == c))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious))


def colour_vs_spatial(size: int = 64, n_train: int = 10, n_test: int = 10, seed: int = 0,
                      max_train_pixels: int = 10000) -> tuple[float, float]:
    """mIoU of the same classifier on RGB alone and on RGB + local context (same pixels)."""
    seeds = frame_seeds(seed, n_train + n_test)
    frames = [generate_frame(s, size) for s in seeds]
    rng = np.random.default_rng(seed)
    scores = []
    for featurize in (colour_features, spatial_features):
        x_tr = np.concatenate([featurize(f[0]) for f in frames[:n_train]])
        y_tr = np.concatenate([f[1].ravel() for f in frames[:n_train]])
        pick = rng.choice(len(y_tr), size=min(max_train_pixels, len(y_tr)), replace=False)
        clf = HistGradientBoostingClassifier(max_iter=40, early_stopping=False, random_state=0)
        with threadpool_limits(1):  # OpenMP on a shared 2-core box is slower than one thread
            clf.fit(x_tr[pick], y_tr[pick])
        x_te = np.concatenate([featurize(f[0]) for f in frames[n_train:]])
        y_te = np.concatenate([f[1].ravel() for f in frames[n_train:]])
        with threadpool_limits(1):
            scores.append(miou(clf.predict(x_te), y_te, 5))
    return scores[0], scores[1]
