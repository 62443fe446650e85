"""Video throughput: end-to-end frames/s of segment-video vs the UNet-only limits, and the prediction's share.

    python bench/video_throughput.py [--clip assets/demo_video/demo_clip.mp4] [--e2e-clip LONGER.mp4]
                                     [--threads 2] [--repeats 5] [--e2e-repeats 3] [--members 3,1]

The limits: frames already decoded and resized to the model size, only the UNet forward up to the last
requested block (all timesteps of a frame in one batch), at the best batch size — one forward at a time with
all threads (the issue's definition), and two forwards at once with half the threads each (what
`segment-video --streams 2` does; steadier and faster on this 2-core host). Prediction: the fused ensemble +
summary (calibrated mean softmax, JS map, score: `clf.summarise_batch`, as segment-video) on those features.
Every variant runs once per round, rounds interleaved (so load drift hits all alike); figures are medians over
`--repeats` rounds, in wall time and in process CPU time (all threads), which a shared host moves far less.
Side by side: the per-image reference head, the per-frame stages of the reader and writer threads, and
segment-video end to end (bf16 head; all members and the first k; one and two streams) for `--passes full`
(the classifier's recipe) and the lighter plans that differ from it (`balanced`: one noise draw + the
mirrored view; `fast`: one noise draw, no mirrored view). `--e2e-clip`: a longer clip for the end-to-end
runs, where the fixed costs (start, last batch, final files) weigh as little as on a real recording.
"""
from __future__ import annotations

import argparse
import copy
import io
import os
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: CPU time = work done
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402 - after the path setup above
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine.segmentation.classifier import load_classifier  # noqa: E402
from engine.data.transforms import model_input_uint8, resize_shorter, to_tensor  # noqa: E402
from engine.segmentation.features import FeatureExtractor  # noqa: E402
from engine.segmentation.pixel_classifier import BatchedBatchNorm, EnsembleMLP  # noqa: E402
from engine.video.frame_stats import frame_row  # noqa: E402
from engine.video.labels import upsampled_labels  # noqa: E402
from engine.video.overlay import blend  # noqa: E402
from engine.video.pipeline import VideoConfig, cpu_has_bf16, feature_plan, segment_video  # noqa: E402
from engine.video.reader import iter_frames, probe, read_frames, to_rgb  # noqa: E402
from engine.video.streams import OrderedStreams  # noqa: E402
from engine.video.writer import Mp4Writer  # noqa: E402


@torch.no_grad()
def previous_fused(model: EnsembleMLP, maps: list[torch.Tensor], out_hw: tuple[int, int]) -> torch.Tensor:
    """The fused head as it was before the row-band rewrite (for the side-by-side figure): (E·h1) NCHW planes
    upsampled whole, bias and ReLU as full-size passes, layers as (E, out, in) @ (E, in, pixels)."""
    outs = []
    for k in range(maps[0].shape[0]):  # one image at a time, as it ran
        fs = [f[k:k + 1].float() for f in maps]
        W, b = model.weights[0], model.biases[0]
        e, h1 = W.shape[0], W.shape[2]
        H, Wd = out_hw
        x = torch.cat(fs, dim=1).transpose(0, 1).reshape(-1, fs[0].shape[2] * fs[0].shape[3])
        w = W.permute(0, 2, 1).reshape(e * h1, -1)
        y = (w @ x).reshape(1, e * h1, *fs[0].shape[-2:])
        z = F.interpolate(y, size=out_hw, mode="bilinear", align_corners=False)
        h = z.reshape(e, h1, H * Wd) + b[:, :, None]
        for i, norm in enumerate(model.norms):
            assert isinstance(norm, BatchedBatchNorm)
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            shift = norm.bias - norm.running_mean * scale
            w_next = model.weights[i + 1]
            w_fold = (w_next * scale[:, :, None]).transpose(1, 2)
            b_fold = model.biases[i + 1] + torch.einsum("eh,eho->eo", shift, w_next)
            h = torch.baddbmm(b_fold[:, :, None], w_fold, F.relu(h))
        outs.append(h.reshape(e, model.num_classes, H, Wd))
    return torch.stack(outs)


