"""The common interface of every segmentation method compared by `python -m engine compare`.

A method is built from its config dataclass (`config_class`, one per method: budgets tiny|quick|full
are its classmethods, `from_dict` refuses unknown keys) and a `MethodContext` (classes, image size,
device, and the pretrained DDPM run where a method needs one). `fit(pool, images, masks)` trains it:
pool = unlabelled (N,3,S,S) images in [-1,1], images/masks = the labelled train split at the same
size. `predict(image)` → MethodOutput(probs (C,S,S), uncertainty maps), always on the CPU, whatever
device the method computes on. What a method can do is declared on its class (capabilities below), so
`compare` never asks for a method by name. A fitted method lives in a directory: method.json (name,
config, classes, stats) + weights.pt. `config_hash` keys the compare cache on method, config, data, run.

A new method is one module here that defines its config dataclass, its Method subclass and
`METHOD = ThatClass`, plus one line in `METHODS` below.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..atomic import write_bytes_atomic, write_json_atomic
from ..data.classes import IGNORE_INDEX, ClassTable
from ..errors import ConfigError, DataError, UserError
from ..validation import check_format_version, check_type, read_json, show
from ..models.checkpoint import check_finite

FORMAT_VERSION = 1
BUDGETS = ("tiny", "quick", "full")
# method name → module in engine.methods, or a dotted module path elsewhere (imported lazily): the ONE
# registry of methods; compare, the CLI's --methods and the dashboard build their lists from it
METHODS: dict[str, str] = {"ddpm": "ddpm", "ddpm-mn": "ddpm", "unet": "unet_seg", "mae": "mae", "swav": "swav",
                           "datasetddpm": "datasetddpm", "conddiff": "conddiff", "gan": "gan"}
# registered variants that `compare` runs only when asked for by name
VARIANTS = frozenset({"ddpm-mn"})


def default_methods() -> list[str]:
    """The methods `compare` runs by default: every registered method except the variants."""
    return [n for n in METHODS if n not in VARIANTS]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class MethodConfig:
    """Base of every method's config dataclass: budgets as classmethods, strict dict round trip."""

    # keys of older saved configs that are read and dropped (never written)
    legacy_keys: ClassVar[frozenset[str]] = frozenset()
    # field name → config class, for configs that nest other methods' configs
    nested: ClassVar[dict[str, type[MethodConfig]]] = {}

    def __post_init__(self) -> None:
        for f in fields(self):  # JSON gives lists: tuple-typed fields hold tuples, so configs compare equal
            value = getattr(self, f.name)
            if isinstance(value, list) and "tuple" in str(f.type):
                object.__setattr__(self, f.name, tuple(value))

    @classmethod
    def tiny(cls) -> MethodConfig:
        raise NotImplementedError

    @classmethod
    def quick(cls) -> MethodConfig:
        raise NotImplementedError

    @classmethod
    def full(cls) -> MethodConfig:
        raise NotImplementedError

    @classmethod
    def for_budget(cls, budget: str) -> MethodConfig:
        """The config of a budget (tiny: tests, seconds; quick: the shipped demo; full: a GPU-sized run)."""
        check_budget(budget)
        cfg: MethodConfig = getattr(cls, budget)()
        return cfg

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MethodConfig:
        """Build from a dict; unknown keys are refused (legacy keys dropped), missing ones take the defaults."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names - cls.legacy_keys
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}; valid keys: {sorted(names)}")
        kw = {k: v for k, v in d.items() if k in names}
        for k, sub in cls.nested.items():
            if isinstance(kw.get(k), dict):
                kw[k] = sub.from_dict(kw[k])
        return cls(**kw)

    @classmethod
    def without_legacy(cls, d: Any) -> Any:
        """`d` without the keys older versions wrote and this one drops (here and in nested configs)."""
        if not isinstance(d, dict):
            return d
        out = {k: v for k, v in d.items() if k not in cls.legacy_keys}
        for k, sub in cls.nested.items():
            if k in out:
                out[k] = sub.without_legacy(out[k])
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples as lists): what method.json stores and the compare cache hashes."""
        out: dict[str, Any] = _jsonable(asdict(self))
        return out

    def with_overrides(self, **overrides: Any) -> MethodConfig:
        """A copy with some values changed (unknown keys refused)."""
        return type(self).from_dict({**self.to_dict(), **overrides})


