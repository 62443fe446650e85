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
                             member_chunk: int | None = None, image_chunk: int = 1) -> torch.Tensor:
        """Logits (N, E, C, H, W) of N images from stacked native maps (N, C_k, h_k, w_k), fused.

        All members at once: the first layer is one matmul per native size (E·h1 outputs, maps of one size
        concatenated), upsampled once per size; each later layer is one batched matmul over members with the
        previous BatchNorm folded into its weights. Images go `image_chunk` at a time: the head is
        memory-bound (E·h1 hidden planes at full size), and one image's planes stay in cache far better
        (measured: 73 ms/frame at 1, 101 at 8, demo classifier, one core). `member_chunk` bounds memory on
        large frames (members in groups of that many); None = all members together.
        """
        chunk = self.members if member_chunk is None else max(1, int(member_chunk))
        n = maps[0].shape[0]
        outs = []
        for i in range(0, n, max(1, image_chunk)):
            part = [f[i:i + image_chunk] for f in maps]
            per = [self._fused_members(part, out_hw, slice(s, min(s + chunk, self.members)))
                   for s in range(0, self.members, chunk)]
            outs.append(per[0] if len(per) == 1 else torch.cat(per, dim=1))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _fused_members(self, maps: Sequence[torch.Tensor], out_hw: tuple[int, ...], sl: slice) -> torch.Tensor:
        W, b = self.weights[0][sl], self.biases[0][sl]
        e, h1 = W.shape[0], W.shape[2]
        if sum(f.shape[1] for f in maps) != self.in_dim:
            raise ValueError(f"feature maps hold {sum(f.shape[1] for f in maps)} channels but the classifier "
                             f"expects D={self.in_dim}")
        n = maps[0].shape[0]
        H, Wd = out_hw
        groups: dict[tuple[int, ...], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        offset = 0
        for f in maps:  # maps of one native size share one product (their contributions add up: linearity)
            c = f.shape[1]
            fs, ws = groups.setdefault(tuple(f.shape[-2:]), ([], []))
            fs.append(f.float())
            ws.append(W[:, offset:offset + c])
            offset += c
        z = None
        for hw, (fs, ws) in groups.items():
            # (C, N·h·w) features and (E·h1, C) weights: one matmul for all members and images
            x = torch.cat(fs, dim=1).transpose(0, 1).reshape(-1, n * hw[0] * hw[1])
            w = torch.cat(ws, dim=1).permute(0, 2, 1).reshape(e * h1, -1)
            y = (w @ x).reshape(1, e * h1 * n, *hw)  # every (member, unit, image) plane upsampled at once
            if hw != tuple(out_hw):
                y = F.interpolate(y, size=out_hw, mode="bilinear", align_corners=False)
            z = y if z is None else z + y
        assert z is not None
        h = z.reshape(e, h1, n * H * Wd) + b[:, :, None]
        for i, norm in enumerate(self.norms):
            assert isinstance(norm, BatchedBatchNorm)
            scale = norm.weight[sl] / torch.sqrt(norm.running_var[sl] + norm.eps)  # (E, h_i)
            shift = norm.bias[sl] - norm.running_mean[sl] * scale
            w_next = self.weights[i + 1][sl]  # (E, h_i, h_next)
            w_fold = (w_next * scale[:, :, None]).transpose(1, 2)  # BatchNorm folded into the next layer
            b_fold = self.biases[i + 1][sl] + torch.einsum("eh,eho->eo", shift, w_next)
            h = torch.baddbmm(b_fold[:, :, None], w_fold, F.relu(h))  # members as one batched matmul
        return h.reshape(e, self.num_classes, n, H, Wd).permute(2, 0, 1, 3, 4)

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
