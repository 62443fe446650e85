"""Matrix rows "masks": broken folder data sets → one clear error naming the file, from FolderDataset and `fit`."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.folder import FolderDataset
from rel_helpers import cli, one_line_error

STEM = "synth_00000"  # a train stem of the synthetic set


def _wrong_size(d: Path) -> str:
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(d / "masks" / f"{STEM}.png")
    return rf"masks/{STEM}.png: mask is 20x16 but its image is 32x32"


def _values_outside_table(d: Path) -> str:
    m = np.asarray(Image.open(d / "masks" / f"{STEM}.png")).copy()
    m[0, :4] = [7, 9, 255, 0]  # 255 (ignore) is fine, 7 and 9 are not classes
    Image.fromarray(m).save(d / "masks" / f"{STEM}.png")
    return rf"masks/{STEM}.png: mask values \[7, 9\] are not class ids 0..4 or 255"


def _rgb_coloured(d: Path) -> str:
    m = np.asarray(Image.open(d / "masks" / f"{STEM}.png"))
    colours = np.array([c["color"] for c in json.loads((d / "classes.json").read_text())["classes"]], np.uint8)
    Image.fromarray(colours[np.minimum(m, len(colours) - 1)], "RGB").save(d / "masks" / f"{STEM}.png")
    return rf"masks/{STEM}.png: mask is a colour \(RGB\) image; save masks as 8-bit index PNGs"


def _missing_classes_json(d: Path) -> str:
    (d / "classes.json").unlink()
    return r"classes.json: missing; a folder data set needs classes.json"


def _split_absent_stems(d: Path) -> str:
    split = json.loads((d / "split.json").read_text())
    split["train"] = split["train"] + ["ghost_1", "ghost_2"]
    (d / "split.json").write_text(json.dumps(split))
    return r"split.json: 2 stem\(s\) in 'train' have no image in images/: \['ghost_1', 'ghost_2'\]"


CASES = {"wrong_size": _wrong_size, "values_outside_class_table": _values_outside_table,
         "rgb_coloured_mask": _rgb_coloured, "missing_classes_json": _missing_classes_json,
         "split_json_absent_stems": _split_absent_stems}


@pytest.fixture(params=sorted(CASES))
def broken(request: pytest.FixtureRequest, rel_data: Path, tmp_path: Path) -> tuple[Path, str]:
    d = tmp_path / "data"
    shutil.copytree(rel_data, d)
    return d, CASES[request.param](d)


def _load_all(d: Path) -> None:
    ds = FolderDataset(d)
    for split in ("train", "test"):
        for stem in ds.stems(split):
            ds.mask(stem)


def test_folder_dataset_error(broken: tuple[Path, str]) -> None:
    d, pattern = broken
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        _load_all(d)
    msg = str(info.value)
    assert re.search(pattern, msg), msg
    assert str(d) in msg  # the full path of the file


def test_fit_cli_error(broken: tuple[Path, str], rel_run: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    d, pattern = broken
    out = tmp_path / "clf"
    res = cli(capsys, "fit", "--run", rel_run, "--data", d, "--steps", "10", "--blocks", "1", "--members", "1",
              "--epochs", "1", "--out", out, "--no-cache")
    line = one_line_error(res)
    assert re.search(pattern, line), line
    assert not out.exists()  # nothing half-written


def test_intact_data_still_loads(rel_data: Path) -> None:
    """Control row: the untouched copy loads, so each failure above is caused by its one defect."""
    _load_all(rel_data)
