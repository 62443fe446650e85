"""Pixel-classifier ensemble over multi-resolution feature maps, factorised so the full tensor never exists.

Architectures: ddpm-segmentation's MLP (DatasetGAN's): D→128→32→C (D→256→128→C when C ≥ 30), and the
study's D→256→128→32→C; each hidden Linear is followed by ReLU then BatchNorm1d, weights N(0, 0.02).
All E members train together as one batched model (parameters carry a leading ensemble axis).

Factorisation (README, "How segmentation works"): the first Linear acts per pixel and bilinear upsampling per channel, so
W·concat_k(up(f_k)) + c = Σ_k up(W_k·f_k) + c. Whole images are predicted by applying W_k at each
map's native resolution and upsampling only the hidden channels; training pixels are gathered by
bilinear interpolation (PyTorch's align_corners=False rule) of the four native neighbours.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..uncertainty.frame_scores import review_score, review_scores


def hidden_sizes(arch: str, num_classes: int) -> tuple[int, ...]:
    """Hidden widths of a named architecture ('ddpm' or 'study')."""
    if arch == "ddpm":
        return (256, 128) if num_classes >= 30 else (128, 32)
    if arch == "study":
        return (256, 128, 32)
    raise ConfigError(f"unknown classifier architecture {arch!r}; choose 'ddpm' or 'study'")


class BatchedBatchNorm(nn.Module):
    """BatchNorm1d for (E, B, H) inputs: statistics per member and channel over the batch axis."""

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, members: int, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, channels))
        self.bias = nn.Parameter(torch.zeros(members, channels))
        self.register_buffer("running_mean", torch.zeros(members, channels))
        self.register_buffer("running_var", torch.ones(members, channels))
        self.momentum, self.eps = momentum, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean, var = x.mean(dim=1), x.var(dim=1, unbiased=False)
            with torch.no_grad():
                n = x.shape[1]
                unbiased = var * n / max(n - 1, 1)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean[:, None]) / torch.sqrt(var[:, None] + self.eps) * self.weight[:, None] + self.bias[:, None]


BAND_BYTES = 8 << 20  # hidden planes per row band of the fused head (measured best: 16 rows of 88 px, float32)


class EnsembleMLP(nn.Module):
    """E independent pixel MLPs evaluated as one batched model."""

    def __init__(self, in_dim: int, num_classes: int, hidden: Sequence[int], members: int = 10, seed: int = 0):
        super().__init__()
        if in_dim < 1 or num_classes < 2 or members < 1:
            raise ValueError(f"bad classifier sizes: D={in_dim}, C={num_classes}, members={members}")
        self.in_dim, self.num_classes, self.hidden, self.members = in_dim, num_classes, tuple(hidden), members
        g = torch.Generator().manual_seed(seed)
        dims = [in_dim, *hidden, num_classes]
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(members, a, b, generator=g) * 0.02) for a, b in zip(dims[:-1], dims[1:])])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(members, b)) for b in dims[1:]])
        self.norms = nn.ModuleList([BatchedBatchNorm(members, h) for h in hidden])

    def subset(self, k: int) -> EnsembleMLP:
        """The first `k` members as an ensemble of their own (same weights, norms, architecture): a cheaper
        head whose logits are exactly those members' logits of the whole ensemble. Members are fitted
        independently (own seeds, own pixel draws), so any k of them are a fair sub-ensemble."""
        if not 1 <= k <= self.members:
            raise ValueError(f"a sub-ensemble needs 1..{self.members} members, got {k}")
        if k == self.members:
            return self
        sub = EnsembleMLP(self.in_dim, self.num_classes, self.hidden, k)
        sub.load_state_dict({name: value[:k] for name, value in self.state_dict().items()})
        return sub.train(self.training)

    def first_layer(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) pixel features → (E, B, h1) pre-activations."""
        return torch.einsum("bd,edh->ebh", x, self.weights[0]) + self.biases[0][:, None]

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """(E, B, h1) first-layer outputs → (E, B, C) logits."""
        for i, norm in enumerate(self.norms):
            assert isinstance(norm, BatchedBatchNorm)
            h = norm(F.relu(h))
            h = torch.bmm(h, self.weights[i + 1]) + self.biases[i + 1][:, None]
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) → (E, B, C) logits (the naive, unfactorised path)."""
        return self.head(self.first_layer(x))

    def first_layer_maps(self, maps: Sequence[torch.Tensor], out_hw: tuple[int, ...],
                         members: slice = slice(None)) -> torch.Tensor:
        """Factorised first layer on native maps (C_k, h_k, w_k) → (E', h1, H, W), upsampling hidden channels only."""
        W, b = self.weights[0][members], self.biases[0][members]
        e, h1 = W.shape[0], W.shape[2]
        if sum(f.shape[0] for f in maps) != self.in_dim:
            raise ValueError(f"feature maps hold {sum(f.shape[0] for f in maps)} channels but the classifier "
                             f"expects D={self.in_dim}")
        out = b[:, :, None, None].expand(e, h1, *out_hw).clone()
        # products of maps sharing a native size are summed first, so each size is upsampled once (linearity)
        by_size: dict[tuple[int, ...], torch.Tensor] = {}
        offset = 0
        for f in maps:
            c = f.shape[0]
            z = torch.einsum("cyx,ech->ehyx", f.float(), W[:, offset:offset + c])
            offset += c
            hw = tuple(z.shape[-2:])
            by_size[hw] = by_size[hw] + z if hw in by_size else z
        for hw, z in by_size.items():
            if hw != tuple(out_hw):
                z = F.interpolate(z.reshape(1, e * h1, *hw), size=out_hw, mode="bilinear",
                                  align_corners=False).reshape(e, h1, *out_hw)
            out += z
        return out

    @torch.no_grad()
    def predict_logits(self, maps: Sequence[torch.Tensor], out_hw: tuple[int, ...],
                       member_chunk: int | None = None) -> torch.Tensor:
        """Whole-image logits (E, C, H, W) of one image's native maps (C_k, h_k, w_k): the fused path."""
        return self.predict_logits_batch([f[None] for f in maps], out_hw, member_chunk)[0]

    @torch.no_grad()
    def predict_logits_batch(self, maps: Sequence[torch.Tensor], out_hw: tuple[int, ...],
                             member_chunk: int | None = None, image_chunk: int = 1,
                             bf16: bool = False) -> torch.Tensor:
        """Logits (N, E, C, H, W) of N images from stacked native maps (N, C_k, h_k, w_k), fused.

        All members at once, pixel-major ("channels-last"): the first layer (+ its bias, exact since
        interpolation weights sum to 1) is one matmul per native size with E·h1 outputs, and only those
        hidden channels are upsampled (bilinear, channels-last: one vectorised pass), in row bands of about
        BAND_BYTES so the full-size hidden planes stay in cache; maps already at the output size (the RGB
        window) are multiplied into each band's planes there, not as one full-size product; ReLU in place; each later layer is one
        batched matmul over members with the previous BatchNorm folded into its weights, the last one
        transposed. Images go `image_chunk` at a time. `member_chunk` bounds memory on large frames
        (members in groups of that many); None = all together. `bf16`: hidden planes and matmul operands in
        bfloat16 (float32 accumulation, biases and last layer): about 2× faster matmuls on CPUs with
        AVX512-BF16/AMX; labels ≥ 99.9 % equal to float32 (tested). CPU time per 88×64 frame of a 10-member
        D=384 head: 69 ms before this layout, 32 float32, 22.5 bf16 (bench/video_throughput.py, README).
        """
        chunk = self.members if member_chunk is None else max(1, int(member_chunk))
        if sum(f.shape[1] for f in maps) != self.in_dim:
            raise ValueError(f"feature maps hold {sum(f.shape[1] for f in maps)} channels but the classifier "
                             f"expects D={self.in_dim}")
        n = maps[0].shape[0]
        outs = []
        for i in range(0, n, max(1, image_chunk)):
            part = [f[i:i + image_chunk] for f in maps]
            per = [self._fused_members(part, out_hw, slice(s, min(s + chunk, self.members)), bf16)
                   for s in range(0, self.members, chunk)]
            outs.append(per[0] if len(per) == 1 else torch.cat(per, dim=1))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _fused_members(self, maps: Sequence[torch.Tensor], out_hw: tuple[int, ...], sl: slice,
                       bf16: bool = False, band_rows: int | None = None) -> torch.Tensor:
        W, b = self.weights[0][sl], self.biases[0][sl]
        e, h1 = W.shape[0], W.shape[2]
        n = maps[0].shape[0]
        H, Wd = (int(v) for v in out_hw)
        mm_dtype = torch.bfloat16 if bf16 else torch.float32
        groups: dict[tuple[int, int], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        offset = 0
        for f in maps:  # maps of one native size share one product (their contributions add up: linearity)
            c = f.shape[1]
            fs, ws = groups.setdefault((int(f.shape[-2]), int(f.shape[-1])), ([], []))
            fs.append(f)
            ws.append(W[:, offset:offset + c])
            offset += c
        native: list[torch.Tensor] = []
        full: tuple[torch.Tensor, torch.Tensor] | None = None  # maps already at the output size (the RGB window)
        bias = b.reshape(e * h1).float()  # interpolation weights sum to 1: the bias is added at native size
        for hw, (fs, ws) in groups.items():
            # (N·h·w, C) pixel-major features @ (C, E·h1) weights: one matmul for all members and images
            x = torch.cat(fs, dim=1).permute(0, 2, 3, 1).to(mm_dtype)
            w = torch.cat(ws, dim=1).permute(1, 0, 2).reshape(-1, e * h1).to(mm_dtype)
            if hw == (H, Wd):  # no upsampling: its product is added band by band, where the planes are in cache
                full = (x.contiguous(), w)
                continue
            x = x.reshape(n * hw[0] * hw[1], -1)
            y = torch.addmm(bias.to(mm_dtype), x, w) if not native else x @ w  # the bias once
            native.append(y.view(n, hw[0], hw[1], e * h1).permute(0, 3, 1, 2))  # NCHW view of channels-last memory
        folded = self._folded_layers(sl)
        if band_rows is None:  # rows whose E·h1 hidden planes take about BAND_BYTES
            band_rows = max(1, BAND_BYTES // (e * h1 * n * Wd * (2 if bf16 else 4)))
        extra = None if full is None else (full[0], full[1], None if native else bias.to(mm_dtype))
        outs = [self._head_rows(native, (H, Wd), r0, r1, folded, extra)
                for r0, r1 in _bands(native, H, band_rows)]
        logits = outs[0] if len(outs) == 1 else torch.cat(outs, dim=3)
        return logits.permute(2, 0, 1, 3, 4)  # (N, E, C, H, W), a view

    def _head_rows(self, native: list[torch.Tensor], out_hw: tuple[int, int], r0: int, r1: int,
                   folded: list[tuple[torch.Tensor, torch.Tensor]],
                   full: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
        """Logits (E, C, N, r1-r0, W) of output rows r0:r1 from the first layer's native outputs, plus the
        product of the output-size maps `full` = (pixel-major features (N, H, W, C), weights (C, E·h1), the
        bias when there are no native outputs to carry it), accumulated into the band's hidden planes."""
        e = folded[0][0].shape[0]
        n = (native[0] if native else full[0]).shape[0]  # type: ignore[index]
        flat = None  # (N·rows·W, E·h1) pixel-major hidden planes of the band
        if native:
            acc = None
            for z in native:
                u = _upsample_rows(z, out_hw, r0, r1)
                acc = u if acc is None else acc + u
            assert acc is not None
            # the planes are ours (fresh: upsampled or summed), so the products and ReLU below are in place
            flat = acc.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(-1, acc.shape[1])
        if full is not None:
            x, w, bias = full
            xb = x[:, r0:r1].reshape(-1, x.shape[-1])
            flat = flat.addmm_(xb, w) if flat is not None else torch.addmm(bias, xb, w)  # type: ignore[arg-type]
        assert flat is not None
        eh = flat.shape[1]
        # (E, N·rows·W, h1) view of the channels-last hidden planes
        h = F.relu_(flat.view(-1, e, eh // e).transpose(0, 1))
        for w_fold, b_fold in folded[:-1]:
            if h.dtype != torch.float32:  # bf16 hidden planes: bf16 products, float32 bias and what follows
                h = torch.bmm(h, w_fold.to(h.dtype)).float().add_(b_fold)
            else:
                h = torch.baddbmm(b_fold, h, w_fold)  # members as one batched matmul: (E, P, h_i) @ (E, h_i, h_next)
            h = F.relu_(h)
        # the last layer transposed, (E, C, h_k) @ (E, h_k, P): a handful of outputs per pixel makes the other
        # orientation 5× slower, and this one lands in the (E, C, pixels) layout the caller wants
        w_last, b_last = folded[-1]
        h = h.float() if h.dtype != torch.float32 else h
        logits = torch.baddbmm(b_last.transpose(1, 2), w_last.transpose(1, 2), h.transpose(1, 2))
        return logits.reshape(e, self.num_classes, n, r1 - r0, out_hw[1])

    def _folded_layers(self, sl: slice) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weights (E, h_i, h_next), bias (E, 1, h_next)) of every later layer, the previous BatchNorm folded in."""
        out = []
        for i, norm in enumerate(self.norms):
            assert isinstance(norm, BatchedBatchNorm)
            scale = norm.weight[sl] / torch.sqrt(norm.running_var[sl] + norm.eps)  # (E, h_i)
            shift = norm.bias[sl] - norm.running_mean[sl] * scale
            w_next = self.weights[i + 1][sl]  # (E, h_i, h_next)
            b_fold = self.biases[i + 1][sl] + torch.einsum("eh,eho->eo", shift, w_next)
            out.append((w_next * scale[:, :, None], b_fold[:, None]))
        return out

    @torch.no_grad()
    def predict_logits_unfused(self, maps: Sequence[torch.Tensor], out_hw: tuple[int, ...],
                               member_chunk: int = 5) -> torch.Tensor:
        """The previous whole-image path (einsum per map, members in chunks): kept as the equivalence reference."""
        outs = []
        for start in range(0, self.members, member_chunk):
            sl = slice(start, min(start + member_chunk, self.members))
            z = self.first_layer_maps(maps, out_hw, sl)
            e, h1 = z.shape[:2]
            h = z.reshape(e, h1, -1).transpose(1, 2)
            logits = self._head_members(h, sl)
            outs.append(logits.transpose(1, 2).reshape(e, self.num_classes, *out_hw))
        return torch.cat(outs)

    def _head_members(self, h: torch.Tensor, sl: slice) -> torch.Tensor:
        for i, norm in enumerate(self.norms):
            assert isinstance(norm, BatchedBatchNorm)
            h = F.relu(h)
            mean, var = norm.running_mean[sl], norm.running_var[sl]
            h = (h - mean[:, None]) / torch.sqrt(var[:, None] + norm.eps) * norm.weight[sl][:, None] + norm.bias[sl][:, None]
            h = torch.bmm(h, self.weights[i + 1][sl]) + self.biases[i + 1][sl][:, None]
        return h


def _bands(native: list[torch.Tensor], H: int, band_rows: int) -> list[tuple[int, int]]:
    """Output row ranges for the fused head: `band_rows` (rounded to the upsampling factors) when every native
    height divides H, else the whole frame."""
    if band_rows <= 0 or any(H % z.shape[2] for z in native):
        return [(0, H)]
    unit = math.lcm(*(H // z.shape[2] for z in native))
    step = max(unit, band_rows - band_rows % unit)
    return [(r, min(H, r + step)) for r in range(0, H, step)]


def _upsample_rows(z: torch.Tensor, out_hw: tuple[int, int], r0: int, r1: int) -> torch.Tensor:
    """Rows r0:r1 of F.interpolate(z, out_hw, bilinear, align_corners=False) for z (N, C, h, w).

    Whole frame when (r0, r1) = (0, H). Otherwise H = s·h and r0 a multiple of s: the band's native rows
    plus one context row each side are upsampled at the same scale (so the same source positions and
    weights as the whole map) and trimmed; the frame's own edges clamp exactly as the whole map's do.
    """
    H, Wd = out_hw
    h = z.shape[2]
    if tuple(z.shape[-2:]) == (H, Wd):
        return z[:, :, r0:r1]
    if (r0, r1) == (0, H):
        return F.interpolate(z, size=(H, Wd), mode="bilinear", align_corners=False)
    s = H // h
    lo, hi = max(r0 // s - 1, 0), min(-(-r1 // s) + 1, h)
    u = F.interpolate(z[:, :, lo:hi], size=((hi - lo) * s, Wd), mode="bilinear", align_corners=False)
    return u[:, :, r0 - lo * s:r1 - lo * s]


# ---- bilinear gathering of training pixels from native maps ------------------------------------
def _axis_weights(out_size: int, in_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's bilinear (align_corners=False) source indices and weights for one axis."""
    scale = in_size / out_size
    src = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    l1 = (src - i0).float()
    return i0, i1, 1 - l1, l1


class PixelGatherer:
    """Bilinear pixel features from stacked native maps (N, C_k, h_k, w_k) at an output grid H×W."""

    def __init__(self, maps: Sequence[torch.Tensor], out_hw: tuple[int, ...]):
        self.maps = list(maps)  # (N, C, h, w) as given: no channels-last copy (it would double training memory)
        self.out_hw = out_hw
        self.tables = [(_axis_weights(out_hw[0], m.shape[2]), _axis_weights(out_hw[1], m.shape[3])) for m in maps]
        self.dim = sum(m.shape[1] for m in maps)

    def __call__(self, n: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) image, row, column indices → (B, D) float32 features (t-major, then block)."""
        cols = []
        for m, ((y0, y1, wy0, wy1), (x0, x1, wx0, wx1)) in zip(self.maps, self.tables):
            a0, a1, b0, b1 = y0[y], y1[y], x0[x], x1[x]
            ly0, ly1, lx0, lx1 = wy0[y][:, None], wy1[y][:, None], wx0[x][:, None], wx1[x][:, None]
            top = lx0 * m[n, :, a0, b0].float() + lx1 * m[n, :, a0, b1].float()  # (B, C) each
            bottom = lx0 * m[n, :, a1, b0].float() + lx1 * m[n, :, a1, b1].float()
            cols.append(ly0 * top + ly1 * bottom)
        return torch.cat(cols, dim=1)


def naive_pixel_features(maps: Sequence[torch.Tensor], out_hw: tuple[int, ...]) -> torch.Tensor:
    """The reference path: upsample every map to H×W and concatenate → (D, H, W). Memory-hungry; for tests/bench."""
    return torch.cat([F.interpolate(f[None].float(), size=out_hw, mode="bilinear", align_corners=False)[0]
                      for f in maps])


@dataclass
class Prediction:
    """Ensemble output for one image: mean probabilities, labels, votes and uncertainty."""

    probs: torch.Tensor  # (C, H, W) mean softmax
    labels: torch.Tensor  # (H, W) argmax of mean softmax
    votes: torch.Tensor  # (H, W) majority vote of members' argmax
    entropy: torch.Tensor  # (H, W) entropy of the mean softmax (nats)
    js: torch.Tensor  # (H, W) Jensen–Shannon divergence among members (nats)
    score: float  # the review score of `probs` (engine/uncertainty/frame_scores.py)
    raw_probs: torch.Tensor | None = None  # uncalibrated mean softmax when a temperature was applied
    js_score: float = float("nan")  # mean of the top 10 % JS pixels: member disagreement (active learning)

    def cpu(self) -> Prediction:
        return Prediction(self.probs.cpu(), self.labels.cpu(), self.votes.cpu(), self.entropy.cpu(), self.js.cpu(),
                          self.score, None if self.raw_probs is None else self.raw_probs.cpu(), self.js_score)


def summarise(logits: torch.Tensor, top_fraction: float = 0.1, temperature: float = 1.0) -> Prediction:
    """(E, C, H, W) member logits → mean-softmax / vote / entropy / JS / per-image scores.

    `temperature` (fitted by `calibrate`) rescales the mean probabilities (p ∝ mean^(1/T)): the labels,
    votes and JS divergence are those of the raw members; probs, entropy and the review score (from probs,
    engine/uncertainty/frame_scores.py) are the calibrated ones; `js_score` is the mean of the top `top_fraction` JS pixels."""
    p = logits.float().softmax(dim=1)
    mean = p.mean(dim=0)
    ent_mean = -(mean * mean.clamp_min(1e-12).log()).sum(dim=0)
    ent_members = -(p * p.clamp_min(1e-12).log()).sum(dim=1).mean(dim=0)
    js = (ent_mean - ent_members).clamp_min(0)
    labels, raw = mean.argmax(dim=0), None
    if temperature != 1.0:
        raw, mean = mean, calibrated_mean(mean, temperature, dim=0)
        ent_mean = -(mean * mean.clamp_min(1e-12).log()).sum(dim=0)
    member_labels = p.argmax(dim=1)
    votes = F.one_hot(member_labels, logits.shape[1]).sum(dim=0).argmax(dim=-1)
    flat = js.flatten()
    k = max(1, math.ceil(top_fraction * flat.numel()))
    js_score = float(flat.topk(k).values.mean())
    return Prediction(mean, labels, votes, ent_mean, js, review_score(mean), raw, js_score)


def calibrated_mean(mean: torch.Tensor, temperature: float, dim: int) -> torch.Tensor:
    """The one place a classifier's temperature reaches its mean softmax (classes on `dim`): p ∝ mean^(1/T).
    Used by `summarise` (frames) and `summarise_batch` (video), so both report the same probabilities."""
    from ..uncertainty.calibration import apply_temperature

    return apply_temperature(mean, temperature, dim=dim)


def summarise_batch(logits: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, E, C, H, W) member logits → mean softmax (N, C, H, W), JS map (N, H, W), review score (N,).

    The same quantities as `summarise` (probs, js, score), for a batch of images at once (video frames): the
    mean softmax and the review score computed from it are calibrated at `temperature`; JS is the raw
    members'.
    """
    p = logits.float().softmax(dim=2)
    mean = p.mean(dim=1)
    ent_mean = -(mean * mean.clamp_min(1e-12).log()).sum(dim=1)
    ent_members = -(p * p.clamp_min(1e-12).log()).sum(dim=2).mean(dim=1)
    js = (ent_mean - ent_members).clamp_min(0)
    if temperature != 1.0:
        mean = calibrated_mean(mean, temperature, dim=1)
    return mean, js, review_scores(mean)
