"""The common interface of every segmentation method compared by `python -m engine compare`.

A method is built from a config dict (its `default_config(budget)` for budgets tiny|quick|full) and a
`MethodContext` (classes, image size, device, and the pretrained DDPM run where a method needs one).
`fit(pool, images, masks)` trains it: pool = unlabelled (N,3,S,S) images in [-1,1], images/masks = the
labelled train split at the same size. `predict(image)` → MethodOutput(probs (C,S,S), uncertainty maps).
A fitted method lives in a directory: method.json (name, config, classes, stats) + weights.pt.
`config_hash` keys the compare cache on method, config, data and run.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..atomic import write_bytes_atomic, write_json_atomic
from ..data.classes import ClassTable
from ..models.checkpoint import check_finite

FORMAT_VERSION = 1
BUDGETS = ("tiny", "quick", "full")
# method name → module in engine.methods (imported lazily)
METHODS: dict[str, str] = {"ddpm": "ddpm", "ddpm-mn": "ddpm", "unet": "unet_seg", "mae": "mae", "swav": "swav",
                           "datasetddpm": "datasetddpm", "conddiff": "conddiff", "gan": "gan"}


@dataclass
class MethodContext:
    """What every method may use besides its config: class table, image size, device, the DDPM run."""

    classes: ClassTable
    image_size: int
    device: str = "cpu"
    run: Any = None  # engine.run.Run, needed by ddpm / datasetddpm (and conddiff's optional init)
    feature_cache: Any = None  # engine.feature_cache.FeatureCache for DDPM features (None: computed each time)

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes


@dataclass
class MethodOutput:
    """probs (C,H,W) summing to 1 per pixel; uncertainty: name → (H,W) map; score: per-image uncertainty."""

    probs: torch.Tensor
    uncertainty: dict[str, torch.Tensor] = field(default_factory=dict)
    score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> torch.Tensor:
        return self.probs.argmax(dim=0)


class Method:
    """Base class: subclasses set `name`, build modules in `__init__`, implement fit/predict/state."""

    name: ClassVar[str] = "method"
    # config keys that only affect prediction (not the fitted weights): left out of the compare cache key
    inference_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: dict[str, Any], ctx: MethodContext):
        self.config = dict(config)
        self.ctx = ctx
        self.stats: dict[str, Any] = {}

    # ---- to implement ----------------------------------------------------------------------------
    @classmethod
    def default_config(cls, budget: str = "quick") -> dict[str, Any]:
        raise NotImplementedError

    def fit(self, pool: torch.Tensor, images: torch.Tensor, masks: torch.Tensor,
            out_dir: str | Path | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def predict(self, image: torch.Tensor) -> MethodOutput:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, sd: dict[str, Any], directory: Path) -> None:
        raise NotImplementedError

    def uses_run(self) -> bool:
        return False

    # ---- persistence -----------------------------------------------------------------------------
    def save(self, out: str | Path) -> Path:
        """Write DIR/weights.pt then DIR/method.json (the json marks a complete save)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        write_bytes_atomic(out / "weights.pt", buf.getvalue())
        write_json_atomic(out / "method.json", {
            "format_version": FORMAT_VERSION, "method": self.name, "config": self.config,
            "classes": self.ctx.classes.to_dict()["classes"], "image_size": self.ctx.image_size,
            "stats": self.stats})
        return out


def check_budget(budget: str) -> None:
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {list(BUDGETS)}")


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    module = importlib.import_module(f"engine.methods.{METHODS[name]}")
    return module.method_for(name) if hasattr(module, "method_for") else module.METHOD


def get_method(name: str, ctx: MethodContext, budget: str = "quick", **overrides: Any) -> Method:
    """A fresh (unfitted) method with its budget's config, `overrides` applied."""
    check_budget(budget)
    cls = method_class(name)
    cfg = cls.default_config(budget)
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"{name}: unknown config keys {sorted(unknown)}")
    cfg.update(overrides)
    return cls(cfg, ctx)


