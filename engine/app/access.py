"""Which paths the dashboard may touch, and whether it runs in public/demo mode.

Every directory typed into the dashboard (workspace parts, job inputs and outputs) must resolve (symlinks
followed) inside an allowed root: $DIFFSEG_PATH_ROOT (default: the user's workspace folder, $DIFFSEG_OUT or
~/.diffseg-studio) for reading and writing, and the shipped workspace ($DIFFSEG_WORKSPACE or assets/) for
reading. $DIFFSEG_PUBLIC=1 turns on public/demo mode: no jobs, no typed paths, only the embedded default
workspace and uploads (for a server open to anyone, e.g. the Procfile's 0.0.0.0).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import workspace as wsmod

TRUE = {"1", "true", "yes", "on"}


class PathRefused(ValueError):
    """A typed path outside the allowed roots (the message names the path and the roots)."""


@dataclass(frozen=True)
class AccessPolicy:
    """Allowed roots for reading / writing, and public mode."""

    root: Path  # read + write
    read_roots: tuple[Path, ...]  # read only (the shipped workspace)
    public: bool = False

    def check(self, path: str | Path, what: str, write: bool = False) -> Path:
        """The resolved path if it lies inside an allowed root; PathRefused with a one-line reason otherwise."""
        if self.public:
            raise PathRefused(f"{what}: typed paths are off in public/demo mode (DIFFSEG_PUBLIC)")
        text = str(path).strip()
        if not text:
            raise PathRefused(f"{what}: empty path")
        p = Path(text).expanduser()
        if not p.is_absolute():
            p = self.root / p  # relative paths are read against the workspace folder, never the server's cwd
        p = p.resolve()
        roots = (self.root,) if write else (self.root, *self.read_roots)
        if any(p == r or p.is_relative_to(r) for r in roots):
            return p
        allowed = " or ".join(f"`{r}`" for r in roots)
        raise PathRefused(f"{what}: `{p}` is outside the allowed folder{'s' if len(roots) > 1 else ''} {allowed}"
                          "; set DIFFSEG_PATH_ROOT to allow another folder")


def policy_from_env(env: dict[str, str] | None = None) -> AccessPolicy:
    """The policy configured by $DIFFSEG_PATH_ROOT, $DIFFSEG_OUT, $DIFFSEG_WORKSPACE and $DIFFSEG_PUBLIC."""
    env = dict(os.environ if env is None else env)
    out = Path(env.get("DIFFSEG_OUT") or Path.home() / ".diffseg-studio")
    root = Path(env.get("DIFFSEG_PATH_ROOT") or out).expanduser().resolve()
    shipped = Path(env["DIFFSEG_WORKSPACE"]).expanduser().resolve() if env.get("DIFFSEG_WORKSPACE") \
        else (wsmod.REPO_ROOT / "assets").resolve()
    return AccessPolicy(root, (shipped,), env.get("DIFFSEG_PUBLIC", "").strip().lower() in TRUE)
