"""Diffusion process: schedules, closed-form q(x_t|x_0), posterior, respacing, DDPM/DDIM samplers, losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.diffusion import DDIMSampler, DDPMSampler, GaussianDiffusion, make_betas, make_sampler, space_timesteps
from engine.models.config import UNetConfig
from engine.models.unet import UNetModel


class ToyEps(torch.nn.Module):
    """A cheap deterministic 'network': eps depends on x and t smoothly (no UNet needed for sampler maths)."""

    def __init__(self, channels: int = 3, learn_sigma: bool = False):
        super().__init__()
        self.learn_sigma = learn_sigma
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(channels, channels, generator=g) * 0.3)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = torch.tanh(torch.einsum("oc,nchw->nohw", self.w, x) + t.float()[:, None, None, None] / 1000)
        if self.learn_sigma:
            return torch.cat([eps, torch.tanh(x)], dim=1)
        return eps


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 4000])
def test_schedules(name: str, T: int) -> None:
    betas = make_betas(name, T)
    assert betas.shape == (T,) and betas.dtype == np.float64
    assert ((betas > 0) & (betas < 1)).all()
    ab = np.cumprod(1 - betas)
    assert (np.diff(ab) < 0).all() and 0 < ab[-1] < ab[0] < 1
    if name == "linear":
        assert (np.diff(betas) > 0).all()
        lo, hi = (1e-4, 0.02) if T == 1000 else (2.5e-5, 5e-3)
        assert betas[0] == pytest.approx(lo, rel=1e-12) and betas[-1] == pytest.approx(hi, rel=1e-12)
        # the rescaled T=4000 schedule spans (nearly) the same process as T=1000
    else:
        assert (np.diff(betas) >= 0).all() and betas.max() <= 0.999


def test_linear_T4000_and_T1000_end_close() -> None:
    ab1 = np.cumprod(1 - make_betas("linear", 1000))[-1]
    ab4 = np.cumprod(1 - make_betas("linear", 4000))[-1]
    assert ab1 < 1e-4 and ab4 < 1e-4


def test_bad_names_and_counts() -> None:
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'.*cosine.*linear"):
        make_betas("quadratic", 10)
    with pytest.raises(ValueError, match=">= 1 for the cosine schedule"):
        make_betas("cosine", 0)
    with pytest.raises(ValueError, match="num_timesteps must be >= 21 for the linear schedule, got 5"):
        make_betas("linear", 5)  # its largest beta 0.02·1000/T would exceed 1
    d = GaussianDiffusion.from_config("linear", 100)
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        make_sampler("euler", d, 10)
    for bad in (0, 101, -3):
        with pytest.raises(ValueError, match=r"sampling steps must be in 1\.\.100"):
            make_sampler("ddim", d, bad)
    with pytest.raises(ValueError, match="hybrid"):
        GaussianDiffusion.from_config("linear", 100, learn_sigma=False, loss="hybrid")
    with pytest.raises(ValueError, match="unknown loss"):
        GaussianDiffusion.from_config("linear", 100, loss="l1")
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(d, 10, eta=-1)


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_q_sample_moments(t: int) -> None:
    d = GaussianDiffusion.from_config("linear", 1000)
    g = torch.Generator().manual_seed(t)
    x0 = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    n = 40_000
    noise = torch.randn(n, 1, 4, 4, generator=g)
    xt = d.q_sample(x0.expand(n, -1, -1, -1), torch.full((n,), t), noise)
    ab = d.alphas_cumprod[t]
    mean, var = d.q_mean_variance(x0, torch.tensor([t]))
    torch.testing.assert_close(mean, np.sqrt(ab) * x0, rtol=1e-5, atol=1e-6)
    assert torch.allclose(var, torch.full_like(var, 1 - ab))
    se = np.sqrt((1 - ab) / n)
    assert (xt.mean(0) - np.sqrt(ab) * x0[0]).abs().max() < 5 * se + 1e-7
    assert (xt.var(0) - (1 - ab)).abs().max() < 5 * (1 - ab) * np.sqrt(2 / n) + 1e-7


def test_posterior_matches_naive_float64() -> None:
    T = 1000
    betas = make_betas("linear", T)
    d = GaussianDiffusion(betas)
    g = torch.Generator().manual_seed(0)
    x0, xt = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    t = torch.tensor([1, 10, 500, 999])
    mean, logvar = d.q_posterior(x0, xt, t)
    for i, ti in enumerate(t.tolist()):
        a = np.prod(1 - betas[: ti + 1])
        a_prev = np.prod(1 - betas[:ti])
        var = betas[ti] * (1 - a_prev) / (1 - a)
        m = (np.sqrt(a_prev) * betas[ti] / (1 - a)) * x0[i].double() + \
            (np.sqrt(1 - betas[ti]) * (1 - a_prev) / (1 - a)) * xt[i].double()
        torch.testing.assert_close(mean[i].double(), m, rtol=1e-5, atol=1e-6)
        assert float(logvar[i].flatten()[0]) == pytest.approx(np.log(var), rel=1e-6)
    # t = 0: the posterior variance is 0, its log is clipped to the t = 1 value
    _, lv0 = d.q_posterior(x0[:1], xt[:1], torch.tensor([0]))
    assert float(lv0.flatten()[0]) == pytest.approx(
        np.log(betas[1] * (1 - (1 - betas[0])) / (1 - np.prod(1 - betas[:2]))), rel=1e-6)


@pytest.mark.parametrize("count", [1, 10, 50, 1000])
def test_respacing_preserves_alpha_bar(count: int) -> None:
    d = GaussianDiffusion.from_config("cosine", 1000)
    keep = space_timesteps(1000, count)
    assert len(keep) == count and keep[-1] == 999 and (count == 1 or keep[0] == 0)
    r = d.respace(keep)
    assert r.num_timesteps == count
    np.testing.assert_allclose(r.alphas_cumprod, d.alphas_cumprod[keep], rtol=1e-7)  # 1-(1-x) rounding at ab~1e-9
    assert list(r.timestep_map) == keep
    torch.testing.assert_close(r.model_t(torch.arange(count)), torch.tensor(keep))


def test_ddim_eta1_all_steps_equals_ddpm() -> None:
    d = GaussianDiffusion.from_config("linear", 200)
    model = ToyEps()
    shape = (2, 3, 4, 4)
    # step for step with the same noise
    ddpm, ddim = DDPMSampler(d), DDIMSampler(d, eta=1.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    with torch.no_grad():
        for i in ddpm.timesteps:
            z = torch.randn(shape, generator=g)
            a, b = ddpm.step(model, x, i, z), ddim.step(model, x, i, z)
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
            # deterministic mean path (noise=None) agrees too
            torch.testing.assert_close(ddpm.step(model, x, i, None), ddim.step(model, x, i, None), rtol=1e-4, atol=1e-5)
            x = a
    # whole chains from the same seed
    s1 = ddpm.sample(model, shape, torch.Generator().manual_seed(5))
    s2 = ddim.sample(model, shape, torch.Generator().manual_seed(5))
    torch.testing.assert_close(s1, s2, rtol=1e-3, atol=1e-4)


def test_ddim_eta0_deterministic_and_noise_free() -> None:
    d = GaussianDiffusion.from_config("linear", 1000)
    model = ToyEps()
    s = DDIMSampler(d, 20, eta=0.0)
    assert len(s.timesteps) == 20 and s.timesteps[0] == 19 and s.timesteps[-1] == 0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 4, 4, generator=g)
    with torch.no_grad():
        a = s.step(model, x, 10, torch.randn(1, 3, 4, 4, generator=g))
        b = s.step(model, x, 10, None)
    assert torch.equal(a, b)  # eta=0 ignores the noise
    run = lambda seed: s.sample(model, (2, 3, 4, 4), torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_sample_shapes_and_seeds_with_unet(name: str) -> None:
    torch.manual_seed(0)
    cfg = UNetConfig(image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_ds=(2,),
                     num_head_channels=32)
    model = UNetModel(cfg).eval()
    with torch.no_grad():
        for p in model.out.parameters():
            p.normal_(0, 0.05)
    d = GaussianDiffusion.from_config("linear", 1000)
    s = make_sampler(name, d, 4)
    a = s.sample(model, (2, 3, 16, 16), torch.Generator().manual_seed(0))
    b = s.sample(model, (2, 3, 16, 16), torch.Generator().manual_seed(0))
    c = s.sample(model, (2, 3, 16, 16), torch.Generator().manual_seed(1))
    assert a.shape == (2, 3, 16, 16) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    calls: list[tuple[int, int]] = []
    s.sample(model, (1, 3, 16, 16), torch.Generator().manual_seed(0), progress=lambda k, n: calls.append((k, n)))
    assert calls == [(k, 4) for k in range(1, 5)]


def test_learned_sigma_sampling_and_hybrid_loss() -> None:
    d = GaussianDiffusion.from_config("linear", 1000, learn_sigma=True, loss="hybrid")
    model = ToyEps(learn_sigma=True)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    t = torch.tensor([0, 1, 500, 999])
    loss = d.training_losses(model, x0, t, torch.randn(4, 3, 8, 8, generator=g))
    assert loss.shape == (4,) and torch.isfinite(loss).all() and (loss > 0).all()
    loss.mean().backward()
    assert torch.isfinite(model.w.grad).all() and model.w.grad.abs().sum() > 0
    x = make_sampler("ddpm", d, 5).sample(model, (1, 3, 8, 8), torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    with pytest.raises(ValueError, match="6 output channels"):
        d.training_losses(ToyEps(), x0, t, torch.randn_like(x0))


def test_mse_loss_is_eps_mse() -> None:
    d = GaussianDiffusion.from_config("linear", 1000)
    model = ToyEps()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    t = torch.tensor([5, 50, 900])
    loss = d.training_losses(model, x0, t, noise)
    expected = ((model(d.q_sample(x0, t, noise), t) - noise) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(loss, expected)
