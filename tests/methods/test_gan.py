"""The `gan` method: map shapes feed the shared head; the encoder is trained to invert the generator."""
from __future__ import annotations

import torch

from engine.data.classes import STUDY5
from engine.methods import MethodContext, get_method


def test_gan_maps_match_the_head_and_training_lowers_the_inversion_losses() -> None:
    ctx = MethodContext(STUDY5, 32, "cpu")
    m = get_method("gan", ctx, "tiny", steps=40, batch_size=8)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    maps = m._maps(x)
    assert sum(f.shape[1] for f in maps) == m.head.in_dim
    assert [f.shape[-1] for f in maps] == [8, 16, 32, 16, 8]  # generator 8..32, then encoder 16, 8
    g = torch.Generator().manual_seed(0)
    pool = (torch.rand(16, 3, 32, 32, generator=g) * 2 - 1).clamp(-1, 1)
    pool[:, :, 8:24, 8:24] = 0.8  # a structured scene, not noise
    img, mask = pool[:2], torch.zeros(2, 32, 32, dtype=torch.long)
    mask[:, 8:24, 8:24] = 1
    stats = m.fit(pool, img, mask)
    hist = stats["pretrain_loss"]
    assert stats["loss_columns"] == ["step", "d", "g_adv", "latent", "reconstruction"]
    first, last = hist[0], hist[-1]
    assert last[4] < first[4]  # real frames are reconstructed better through G(E(x))
    assert m.samples(3).shape == (3, 3, 32, 32)
