"""`segment-video`: segment a whole clip (overlay MP4, masks, per-frame table); torchrun shards it by rank."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .argtypes import bounded_int, nonneg_int, positive_int
from ..errors import UserError


def _seconds(text: str) -> float:
    """Seconds as '12.5' or 'MM:SS(.s)' / 'HH:MM:SS'."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (seconds, MM:SS or HH:MM:SS)") from None
    if len(parts) > 3 or any(p < 0 for p in parts):
        raise argparse.ArgumentTypeError(f"not a time: {text!r}")
    v = 0.0
    for p in parts:
        v = v * 60 + p
    return v


MAX_VIDEO_BATCH = 256  # --batch: frames (with their full-size pixels) held per batch
MAX_VIDEO_CHUNK = 4096  # --chunk: a chunk's full-size masks stay in memory until it is sealed
MAX_VIDEO_STREAMS = 16  # --streams: up to streams + 1 batches are in flight


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment-video", help="segment every (N-th) frame of a video: overlay MP4, masks, table")
    p.add_argument("video", metavar="VIDEO", help="video file (anything FFmpeg decodes: MP4, MOV, AVI, …)")
    p.add_argument("--classifier", required=True, help="classifier directory written by fit")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--every", type=positive_int, default=1, help="segment every N-th frame")
    p.add_argument("--start", type=_seconds, default=0.0, help="start time (seconds or MM:SS)")
    p.add_argument("--end", type=_seconds, default=None, help="end time, exclusive (seconds or MM:SS)")
    p.add_argument("--batch", type=bounded_int(1, MAX_VIDEO_BATCH, "frames held per batch"), default=8,
                   help="frames per UNet batch")
    p.add_argument("--chunk", type=bounded_int(1, MAX_VIDEO_CHUNK, "a chunk's masks are held until it is sealed"),
                   default=64, help="frames per part (unit of --resume and sharding)")
    p.add_argument("--smooth", type=nonneg_int, default=0,
                   help="temporal smoothing: average class probabilities over ±N processed frames (0 = off)")
    p.add_argument("--contours", action="store_true", help="overlay draws class boundaries instead of filled colour")
    p.add_argument("--opacity", type=float, default=0.5, help="class colour opacity in the overlay, 0..1")
    p.add_argument("--review-threshold", type=float, default=None,
                   help="flag a frame for review when its review score (class-averaged entropy + 1 − expected "
                        "mIoU) is above this (default: the classifier's review calibration at --review-percent, "
                        "else 0.6)")
    p.add_argument("--review-percent", type=float, default=10.0,
                   help="with a calibrated classifier: flag about this %% of typical frames")
    p.add_argument("--unfamiliar", action="store_true",
                   help="add the unfamiliar-input score of every frame (needs the run's familiarity model; slower)")
    p.add_argument("--truth", help="npz with `masks` (frames, H, W) class ids: per-frame mIoU is added to the table")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--passes", choices=("full", "balanced", "fast"), default="full",  # = pipeline.PASSES (tested)
                   help="UNet passes per frame: full = the classifier's recipe (its noise draws averaged, its flip "
                        "averaging; the shipped demo classifier: 2 passes); balanced = one noise draw with the "
                        "recipe's mirrored view (= full for a one-noise recipe); fast = one noise draw, no mirrored "
                        "view (1). Same ensemble; labels slightly different from full (README: video speed)")
    p.add_argument("--members", type=positive_int, default=None,
                   help="use the first N of the classifier's ensemble members (default: all): the pixel head's "
                        "time is linear in N; labels stay close to the whole ensemble's, the uncertainty map and "
                        "review score come from the N members (README: video speed)")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast for the UNet: faster where the CPU has bf16 units, masks ~99.97 %% equal "
                        "(not identical), so off by default")
    p.add_argument("--head-precision", choices=("auto", "bf16", "float32"), default="auto",
                   help="pixel-head matmuls: bf16 (2× faster where the CPU has bf16 units, labels ≥ 99.9 %% equal "
                        "to float32) or float32 (the `segment` path's numbers); auto = bf16 on a CPU with "
                        "AVX512-BF16 or AMX, else float32")
    p.add_argument("--no-channels-last", action="store_true",
                   help="keep the UNet in the default memory layout (channels-last is on: faster, identical masks)")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's choice)")
    p.add_argument("--streams", type=bounded_int(1, MAX_VIDEO_STREAMS, "each holds its batches' frames"),
                   default=None,
                   help="batches computed in parallel, each with threads/streams torch threads (default: 2 on a "
                        "CPU with >= 2 threads, else 1): on 2 cores 2 × 1 thread keeps both cores busier than "
                        "1 × 2 (README: video speed); masks equal up to float rounding, as with --threads")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or mps")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.set_defaults(func=run_segment_video)


