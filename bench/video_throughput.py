"""Video throughput: end-to-end frames/s of segment-video vs the UNet-only limit, and the prediction's share.

    python bench/video_throughput.py [--clip assets/demo_video/demo_clip.mp4] [--threads 2] [--repeats 3]

The limit: decoded frames already resized to the model size, only the UNet forward up to the last
requested block (all timesteps of a frame in the batch), at the best batch size. Prediction: the fused
ensemble + summary on those features. Variants: channels-last weights and bfloat16 autocast, each with the
share of pixels whose label equals the float32 path's. Medians of `--repeats` runs; torch threads printed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402 - after the path setup above

from engine.segmentation.classifier import load_classifier  # noqa: E402
from engine.data.transforms import resize_shorter, to_tensor  # noqa: E402
from engine.segmentation.pixel_classifier import summarise_batch  # noqa: E402
from engine.video.pipeline import VideoConfig, segment_video  # noqa: E402
from engine.video.reader import read_frames  # noqa: E402

CPU: list[float] = []  # process CPU seconds of the last `timed` call (median): steadier than wall time on a busy host


def timed(fn, repeats: int) -> float:
    """Median wall seconds of `repeats` calls after a warm-up; the median CPU seconds go to CPU[0]."""
    fn()  # warm-up
    ts, cs = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    CPU[:] = [statistics.median(cs)]
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default=str(ROOT / "assets/demo_video/demo_clip.mp4"))
    ap.add_argument("--classifier", default=str(ROOT / "assets/demo_classifier"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--frames", type=int, default=32, help="frames used for the UNet/prediction timings")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf = load_classifier(args.classifier, "cpu", use_cache=False)
    clf.run.model.to(memory_format=torch.channels_last)  # segment-video's default (identical masks, faster)
    ext, model = clf.extractor(), clf.model
    frames = read_frames(args.clip, limit=args.frames)
    h, w = frames[0][2].shape[:2]
    x = torch.stack([to_tensor(resize_shorter(f, clf.run.image_size, clf.run.model.downsample_factor)[0])
                     for _, _, f in frames])
    hw = tuple(x.shape[-2:])
    print(f"clip {Path(args.clip).name}: {w}×{h}, processed at {hw[1]}×{hw[0]}; torch threads {torch.get_num_threads()}; "
          f"os.cpu_count {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")
    n = len(x)
    best = None
    for b in [int(v) for v in args.batches.split(",")]:
        def unet(b: int = b) -> None:
            for i in range(0, n, b):
                ext.compute_batch(x[i:i + b])
        s = timed(unet, args.repeats)
        print(f"  UNet-only, batch {b:2d}: {n / s:6.2f} frames/s ({1000 * s / n:6.1f} ms/frame; "
              f"CPU {1000 * CPU[0] / n:6.1f} ms/frame)")
        if best is None or s < best[1]:
            best = (b, s, CPU[0])
    b, unet_s, unet_cpu = best
    maps = [ext.compute_batch(x[i:i + b]) for i in range(0, n, b)]

    def predict() -> None:
        for m in maps:
            summarise_batch(model.predict_logits_batch(m, hw))
    pred_s = timed(predict, args.repeats)
    pred_cpu = CPU[0]

    def predict_unfused() -> None:
        for m in maps:
            for k in range(m[0].shape[0]):
                model.predict_logits_unfused([f[k] for f in m], hw)
    unfused_s = timed(predict_unfused, max(1, args.repeats // 2))
    print(f"UNet-only limit: {n / unet_s:.2f} frames/s at batch {b}")
    print(f"prediction (fused + summary): {1000 * pred_s / n:.1f} ms/frame = {100 * pred_s / unet_s:.0f} % of the UNet "
          f"time (CPU time: {1000 * pred_cpu / n:.1f} ms/frame = {100 * pred_cpu / unet_cpu:.0f} %); previous per-image "
          f"path (logits only): {1000 * unfused_s / n:.1f} ms/frame, CPU {1000 * CPU[0] / n:.1f}")

    ref = torch.cat([summarise_batch(model.predict_logits_batch(m, hw))[0].argmax(1) for m in maps])
    for name, setup, bf16 in (("contiguous (channels-last off)", "plain", False), ("bf16 autocast", None, True)):
        if setup == "plain":
            clf.run.model.to(memory_format=torch.contiguous_format)

        def variant(b: int = b, bf16: bool = bf16) -> None:
            for i in range(0, n, b):
                ext.compute_batch(x[i:i + b], autocast_bf16=bf16)
        s = timed(variant, args.repeats)
        got = torch.cat([summarise_batch(model.predict_logits_batch(ext.compute_batch(x[i:i + b], bf16), hw))[0].argmax(1)
                         for i in range(0, n, b)])
        agree = float((got == ref).float().mean())
        print(f"  {name}: UNet {n / s:.2f} frames/s ({100 * (unet_s / s - 1):+.0f} % vs the default; CPU "
              f"{1000 * CPU[0] / n:.1f} ms/frame), labels equal on {100 * agree:.3f} % of pixels")
        if setup == "plain":
            clf.run.model.to(memory_format=torch.channels_last)

    runs, cpus = [], []
    total = None
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as d:
            t0, c0 = time.perf_counter(), time.process_time()
            s = segment_video(clf, args.clip, Path(d) / "out", VideoConfig(batch=b))
            runs.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            total = s["frames"]
    e2e = total / statistics.median(runs)
    e2e_cpu = statistics.median(cpus) / total
    print(f"end to end (segment-video, batch {b}, {total} frames {w}×{h}, all outputs written): {e2e:.2f} frames/s "
          f"= {100 * e2e / (n / unet_s):.0f} % of the UNet-only limit (CPU {1000 * e2e_cpu:.1f} ms/frame vs UNet "
          f"{1000 * unet_cpu / n:.1f}: {100 * (unet_cpu / n) / e2e_cpu:.0f} %); load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
