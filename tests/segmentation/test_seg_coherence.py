"""One truth per concept: the default feature recipe, the device, method configs and capabilities, the
prediction type, the sampler registry, one segment writer, one feature-cache location, the CLI's help."""
from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from engine.segmentation.classifier import fit_classifier, load_classifier
from engine.segmentation.classifier_training import FitConfig
from engine.data.folder import open_dataset
from engine.diffusion import GaussianDiffusion
from engine.segmentation.features import DEFAULT_STEPS, FeatureExtractor, FeatureSpec, default_blocks, default_spec
from engine.methods.base import METHODS, MethodContext, get_method, method_class
from engine.models.config import PRESETS
from engine.models.unet import UNetModel
from engine.models.run import load_run

META = torch.device("meta")


def _cli(*args: object) -> int:
    from engine.cli import main

    return main([str(a) for a in args])


def _on(device: torch.device, modules: list[torch.nn.Module]) -> bool:
    tensors = [t for m in modules for t in [*m.parameters(), *m.buffers()]]
    return bool(tensors) and all(t.device.type == device.type for t in tensors)


@pytest.fixture(scope="module")
def small_clf(tiny_run_dir: Path, synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny classifier directory (2 t × 2 blocks, 2 members, 1 epoch) on the tiny run."""
    run = load_run(tiny_run_dir, "cpu")
    clf = fit_classifier(run, open_dataset(synth_data), FeatureSpec((50, 150), (1, 3)),
                         FitConfig(members=2, max_epochs=1, max_pixels=5000))
    return clf.save(tmp_path_factory.mktemp("clf") / "clf")


# ---- 2. one default feature recipe --------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_default_spec_is_valid_for_every_preset(preset: str) -> None:
    with torch.device("meta"):  # even the 552.8 M-parameter paper model costs nothing here
        model = UNetModel(PRESETS[preset].unet)
    n = len(model.output_blocks)
    run = SimpleNamespace(model=model, diffusion=GaussianDiffusion.from_config("linear", 1000), weights_hash="x")
    ext = FeatureExtractor(run, FeatureSpec())  # type: ignore[arg-type]  # validates steps and blocks
    assert ext.spec.steps == DEFAULT_STEPS and ext.spec.block_list == default_blocks(n)
    assert all(0 <= b < n for b in ext.spec.block_list)
    assert default_blocks(18) == (5, 6, 7, 8, 12)  # ddpm-segmentation's blocks on guided-diffusion's 256 px model


def test_cli_method_and_pages_share_the_default_recipe(tiny_run_dir: Path, synth_data: Path, tmp_path: Path) -> None:
    run = load_run(tiny_run_dir, "cpu")
    recipe = default_spec(run)
    assert _cli("fit", "--run", tiny_run_dir, "--data", synth_data, "--out", tmp_path / "clf", "--members", "1",
                "--epochs", "1", "--no-cache") == 0
    saved = json.loads((tmp_path / "clf" / "config.json").read_text())["spec"]
    assert saved == recipe.to_dict()
    ctx = MethodContext(open_dataset(synth_data).classes, run.image_size, "cpu", run)
    quick = get_method("ddpm", ctx, "quick")
    assert quick.spec == recipe  # type: ignore[attr-defined]
    # the pages start from the same function (the workspace classifier's recipe when there is one)
    for page in ("tune", "activations"):
        src = (Path(__file__).resolve().parents[2] / "dashboard" / "app_pages" / f"{page}.py").read_text()
        assert "default_spec(run)" in src and "n_blocks //" not in src, page
    # and the library never reaches into the CLI for it
    engine = Path(__file__).resolve().parents[2] / "engine"
    offenders = [p.name for p in engine.rglob("*.py") if "commands" not in p.parts
                 and ("from ..commands" in p.read_text() or "from .commands" in p.read_text())]
    assert offenders == []


def test_pages_default_to_the_model_recipe_without_a_classifier(dashboard_env: dict[str, str], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    root = Path(dashboard_env["DIFFSEG_WORKSPACE"])
    bare = tmp_path / "workspace"  # the shipped run and data, no classifier
    bare.mkdir()
    for part in ("demo_run", "demo_data"):
        (bare / part).symlink_to(root / part)
    monkeypatch.setenv("DIFFSEG_WORKSPACE", str(bare))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py"), default_timeout=300)
    at.run()
    recipe = default_spec(load_run(root / "demo_run", "cpu"))
    at.switch_page("app_pages/tune.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.multiselect(key="tune_steps").value == list(recipe.steps)
    assert at.multiselect(key="tune_blocks").value == list(recipe.block_list)
    at.switch_page("app_pages/activations.py").run()
    assert at.multiselect(key="act_blocks").value == list(recipe.block_list)


# ---- 1. one device travels with run, classifier and method ---------------------------------------
def test_run_classifier_and_methods_sit_on_the_requested_device(tiny_run_dir: Path, small_clf: Path,
                                                                synth_data: Path) -> None:
    run = load_run(tiny_run_dir, META)
    assert run.device.type == "meta" and _on(META, [run.model])
    clf = load_classifier(small_clf, META)
    assert _on(META, [clf.run.model, clf.model])
    with pytest.raises(ValueError, match="is on cpu"):
        load_classifier(small_clf, META, run=load_run(tiny_run_dir, "cpu"))
    ctx = MethodContext(open_dataset(synth_data).classes, run.image_size, META, run)
    for name in METHODS:
        m = get_method(name, ctx, "tiny")
        assert _on(META, m.modules()), name


def test_commands_build_their_models_on_the_requested_device(tiny_run_dir: Path, small_clf: Path, synth_data: Path,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command hands the next step models on --device (the step itself is replaced: meta has no values)."""
    import engine.segmentation.classifier
    import engine.scoring.evaluation
    import engine.methods.compare
    import engine.diffusion.sampling
    import engine.outputs.segment_outputs

    seen: dict[str, bool] = {}

    class Reached(Exception):
        pass

    def spy(label: str, modules_of):  # noqa: ANN001, ANN202
        def fake(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            seen[label] = _on(META, modules_of(*args, **kwargs))
            raise Reached
        return fake

    import engine.commands.compare_cmd
    import engine.commands.sample_cmd
    import engine.commands.segmentation_cmds

    for module in (engine.commands.compare_cmd, engine.commands.sample_cmd, engine.commands.segmentation_cmds):
        monkeypatch.setattr(module, "device", str)  # --device refuses meta (it holds no values); allow it here
    monkeypatch.setattr(engine.segmentation.classifier, "fit_classifier", spy("fit", lambda run, *a, **k: [run.model]))
    monkeypatch.setattr(engine.scoring.evaluation, "evaluate_classifier",
                        spy("evaluate", lambda c, *a, **k: [c.run.model, c.model]))
    monkeypatch.setattr(engine.outputs.segment_outputs, "segment_file", spy("segment", lambda c, *a, **k: [c.run.model, c.model]))
    monkeypatch.setattr(engine.diffusion.sampling, "sample_images", spy("sample", lambda run, *a, **k: [run.model]))
    real_get = engine.methods.compare.get_method
    monkeypatch.setattr(engine.methods.compare, "get_method",
                        spy("compare", lambda *a, **k: real_get(*a, **k).modules()))
    img = tmp_path / "f.png"
    Image.new("RGB", (40, 30), (90, 40, 20)).save(img)
    common = ["--device", "meta", "--no-cache"]
    calls = {
        "fit": ["fit", "--run", tiny_run_dir, "--data", synth_data, "--out", tmp_path / "c", *common],
        "evaluate": ["evaluate", "--classifier", small_clf, "--data", synth_data, "--json", tmp_path / "m.json", *common],
        "segment": ["segment", "--classifier", small_clf, img, "--out", tmp_path / "s", *common],
        "sample": ["sample", "--run", tiny_run_dir, "--out", tmp_path / "x", "--device", "meta"],
        "compare": ["compare", "--data", synth_data, "--run", tiny_run_dir, "--methods", "unet", "--budget", "tiny",
                    "--json", tmp_path / "cmp.json", "--device", "meta"],
    }
    for argv in calls.values():
        with pytest.raises(Reached):
            _cli(*argv)
    assert seen == {k: True for k in calls}


@pytest.mark.gpu
def test_cuda_end_to_end_matches_the_cpu(tiny_run_dir: Path, small_clf: Path, synth_data: Path) -> None:
    """On a GPU machine: the classifier and a method compute on CUDA and agree with the CPU."""
    frame = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cpu = load_classifier(small_clf, "cpu", use_cache=False).predict_tensor(frame)
    gpu = load_classifier(small_clf, "cuda", use_cache=False).predict_tensor(frame)
    assert gpu.probs.device.type == "cpu" and torch.allclose(cpu.probs, gpu.probs, atol=1e-3)
    run = load_run(tiny_run_dir, "cuda")
    ds = open_dataset(synth_data)
    from engine.data.folder import load_labelled

    img, mask, _ = load_labelled(ds, "train", run.image_size, run.image_size)
    for name in ("ddpm", "unet", "conddiff"):
        m = get_method(name, MethodContext(ds.classes, run.image_size, "cuda", run), "tiny")
        m.fit(img, img, mask)
        assert _on(torch.device("cuda"), m.modules()) and m.predict(img[0]).probs.device.type == "cpu"


# ---- 3. / 4. typed method configs and capabilities ---------------------------------------------
@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_configs_round_trip_and_refuse_unknown_keys(name: str) -> None:
    cls = method_class(name)
    for budget in ("tiny", "quick", "full"):
        cfg = cls.default_config(budget)
        assert type(cfg).from_dict(cfg.to_dict()) == cfg
        assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    with pytest.raises(ValueError, match=r"unknown config keys \['nope'\]"):
        type(cls.default_config("tiny")).from_dict({**cls.default_config("tiny").to_dict(), "nope": 1})


def test_legacy_augment_key_is_read_and_dropped() -> None:
    cls = method_class("unet")
    old = {**cls.default_config("quick").to_dict(), "augment": "hflip+vflip+shift"}
    assert "augment" not in type(cls.default_config("quick")).from_dict(old).to_dict()
    dd = method_class("datasetddpm").default_config("quick").to_dict()
    dd["unet"]["augment"] = "hflip+vflip+shift"
    assert "augment" not in type(method_class("datasetddpm").default_config("quick")).from_dict(dd).to_dict()["unet"]


def test_conddiff_parameterization_is_the_process_prediction_type(synth_data: Path) -> None:
    cfg_cls = type(method_class("conddiff").default_config("tiny"))
    saved = cfg_cls.tiny().to_dict()
    del saved["parameterization"]  # a config that never named it means the default, x0, everywhere
    ctx = MethodContext(open_dataset(synth_data).classes, 32, "cpu")
    m = method_class("conddiff")(cfg_cls.from_dict(saved), ctx)
    assert m.cfg.parameterization == "x0" and m.diffusion.prediction_type == "x0"  # type: ignore[attr-defined]


def test_head_widths_come_from_the_backbones(synth_data: Path) -> None:
    ctx = MethodContext(open_dataset(synth_data).classes, 32, "cpu")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for name in ("mae", "swav"):
        for budget in ("tiny", "quick"):
            m = get_method(name, ctx, budget)
            maps = m._maps(x)  # type: ignore[attr-defined]
            assert m.head.in_dim == sum(f.shape[1] for f in maps), (name, budget)  # type: ignore[attr-defined]


def test_capabilities_replace_method_names() -> None:
    caps = {n: (method_class(n).uses_run, method_class(n).sample_variance, method_class(n).review_score,
                method_class(n).reference_baseline) for n in METHODS}
    assert caps["ddpm"][0] and caps["datasetddpm"][0] and not caps["unet"][0]
    assert caps["conddiff"][1:3] == (True, True) and caps["unet"][3]
    src = (Path(__file__).resolve().parents[2] / "engine" / "methods" / "compare.py").read_text()
    assert 'name == "' not in src and "DEFAULT_METHODS" not in src


THROWAWAY = '''
"""A throwaway method: each pixel takes the class whose mean train colour is nearest."""
from dataclasses import dataclass

import torch

from engine.methods.base import Method, MethodConfig, MethodOutput


@dataclass
class NearestColourConfig(MethodConfig):
    seed: int = 0

    @classmethod
    def tiny(cls):
        return cls()

    quick = full = tiny


class NearestColour(Method):
    name = "nearest-colour"
    config_class = NearestColourConfig

    def fit(self, pool, images, masks, out_dir=None):
        C = self.ctx.num_classes
        x = images.permute(1, 0, 2, 3).reshape(3, -1)
        y = masks.reshape(-1)
        self.means = torch.stack([x[:, y == c].mean(1) if (y == c).any() else torch.zeros(3) for c in range(C)])
        self.stats = {"train_seconds": 0.0}
        return self.stats

    def predict(self, image):
        d = ((image.reshape(3, -1).T[:, None, :] - self.means[None]) ** 2).sum(-1)
        probs = torch.softmax(-d, dim=1).T.reshape(-1, *image.shape[-2:])
        return MethodOutput(probs)

    def state_dict(self):
        return {"means": self.means}

    def load_state_dict(self, sd, directory):
        self.means = sd["means"]


METHOD = NearestColour
'''


def test_a_new_method_is_one_file_and_one_registry_line(synth_data: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """ARCHITECTURE.md's claim: a new method = its module + one line in METHODS; compare, the CLI's --methods
    and the dashboard's method lists pick it up with no other edit."""
    (tmp_path / "throwaway").mkdir()
    (tmp_path / "throwaway" / "__init__.py").write_text("")
    (tmp_path / "throwaway" / "nearest_colour.py").write_text(THROWAWAY)  # the method's one file
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(METHODS, "nearest-colour", "throwaway.nearest_colour")  # the one registry line
    from engine.methods.base import default_methods
    from engine.methods.compare import compare

    assert "nearest-colour" in default_methods()
    report = compare(synth_data, None, ["nearest-colour", "unet"], tmp_path / "cmp.json", budget="tiny",
                     work=tmp_path / "w", k_study=(), figure_frames=1, device="cpu")
    got = report["methods"]["nearest-colour"]
    assert 0.0 <= got["miou"] <= 1.0 and report["baseline"] == "unet"
    assert report["vs_unet"]["nearest-colour"] == pytest.approx(got["miou"] - report["methods"]["unet"]["miou"])
    assert "| nearest-colour |" in (tmp_path / "cmp.md").read_text()


# ---- 5. prediction type and the sampler registry -----------------------------------------------
@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_prediction_types_convert_and_train_consistently(kind: str) -> None:
    d = GaussianDiffusion.from_config("linear", 1000, prediction_type=kind)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    xt = d.q_sample(x0, t, noise)
    target = d.target(x0, noise, t)
    eps, x0_hat = d.eps_and_x0(target, xt, t)
    assert torch.allclose(x0_hat, x0, atol=1e-3) and torch.allclose(eps[1:], noise[1:], atol=1e-3)
    oracle = lambda x, tt: target  # noqa: E731 - a network that predicts its target exactly
    assert float(d.training_losses(oracle, x0, t, noise).max()) < 1e-10
    respaced = d.respace(list(range(0, 1000, 100)))
    assert respaced.prediction_type == kind
    with pytest.raises(ValueError, match="prediction_type"):
        GaussianDiffusion.from_config("linear", 100, prediction_type="score")


def test_sampler_choices_come_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.cli import build_parser
    from engine.diffusion import samplers

    class Greedy(samplers.DDIMSampler):
        description = "a throwaway sampler"

    monkeypatch.setitem(samplers.SAMPLERS, "greedy", Greedy)
    args = build_parser().parse_args(["sample", "--run", "r", "--out", "o", "--sampler", "greedy"])
    assert args.sampler == "greedy"
    assert isinstance(samplers.make_sampler("greedy", GaussianDiffusion.from_config("linear", 100), 5), Greedy)
    src = (Path(__file__).resolve().parents[2] / "dashboard" / "app_pages" / "samples.py").read_text()
    assert "list(SAMPLERS)" in src and '["ddpm", "ddim"]' not in src


# ---- 6. one segment call, one writer -----------------------------------------------------------
def test_cli_segment_files_equal_the_dashboard_zip(small_clf: Path, tmp_path: Path) -> None:
    from engine.app.segment_session import outputs_zip, segment_frame

    rng = np.random.default_rng(3)
    path = tmp_path / "odd frame.png"
    Image.fromarray(rng.integers(0, 255, (45, 70, 3), dtype=np.uint8)).save(path)
    assert _cli("segment", "--classifier", small_clf, path, "--out", tmp_path / "cli", "--opacity", "0.4",
                "--no-cache") == 0
    clf = load_classifier(small_clf, "cpu", use_cache=False)
    result = segment_frame(clf, path.read_bytes(), path.name)
    members = zipfile.ZipFile(io.BytesIO(outputs_zip([result], clf, 0.4))).namelist()
    with zipfile.ZipFile(io.BytesIO(outputs_zip([result], clf, 0.4))) as z:
        for kind in ("mask", "color", "overlay", "uncertainty"):
            name = f"{result.stem}_{kind}.png"  # the file-name-safe stem both use ("odd_frame")
            assert name in members and z.read(name) == (tmp_path / "cli" / name).read_bytes(), kind
        assert z.read("labelmap.txt").decode() == (tmp_path / "cli" / "labelmap.txt").read_text()


def test_png_bytes_indexed_keeps_ids() -> None:
    from engine.outputs.segment_outputs import png_bytes

    ids = np.array([[0, 1, 255], [2, 2, 0]], dtype=np.uint8)
    im = Image.open(io.BytesIO(png_bytes(ids, np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]]))))
    assert im.mode == "P" and np.array_equal(np.asarray(im), ids) and im.getpalette()[:9] == [255, 0, 0, 0, 255, 0, 0, 0, 255]


