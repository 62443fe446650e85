"""DiffSeg Studio engine: data, diffusion UNet, features, pixel classifiers, methods, metrics, CLI."""
