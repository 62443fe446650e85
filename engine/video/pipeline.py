"""Segment a whole clip: decode (reader thread) → batched UNet features → fused ensemble → masks, table, overlay.

Three stages overlap: a reader thread decodes and resizes frames, the calling thread runs the UNet and the
ensemble on batches, a writer thread upsamples probabilities to the frame size, measures the frame, blends
and encodes the overlay. Frames are grouped in chunks (`chunk` selected frames); a chunk is the unit of
`--resume` and of sharding across processes (chunk c belongs to rank c mod world). Optional temporal
smoothing averages class probabilities over a centred window of ±`smooth` processed frames; chunks read
`smooth` frames of their neighbours, so results do not depend on chunking, resuming or the number of ranks.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_json_atomic
from ..segmentation.classifier import SegmentationClassifier
from ..data.transforms import model_input_uint8
from ..segmentation.features import FeatureExtractor, FeatureSpec
from ..segmentation.pixel_classifier import EnsembleMLP
from . import outputs
from .frame_stats import frame_row
from .labels import upsampled_labels
from .overlay import blend
from .reader import VideoError, VideoInfo, iter_frames, probe, to_rgb
from .streams import OrderedStreams
from .writer import Mp4Writer
from ..errors import UserError
from ..uncertainty.frame_scores import UNCALIBRATED_THRESHOLD

log = logging.getLogger(__name__)
Progress = Callable[[dict[str, Any]], None]


PASSES = ("full", "balanced", "fast")


@dataclass(frozen=True)
class FeaturePlan:
    """The features a clip is segmented with: the UNet recipe and whether the mirrored view joins the ensemble."""

    spec: FeatureSpec
    flip: bool

    @property
    def unet_passes(self) -> int:
        """UNet forwards per frame (each covers all the recipe's timesteps in one batch)."""
        return self.spec.n_noise * (2 if self.flip else 1)

    def to_dict(self) -> dict[str, Any]:
        return {"n_noise": self.spec.n_noise, "flip": self.flip, "unet_passes_per_frame": self.unet_passes}


def feature_plan(clf: SegmentationClassifier, passes: str) -> FeaturePlan:
    """The one place that decides a clip's features. "full": the fitted recipe (its noise draws averaged, its
    flip averaging). "balanced": the first noise draw with the recipe's mirrored view (2 UNet passes instead of
    6 for the shipped classifier; on the demo clip the mirrored view carries nearly all of the recipe's gain
    and the extra noise draws almost none: README, video speed). "fast": the first noise draw only, no
    mirrored view — one UNet pass per frame. The ensemble is the same in all three; only its inputs differ."""
    if passes == "full":
        return FeaturePlan(clf.spec, bool(clf.fit_config.flip_tta))
    if passes == "balanced":
        return FeaturePlan(replace(clf.spec, n_noise=1), bool(clf.fit_config.flip_tta))
    if passes == "fast":
        return FeaturePlan(replace(clf.spec, n_noise=1), False)
    raise UserError(f"--passes must be one of {', '.join(PASSES)}, got {passes!r}")


@dataclass(frozen=True)
class VideoConfig:
    """What to segment and how; everything but `batch` and `streams` (how, not what) is part of the resume
    manifest: they change float rounding only, like `--threads`."""

    every: int = 1
    start: float = 0.0  # seconds
    end: float | None = None  # seconds (exclusive); None = to the end
    chunk: int = 64  # selected frames per part
    smooth: int = 0  # half window of temporal probability smoothing (frames); 0 = off
    contours: bool = False
    opacity: float = 0.5
    review_threshold: float = UNCALIBRATED_THRESHOLD
    crf: int = 23
    unfamiliar: bool = False  # also score each frame against the run's familiarity model (extra UNet passes)
    unet_bf16: bool = False  # bfloat16 autocast for the UNet (labels ~99.97 % equal; off by default)
    head_bf16: bool = False  # bfloat16 operands in the pixel head (labels ≥ 99.9 % equal; `head_bf16()`)
    passes: str = "full"  # "full": the classifier's recipe; "balanced": one noise draw + flip; "fast": one, no flip
    members: int = 0  # ensemble members used (the first N); 0 = all
    batch: int = 8
    streams: int = 1  # batches computed in parallel by this process (engine.video.streams); not in the manifest

    def __post_init__(self) -> None:
        if self.streams < 1:
            raise UserError(f"--streams must be >= 1, got {self.streams}")
        if self.members < 0:
            raise UserError(f"--members must be >= 1 (or 0 = all), got {self.members}")
        if self.every < 1 or self.chunk < 1 or self.batch < 1 or self.smooth < 0:
            raise UserError("--every, --chunk and --batch must be >= 1 and --smooth >= 0")
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise UserError(f"--start {self.start} / --end {self.end}: need 0 <= start < end")
        if not 0.0 <= self.opacity <= 1.0:
            raise UserError(f"--opacity must be in [0, 1], got {self.opacity}")
        if self.passes not in PASSES:
            raise UserError(f"--passes must be one of {', '.join(PASSES)}, got {self.passes!r}")

    def manifest(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("batch")
        d.pop("streams")
        return d


@dataclass
class _Frame:
    sel: int  # index among selected frames
    index: int  # index in the video
    time: float
    rgb: np.ndarray | None  # uint8 H×W×3 (None for halo frames of other chunks)
    tensor: torch.Tensor  # (3, h, w) in [-1, 1] at model size


# one computed frame: (frame, probs (C,h,w), js (h,w), review score, extra table columns)
_Result = tuple[_Frame, torch.Tensor, torch.Tensor, float, dict[str, Any]]


def _video_fingerprint(path: Path) -> str:
    """Size + hash of the first and last MiB: cheap, and changes when the file does."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:24]


class _Reader(threading.Thread):
    """Decodes the clip, selects frames, resizes the ones this process needs, and queues them."""

    def __init__(self, path: Path, info: VideoInfo, cfg: VideoConfig, needed: Callable[[int], tuple[bool, bool]],
                 model_size: int, multiple: int):
        super().__init__(daemon=True)
        self.path, self.info, self.cfg, self.needed = path, info, cfg, needed
        self.model_size, self.multiple = model_size, multiple
        self.q: queue.Queue = queue.Queue(maxsize=32)
        self.total_selected = 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            sel = 0
            for i, t, frame in iter_frames(self.path, self.info):
                if self.stop.is_set():
                    return
                if self.cfg.end is not None and t >= self.cfg.end:
                    break
                if t < self.cfg.start or i % self.cfg.every:
                    continue
                want, keep_rgb = self.needed(sel)
                if want:
                    rgb = to_rgb(frame, self.info.rotation)
                    small = model_input_uint8(rgb, self.model_size, self.multiple)  # = to_tensor(resize_shorter())
                    self.q.put(_Frame(sel, i, t, rgb if keep_rgb else None, small))
                sel += 1
            self.total_selected = sel
            self.q.put(None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self.q.put(e)

    def frames(self) -> Iterator[_Frame]:
        while True:
            item = self.q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class _ChunkWriter(threading.Thread):
    """Turns computed frames into part files as they arrive: mask at frame size, table row, overlay frame.

    Jobs are streamed frame by frame (`("frame", chunk, _Frame, probs, js, score, extra)`) and a chunk is sealed
    by `("close", chunk)`: its overlay segment is closed and its arrays and rows written (rows last: the done
    marker). Streaming per frame, not per chunk, keeps the writer busy while the UNet computes the rest of the
    chunk; a chunk is still the unit of `--resume` (a cancelled or failed run never leaves a part that looks
    done: an open segment is aborted and its temporary file removed).
    """

    def __init__(self, out: Path, clf: SegmentationClassifier, cfg: VideoConfig, fps: float,
                 progress: Callable[[int], None], queue_frames: int = 32):
        super().__init__(daemon=True)
        self.out, self.clf, self.cfg, self.fps, self.progress = out, clf, cfg, fps, progress
        self.q: queue.Queue = queue.Queue(maxsize=queue_frames)
        self.error: BaseException | None = None
        self._open: _OpenChunk | None = None

    def submit(self, job: tuple | None) -> None:
        """Queue a job (None = no more); re-raises the writer's error instead of waiting on a dead writer."""
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.q.put(job, timeout=0.2)
                return
            except queue.Full:
                continue

    def cancel(self) -> None:
        """Drop the jobs still queued and stop after the one in hand (an unsealed chunk is discarded)."""
        while True:
            try:
                self.q.get_nowait()
            except queue.Empty:
                break
        try:
            self.q.put_nowait(None)
        except queue.Full:  # the main thread is the only producer and it is here: cannot happen
            pass

    def run(self) -> None:
        try:
            while True:
                job = self.q.get()
                if job is None:
                    return
                if job[0] == "frame":
                    self._frame(*job[1:])
                else:
                    self._close(job[1])
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            self.error = e
        finally:
            if self._open is not None:  # stopped with a chunk unsealed: it must not survive as a part
                self._open.writer.abort()
                self._open = None

    def _frame(self, c: int, fr: _Frame, probs: torch.Tensor, js: torch.Tensor, score: float,
               extra: dict[str, Any]) -> None:
        assert fr.rgb is not None, "the writer gets this process's own frames, which keep their pixels"
        h, w = fr.rgb.shape[:2]
        if self._open is None:
            self._open = _OpenChunk(c, Mp4Writer(outputs.chunk_path(self.out, c, "mp4"), w, h, self.fps,
                                                 crf=self.cfg.crf))
        ch = self._open
        assert ch.chunk == c, f"chunk {ch.chunk} is still open when a frame of chunk {c} arrives"
        mask = upsampled_labels(probs, (h, w))
        ch.masks.append(mask)
        ch.js.append(js.to(torch.float16).numpy())
        ch.index.append(fr.index)
        ch.time.append(fr.time)
        ch.rows.append({"frame": fr.index, "time_s": round(fr.time, 6), **frame_row(mask, self.clf.classes),
                        "uncertainty": score, "review": score > self.cfg.review_threshold, **extra})
        ch.writer.write(blend(fr.rgb, mask, self.clf.classes.colors, self.cfg.opacity, self.cfg.contours))
        self.progress(1)

    def _close(self, c: int) -> None:
        ch = self._open
        assert ch is not None and ch.chunk == c, f"sealing chunk {c}, which is not the open one"
        ch.writer.close()
        self._open = None
        outputs.write_chunk(self.out, c, np.stack(ch.masks), np.stack(ch.js), np.array(ch.index),
                            np.array(ch.time), ch.rows)


@dataclass
class _OpenChunk:
    """What the writer has of the chunk it is filling: the overlay encoder and the frames' arrays and rows."""

    chunk: int
    writer: Mp4Writer
    masks: list[np.ndarray] = field(default_factory=list)
    js: list[np.ndarray] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 dot products (AVX512-BF16 or AMX-BF16, from /proc/cpuinfo)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def head_bf16(choice: str, device: torch.device) -> bool:
    """Resolve --head-precision: 'bf16', 'float32' or 'auto' (bf16 on a CPU with native bf16 units: there it
    halves the head's matmul time; emulated elsewhere, where it would be slower)."""
    if choice != "auto":
        return choice == "bf16"
    return device.type == "cpu" and cpu_has_bf16()


def ensemble_head(clf: SegmentationClassifier, members: int) -> EnsembleMLP:
    """The pixel head a clip is segmented with: the classifier's whole ensemble (`members` 0), or its first
    `members` members — the head's cost is linear in members (README: video speed), the uncertainty map and
    review score then come from that sub-ensemble."""
    total = clf.model.members
    if members > total:
        raise UserError(f"--members {members}: the classifier has {total} ensemble members")
    return clf.model.subset(members or total)


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _manifest_diff(old: Any, new: dict[str, Any]) -> list[str]:
    """Names of what differs between a stored run manifest and this run's ([] = the same run). A manifest from
    before `--passes` existed describes a full-passes run (that was the only mode)."""
    if not isinstance(old, dict):
        return ["manifest"]
    if "ensemble_hash" not in old:  # written before the ensemble's weights were recorded: not checkable
        old = {**old, "ensemble_hash": new.get("ensemble_hash")}
    if isinstance(old.get("settings"), dict) and "members" not in old["settings"]:  # before --members: all
        old = {**old, "settings": {**old["settings"], "members": 0}}
    if "features" not in old and isinstance(old.get("settings"), dict) and "passes" not in old["settings"]:
        old = {**old, "settings": {**old["settings"], "passes": "full"}}
        if new["settings"]["passes"] == "full":
            old["features"] = new["features"]
    diff = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if key == "settings" and isinstance(a, dict) and isinstance(b, dict):
            diff += [f"settings.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diff.append(key)
    return diff


def prepare_out(out: Path, manifest: dict[str, Any], resume: bool) -> bool:
    """Create/check OUT for this run; True when OUT already holds the finished result of the same run."""
    mpath = outputs.parts_dir(out) / "manifest.json"
    done_manifest = out / "summary.json"
    if outputs.is_complete(out):
        old = json.loads(done_manifest.read_text()).get("manifest")
        if resume and not _manifest_diff(old, manifest):
            return True
        raise FileExistsError(f"{out}: already holds a finished segment-video result; choose another --out")
    if mpath.is_file():
        if not resume:
            raise FileExistsError(f"{out}: holds an interrupted segment-video run; add --resume to continue it "
                                  f"or choose another --out")
        diff = _manifest_diff(json.loads(mpath.read_text()), manifest)
        if diff:
            raise UserError(f"{out}: --resume with a different video, classifier or settings than the "
                             f"interrupted run (differs: {', '.join(diff)}); use the same ones or another --out")
    else:
        write_json_atomic(mpath, manifest)
    return False


def segment_video(clf: SegmentationClassifier, video: str | Path, out: str | Path, cfg: VideoConfig,
                  resume: bool = False, truth: np.ndarray | None = None, progress: Progress | None = None
                  ) -> dict[str, Any]:
    """Segment `video` into OUT (see engine.video.outputs); returns the summary. Multi-process under torchrun.

    A `VideoError` met while decoding (corrupt or truncated data, a frame size change) is a property of the
    file: the run could never finish, so `.parts/` is removed (and OUT, when this run created it and it is
    left empty) before the error propagates. Other interruptions keep `.parts/` for `--resume`.
    """
    video, out = Path(video), Path(out)
    out_existed = out.exists()
    info = probe(video)
    rank, world = _dist()
    plan = feature_plan(clf, cfg.passes)
    head = ensemble_head(clf, cfg.members)
    manifest = {"video": video.name, "fingerprint": _video_fingerprint(video),
                "classifier_hash": clf.run.weights_hash + "|" + hashlib.sha256(
                    json.dumps(clf.spec.to_dict(), sort_keys=True).encode()).hexdigest()[:12],
                "ensemble_hash": clf.ensemble_digest(),  # a refit with the same recipe is another classifier
                "temperature": clf.temperature,
                "settings": cfg.manifest(), "features": plan.to_dict(),
                "info": {k: v for k, v in info.to_dict().items() if k != "path"}}
    already = False
    if rank == 0:
        already = prepare_out(out, manifest, resume)
    _barrier()
    if already:
        return json.loads((out / "summary.json").read_text())
    K, halo = cfg.chunk, cfg.smooth

    owned: dict[int, bool] = {}  # decided once per chunk: sealing a chunk during the run must not change it

    def mine(c: int) -> bool:
        if c not in owned:
            owned[c] = c % world == rank and not outputs.chunk_done(out, c)
        return owned[c]

    def needed(sel: int) -> tuple[bool, bool]:
        c = sel // K
        if mine(c):
            return True, True
        near = {(sel - halo) // K, (sel + halo) // K} if halo else set()
        return any(mine(x) for x in near if x >= 0), False

    t0 = time.time()
    done = [0]
    expected = _expected_frames(info, cfg)

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            el = time.time() - t0
            progress({"done": done[0], "expected": expected, "fps": done[0] / el if el > 0 else 0.0,
                      "elapsed": el})

    ext = FeatureExtractor(clf.run, plan.spec, clf.cache)
    familiarity = None
    if cfg.unfamiliar:
        from ..uncertainty.familiarity import load_for_run

        familiarity, why = load_for_run(clf.run)
        if familiarity is None:
            raise UserError(f"--unfamiliar: {why}; fit one with `python -m engine familiarity fit`")

    def compute(batch: list[_Frame]) -> list[_Result]:
        """One batch through the UNet and the ensemble (in a stream's thread when there are several)."""
        x = torch.stack([f.tensor for f in batch])
        hw = tuple(batch[0].tensor.shape[-2:])
        views = []
        for view in ([x, x.flip(-1)] if plan.flip else [x]):  # flip averaging: the mirrored view joins the ensemble
            maps = ext.compute_batch(view, cfg.unet_bf16)
            streams.raise_if_stopping()  # a cancelled run gives up between steps (seconds per batch on a CPU)
            views.append(head.predict_logits_batch(maps, hw, bf16=cfg.head_bf16))
        logits = torch.cat([views[0], views[1].flip(-1)], dim=1) if plan.flip else views[0]
        # calibrated mean softmax at the classifier's temperature (what --smooth averages), as the frame path
        probs, js, score = (v.cpu() for v in clf.summarise_batch(logits))  # the writer thread works on the CPU
        done_batch = []
        for k, f in enumerate(batch):
            extra: dict[str, Any] = {}
            if familiarity is not None and f.rgb is not None:
                streams.raise_if_stopping()
                v = familiarity.assess(clf.run, f.tensor)
                extra = {"unfamiliar_percentile": v.percentile, "unfamiliar": v.unfamiliar}
            done_batch.append((f, probs[k], js[k], float(score[k]), extra))
        return done_batch

    model = clf.run.model
    reader = _Reader(video, info, cfg, needed, clf.run.image_size, model.downsample_factor)
    writer = _ChunkWriter(out, clf, cfg, info.fps, tick)
    # per selected frame: (frame, probs (C,h,w), js (h,w), score, extra columns) until its chunk is handed to the writer
    results: dict[int, _Result] = {}
    pending: list[_Frame] = []
    emitted = _Emitted()

    def take(computed: Iterator[list[_Result]]) -> None:
        """Record finished batches (they come in frame order) and hand the writer what is complete."""
        for done_batch in computed:
            for item in done_batch:
                results[item[0].sel] = item
        if results:  # frames up to the highest COMPUTED one are ready (the pending ones are not)
            _emit_ready(results, max(results), K, halo, mine, writer, emitted, final=False)

    streams = OrderedStreams(compute, cfg.streams)
    with streams:  # divides the torch threads before any thread starts
        reader.start()
        writer.start()
        if rank == 0:  # only rank 0 writes the table at the end
            threading.Thread(target=outputs.warm_table_imports, name="warm-imports", daemon=True).start()
        try:
            for fr in reader.frames():
                if pending and fr.tensor.shape != pending[0].tensor.shape:
                    raise VideoError(f"{video.name}: frame size changes mid-stream at frame {fr.index}")
                pending.append(fr)
                if len(pending) >= cfg.batch:
                    take(streams.submit(pending))
                    pending = []
                if writer.error:
                    raise writer.error
            if pending:
                take(streams.submit(pending))
            take(streams.drain())
            total = reader.total_selected
            if total == 0:
                raise VideoError(f"{video.name}: no frames between --start {cfg.start} and --end {cfg.end}")
            _emit_ready(results, total - 1, K, halo, mine, writer, emitted, final=True)
            writer.submit(None)
            writer.join()
            if writer.error:
                raise writer.error
        except BaseException as e:
            reader.stop.set()
            writer.cancel()
            if isinstance(e, VideoError) and rank == 0:
                writer.join(timeout=120)  # it may be finishing a chunk inside .parts/
                outputs.discard_parts(out, remove_out=not out_existed)
            raise
    compute_s = time.time() - t0
    _barrier()
    n_chunks = math.ceil(total / K)
    if rank != 0:
        _barrier()
        return {"rank": rank, "frames_processed": done[0]}
    summary = {"manifest": manifest, "video": {**info.to_dict(), "path": str(video.resolve())}, "classes": clf.classes.names,
               "processed_frames_this_run": done[0], "seconds": round(compute_s, 3),
               "fps_this_run": round(done[0] / compute_s, 3) if compute_s > 0 else None, "world_size": world,
               "smooth": cfg.smooth, "passes": cfg.passes, "unet_passes_per_frame": plan.unet_passes,
               "ensemble_members": head.members, "classifier_members": clf.model.members,
               "streams": streams.streams, "threads_per_stream": streams.threads_per_stream}
    result = outputs.finalize(out, n_chunks, clf.classes, summary, truth)
    _barrier()
    return result


@dataclass
class _Emitted:
    """Which selected frames the writer has been given, and the chunk it is filling (None between chunks)."""

    frames: set[int] = field(default_factory=set)
    open_chunk: int | None = None


def _emit_ready(results: dict, upto: int, K: int, halo: int, mine: Callable[[int], bool], writer: _ChunkWriter,
                state: _Emitted, final: bool) -> None:
    """Hand the writer every own frame whose smoothing window has been computed (all frames up to `upto` are),
    in order; seal a chunk after its last frame (or, at the end, the last open one); drop what no later frame
    needs."""
    for s in sorted(results):
        c = s // K
        fr = results[s][0]
        if s in state.frames or not mine(c) or fr.rgb is None:
            continue
        if not final and upto < s + halo:
            break  # the later frames' windows are not complete either
        if state.open_chunk is not None and state.open_chunk != c:
            writer.submit(("close", state.open_chunk))
        state.open_chunk = c
        writer.submit(("frame", c, fr, _smoothed(results, s, halo), results[s][2], results[s][3], results[s][4]))
        state.frames.add(s)
        if s == (c + 1) * K - 1:  # the chunk's last frame
            writer.submit(("close", c))
            state.open_chunk = None
    if final and state.open_chunk is not None:
        writer.submit(("close", state.open_chunk))
        state.open_chunk = None
    waiting = [s for s in results if s not in state.frames and mine(s // K) and results[s][0].rgb is not None]
    keep_from = (min(waiting) - halo) if waiting else upto - halo + 1
    for s in [s for s in results if s < keep_from]:
        del results[s]
        state.frames.discard(s)


def _smoothed(results: dict, s: int, halo: int) -> torch.Tensor:
    if not halo:
        return results[s][1]
    window = [results[j][1] for j in range(s - halo, s + halo + 1) if j in results]
    return torch.stack(window).mean(dim=0)


def _expected_frames(info: VideoInfo, cfg: VideoConfig) -> int:
    """Frames that will be selected, from the container's count and rate (an estimate for the progress bar)."""
    total = info.frames or int(round(info.duration * info.fps))
    if not total or not info.fps:
        return 0
    first = int(math.ceil(cfg.start * info.fps))
    last = min(total, int(math.ceil(cfg.end * info.fps)) if cfg.end is not None else total)
    return len(range(first + (-first) % cfg.every, last, cfg.every))
