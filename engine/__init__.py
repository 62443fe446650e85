"""DiffSeg Studio engine: data, diffusion UNet, features, pixel classifiers, methods, metrics, CLI."""
import os as _os

# OpenMP threads that spin while waiting make torch 5-50x slower when the 2 cores are shared with
# other processes (tests, the dashboard, a training job); passive waiting costs nothing when alone.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._legacy_paths import install as _install_legacy_paths

# `engine.features`, `engine.classifier`, … (the flat layout before the stage packages) keep importing
_install_legacy_paths()
