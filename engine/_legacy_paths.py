"""Old flat module paths (`engine.features`, `engine.classifier`, …) keep importing after the regroup into
stage packages, so notebooks and scripts written against them still run.

`import engine.features` returns the very module object of `engine.segmentation.features` (not a copy):
patching one patches the other. The table is the single record of what moved where (ARCHITECTURE.md).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

#: old module (before the regroup) → where it lives now
MOVED: dict[str, str] = {
    "engine.run": "engine.models.run",
    "engine.sampling": "engine.diffusion.sampling",
    "engine.features": "engine.segmentation.features",
    "engine.feature_cache": "engine.segmentation.feature_cache",
    "engine.pixel_classifier": "engine.segmentation.pixel_classifier",
    "engine.classifier_training": "engine.segmentation.classifier_training",
    "engine.classifier": "engine.segmentation.classifier",
    "engine.preview_head": "engine.segmentation.preview_head",
    "engine.self_training": "engine.segmentation.self_training",
    "engine.metrics": "engine.scoring.metrics",
    "engine.evaluation": "engine.scoring.evaluation",
    "engine.cv": "engine.scoring.cv",
    "engine.bootstrap": "engine.scoring.bootstrap",
    "engine.recipe_search": "engine.scoring.recipe_search",
    "engine.analysis": "engine.scoring.analysis",
    "engine.colour_stats": "engine.scoring.colour_stats",
    "engine.compare_report": "engine.methods.compare_report",
    "engine.compare_cache": "engine.methods.compare_cache",
    "engine.compare_stats": "engine.methods.compare_stats",
    "engine.label_curve": "engine.methods.label_curve",
    "engine.segment_outputs": "engine.outputs.segment_outputs",
    "engine.render": "engine.outputs.render",
    "engine.figures": "engine.outputs.figures",
    "engine.palette": "engine.outputs.palette",
    "engine.report": "engine.outputs.report",
    "engine.selection": "engine.labelling.selection",
    "engine.suggest": "engine.labelling.suggest",
    "engine.annotate": "engine.labelling.annotate",
    "engine.label_store": "engine.labelling.label_store",
    "engine.refit": "engine.labelling.refit",
    "engine.workspace": "engine.app.workspace",
    "engine.jobs": "engine.app.jobs",
    "engine.segment_session": "engine.app.segment_session",
    "engine.review_log": "engine.app.review_log",
    "engine.access": "engine.app.access",
    "engine.explore": "engine.app.explore",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name in MOVED and hands back the module at its new place (imported on first use)."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def __init__(self) -> None:
        self._real_specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED[spec.name])
        self._real_specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias's spec on the real module: give it back its own
        alias = module.__spec__.name if module.__spec__ else ""
        if alias in self._real_specs:
            module.__spec__ = self._real_specs[alias]


def install() -> None:
    """Put the finder on sys.meta_path once (after the regular finders: a real module always wins)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