@dataclass
class MethodContext:
    """What every method may use besides its config: class table, image size, device, the DDPM run."""

    classes: ClassTable
    image_size: int
    device: str | torch.device
    run: Any = None  # engine.models.run.Run, needed by methods with `uses_run` (on the same device)
    feature_cache: Any = None  # engine.segmentation.feature_cache.FeatureCache for DDPM features (None: computed each time)

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes


@dataclass
class MethodOutput:
    """probs (C,H,W) summing to 1 per pixel; uncertainty: name → (H,W) map; score: per-image uncertainty.
    Always on the CPU."""

    probs: torch.Tensor
    uncertainty: dict[str, torch.Tensor] = field(default_factory=dict)
    score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> torch.Tensor:
        return self.probs.argmax(dim=0)

    def cpu(self) -> MethodOutput:
        return MethodOutput(self.probs.cpu(), {k: v.cpu() for k, v in self.uncertainty.items()}, self.score, self.extra)


class Method:
    """Base class: subclasses set `name` and `config_class`, build modules in `__init__` on `self.device`,
    implement fit/predict/state, and declare their capabilities."""

    name: ClassVar[str] = "method"
    title: ClassVar[str] = ""  # display name (dashboard), e.g. "Conditional diffusion"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    # config keys that only affect prediction (not the fitted weights): left out of the compare cache key
    inference_keys: ClassVar[tuple[str, ...]] = ()
    # ---- capabilities (compare and the dashboard read these, never the method's name) ----
    uses_run: ClassVar[bool] = False  # needs the pretrained DDPM run (its checkpoint is part of the cache key)
    # predict(image, k=K, seed=s) draws K samples and returns uncertainty["variance"] across them
    sample_variance: ClassVar[bool] = False
    # output.extra["review"] flags a frame whose score exceeds config.review_threshold
    review_score: ClassVar[bool] = False
    reference_baseline: ClassVar[bool] = False  # the baseline the others are reported against (Δ vs …)

    def __init__(self, config: MethodConfig | dict[str, Any], ctx: MethodContext):
        self.cfg: Any = config if isinstance(config, self.config_class) else self.config_class.from_dict(
            config if isinstance(config, dict) else asdict(config))
        self.ctx = ctx
        self.device = torch.device(ctx.device)
        self.stats: dict[str, Any] = {}

    @property
    def config(self) -> dict[str, Any]:
        """The config as a plain dict (read-only view; change `cfg` instead)."""
        return self.cfg.to_dict()

    @classmethod
    def default_config(cls, budget: str = "quick") -> MethodConfig:
        return cls.config_class.for_budget(budget)

    # ---- to implement ----------------------------------------------------------------------------
    def fit(self, pool: torch.Tensor, images: torch.Tensor, masks: torch.Tensor,
            out_dir: str | Path | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def predict(self, image: torch.Tensor) -> MethodOutput:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, sd: dict[str, Any], directory: Path) -> None:
        raise NotImplementedError

    def review_threshold(self, k: int, percent_flagged: float = 10.0) -> float:
        """For `review_score` methods: the score above which a frame is flagged at K samples (methods may
        calibrate it; the default is the config's fixed `review_threshold`)."""
        return float(self.config["review_threshold"])

    def modules(self) -> list[torch.nn.Module]:
        """Every network this method holds (device tests check they sit on `self.device`)."""
        return [m for m in vars(self).values() if isinstance(m, torch.nn.Module)]

    @property
    def input_multiple(self) -> int:
        """Every input side must be a multiple of this: its networks' total downsampling (1: any size)."""
        factors = [getattr(m, "downsample_factor", 1) for m in self.modules()]
        return max((int(f) for f in factors if isinstance(f, int)), default=1)

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
        raise UserError(f"--budget: unknown budget {budget!r}; choose one of {list(BUDGETS)}")


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    target = METHODS[name]
    module = importlib.import_module(target if "." in target else f"engine.methods.{target}")
    cls: type[Method] = module.method_for(name) if hasattr(module, "method_for") else module.METHOD
    return cls


def method_title(name: str) -> str:
    """A method's display title (its class's `title`), else its name; unknown names are returned as given."""
    try:
        return method_class(name).title or name
    except UserError:
        return name


def reference_baseline() -> str | None:
    """Name of the registered method that declares itself the reference baseline (the UNet)."""
    return next((n for n in METHODS if method_class(n).reference_baseline), None)


