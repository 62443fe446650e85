"""One self-contained HTML report of a workspace: data set, run, classifier, sweep, comparison (every section
the compare JSON holds, so sections added later show up), example masks and the commands that reproduce
every number. plotly.js is inlined once and images are data URIs: the file opens offline, by e-mail.

`python -m engine report --workspace DIR --out report.html`; the dashboard's Overview offers the same file.
"""
from __future__ import annotations

import base64
import html
import json
import time
from typing import Any

import numpy as np

from ..methods import compare_cache, compare_report
from ..app import workspace as wsmod
from .figures import PanelFigure, compose, frame_iou, legend_of
from .palette import css, method_colour_map
from .render import overlay
from ..app.workspace import Workspace

KNOWN_REPORT_KEYS = {"budget", "data", "run", "image_size", "n_train", "n_test", "pool_size", "pool_source",
                     "classes", "metric_convention", "methods", "vs_unet"}
KNOWN_METHOD_KEYS = {"miou", "per_class_iou", "dice", "per_class_dice", "pixel_accuracy", "confusion", "convention",
                     "train_seconds", "infer_seconds_per_image", "n_test", "cached", "dir", "config", "uncertainty"}
SECTION_IDS = ("summary", "data", "run", "classifier", "sweep", "comparison", "examples", "reproduce")
esc = html.escape


# ---- small HTML helpers ----------------------------------------------------------------------------
def _table(rows: list[dict[str, Any]], digits: int = 3) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else esc(str(v)))  # noqa: E731
    rows = [{k: (v if not isinstance(v, (dict, list)) else json.dumps(v)[:200]) for k, v in r.items()} for r in rows]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _short(v: Any) -> Any:
    """Floats to 4 significant digits, short lists of numbers inline."""
    if isinstance(v, float):
        return float(f"{v:.4g}")
    if isinstance(v, list) and len(v) <= 12 and all(isinstance(x, (int, float, str)) for x in v):
        return ", ".join(str(_short(x)) for x in v)
    return v


