"""The Gaussian diffusion process (Ho et al. 2020; learned variances of Nichol & Dhariwal 2021).

The process never looks inside the network: it calls `model(x_t, t)` and reads its prediction — eps,
x0 or v, as the process's `prediction_type` says (like diffusers' schedulers) — and the variance
interpolation when `learn_sigma`. A respaced process keeps a `timestep_map` to the original t.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..errors import ConfigError
from .schedules import make_betas

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: what the network's (mean) output is: the noise eps, the clean sample x0, or v = √ᾱ·eps − √(1−ᾱ)·x0
PREDICTION_TYPES = ("eps", "x0", "v")


def _take(arr: np.ndarray, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """arr[t] as a float32 tensor broadcastable over a batch of `ndim`-dim images."""
    out = torch.from_numpy(arr).to(device=t.device)[t].float()
    return out.reshape(-1, *([1] * (ndim - 1)))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log p(x) of 8-bit images in [-1,1] under a Gaussian discretised to bins of width 2/255."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_probs = torch.where(
        x < -0.999, log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log((cdf_plus - cdf_min).clamp(min=1e-12))),
    )
    return log_probs


class GaussianDiffusion:
    """Forward noising q(x_t|x_0), the reverse model p(x_{t-1}|x_t) and the training losses."""

    def __init__(self, betas: np.ndarray, learn_sigma: bool = False, loss: str = "mse",
                 timestep_map: list[int] | None = None, prediction_type: str = "eps"):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of {list(PREDICTION_TYPES)}")
        self.prediction_type = prediction_type
        if loss not in ("mse", "hybrid"):
            raise ConfigError(f"unknown loss {loss!r}; choose 'mse' or 'hybrid'")
        if loss == "hybrid" and not learn_sigma:
            raise ConfigError("the hybrid loss trains the variance and needs learn_sigma=True")
        self.betas = betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.learn_sigma, self.loss_type = learn_sigma, loss
        self.num_timesteps = len(betas)
        self.timestep_map = np.asarray(timestep_map if timestep_map is not None else range(len(betas)))
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:])) \
            if len(betas) > 1 else np.log(betas)
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    @classmethod
    def from_config(cls, schedule: str, num_timesteps: int, learn_sigma: bool = False, loss: str = "mse",
                    prediction_type: str = "eps") -> GaussianDiffusion:
        return cls(make_betas(schedule, num_timesteps), learn_sigma=learn_sigma, loss=loss,
                   prediction_type=prediction_type)

    def respace(self, timesteps: list[int]) -> "GaussianDiffusion":
        """A shorter process over a subset of the original timesteps (for fast DDPM/DDIM sampling)."""
        keep = sorted(set(int(t) for t in timesteps))
        if not keep or keep[0] < 0 or keep[-1] >= self.num_timesteps:
            raise ValueError(f"respaced timesteps must lie in 0..{self.num_timesteps - 1}")
        last, betas = 1.0, []
        for t in keep:
            betas.append(1 - self.alphas_cumprod[t] / last)
            last = self.alphas_cumprod[t]
        return GaussianDiffusion(np.array(betas), self.learn_sigma, self.loss_type,
                                 timestep_map=[int(self.timestep_map[t]) for t in keep],
                                 prediction_type=self.prediction_type)

    # ---- forward process -------------------------------------------------------------------------
    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_t | x_0)."""
        mean = _take(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
        var = _take(1.0 - self.alphas_cumprod, t, x0.ndim).expand_as(x0)
        return mean, var

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ab_t)·x_0 + sqrt(1-ab_t)·eps."""
        return _take(self.sqrt_alphas_cumprod, t, x0.ndim) * x0 + _take(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = _take(self.posterior_mean_coef1, t, xt.ndim) * x0 + _take(self.posterior_mean_coef2, t, xt.ndim) * xt
        return mean, _take(self.posterior_log_variance_clipped, t, xt.ndim)

    # ---- reverse process -------------------------------------------------------------------------
    def model_t(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep the network sees for process index t (differs after respacing)."""
        return torch.from_numpy(self.timestep_map).to(t.device)[t]

    def split_output(self, out: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prediction, variance interpolation or None) from the raw network output."""
        c = x.shape[1]
        if self.learn_sigma:
            if out.shape[1] != 2 * c:
                raise ValueError(f"learn_sigma expects {2 * c} output channels, model gave {out.shape[1]}")
            return out[:, :c], out[:, c:]
        if out.shape[1] != c:
            raise ValueError(f"model gave {out.shape[1]} output channels, expected {c} (learn_sigma off)")
        return out, None

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return _take(self.sqrt_recip_alphas_cumprod, t, xt.ndim) * xt - _take(self.sqrt_recipm1_alphas_cumprod, t, xt.ndim) * eps

    def eps_from_x0(self, xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (_take(self.sqrt_recip_alphas_cumprod, t, xt.ndim) * xt - x0) / _take(self.sqrt_recipm1_alphas_cumprod, t, xt.ndim)

    def eps_and_x0(self, pred: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps, x0) implied by the network's prediction under this process's prediction_type."""
        if self.prediction_type == "eps":
            return pred, self.predict_x0(xt, t, pred)
        if self.prediction_type == "x0":
            return self.eps_from_x0(xt, t, pred), pred
        a, s = _take(self.sqrt_alphas_cumprod, t, xt.ndim), _take(self.sqrt_one_minus_alphas_cumprod, t, xt.ndim)
        return s * xt + a * pred, a * xt - s * pred  # v-prediction (Salimans & Ho 2022)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output for (x0, eps, t) under this process's prediction_type."""
        if self.prediction_type == "eps":
            return noise
        if self.prediction_type == "x0":
            return x0
        a, s = _take(self.sqrt_alphas_cumprod, t, x0.ndim), _take(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim)
        return a * noise - s * x0

    def p_mean_variance(self, model: Model, xt: torch.Tensor, t: torch.Tensor, clip: bool = True,
                        model_out: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Mean, log-variance, predicted x_0 and eps of p(x_{t-1} | x_t)."""
        out = model(xt, self.model_t(t)) if model_out is None else model_out
        pred, var_v = self.split_output(out, xt)
        eps, x0 = self.eps_and_x0(pred, xt, t)
        if var_v is None:  # fixed-small variance (the posterior's)
            log_var = _take(self.posterior_log_variance_clipped, t, xt.ndim).expand_as(xt)
        else:
            min_log = _take(self.posterior_log_variance_clipped, t, xt.ndim)
            max_log = _take(np.log(self.betas), t, xt.ndim)
            frac = (var_v + 1) / 2
            log_var = frac * max_log + (1 - frac) * min_log
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.q_posterior(x0, xt, t)
        return {"mean": mean, "log_variance": log_var, "pred_x0": x0, "eps": eps}

    # ---- training --------------------------------------------------------------------------------
    def training_losses(self, model: Model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example loss: MSE of the prediction (eps, x0 or v) against its target, plus the variational
        bound term (λ = T/1000 as the reference) for hybrid. `mask` (broadcastable to x0, 0/1) leaves
        pixels out of the MSE (each example averages over its kept pixels)."""
        xt = self.q_sample(x0, t, noise)
        out = model(xt, self.model_t(t))
        pred, var_v = self.split_output(out, xt)
        err = (pred - self.target(x0, noise, t)) ** 2
        dims = tuple(range(1, x0.ndim))
        if mask is None:
            loss = err.mean(dim=dims)
        else:
            m = mask.to(err.dtype).expand_as(err)
            loss = (err * m).sum(dim=dims) / m.sum(dim=dims).clamp_min(1.0)
        if self.loss_type == "hybrid":
            assert var_v is not None  # hybrid needs learn_sigma (checked in __init__)
            frozen = torch.cat([pred.detach(), var_v], dim=1)
            loss = loss + self.vb_terms(x0, xt, t, frozen) * (self.num_timesteps / 1000.0)
        return loss

    def vb_terms(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, model_out: torch.Tensor) -> torch.Tensor:
        """One term of the variational bound in bits per dim: KL for t > 0, decoder NLL for t = 0."""
        true_mean, true_log_var = self.q_posterior(x0, xt, t)
        p = self.p_mean_variance(lambda *_: model_out, xt, t, clip=False, model_out=model_out)
        kl = normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"]).mean(dim=tuple(range(1, x0.ndim))) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])
        nll = nll.mean(dim=tuple(range(1, x0.ndim))) / math.log(2.0)
        return torch.where(t == 0, nll, kl)