# ---- 7. one feature-cache location ----------------------------------------------------------
def test_features_the_cli_computes_are_hits_for_the_dashboard(tiny_run_dir: Path, synth_data: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFSEG_CACHE_DIR", str(tmp_path / "cache"))
    assert _cli("fit", "--run", tiny_run_dir, "--data", synth_data, "--out", tmp_path / "clf", "--steps", "50,150",
                "--blocks", "1,3", "--members", "1", "--epochs", "1") == 0
    from dashboard import state
    from engine.data.folder import load_labelled

    run = load_run(tiny_run_dir, "cpu")
    cache = state.feature_cache(run)
    assert cache.directory == tmp_path / "cache" / run.weights_hash[:16]
    images, _, _ = load_labelled(open_dataset(synth_data), "train", run.image_size, run.image_size)
    before = cache.stats()
    FeatureExtractor(run, FeatureSpec((50, 150), (1, 3)), cache).many(images)
    after = cache.stats()
    assert after["hits"] - before["hits"] == len(images) * 4 and after["misses"] == before["misses"]


def test_cache_root_override_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import platformdirs

    from engine.segmentation.feature_cache import cache_dir_for, cache_root

    monkeypatch.setenv("DIFFSEG_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env" and cache_root(tmp_path / "flag") == tmp_path / "flag"
    assert cache_dir_for("abcdef0123456789ffff") == tmp_path / "env" / "abcdef0123456789"
    monkeypatch.delenv("DIFFSEG_CACHE_DIR")
    assert cache_root() == Path(platformdirs.user_cache_dir("diffseg-studio")) / "features"


# ---- newcomer CLI: help text and progress ---------------------------------------------------
def _parsers(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _parsers(sub, f"{path} {name}".strip())
    return out


def test_every_option_has_a_description_and_shows_its_default() -> None:
    from engine.cli import build_parser

    missing, no_default = [], []
    for path, parser in _parsers(build_parser()):
        for a in parser._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not (a.help or "").strip():
                missing.append(f"{path}: {a.dest}")
            shown = parser.formatter_class(prog="x")._get_help_string(a) or ""  # type: ignore[attr-defined]
            if a.option_strings and not a.required and a.default not in (None, False) and a.default != [] \
                    and "default" not in shown:
                no_default.append(f"{path}: {a.dest}")
    assert missing == [] and no_default == []


def test_progress_is_plain_lines_off_a_tty() -> None:
    from engine.progress import progress_printer

    buf = io.StringIO()
    report = progress_printer(buf, every_s=3600)
    for i in range(1, 101):
        report(i, 100, f"step {i}")
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue() and lines == ["[1/100] step 1", "[100/100] step 100"]
    tty = io.StringIO()
    progress_printer(tty, tty=True)(1, 2, "x")
    assert tty.getvalue().startswith("\r[1/2] x")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_a_short_pretrain_run_still_writes_its_sample_grid(tiny_data: Path, tmp_path: Path) -> None:
    """--max-steps below --sample-every: the grid is drawn at the last step (the README promises one)."""
    from engine.models.config import get_preset
    from engine.training.pretrain import pretrain

    preset = get_preset("tiny")
    preset.train.max_steps, preset.train.sample_every, preset.train.batch_size = 2, 100, 2
    pretrain(tiny_data, preset, tmp_path / "run", device="cpu", progress_bar=False, sample_n=2)
    grid = Image.open(tmp_path / "run" / "samples" / "latest.png")
    assert (tmp_path / "run" / "samples" / "step_0000002.png").is_file() and grid.size[0] > 32
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert progress["status"] == "done" and progress["step"] == progress["max_steps"] == 2