class Rounds:
    """Interleaved timing: every registered variant once per round; medians of wall and CPU seconds."""

    def __init__(self) -> None:
        self.fns: dict[str, tuple[Callable[[], object], int]] = {}
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def add(self, name: str, fn: Callable[[], object], per: int) -> None:
        self.fns[name] = (fn, per)
        self.wall[name], self.cpu[name] = [], []

    def run(self, rounds: int) -> None:
        for fn, _ in self.fns.values():
            fn()  # warm-up
        for _ in range(rounds):
            for name, (fn, _) in self.fns.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                self.wall[name].append(time.perf_counter() - t0)
                self.cpu[name].append(time.process_time() - c0)

    def ms(self, name: str) -> tuple[float, float]:
        """(wall, CPU) median milliseconds per item."""
        per = self.fns[name][1]
        return 1000 * statistics.median(self.wall[name]) / per, 1000 * statistics.median(self.cpu[name]) / per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default=str(ROOT / "assets/demo_video/demo_clip.mp4"))
    ap.add_argument("--classifier", default=str(ROOT / "assets/demo_classifier"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--frames", type=int, default=16, help="frames used for the UNet/prediction/stage timings")
    ap.add_argument("--e2e-repeats", type=int, default=3, help="segment-video runs per variant")
    ap.add_argument("--e2e-clip", default=None,
                    help="clip for the end-to-end runs (default: --clip); a longer one spreads the fixed costs "
                         "(start, last batch, final files) thinner, as on a real recording")
    ap.add_argument("--members", default="3",
                    help="sub-ensemble sizes also timed (segment-video --members N; bf16 head), comma-separated")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf = load_classifier(args.classifier, "cpu", use_cache=False)
    clf.run.model.to(memory_format=torch.channels_last)  # segment-video's default (identical masks, faster)
    ext, model = clf.extractor(), clf.model
    frames = read_frames(args.clip, limit=args.frames)
    rgbs = [f for _, _, f in frames]
    h, w = rgbs[0].shape[:2]
    size, mult = clf.run.image_size, clf.run.model.downsample_factor
    x = torch.stack([model_input_uint8(f, size, mult) for f in rgbs])
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    n = len(x)
    plan = feature_plan(clf, "full")  # what segment-video --passes uses
    flip = plan.flip  # the shipped classifier averages a mirrored view: two passes a frame
    # the lighter plans that differ from full for this classifier (balanced = full when it has one noise)
    LIGHT = tuple(m for m in ("balanced", "fast") if feature_plan(clf, m) != plan)
    light_plans = {mode: feature_plan(clf, mode) for mode in LIGHT}
    light_ext = {mode: FeatureExtractor(clf.run, lp.spec) for mode, lp in light_plans.items()}

    def unet(xb: torch.Tensor, fx: FeatureExtractor = ext, bf16: bool = False, mirror: bool = flip
             ) -> list[list[torch.Tensor]]:
        """What segment-video's UNet does for a batch: maps of the frames (and of their mirror images)."""
        return [fx.compute_batch(v, autocast_bf16=bf16) for v in ([xb, xb.flip(-1)] if mirror else [xb])]

    def unet_light(xb: torch.Tensor, mode: str) -> list[list[torch.Tensor]]:
        return unet(xb, light_ext[mode], mirror=light_plans[mode].flip)

    def two_streams(work: Callable[[], object]) -> None:
        """`work` twice at once through segment-video's own streams (`--streams 2`: half the threads each)."""
        with OrderedStreams(lambda _: work(), 2) as s:
            for i in range(2):
                list(s.submit(i))
            list(s.drain())

    def head(views: list[list[torch.Tensor]], fn: Callable[[list[torch.Tensor]], torch.Tensor]) -> torch.Tensor:
        """Member logits of every view, the mirrored one flipped back, as one ensemble (as segment-video)."""
        out = [fn(m) for m in views]
        return torch.cat([out[0], out[1].flip(-1)], dim=1) if len(out) == 2 else out[0]

    print(f"--passes full: flip averaging {flip}; UNet passes per frame: {len(clf.spec.steps)} timestep(s) × "
          f"{clf.spec.n_noise} noise(s) × {2 if flip else 1} view(s) = {plan.unet_passes}; "
          + "; ".join(f"--passes {m}: {lp.spec.n_noise} noise(s) × {2 if lp.flip else 1} view(s) = {lp.unet_passes}"
                      for m, lp in light_plans.items()))
    print(f"clip {Path(args.clip).name}: {w}×{h}, processed at {hw[1]}×{hw[0]}; torch threads "
          f"{torch.get_num_threads()}; os.cpu_count {os.cpu_count()}; CPU bf16 units {cpu_has_bf16()}; "
          f"load average {os.getloadavg()[0]:.2f}; medians of {args.repeats} interleaved rounds, {n} frames")

    r = Rounds()
    batches = [int(v) for v in args.batches.split(",")]
    for b in batches:
        r.add(f"unet b{b}", lambda b=b: [unet(x[i:i + b]) for i in range(0, n, b)], n)
        for mode in LIGHT:
            r.add(f"unet {mode} b{b}", lambda b=b, mode=mode: [unet_light(x[i:i + b], mode) for i in range(0, n, b)], n)
    r.run(args.repeats)
    best = min(batches, key=lambda b: r.ms(f"unet b{b}")[0])
    best_light = {mode: min(batches, key=lambda b: r.ms(f"unet {mode} b{b}")[0]) for mode in LIGHT}
    for mode in ("", *(f"{m} " for m in LIGHT)):
        for b in batches:
            wl, cp = r.ms(f"unet {mode}b{b}")
            print(f"  UNet-only, passes {mode or 'full '}batch {b:2d}: {1000 / wl:6.2f} frames/s ({wl:6.1f} ms/frame; "
                  f"CPU {cp:6.1f} ms/frame)")
    maps = [unet(x[i:i + best]) for i in range(0, n, best)]  # per batch: the views (frame, mirrored)
    light_maps = {mode: [unet_light(x[i:i + best_light[mode]], mode) for i in range(0, n, best_light[mode])]
                  for mode in LIGHT}

    plain_run = copy.copy(clf.run)  # the same weights in the default (contiguous) layout, for the A/B
    plain_run.model = copy.deepcopy(clf.run.model).to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    plain = FeatureExtractor(plain_run, clf.spec)
    r = Rounds()
    r.add("unet", lambda: [unet(x[i:i + best]) for i in range(0, n, best)], n)
    r.add("unet 2 streams", lambda: two_streams(lambda: [unet(x[i:i + best]) for i in range(0, n, best)]), 2 * n)
    r.add("unet contiguous", lambda: [unet(x[i:i + best], plain) for i in range(0, n, best)], n)
    r.add("unet bf16", lambda: [unet(x[i:i + best], bf16=True) for i in range(0, n, best)], n)
    # the pre-rewrite head handled maps of one native size only (no RGB window map at the input size)
    heads = ["head float32", "head bf16"]
    if len({tuple(m.shape[-2:]) for m in maps[0][0]}) == 1:
        heads.insert(0, "head previous")
        r.add("head previous", lambda: [clf.summarise_batch(head(v, lambda m: previous_fused(model, m, hw)))
                                        for v in maps], n)
    r.add("head float32", lambda: [clf.summarise_batch(head(v, lambda m: model.predict_logits_batch(m, hw))) for v in maps], n)
    r.add("head bf16", lambda: [clf.summarise_batch(head(v, lambda m: model.predict_logits_batch(m, hw, bf16=True)))
                                for v in maps], n)
    subs = {k: model.subset(k) for k in (int(v) for v in args.members.split(",") if v)
            if 1 <= k < model.members}  # segment-video --members k: the first k members
    for k, sub in subs.items():
        heads.append(f"head bf16 m{k}")
        r.add(f"head bf16 m{k}", lambda sub=sub: [clf.summarise_batch(head(v, lambda m: sub.predict_logits_batch(
            m, hw, bf16=True))) for v in maps], n)
    for mode in LIGHT:
        bl = best_light[mode]
        r.add(f"unet {mode}", lambda mode=mode, bl=bl: [unet_light(x[i:i + bl], mode) for i in range(0, n, bl)], n)
        r.add(f"unet {mode} 2 streams", lambda mode=mode, bl=bl: two_streams(
            lambda: [unet_light(x[i:i + bl], mode) for i in range(0, n, bl)]), 2 * n)
        for name, bf in (("float32", False), ("bf16", True)):
            r.add(f"head {mode} {name}", lambda mode=mode, bf=bf: [clf.summarise_batch(
                head(v, lambda m: model.predict_logits_batch(m, hw, bf16=bf))) for v in light_maps[mode]], n)
        for k, sub in subs.items():
            r.add(f"head {mode} bf16 m{k}", lambda mode=mode, sub=sub: [clf.summarise_batch(
                head(v, lambda m: sub.predict_logits_batch(m, hw, bf16=True))) for v in light_maps[mode]], n)
    info = probe(args.clip)

    def decode() -> None:
        for i, _t, fr in iter_frames(args.clip, info):
            to_rgb(fr, info.rotation)
            if i + 1 >= n:
                break
    r.add("decode + RGB", decode, n)
    r.add("model input old", lambda: [to_tensor(resize_shorter(f, size, mult)[0]) for f in rgbs], n)
    r.add("model input new", lambda: [model_input_uint8(f, size, mult) for f in rgbs], n)
    probs = torch.cat([clf.summarise_batch(head(v, lambda m: model.predict_logits_batch(m, hw)))[0] for v in maps])
    r.add("labels old", lambda: [F.interpolate(p[None], size=(h, w), mode="bilinear", align_corners=False)[0]
                                 .argmax(dim=0).to(torch.uint8).numpy() for p in probs], n)
    r.add("labels new", lambda: [upsampled_labels(p, (h, w)) for p in probs], n)
    masks = [upsampled_labels(p, (h, w)) for p in probs]
    r.add("frame stats", lambda: [frame_row(m, clf.classes) for m in masks], n)
    r.add("blend", lambda: [blend(f, m, clf.classes.colors) for f, m in zip(rgbs, masks)], n)
    with tempfile.TemporaryDirectory() as d:
        def encode() -> None:
            wr = Mp4Writer(Path(d) / "x.mp4", w, h, 10.0)
            for f in rgbs:
                wr.write(f)
            wr.close()
        r.add("H.264 encode", encode, n)

        def deflate(level: int) -> None:
            with zipfile.ZipFile(io.BytesIO(), "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
                with zf.open("m.npy", "w") as f:
                    np.lib.format.write_array(f, np.stack(masks))
        r.add("masks deflate 6 (old parts)", lambda: deflate(6), n)
        r.add("masks deflate 3 (new parts)", lambda: deflate(3), n)
        r.run(args.repeats)
    unet_w, unet_c = r.ms("unet")
    s2_w, s2_c = r.ms("unet 2 streams")
    print(f"UNet-only limit: {1000 / unet_w:.2f} frames/s at batch {best} ({unet_w:.1f} ms/frame wall, "
          f"CPU {unet_c:.1f} ms/frame); two streams with {max(1, args.threads // 2)} thread(s) each: "
          f"{1000 / s2_w:.2f} frames/s ({s2_w:.1f} ms/frame wall, CPU {s2_c:.1f} ms/frame)")
    ref_unet = probs.argmax(1)
    for name, fx, bf in (("contiguous", plain, False), ("bf16", ext, True)):
        got = torch.cat([clf.summarise_batch(head(unet(x[i:i + best], fx, bf), lambda m: model.predict_logits_batch(m, hw)))
                         [0].argmax(1) for i in range(0, n, best)])
        wl, cp = r.ms(f"unet {name}")
        print(f"  UNet variant {name}: {wl:6.1f} ms/frame, CPU {cp:6.1f} ms/frame; labels equal to the default's on "
              f"{100 * float((got == ref_unet).float().mean()):.3f} % of pixels")
    for name in heads:
        wl, cp = r.ms(name)
        label = name[5:].replace(" m", ", members ")
        print(f"  prediction, {label}: {wl:6.1f} ms/frame = {100 * wl / unet_w:3.0f} % of the UNet wall time; "
              f"CPU {cp:6.1f} ms/frame = {100 * cp / unet_c:3.0f} % of the UNet CPU time")
    light_limits = {}
    for mode in LIGHT:
        lw, lc = r.ms(f"unet {mode}")
        l2 = r.ms(f"unet {mode} 2 streams")[0]
        light_limits[mode] = (lw, lc, best_light[mode], l2)
        print(f"--passes {mode}: UNet-only limit {1000 / lw:.2f} frames/s at batch {best_light[mode]} ({lw:.1f} "
              f"ms/frame wall, CPU {lc:.1f} ms/frame = {unet_c / lc:.1f}× less than full); two streams: "
              f"{1000 / l2:.2f} frames/s")
        for name in ("float32", "bf16", *(f"bf16 m{k}" for k in subs)):
            wl, cp = r.ms(f"head {mode} {name}")
            label = name.replace(" m", ", members ")
            print(f"  prediction, {label:8s}: {wl:6.1f} ms/frame = {100 * wl / lw:3.0f} % of the {mode} UNet wall "
                  f"time; CPU {cp:6.1f} ms/frame = {100 * cp / lc:3.0f} % of the {mode} UNet CPU time")
        light_labels = torch.cat([clf.summarise_batch(head(v, lambda m: model.predict_logits_batch(m, hw)))[0]
                                  .argmax(1) for v in light_maps[mode]])
        print(f"  labels of --passes {mode} equal --passes full on "
              f"{100 * float((light_labels == ref_unet).float().mean()):.3f} % of the {n} frames' pixels (at model "
              "size)")
    print("per-frame stages (reader and writer threads), CPU ms/frame:")
    for name in ("decode + RGB", "model input old", "model input new", "labels old", "labels new", "frame stats",
                 "blend", "H.264 encode", "masks deflate 6 (old parts)", "masks deflate 3 (new parts)"):
        print(f"  {name:28s} {r.ms(name)[1]:6.2f}")

    ref = torch.cat([head(v, lambda m: torch.stack([model.predict_logits_unfused([f[k] for f in m], hw)
                                                    for k in range(m[0].shape[0])])) for v in maps])
    ref_labels = clf.summarise_batch(ref)[0].argmax(1)
    for name, bf in (("float32", False), ("bf16", True)):
        got = torch.cat([clf.summarise_batch(head(v, lambda m, bf=bf: model.predict_logits_batch(m, hw, bf16=bf)))[0]
                         .argmax(1) for v in maps])
        print(f"  labels of the {name} head equal the per-image reference on "
              f"{100 * float((got == ref_labels).float().mean()):.3f} % of pixels")
    for k, sub in subs.items():
        got = torch.cat([clf.summarise_batch(head(v, lambda m, sub=sub: sub.predict_logits_batch(m, hw, bf16=True)))[0]
                         .argmax(1) for v in maps])
        print(f"  labels of the first {k} members (bf16) equal all {model.members} members' (float32 reference) on "
              f"{100 * float((got == ref_labels).float().mean()):.3f} % of pixels")

    # end to end: the bf16 head (the default on this CPU), all members and the first k, one and two streams
    first = next(iter(subs), 0)
    variants = [(p, 0, st) for p in ("full", *LIGHT) for st in (1, 2)]
    variants += [(p, k, 2) for p in ("full", *LIGHT) for k in subs] + [(p, first, 1) for p in ("full", *LIGHT) if first]
    runs: dict[tuple[str, int, int], tuple[list[float], list[float]]] = {v: ([], []) for v in variants}
    limits = {"full": (unet_w, unet_c, best, s2_w), **light_limits}
    clip = args.e2e_clip or args.clip
    total = 0
    for _ in range(args.e2e_repeats):
        for passes, k, st in variants:
            with tempfile.TemporaryDirectory() as d:
                t0, c0 = time.perf_counter(), time.process_time()
                s = segment_video(clf, clip, Path(d) / "out", VideoConfig(batch=limits[passes][2], head_bf16=True,
                                                                          passes=passes, members=k, streams=st))
                runs[passes, k, st][0].append(time.perf_counter() - t0)
                runs[passes, k, st][1].append(time.process_time() - c0)
                total = s["frames"]
    ew, eh = probe(clip).width, probe(clip).height
    for (passes, k, st), (walls, cpus) in runs.items():
        lim_w, lim_c, b, lim2_w = limits[passes]
        e2e = total / statistics.median(walls)
        cpu = 1000 * statistics.median(cpus) / total
        print(f"end to end (segment-video --passes {passes}{f' --members {k}' if k else ''} --streams {st}, head "
              f"bf16, batch {b}, {total} frames {ew}×{eh} of {Path(clip).name}, all outputs written): {e2e:.2f} "
              f"frames/s = {100 * e2e * lim_w / 1000:.0f} % of the one-forward UNet-only limit, "
              f"{100 * e2e * lim2_w / 1000:.0f} % of the two-stream one; CPU {cpu:.1f} ms/frame (UNet "
              f"{100 * lim_c / cpu:.0f} % of it); on {args.threads} idle cores at most {1000 * args.threads / cpu:.1f} "
              "frames/s")
    print(f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
