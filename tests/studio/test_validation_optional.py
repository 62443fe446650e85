"""engine.validation.check_type accepts `X | None` (FeatureSpec.blocks is `tuple[int, ...] | None`)."""
from __future__ import annotations

from engine.validation import check_type


def test_optional_annotations() -> None:
    hint = tuple[int, ...] | None
    assert check_type(None, hint) == (None, None)
    assert check_type([5, 6], hint) == ((5, 6), None)
    assert check_type(["x"], hint)[1] == 'item 0: expected a whole number, got "x" (a string)'


def test_configs_saved_before_the_rigour_options_still_load() -> None:
    """A classifier's fit config and a run's train config written before flip_tta / self-training / offset noise /
    min-SNR existed load with those options off (what those files meant), while unknown keys are still refused."""
    from engine.errors import ConfigError
    from engine.models.config import TrainConfig, get_preset
    from engine.segmentation.classifier_training import FitConfig

    fit = FitConfig().to_dict()
    old_fit = {k: v for k, v in fit.items() if k not in ("flip_tta", "self_train", "pseudo_threshold")}
    cfg = FitConfig.from_dict(old_fit, "old/config.json")
    assert (cfg.flip_tta, cfg.self_train, cfg.pseudo_threshold) == (False, 0, 0.9)
    train = dict(vars(get_preset("tiny").train))
    old_train = {k: v for k, v in train.items() if k not in ("offset_noise", "min_snr_gamma")}
    tc = TrainConfig.from_dict(old_train, "old/run/config.json")
    assert (tc.offset_noise, tc.min_snr_gamma) == (0.0, 0.0)
    import pytest

    with pytest.raises(ConfigError, match="fit.bogus: unknown key"):
        FitConfig.from_dict({**fit, "bogus": 1}, "x")