def _read_saved(path: Path) -> tuple[dict[str, Any], ClassTable]:
    """method.json of a saved method directory (checked for weights.pt and format version) and its classes."""
    meta_path = path / "method.json"
    if not meta_path.is_file() or not (path / "weights.pt").is_file():
        raise FileNotFoundError(f"{path}: not a saved method (method.json / weights.pt missing)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format_version {meta['format_version']} is newer than supported")
    return meta, ClassTable.from_dict({"classes": meta["classes"]}, source=str(meta_path))


def _build_saved(path: Path, meta: dict[str, Any], ctx: MethodContext) -> Method:
    m = method_class(meta["method"])(meta["config"], ctx)
    m.stats = meta.get("stats", {})
    sd = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
    if isinstance(sd, dict):
        check_finite(sd, str(path / "weights.pt"))
    m.load_state_dict(sd, path)
    return m


def load_method(path: str | Path, ctx: MethodContext) -> Method:
    """Load a method directory written by `Method.save`."""
    path = Path(path)
    meta, saved = _read_saved(path)
    if saved.names != ctx.classes.names or int(meta["image_size"]) != ctx.image_size:
        raise ValueError(f"{path}: fitted for classes {saved.names} at {meta['image_size']}px, "
                         f"not {ctx.classes.names} at {ctx.image_size}px")
    return _build_saved(path, meta, ctx)


def load_standalone(path: str | Path, device: str = "cpu") -> Method:
    """Load a saved method that needs no DDPM run (e.g. conddiff), taking classes and size from its method.json."""
    path = Path(path)
    meta, saved = _read_saved(path)
    method = _build_saved(path, meta, MethodContext(saved, int(meta["image_size"]), device))
    if method.uses_run():
        raise ValueError(f"{path}: method {meta['method']!r} needs a DDPM run; use load_method with a run")
    return method


def tensor_digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        arr = t.detach().contiguous().cpu()
        h.update(str(tuple(arr.shape)).encode())
        h.update(arr.numpy().tobytes())
    return h.hexdigest()[:24]


def config_hash(name: str, config: dict[str, Any], data_digest: str, run_hash: str | None) -> str:
    """Cache key of a fitted method: method, config, the exact training data and the DDPM checkpoint."""
    blob = json.dumps({"v": FORMAT_VERSION, "method": name, "config": config, "data": data_digest,
                       "run": run_hash}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- shared training helpers -----------------------------------------------------------------------
def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def batch_indices(n: int, batch: int, g: torch.Generator) -> torch.Tensor:
    """`batch` random indices into 0..n-1 (with replacement when n < batch)."""
    if n >= batch:
        return torch.randperm(n, generator=g)[:batch]
    return torch.randint(0, n, (batch,), generator=g)


def flip_shift(images: torch.Tensor, masks: torch.Tensor | None, g: torch.Generator, max_shift: int,
               ignore: int = 255) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Augment a batch: random horizontal and vertical flips, integer shifts up to ±max_shift pixels
    (image edges replicated, uncovered mask pixels set to `ignore`)."""
    out_i, out_m = [], []
    for k in range(images.shape[0]):
        img = images[k]
        m = masks[k] if masks is not None else None
        for dim in (-1, -2):
            if torch.rand((), generator=g) < 0.5:
                img = img.flip(dim)
                m = m.flip(dim) if m is not None else None
        if max_shift > 0:
            dy, dx = (torch.randint(-max_shift, max_shift + 1, (2,), generator=g)).tolist()
            p = max_shift
            H, W = img.shape[-2:]
            padded = torch.nn.functional.pad(img[None], (p, p, p, p), mode="replicate")[0]
            img = padded[:, p + dy:p + dy + H, p + dx:p + dx + W]
            if m is not None:
                mp = torch.nn.functional.pad(m, (p, p, p, p), value=ignore)
                m = mp[p + dy:p + dy + H, p + dx:p + dx + W]
        out_i.append(img)
        out_m.append(m)
    return torch.stack(out_i), (torch.stack(out_m) if masks is not None else None)
