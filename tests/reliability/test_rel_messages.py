"""Issue 10, "Messages": one line naming the file or flag for bad configs and inputs, never a traceback,
and no misleading wording. Each case failed (traceback, silent coercion or a misleading line) on 7ce9b2e."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import UserError
from rel_helpers import cli, one_line_error


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _set(path: Path, dotted: str, value: object, delete: bool = False) -> None:
    """Set (or delete) a dotted key of a JSON file."""
    meta = json.loads(path.read_text())
    *parents, last = dotted.split(".")
    node = meta
    for p in parents:
        node = node[p]
    if delete:
        del node[last]
    else:
        node[last] = value
    path.write_text(json.dumps(meta))


# ---- run config.json: one strict from_dict per section ------------------------------------------------
@pytest.mark.parametrize("key,value,needle", [
    ("unet.model_channels", -32, "unet.model_channels: must be in 1..1024, got -32"),
    ("unet.model_channels", "32", 'unet.model_channels: expected a whole number, got "32" (a string)'),
    ("unet.model_channels", 32.0, "unet.model_channels: expected a whole number, got 32.0 (a number)"),
    ("unet.model_channels", True, "unet.model_channels: expected a whole number, got true"),
    ("unet.norm_groups", 0, "unet.norm_groups: must be in 1..1024, got 0"),
    ("unet.norm_groups", 5, "norm_groups 5 must divide every channel width"),
    ("unet.image_size", "64", "unet.image_size: expected a whole number"),
    ("unet.dropout", "x", 'unet.dropout: expected a number, got "x"'),
    ("unet.channel_mult", [1, "2"], "unet.channel_mult: item 1: expected a whole number"),
    ("unet.surprise", 1, "unet.surprise: unknown key"),
    ("diffusion.num_timesteps", 5, "num_timesteps must be >= 21 with the linear schedule"),
    ("diffusion.schedule", "quadratic", "diffusion.schedule: must be one of linear, cosine"),
    ("format_version", None, "format_version must be a whole number >= 0, got null"),
    ("format_version", "1", 'format_version must be a whole number >= 0, got "1" (a string)'),
])
def test_bad_run_config_is_one_line_naming_file_and_field(key: str, value: object, needle: str, rel_run: Path,
                                                          tmp_path: Path, capsys) -> None:  # noqa: ANN001
    run = _copy(rel_run, tmp_path / "run")
    _set(run / "config.json", key, value)
    res = cli(capsys, "sample", "--run", run, "--n", "1", "--sampling-steps", "2", "--out", tmp_path / "s")
    line = one_line_error(res, f"{run / 'config.json'}: ", needle)
    assert "newer than" not in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("key,needle", [("unet.num_heads", "unet.num_heads: missing key"),
                                        ("format_version", "missing key 'format_version'")])
def test_missing_run_config_keys(key: str, needle: str, rel_run: Path, tmp_path: Path) -> None:
    from engine.models.run import load_run

    run = _copy(rel_run, tmp_path / "run")
    _set(run / "config.json", key, None, delete=True)
    with pytest.raises(UserError, match=needle):
        load_run(run, "cpu")


def test_run_config_without_norm_groups_is_a_32_group_run(rel_run: Path, tmp_path: Path) -> None:
    """Older runs have no norm_groups key: the only missing key that is accepted (it meant 32 then)."""
    from engine.models.config import UNetConfig

    meta = json.loads((rel_run / "config.json").read_text())["unet"]
    del meta["norm_groups"]
    assert UNetConfig.from_dict(meta, "x").norm_groups == 32


# ---- classifier config.json -----------------------------------------------------------------------------
@pytest.mark.parametrize("key,value,delete,needle", [
    ("run", None, True, "missing key 'run'"),
    ("run_weights_hash", None, True, "missing key 'run_weights_hash'"),
    ("spec.colour", 1, False, "spec.colour: unknown key"),
    ("spec.steps", ["10"], False, "spec.steps: item 0: expected a whole number"),
    ("spec.noise_seed", 2**70, False, "spec.noise_seed: must be in 0..4294967295, got 1180591620717411303424"),
    ("fit.members", 0, False, "fit.members: must be in 1..100, got 0"),
    ("fit.batch_size", 1, False, "fit.batch_size: must be in 2..65536, got 1"),
    ("label_size", "64", False, 'label_size: expected a whole number 1..2048, got "64"'),
    ("hidden", [128, -32], False, "hidden: expected a non-empty list of whole numbers"),
    ("format_version", None, False, "format_version must be a whole number >= 0, got null"),
    ("format_version", "1", False, 'format_version must be a whole number >= 0, got "1"'),
])
def test_bad_classifier_config_is_one_line(key: str, value: object, delete: bool, needle: str, rel_clf: Path,
                                           tmp_path: Path, capsys) -> None:  # noqa: ANN001
    clf = _copy(rel_clf, tmp_path / "clf")
    _set(clf / "config.json", "run", str((rel_clf / json.loads((rel_clf / "config.json").read_text())["run"]).resolve()))
    _set(clf / "config.json", key, value, delete=delete)
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (90, 40, 40)).save(img)
    res = cli(capsys, "segment", "--classifier", clf, img, "--out", tmp_path / "o", "--no-cache")
    one_line_error(res, f"{clf / 'config.json'}: ", needle)


# ---- data set files -------------------------------------------------------------------------------------
def test_latin1_classes_json_names_file_and_encoding(rel_data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    data = _copy(rel_data, tmp_path / "data")
    text = (data / "classes.json").read_text().replace('"iris"', '"íris"')
    (data / "classes.json").write_bytes(text.encode("latin-1"))
    res = cli(capsys, "pretrain", "--data", data, "--preset", "tiny", "--out", tmp_path / "r", "--max-steps", "1")
    one_line_error(res, f"{data / 'classes.json'}: not UTF-8 text (byte 0xed at offset", "save the file as UTF-8")


def test_unknown_split_names_the_flag_and_choices(rel_clf: Path, rel_data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    res = cli(capsys, "evaluate", "--classifier", rel_clf, "--data", rel_data, "--split", "val", "--json", tmp_path / "m.json")
    one_line_error(res, "--split", "unknown split 'val'", "train, test, unlabeled", usage=True)


def test_unknown_split_key_in_split_json_names_the_file(rel_data: Path, tmp_path: Path) -> None:
    from engine.data.folder import FolderDataset

    data = _copy(rel_data, tmp_path / "data")
    _set(data / "split.json", "val", [])
    with pytest.raises(UserError, match=rf"^{data / 'split.json'}: unknown split 'val'; valid splits are train, test"):
        FolderDataset(data)


@pytest.mark.parametrize("flag", ["--noise-seed", "--seed"])
def test_huge_seed_is_a_flag_error(flag: str, rel_run: Path, rel_data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    res = cli(capsys, "fit", "--run", rel_run, "--data", rel_data, "--out", tmp_path / "c", flag, str(2**70))
    one_line_error(res, flag, "must be <= 4294967295", usage=True)


def test_jpeg_masks_are_named_not_skipped(rel_data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    data = _copy(rel_data, tmp_path / "data")
    (data / "split.json").unlink()
    for m in sorted((data / "masks").iterdir()):
        Image.open(m).save(m.with_suffix(".jpg"))
        m.unlink()
    res = cli(capsys, "evaluate", "--classifier", tmp_path / "nope", "--data", data, "--json", tmp_path / "m.json")
    assert res.returncode == 2
    from engine.data.folder import FolderDataset

    with pytest.raises(UserError, match=r"masks/synth_00000\.jpg: masks must be 8-bit index PNGs \(JPEG's lossy"):
        FolderDataset(data)


def test_exif_rotated_image_mask_error_mentions_exif(tmp_path: Path) -> None:
    from engine.data.classes import STUDY5
    from engine.data.folder import FolderDataset

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    STUDY5.to_json(data / "classes.json")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    Image.new("RGB", (40, 24), (200, 10, 10)).save(data / "images" / "a.jpg", exif=exif.tobytes())
    Image.fromarray(np.zeros((24, 40), np.uint8)).save(data / "masks" / "a.png")  # drawn on the stored pixels
    ds = FolderDataset(data)
    with pytest.raises(UserError, match=r"a\.png: mask is 40x24 but its image is 24x40.*EXIF orientation 6"):
        ds.mask("a")


# ---- misleading messages ---------------------------------------------------------------------------------
def test_random_bytes_in_a_cache_row_are_called_corrupt_not_pickled(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    from engine.segmentation.feature_cache import FeatureCache

    cache = FeatureCache(tmp_path / "c")
    cache.set("k", np.zeros(40_000, np.float16))  # big enough to live in its own file
    files = [p for p in (tmp_path / "c").rglob("*.val")]
    assert len(files) == 1
    files[0].write_bytes(np.random.default_rng(0).bytes(80_000))
    with caplog.at_level(logging.WARNING):
        assert cache.get("k") is None
    assert "not a .npy array (corrupt" in caplog.text and "pickled" not in caplog.text


def test_predicted_ids_message_says_how_many_classes() -> None:
    from engine.scoring.metrics import ConfusionMatrix

    with pytest.raises(ValueError, match=r"predicted class ids \[4\] are outside the 3 classes \(0\.\.2\).*another class table"):
        ConfusionMatrix(3).update(np.array([0, 4]), np.array([0, 1]))


def test_betas_error_names_the_config_field() -> None:
    from engine.diffusion import GaussianDiffusion

    with pytest.raises(UserError, match=r"num_timesteps must be >= 21 for the linear schedule, got 5"):
        GaussianDiffusion.from_config("linear", 5)


def test_json_nan_in_a_config_is_refused(rel_run: Path, tmp_path: Path) -> None:
    from engine.models.run import load_run

    run = _copy(rel_run, tmp_path / "run")
    text = (run / "config.json").read_text().replace('"dropout": 0.0', '"dropout": NaN')
    (run / "config.json").write_text(text)
    with pytest.raises(UserError, match=r"config.json: invalid JSON \(NaN is not a number JSON allows\)"):
        load_run(run, "cpu")