def render_value(value: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: a dict's scalars (and short lists) in one field/value table, nested dicts as
    sub-sections, lists of dicts as tables, anything else as (truncated) JSON."""
    if isinstance(value, dict):
        flat = {k: _short(v) for k, v in value.items() if not isinstance(_short(v), (dict, list))}
        out = _table([{"field": k, "value": v} for k, v in flat.items()], digits=4) if flat else ""
        for k, v in value.items():
            if k in flat:
                continue
            if depth >= 3:
                out += f"<h4>{esc(str(k))}</h4><pre>{esc(json.dumps(v)[:3000])}</pre>"
            else:
                out += f"<h4>{esc(str(k))}</h4>{render_value(v, depth + 1)}"
        return out
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value) and len(value) <= 60:
            return _table([{k: _short(x) for k, x in v.items()} for v in value], digits=4)
        return f"<pre>{esc(json.dumps(value)[:3000])}</pre>"
    return f"<p>{esc(str(_short(value)))}</p>"


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>'


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _plot(fig: Any) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


# ---- sections -----------------------------------------------------------------------------------------
def _data_section(ws: Workspace) -> str:
    if ws.data is None:
        return "<p>No data set in this workspace.</p>"
    s = wsmod.dataset_summary(ws.data)
    chips = "".join(f'<span class="chip"><i style="background:{css(c["color"])}"></i>{esc(c["name"])} '
                    f'{c["pixel_share"]:.1%}</span>' for c in s["classes"])
    return (f"<p><code>{esc(str(ws.data))}</code>: {s['splits']['train']} labelled train frames, "
            f"{s['splits']['test']} labelled test frames, {s['splits']['unlabeled']} unlabelled frames in the folder.</p>"
            f"<p>Classes and pixel shares over the labelled masks: {chips}</p>")


def _run_section(ws: Workspace) -> str:
    if ws.run is None:
        return "<p>No model run in this workspace.</p>"
    import plotly.express as px

    cfg = wsmod.read_json(ws.run / "config.json") or {}
    u, d, t = cfg.get("unet", {}), cfg.get("diffusion", {}), cfg.get("train", {})
    rows = [{"field": "preset", "value": cfg.get("preset")}, {"field": "image size", "value": u.get("image_size")},
            {"field": "steps trained", "value": cfg.get("step")}, {"field": "batch size", "value": t.get("batch_size")},
            {"field": "diffusion T", "value": d.get("num_timesteps")},
            {"field": "pretraining pool", "value": f"{cfg.get('pool_size', '?')} frames ({cfg.get('pool', '?')} "
                                                    f"split of {cfg.get('data', '?')})"}]
    body = f"<p><code>{esc(str(ws.run))}</code></p>" + _table(rows)
    loss = wsmod.read_loss(ws.run)
    if loss:
        fig = px.line(x=[r["step"] for r in loss], y=[r["loss"] for r in loss], log_y=True,
                      labels={"x": "step", "y": "loss"}, title="Pretraining loss")
        fig.update_layout(height=320)
        body += _plot(fig)
    return body


def _classifier_section(ws: Workspace) -> str:
    cfg = wsmod.read_json(ws.classifier / "config.json") if ws.classifier else None
    if not cfg:
        return "<p>No classifier in this workspace.</p>"
    spec, fit = cfg.get("spec", {}), cfg.get("fit", {})
    body = (f"<p><code>{esc(str(ws.classifier))}</code>: t = {spec.get('steps')}, blocks = {spec.get('blocks')}; "
            f"{fit.get('members')} members × ≤{fit.get('max_epochs')} epochs, {fit.get('arch')} MLP, "
            f"fitted on {cfg.get('stats', {}).get('n_train_images', '?')} labelled frames.</p>")
    m = wsmod.read_json(ws.metrics)
    if m:
        body += (f"<p>Test mIoU <b>{m['miou']:.3f}</b> on {m.get('n_images', '?')} test frames "
                 f"({esc(m.get('convention', ''))}); pixel accuracy {m.get('pixel_accuracy', 0):.3f}.</p>")
        body += _table([{"class": k, "IoU": v} for k, v in (m.get("per_class_iou") or {}).items()])
    return body


def _sweep_section(ws: Workspace) -> str:
    sweep = wsmod.read_json(ws.sweep)
    if not sweep:
        return "<p>No sweep in this workspace.</p>"
    from ..scoring.evaluation import sweep_figure

    b, fit = sweep["best"], sweep.get("fit", {})
    return (f"<p>Best single cell: block {b['block']} at t = {b['step']}, mIoU {b['miou']:.3f}. Each cell is a "
            f"{fit.get('members', '?')}-member ensemble, ≤{fit.get('max_epochs', '?')} epochs, ≤{fit.get('max_pixels', '?')} "
            f"pixels, fitted on {sweep.get('n_train', '?')} train frames and scored on the first "
            f"{sweep.get('n_test', '?')} test frames.</p>" + _plot(sweep_figure(sweep)))


def _comparison_section(report: dict[str, Any] | None) -> str:
    if not compare_report.method_results(report):
        return "<p>No comparison in this workspace.</p>"
    import plotly.express as px

    assert report is not None
    results = compare_report.method_results(report)
    body = (f"<p>{report.get('n_test', '?')} test frames, {report.get('n_train', '?')} labelled train frames, "
            f"{report.get('image_size', '?')} px, budget <code>{esc(str(report.get('budget')))}</code>, unlabelled pool "
            f"{report.get('pool_size', '?')} frames from {esc(str(report.get('pool_source', '?')))}; "
            f"{esc(str(report.get('metric_convention', '')))}.</p>")
    rows = [{k: v for k, v in r.items() if k not in ("train s", "infer s / image")} | {"train s": r.get("train s")}
            for r in compare_report.display_rows(report)]
    body += _table(rows)
    body += "<p>How each score was obtained:</p><ul>" + "".join(
        f"<li><b>{esc(n)}</b>: {esc(compare_report.method_provenance(n, r, report))}</li>" for n, r in results.items()) + "</ul>"
    per_class = [{"method": m, "class": c, "IoU": v} for m, r in results.items()
                 for c, v in (r.get("per_class_iou") or {}).items() if v is not None]
    if per_class:
        fig = px.bar(per_class, x="class", y="IoU", color="method", barmode="group", range_y=[0, 1],
                     color_discrete_map=method_colour_map(results), title="Per-class IoU by method")
        fig.update_layout(height=360)
        body += _plot(fig)
    extra = []  # every section the report holds beyond the basics, so later additions appear here
    for key, value in report.items():
        if key not in KNOWN_REPORT_KEYS:
            extra.append(f'<div class="extra" data-key="{esc(key)}"><h3>{esc(key.replace("_", " "))}</h3>'
                         f"{render_value(value)}</div>")
    for name, r in results.items():
        for key, value in r.items():
            if key not in KNOWN_METHOD_KEYS:
                extra.append(f'<div class="extra" data-key="{esc(name)}.{esc(key)}"><h3>{esc(name)}: '
                             f'{esc(key.replace("_", " "))}</h3>{render_value(value)}</div>')
    return body + "".join(extra)


def example_figure(ws: Workspace, classifier: Any, n_frames: int = 3) -> PanelFigure | None:
    """Frame | truth | workspace classifier | each compared method (from the prediction store), per-frame IoU."""
    if ws.data is None:
        return None
    from ..data.folder import FolderDataset
    from ..app.explore import frame_and_truth, model_input

    ds = FolderDataset(ws.data)
    stems = [s for s in ds.stems("test") if ds.has_mask(s)][:n_frames]
    if not stems:
        return None
    report = wsmod.read_json(ws.compare)
    size = int((report or {}).get("image_size") or (classifier.run.image_size if classifier else 64))
    stored: dict[str, dict[str, Any]] = {}
    if report and ws.compare is not None:
        store = compare_cache.PredictionStore(compare_cache.store_path(ws.compare))
        shipped = ws.root / "demo_methods" if ws.root else None
        for name, d in compare_report.method_dirs(report, shipped, ws.compare.parent).items():
            fp = compare_cache.fingerprint(d)
            if all(store.get(name, fp, s) is not None for s in stems):
                stored[name] = {s: store.get(name, fp, s) for s in stems}
    cols = ["frame", "truth"] + (["classifier"] if classifier is not None else []) + list(stored)
    panels, notes = [], []
    n_cls = ds.classes.num_classes
    for stem in stems:
        img, truth_or_none = frame_and_truth(ds, stem, size)
        assert truth_or_none is not None, stem  # the stems are labelled test frames
        truth = truth_or_none
        row, note = [img, overlay(img, truth, ds.classes, 0.6)], ["", ""]
        if classifier is not None:
            pred = classifier.predict_tensor(model_input(ds, stem, classifier.run.image_size), (size, size))
            lab = pred.labels.numpy().astype(np.uint8)
            row.append(overlay(img, lab, ds.classes, 0.6))
            note.append(f"IoU {frame_iou(lab, truth, n_cls):.3f}")
        for name in stored:
            lab = stored[name][stem]["labels"]
            row.append(overlay(img, lab, ds.classes, 0.6))
            note.append(f"IoU {frame_iou(lab, truth, n_cls):.3f}")
        panels.append(row)
        notes.append(note)
    return PanelFigure(panels, cols, stems, notes, legend_of(ds.classes.names, ds.classes.colors.tolist()),
                       title="Test frames: truth and predictions (per-frame mIoU under each panel)", panel_px=160,
                       font_px=16)


def reproduce_commands(ws: Workspace) -> list[str]:
    """Shell commands that recompute every number in the report from the workspace's own configs."""
    py = "python -m engine"
    cmds: list[str] = []
    run_cfg = wsmod.read_json(ws.run / "config.json") if ws.run else None
    data = str(ws.data) if ws.data else "DATA"
    run = str(ws.run) if ws.run else "RUN"
    if run_cfg:
        pool_data = run_cfg.get("data", "POOL")
        cmds.append(f"{py} data synth {pool_data}   # only for the synthetic demo: the unlabelled pool")
        cmds.append(f"{py} pretrain --data {pool_data} --preset {run_cfg.get('preset')} --out {run} "
                    f"--max-steps {run_cfg.get('step')} --pool {run_cfg.get('pool', 'unlabeled')}")
    clf_cfg = wsmod.read_json(ws.classifier / "config.json") if ws.classifier else None
    if clf_cfg:
        spec, fit = clf_cfg["spec"], clf_cfg["fit"]
        cmds.append(f"{py} fit --run {run} --data {data} --steps {','.join(map(str, spec['steps']))} "
                    f"--blocks {','.join(map(str, spec['blocks']))} --members {fit['members']} "
                    f"--epochs {fit['max_epochs']} --seed {fit['seed']} --out {ws.classifier}")
        cmds.append(f"{py} evaluate --classifier {ws.classifier} --data {data} --split test --json metrics.json")
    sweep = wsmod.read_json(ws.sweep)
    if sweep:
        fit = sweep.get("fit", {})
        cmds.append(f"{py} sweep --run {run} --data {data} --steps {','.join(map(str, sweep['steps']))} "
                    f"--blocks {','.join(map(str, sweep['blocks']))} --max-test {sweep.get('n_test')} "
                    f"--members {fit.get('members', 2)} --epochs {fit.get('max_epochs', 3)} --json sweep.json")
    report = wsmod.read_json(ws.compare)
    if compare_report.method_results(report):
        assert report is not None
        pool = str(report.get("pool_source", "")).split(" (")[0]
        k = (report.get("methods", {}).get("conddiff", {}).get("k_study") or {}).get("n_frames")
        cmds.append(f"{py} compare --data {data} --run {run} --methods {','.join(compare_report.method_results(report))} "
                    f"--budget {report.get('budget')}" + (f" --pool {pool}" if pool else "")
                    + (f" --k-study-frames {k}" if k else "") + " --json compare.json")
    root = f" --workspace {ws.root}" if ws.root else ""
    cmds.append(f"{py} report{root} --out report.html")
    return cmds


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}h1{margin-bottom:.2em}section{border-top:1px solid #ddd;margin-top:1.5em;padding-top:.5em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.chip{display:inline-block;margin-right:12px}
.chip i{display:inline-block;width:12px;height:12px;margin-right:4px;border:1px solid #888;vertical-align:middle}
.note{background:#fff4d6;border-left:4px solid #e6a700;padding:.5em 1em}.headline{font-size:1.15em;
background:#eef5ff;border-left:4px solid #0072b2;padding:.5em 1em}img{max-width:100%}pre{white-space:pre-wrap;
background:#f6f6f6;padding:.7em;font-size:.85em}nav a{margin-right:1em}"""


def build_report(ws: Workspace, classifier: Any = None, n_frames: int = 3, load_classifier: bool = True,
                 device: str = "cpu") -> str:
    """The report as one HTML string (classifier: a loaded SegmentationClassifier, else loaded when asked)."""
    import plotly.offline

    if classifier is None and load_classifier and ws.classifier is not None:
        from ..segmentation.classifier import load_classifier as _load

        classifier = _load(ws.classifier, device, use_cache=False)
    report = wsmod.read_json(ws.compare)
    head = compare_report.headline(report)
    demo = ws.root is not None and (ws.root / "demo_run").resolve() == (ws.run.resolve() if ws.run else None) \
        and ws.root.resolve() == (wsmod.REPO_ROOT / "assets").resolve()
    summary = (f'<p class="headline" data-testid="headline">{esc(head["text"])}</p>' if head else
               "<p>No comparison yet: run <code>python -m engine compare</code>.</p>")
    if demo:
        summary += ('<p class="note">This is the embedded default: a synthetic 64-px research demo (rendered cataract '
                    "frames, a small diffusion model trained on 2 CPU cores). Not for clinical use.</p>")
    fig = example_figure(ws, classifier, n_frames)
    examples = "<p>No labelled test frames.</p>"
    if fig is not None:
        import io

        buf = io.BytesIO()
        compose(fig).save(buf, format="PNG")
        examples = _img(buf.getvalue(), "example masks")
    cmds = "\n".join(reproduce_commands(ws))
    parts = [
        _section("summary", "Summary", summary),
        _section("data", "Data set", _data_section(ws)),
        _section("run", "Diffusion model run", _run_section(ws)),
        _section("classifier", "Pixel classifier", _classifier_section(ws)),
        _section("sweep", "Block × timestep sweep", _sweep_section(ws)),
        _section("comparison", "Comparison and scorecard", _comparison_section(report)),
        _section("examples", "Example masks", examples),
        _section("reproduce", "Reproduce every number", f"<p>From the repository root:</p><pre>{esc(cmds)}</pre>"),
    ]
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTION_IDS)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>DiffSeg Studio report</title>'
            f"<style>{CSS}</style><script>{plotly.offline.get_plotlyjs()}</script></head><body>"
            f"<h1>DiffSeg Studio report</h1><p>Workspace <code>{esc(str(ws.root))}</code> · written {stamp}</p>"
            f"<nav>{nav}</nav>{''.join(parts)}</body></html>")
