"""Per-frame fast paths of segment-video equal the straightforward ones: full-size labels, the model input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.data.transforms import model_input_uint8, resize_shorter, to_tensor
from engine.video.labels import upsampled_labels


@pytest.mark.parametrize("hw", [(48, 64), (40, 43), (12, 16)])
def test_upsampled_labels_equal_interpolate_argmax(hw) -> None:
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(5, 12, 16, generator=g).softmax(0)
    probs[:, :3] = 0.2  # exact ties: the lower id wins, as with argmax
    probs[1:3, 5:8] = probs[3, 5:8]  # ties between later classes
    ref = F.interpolate(probs[None], size=hw, mode="bilinear", align_corners=False)[0].argmax(0).to(torch.uint8)
    got = upsampled_labels(probs, hw)
    assert got.dtype == np.uint8 and got.shape == hw
    np.testing.assert_array_equal(got, ref.numpy())


@pytest.mark.parametrize("shape", [(48, 64, 3), (64, 88, 3), (70, 31, 3)])
def test_model_input_uint8_equals_resize_then_to_tensor(shape) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ref = to_tensor(resize_shorter(rgb, 32, 8)[0])
    got = model_input_uint8(rgb, 32, 8)
    assert got.shape == ref.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
