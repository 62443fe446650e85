"""UNet: shapes, decoder-block features, guided-diffusion compatibility, safe checkpoint loading."""
from __future__ import annotations

import math
import os
import pickle
import re
import time
from dataclasses import replace

import pytest
import torch

from engine.models.checkpoint import CheckpointError, infer_unet_config, load_unet, read_state_dict
from engine.models.config import UNetConfig, get_preset
from engine.models.unet import UNetModel


def _model(name: str, seed: int = 0, randomize: bool = True) -> UNetModel:
    torch.manual_seed(seed)
    m = UNetModel(get_preset(name).unet).eval()
    if randomize:  # zero-initialised output layers would hide ordering bugs
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return m


def _inputs(cfg: UNetConfig, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    return x, t


# guided-diffusion-shaped but narrow: same flags structure as the paper preset, model_channels 32
NARROW_PAPER = UNetConfig(image_size=64, model_channels=32, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                          attention_ds=(8, 16, 32), num_head_channels=32, out_channels=6,
                          use_scale_shift_norm=True, resblock_updown=True)


@pytest.mark.parametrize("name,n", [("tiny", 2), ("demo", 3)])
def test_output_shape(name: str, n: int) -> None:
    m = _model(name)
    x, t = _inputs(m.config, n)
    with torch.no_grad():
        y = m(x, t)
    assert y.shape == (n, m.config.out_channels, m.config.image_size, m.config.image_size)
    assert torch.isfinite(y).all()


def test_input_checks() -> None:
    m = _model("tiny")
    with pytest.raises(ValueError, match="multiples"):
        m(torch.randn(1, 3, 31, 31), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="expected input"):
        m(torch.randn(1, 1, 32, 32), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="valid blocks"):
        m.forward_features(torch.randn(1, 3, 32, 32), torch.zeros(1, dtype=torch.long), [99])


@pytest.mark.parametrize("name", ["tiny", "demo"])
def test_forward_features_match_hooks_and_shapes(name: str) -> None:
    m = _model(name)
    x, t = _inputs(m.config, 2)
    n = len(m.output_blocks)
    hooked: dict[int, torch.Tensor] = {}
    handles = [m.output_blocks[i].register_forward_hook(lambda _m, _i, out, i=i: hooked.__setitem__(i, out))
               for i in range(n)]
    with torch.no_grad():
        m(x, t)
        wanted = [0, n // 2, n - 1]
        feats = m.forward_features(x, t, wanted)
    for h in handles:
        h.remove()
    shapes = m.block_shapes()
    assert sorted(feats) == wanted
    for i in wanted:
        ch, side = shapes[i]
        assert feats[i].shape == (2, ch, side, side)
        torch.testing.assert_close(feats[i], hooked[i], rtol=0, atol=0)


def test_paper_block_shapes_match_reference() -> None:
    with torch.device("meta"):
        m = UNetModel(get_preset("paper").unet)
    expected = [(1024, 8)] * 2 + [(1024, 16)] * 3 + [(1024, 32)] + [(512, 32)] * 2 + [(512, 64)] * 3 + \
        [(512, 128)] + [(256, 128)] * 2 + [(256, 256)] * 4
    assert m.block_shapes() == expected
    assert m.block_shapes(128) == [(c, s // 2) for c, s in expected]


def test_forward_features_stops_early() -> None:
    m = _model("demo")
    x, t = _inputs(m.config, 1)
    called: list[int] = []
    handles = [b.register_forward_hook(lambda *_a, i=i: called.append(i)) for i, b in enumerate(m.output_blocks)]
    out_called: list[bool] = []
    handles.append(m.out.register_forward_hook(lambda *_a: out_called.append(True)))
    with torch.no_grad():
        m.forward_features(x, t, [2, 5])
    for h in handles:
        h.remove()
    assert called == [0, 1, 2, 3, 4, 5]
    assert not out_called


def test_paper_param_count() -> None:
    with torch.device("meta"):
        m = UNetModel(get_preset("paper").unet)
    n = sum(p.numel() for p in m.parameters())
    # the reference reports 552.8M for the 256×256 unconditional model; ours counts 552,814,086
    assert abs(n - 552.8e6) < 0.1e6, n
    assert n == 552_814_086


def test_paper_state_dict_key_names() -> None:
    with torch.device("meta"):
        sd = UNetModel(get_preset("paper").unet).state_dict()
    for key, shape in [("input_blocks.0.0.weight", (256, 3, 3, 3)), ("time_embed.0.weight", (1024, 256)),
                       ("middle_block.1.qkv.weight", (3072, 1024, 1)),
                       ("output_blocks.5.2.in_layers.0.weight", (1024,)), ("out.2.weight", (6, 256, 3, 3)),
                       ("middle_block.0.emb_layers.1.weight", (2048, 1024)),
                       ("output_blocks.17.0.skip_connection.weight", (256, 512, 1, 1))]:
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("module.") for k in sd)
    assert max(int(k.split(".")[1]) for k in sd if k.startswith("output_blocks.")) == 17


def _legacy_attention_reference(qkv: torch.Tensor, n_heads: int) -> torch.Tensor:
    """guided-diffusion's QKVAttentionLegacy written naively with einsum."""
    bs, width, length = qkv.shape
    ch = width // (3 * n_heads)
    q, k, v = qkv.reshape(bs * n_heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    w = torch.einsum("bct,bcs->bts", q * scale, k * scale).softmax(dim=-1)
    return torch.einsum("bts,bcs->bct", w, v).reshape(bs, -1, length)


def test_attention_legacy_matches_reference_and_differs_from_new_order() -> None:
    from engine.models.blocks import AttentionBlock

    torch.manual_seed(0)
    legacy = AttentionBlock(64, num_head_channels=32, legacy_order=True)
    with torch.no_grad():
        for p in legacy.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    new = AttentionBlock(64, num_head_channels=32, legacy_order=False)
    new.load_state_dict(legacy.state_dict())
    x = torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        flat = x.reshape(2, 64, -1)
        qkv = legacy.qkv(legacy.norm(flat))
        ref = (flat + legacy.proj_out(_legacy_attention_reference(qkv, 2))).reshape(x.shape)
        y_legacy, y_new = legacy(x), new(x)
    torch.testing.assert_close(y_legacy, ref, rtol=1e-5, atol=1e-5)
    assert (y_legacy - y_new).abs().max() > 1e-3


def test_legacy_vs_new_attention_order_whole_model() -> None:
    m = _model("tiny")
    m2 = UNetModel(replace(m.config, legacy_attention_order=False)).eval()
    m2.load_state_dict(m.state_dict())
    x, t = _inputs(m.config, 1)
    with torch.no_grad():
        assert (m(x, t) - m2(x, t)).abs().max() > 1e-4


def _roundtrip(tmp_path, cfg: UNetConfig, **overrides) -> tuple[UNetModel, UNetModel]:
    torch.manual_seed(1)
    m = UNetModel(cfg)
    path = tmp_path / "gd.pt"
    torch.save(m.state_dict(), path)
    return m, load_unet(path, **overrides)


def test_narrow_paper_roundtrip_with_inferred_flags(tmp_path) -> None:
    m, loaded = _roundtrip(tmp_path, NARROW_PAPER, num_head_channels=32, image_size=64)
    assert loaded.config == NARROW_PAPER
    for k, v in m.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert loaded.config.learn_sigma


def _colour_offset_response(norm_groups: int) -> float:
    """Mean |change of the output's per-channel spatial mean| when a constant colour is added to the input."""
    torch.manual_seed(0)
    cfg = UNetConfig(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_ds=(2,),
                     num_head_channels=32, norm_groups=norm_groups)
    model = UNetModel(cfg).eval()
    with torch.no_grad():  # random weights everywhere (zero-initialised output convs would hide everything)
        for p in model.parameters():
            if p.ndim > 1:
                torch.nn.init.normal_(p, 0.0, 0.5 / p[0].numel() ** 0.5)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([900, 900])
    offset = torch.tensor([0.5, -0.5, 0.25]).view(1, 3, 1, 1)
    with torch.no_grad():
        change = model(x + offset, t) - model(x, t)
    return change.mean(dim=(2, 3)).abs().mean().item()


def test_fewer_norm_groups_let_a_narrow_unet_see_global_colour() -> None:
    """With 32 channels, 32 groups is an instance norm: a constant colour offset only leaks in through the
    zero padding. 8 groups keep it visible — what the demo preset needs to sample frames without colour casts."""
    assert get_preset("demo").unet.norm_groups == 8 and get_preset("paper").unet.norm_groups == 32
    blind, seeing = _colour_offset_response(32), _colour_offset_response(8)
    assert seeing > 10 * blind, (blind, seeing)


def test_norm_groups_must_divide_every_width() -> None:
    with pytest.raises(ValueError, match=r"GroupNorm\(24\) needs channels divisible by 24"):
        UNetModel(UNetConfig(image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                             attention_ds=(), norm_groups=24))


@pytest.mark.parametrize("cfg", [
    get_preset("tiny").unet, get_preset("demo").unet,
    UNetConfig(image_size=32, model_channels=32, channel_mult=(1, 2), attention_ds=(), resblock_updown=False,
               use_scale_shift_norm=False, num_head_channels=64),
])
def test_infer_unet_config(cfg: UNetConfig) -> None:
    sd = UNetModel(cfg).state_dict()
    assert infer_unet_config(sd, num_head_channels=cfg.num_head_channels, image_size=cfg.image_size,
                             norm_groups=cfg.norm_groups) == cfg


@pytest.mark.slow  # ~35 s here: 552.8M parameters initialised, saved (fp16) and loaded
def test_paper_preset_full_roundtrip(tmp_path) -> None:
    """Build the real 552.8M paper preset, save a guided-diffusion-style state_dict, load with inferred flags."""
    start = time.time()
    cfg = get_preset("paper").unet
    m = UNetModel(cfg)
    sd = {k: v.half() for k, v in m.state_dict().items()}  # fp16 on disk: 1.1 GB instead of 2.2 GB
    del m
    path = tmp_path / "256x256_diffusion_uncond.pt"
    torch.save(sd, path)
    loaded = load_unet(path)
    assert loaded.config == cfg
    lsd = loaded.state_dict()
    for key in ("input_blocks.0.0.weight", "middle_block.1.qkv.weight", "output_blocks.5.2.in_layers.2.weight",
                "out.2.bias", "time_embed.2.weight"):
        assert torch.equal(lsd[key], sd[key].float()), key
    path.unlink()
    print(f"paper round trip took {time.time() - start:.1f}s")


# ---- bad files ------------------------------------------------------------------------------------
def test_missing_empty_truncated_text_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_state_dict(tmp_path / "empty.pt")
    good = tmp_path / "good.pt"
    torch.save(UNetModel(get_preset("tiny").unet).state_dict(), good)
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_unet(tmp_path / "trunc.pt")
    (tmp_path / "notes.pt").write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_unet(tmp_path / "notes.pt")


def test_non_state_dict_pickles(tmp_path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        read_state_dict(tmp_path / "list.pt")
    torch.save({"a": 1}, tmp_path / "dict.pt")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        read_state_dict(tmp_path / "dict.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="missing key"):
        load_unet(tmp_path / "other.pt")


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("via_torch", [True, False])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, via_torch: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"input_blocks.0.0.weight": torch.zeros(1), "x": _Evil(str(marker))}
    if via_torch:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused|not a readable"):
        load_unet(path)
    assert not marker.exists(), "the pickle's code was executed"


def test_other_preset_names_first_bad_key_and_both_shapes(tmp_path) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(UNetModel(get_preset("tiny").unet).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_unet(path, get_preset("demo").unet)
    msg = str(err.value)
    assert "tiny.pt" in msg and "'input_blocks." in msg
    assert re.search(r"'input_blocks\.3\.0\.in_layers\.2\.weight' has shape \(64, 32, 3, 3\) in the checkpoint "
                     r"but \(32, 32, 3, 3\) in the model", msg), msg
    # a preset with more keys than the checkpoint names a missing key and its expected shape
    path2 = tmp_path / "narrow.pt"
    torch.save(UNetModel(NARROW_PAPER).state_dict(), path2)
    with pytest.raises(CheckpointError, match=r"'output_blocks\.|'input_blocks\.|shape"):
        load_unet(path2, get_preset("tiny").unet)


def test_fp16_and_wrapped_state_dicts_load(tmp_path) -> None:
    m = UNetModel(get_preset("tiny").unet)
    sd = m.state_dict()
    torch.save({"ema": {k: v.half() for k, v in sd.items()}}, tmp_path / "wrapped.pt")
    loaded = load_unet(tmp_path / "wrapped.pt", num_head_channels=32, image_size=32)
    assert loaded.config == m.config
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pt")
    assert load_unet(tmp_path / "ddp.pt", m.config).config == m.config