def get_method(name: str, ctx: MethodContext, budget: str = "quick", **overrides: Any) -> Method:
    """A fresh (unfitted) method with its budget's config, `overrides` applied (unknown keys refused)."""
    check_budget(budget)
    cls = method_class(name)
    try:
        cfg = cls.default_config(budget).with_overrides(**overrides)
    except ValueError as e:
        raise UserError(f"{name}: {e}") from None
    return cls(cfg, ctx)


def check_config_like(config: Any, default: dict[str, Any], source: str, prefix: str = "config") -> None:
    """A saved method config must hold exactly its defaults' keys, each of the default's JSON type
    (numbers may be ints where floats are the default, never bools; `null` defaults allow a list)."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: {prefix}: expected an object, got {show(config)}")
    unknown = sorted(set(config) - set(default))
    missing = sorted(set(default) - set(config))
    if unknown or missing:
        key = (unknown or missing)[0]
        raise ConfigError(f"{source}: {prefix}.{key}: {'unknown' if unknown else 'missing'} key")
    for key, want in default.items():
        value, where = config[key], f"{prefix}.{key}"
        if isinstance(want, dict):
            check_config_like(value, want, source, where)
            continue
        hint = {bool: bool, int: int, float: float, str: str}.get(type(want))
        if hint is not None:
            _, problem = check_type(value, hint)
        elif isinstance(want, list) or want is None:
            ok = (want is None and value is None) or (isinstance(value, list) and all(
                isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value))
            problem = None if ok else f"expected a list{' or null' if want is None else ''}, got {show(value)}"
        else:
            problem = None
        if problem:
            raise ConfigError(f"{source}: {where}: {problem}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{source}: {where}: must be >= 0, got {value}")


def _read_saved(path: Path) -> tuple[dict[str, Any], ClassTable]:
    """method.json of a saved method directory (checked strictly: version, method, config, classes, size)."""
    meta_path = path / "method.json"
    if not meta_path.is_file() or not (path / "weights.pt").is_file():
        raise FileNotFoundError(f"{path}: not a saved method (method.json / weights.pt missing)")
    meta = read_json(meta_path, ConfigError)
    if not isinstance(meta, dict):
        raise ConfigError(f"{meta_path}: expected a JSON object, got {show(meta)}")
    check_format_version(meta, FORMAT_VERSION, meta_path, ConfigError, "supported")
    for key in ("method", "config", "classes", "image_size"):
        if key not in meta:
            raise ConfigError(f"{meta_path}: missing key {key!r}")
    if not isinstance(meta["method"], str) or meta["method"] not in METHODS:
        raise ConfigError(f"{meta_path}: method: expected one of {sorted(METHODS)}, got {show(meta['method'])}")
    size = meta["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 2048:
        raise ConfigError(f"{meta_path}: image_size: expected a whole number 8..2048, got {show(size)}")
    cfg_class = method_class(meta["method"]).config_class
    check_config_like(cfg_class.without_legacy(meta["config"]), cfg_class.quick().to_dict(), str(meta_path))
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
    """Load a method directory written by `Method.save` onto `ctx.device`."""
    path = Path(path)
    meta, saved = _read_saved(path)
    if saved.names != ctx.classes.names or int(meta["image_size"]) != ctx.image_size:
        raise DataError(f"{path}: fitted for classes {saved.names} at {meta['image_size']}px, "
                         f"not {ctx.classes.names} at {ctx.image_size}px")
    return _build_saved(path, meta, ctx)


def load_standalone(path: str | Path, device: str | torch.device) -> Method:
    """Load a saved method that needs no DDPM run (e.g. conddiff), taking classes and size from its method.json."""
    path = Path(path)
    meta, saved = _read_saved(path)
    if method_class(meta["method"]).uses_run:
        raise UserError(f"{path}: method {meta['method']!r} needs a DDPM run; use load_method with a run")
    return _build_saved(path, meta, MethodContext(saved, int(meta["image_size"]), device))


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
    """A CPU generator: random draws stay on the CPU (then move), so results do not depend on the device."""
    return torch.Generator().manual_seed(int(seed))


def batch_indices(n: int, batch: int, g: torch.Generator) -> torch.Tensor:
    """`batch` random indices into 0..n-1 (with replacement when n < batch)."""
    if n >= batch:
        return torch.randperm(n, generator=g)[:batch]
    return torch.randint(0, n, (batch,), generator=g)


def flip_shift(images: torch.Tensor, masks: torch.Tensor | None, g: torch.Generator, max_shift: int,
               ignore: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor | None]:
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
        if m is not None:
            out_m.append(m)
    return torch.stack(out_i), (torch.stack(out_m) if masks is not None else None)