def _load_truth(path: str) -> Any:
    import numpy as np

    try:
        with np.load(path) as z:
            return z["masks"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{Path(path).name}: not an npz with a `masks` array ({str(e)[:80]})") from None


def _progress_printer(out: Path, quiet: bool):
    """Progress to stderr and to OUT/.parts/progress.json (what the dashboard polls)."""
    from ..atomic import write_json_atomic
    from ..progress import progress_printer

    last = [0.0]
    printer = progress_printer()

    def show(p: dict[str, Any]) -> None:
        now = time.time()
        if now - last[0] < 0.5 and p["done"] != p["expected"]:
            return
        last[0] = now
        left = (p["expected"] - p["done"]) / p["fps"] if p["fps"] > 0 and p["expected"] else None
        p = {**p, "eta_s": left}
        try:
            write_json_atomic(out / ".parts" / "progress.json", p)
        except OSError:
            pass
        if not quiet:
            eta = f", {left:.0f} s left" if left is not None else ""
            printer(p["done"], p["expected"] or 0, f"{p['fps']:.1f} frames/s{eta}")

    return show


def _review_threshold(clf: Any, given: float | None, percent: float) -> float:
    from ..video.results import default_review_threshold

    return given if given is not None else default_review_threshold(clf, percent)


def run_segment_video(args: argparse.Namespace) -> int:
    import torch

    from ..segmentation.classifier import load_classifier
    from ..training.pretrain import init_distributed
    from ..video.pipeline import VideoConfig, head_bf16, segment_video
    from ..video.streams import default_streams

    if args.threads:
        torch.set_num_threads(args.threads)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # the dashboard's Cancel: stop like Ctrl-C
    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    dist_info = init_distributed(torch.device(device))
    truth = _load_truth(args.truth) if args.truth else None
    clf = load_classifier(args.classifier, device=device, use_cache=False)
    cfg = VideoConfig(every=args.every, start=args.start, end=args.end, chunk=args.chunk, smooth=args.smooth,
                      contours=args.contours, opacity=args.opacity,
                      review_threshold=_review_threshold(clf, args.review_threshold, args.review_percent),
                      unfamiliar=args.unfamiliar, unet_bf16=args.bf16, passes=args.passes,
                      members=args.members or 0,
                      head_bf16=head_bf16(args.head_precision, torch.device(device)), batch=args.batch,
                      streams=args.streams or default_streams(torch.device(device)))
    if not args.no_channels_last:
        clf.run.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    out = Path(args.out)
    try:
        summary = segment_video(clf, args.video, out, cfg, resume=args.resume, truth=truth,
                                progress=_progress_printer(out, args.no_progress or dist_info.rank != 0))
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if dist_info.rank == 0:
        if not args.no_progress and sys.stderr.isatty():  # end the rewritten line
            print(file=sys.stderr)
        brief = {k: summary.get(k) for k in ("frames", "overlay_frames", "fps_this_run", "flicker", "review_frames",
                                             "world_size", "passes", "unet_passes_per_frame",
                                             "ensemble_members", "streams")}
        if "truth" in summary:
            brief["miou"] = summary["truth"]["miou"]
        print(json.dumps({"out": str(out), **brief}))
    return 0
