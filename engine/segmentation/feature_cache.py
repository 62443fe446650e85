"""On-disk cache of activations (diskcache) that never unpickles anything.

Values are float16 arrays stored as raw `.npy` bytes through `NumpyDisk` (`allow_pickle=False`);
keys are plain strings. diskcache's default Disk pickles values, and a writable cache directory then
lets anyone run code in our process (CVE-2025-69872); this Disk refuses pickled rows outright.
The cache is always rebuildable: a corrupt or unreadable entry is dropped and recomputed, and a
cache that cannot be written (disk full, deleted directory) only costs speed, never correctness.
Confinement: the cache never reads, writes or deletes a path that does not resolve inside its own
directory. A row whose filename is absolute, climbs out with `..`, or leads out through a symlink is
dropped from the index at open and refused at every lookup, write and eviction; its target is never touched.
New cache directories are created private (0700); the mode of an existing directory is never changed.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import diskcache
import numpy as np

log = logging.getLogger(__name__)

DEFAULT_SIZE_LIMIT = 2 * 1024**3  # 2 GiB, least-recently-used eviction beyond it
#: the one override of where feature caches live (the CLI's --cache-dir sets the same root)
CACHE_ENV = "DIFFSEG_CACHE_DIR"
APP_NAME = "diffseg-studio"


def cache_root(override: str | Path | None = None) -> Path:
    """Where feature caches live: `override` (the CLI's --cache-dir), else $DIFFSEG_CACHE_DIR, else the
    per-user cache directory (platformdirs: ~/.cache/diffseg-studio/features on Linux)."""
    if override is not None:
        return Path(override)
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME)) / "features"


def cache_dir_for(run_identity: str, override: str | Path | None = None) -> Path:
    """The feature-cache directory of one network: the cache root / the first 16 hex digits of its
    identity (`Run.weights_hash`), so the CLI and the dashboard share rows and two runs never mix."""
    return cache_root(override) / run_identity[:16]


class UnsafeCacheEntry(Exception):
    """A cache row that would need unpickling: refused, treated as a miss."""


def make_private_dirs(directory: Path) -> None:
    """Create `directory` and its missing parents with mode 0700; directories that exist are left alone."""
    missing = []
    p = directory
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by a concurrent process: not ours to chmod
        os.chmod(d, 0o700)  # mkdir's mode is reduced by the umask; only ever chmod what we just made


def inside(root: str | Path, relative: str) -> str | None:
    """The full path of cache row file `relative` when it stays inside `root` after resolving `..` and
    symlinks; None for an absolute name, an escape, or anything odd (NUL, not a string)."""
    if not isinstance(relative, str) or not relative or "\x00" in relative or os.path.isabs(relative):
        return None
    if any(part == ".." for part in Path(relative).parts):
        return None
    base = os.path.realpath(root)
    full = os.path.join(base, relative)
    # the file itself may be a symlink: delete it is fine (removes the link), but follow it only inside
    real = os.path.realpath(full)
    if os.path.commonpath([base, real]) != base or real == base:
        return None
    if os.path.commonpath([base, os.path.realpath(os.path.dirname(full))]) != base:
        return None
    return full


class NumpyDisk(diskcache.Disk):
    """diskcache Disk for numpy arrays as .npy bytes and string keys only; pickle is never used,
    and no file outside the cache directory is ever opened, created or removed."""

    def put(self, key):  # type: ignore[override]
        if not isinstance(key, str):
            raise TypeError(f"feature cache keys must be str, got {type(key).__name__}")
        return super().put(key)

    def get(self, key, raw):  # type: ignore[override]
        if not raw:
            raise UnsafeCacheEntry("non-raw key in cache database")
        return super().get(key, raw)

    def store(self, value, read, key=diskcache.core.UNKNOWN):  # type: ignore[override]
        if read:
            raise TypeError("streaming values are not supported by the feature cache")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"feature cache values must be numpy arrays, got {type(value).__name__}")
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return super().store(buf.getvalue(), False, key)

    def fetch(self, mode, filename, value, read):  # type: ignore[override]
        if mode not in (diskcache.core.MODE_BINARY, diskcache.core.MODE_RAW):
            raise UnsafeCacheEntry(f"cache row in mode {mode} (only raw .npy bytes are accepted)")
        if mode == diskcache.core.MODE_BINARY and filename is not None:
            if inside(self._directory, filename) is None:
                raise UnsafeCacheEntry(f"cache row file {filename!r} lies outside the cache directory; not read")
        data = bytes(super().fetch(mode, filename, value, False))
        if not data.startswith(b"\x93NUMPY"):  # np.load would call random bytes "pickled data": say what it is
            raise UnsafeCacheEntry(f"cache row is not a .npy array (corrupt: {len(data)} bytes starting "
                                   f"{data[:8]!r})")
        return np.load(io.BytesIO(data), allow_pickle=False)

    def filename(self, key=diskcache.core.UNKNOWN, value=diskcache.core.UNKNOWN):  # type: ignore[override]
        name, _full = super().filename(key, value)
        full = inside(self._directory, name)
        if full is None:  # a sub-directory of the cache was replaced by a symlink leading out of it
            raise UnsafeCacheEntry(f"cache sub-directory of {name!r} leads outside the cache directory; not written")
        return name, full

    def remove(self, file_path):  # type: ignore[override]
        """Delete a row's file and its emptied sub-directories, never anything outside the cache directory."""
        full = inside(self._directory, file_path)
        if full is None:
            log.warning("feature cache: not deleting %r: it lies outside the cache directory %s",
                        file_path, self._directory)
            return
        try:
            os.remove(full)
        except OSError:
            pass  # already gone (another process), or not ours to remove
        base = os.path.realpath(self._directory)
        d = os.path.dirname(full)
        while d != base and os.path.commonpath([base, d]) == base:
            try:
                os.rmdir(d)  # only empty directories go
            except OSError:
                break
            d = os.path.dirname(d)


class FeatureCache:
    """String-keyed cache of numpy arrays with hit/miss counters; failures degrade to recomputation."""

    def __init__(self, directory: str | Path, size_limit: int = DEFAULT_SIZE_LIMIT):
        self.directory = Path(directory)
        self.size_limit = size_limit
        self.hits = self.misses = self.errors = 0
        self._cache: diskcache.Cache | None = None

    def _open(self) -> diskcache.Cache | None:
        if self._cache is not None and self.directory.is_dir():
            return self._cache
        self.close()
        try:
            make_private_dirs(self.directory)
            self._cache = diskcache.Cache(str(self.directory), disk=NumpyDisk, size_limit=self.size_limit,
                                          eviction_policy="least-recently-used")
            self._drop_unsafe_rows(self._cache)
        except Exception as e:  # noqa: BLE001 - an unusable cache only costs speed
            self.errors += 1
            log.warning("feature cache at %s unusable (%s); computing without it", self.directory, e)
            self._cache = None
        return self._cache

    def _drop_unsafe_rows(self, cache: diskcache.Cache) -> None:
        """Remove from the index every row whose file would resolve outside the cache directory (never
        touching the file it names), before any eviction or lookup could follow it."""
        rows = cache._sql("SELECT rowid, key, filename FROM Cache WHERE filename IS NOT NULL").fetchall()
        bad = [(rowid, key, name) for rowid, key, name in rows if inside(self.directory, name) is None]
        for rowid, key, name in bad:
            log.warning("feature cache %s: dropping row %r whose file %r lies outside the cache directory "
                        "(the file was not touched)", self.directory, str(key)[:60], name)
            cache._sql("DELETE FROM Cache WHERE rowid = ?", (rowid,))
        self.errors += len(bad)

    def get(self, key: str) -> np.ndarray | None:
        """The cached array, or None on a miss or an unreadable/corrupt/unsafe entry (which is deleted)."""
        cache = self._open()
        if cache is None:
            self.misses += 1
            return None
        try:
            value = cache.get(key, default=None, retry=True)
        except Exception as e:  # noqa: BLE001 - corrupt or unsafe row: drop it, recompute
            self.errors += 1
            log.warning("dropping unreadable feature-cache entry %s: %s", key[:40], e)
            self._delete(cache, key)
            value = None
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def set(self, key: str, value: np.ndarray) -> None:
        """Store an array; a failed write is logged and ignored."""
        cache = self._open()
        if cache is None:
            return
        try:
            cache.set(key, np.ascontiguousarray(value), retry=True)
        except Exception as e:  # noqa: BLE001 - disk full etc.
            self.errors += 1
            log.warning("could not write feature cache entry (%s); continuing without caching it", e)

    @staticmethod
    def _delete(cache: diskcache.Cache, key: str) -> None:
        try:
            cache.delete(key, retry=True)
        except Exception:  # noqa: BLE001
            pass

    def stats(self) -> dict[str, int]:
        """Counters since this object was made, plus the bytes on disk."""
        cache = self._open()
        volume = cache.volume() if cache is not None else 0
        return {"hits": self.hits, "misses": self.misses, "errors": self.errors, "bytes": int(volume)}

    def clear(self) -> None:
        cache = self._open()
        if cache is not None:
            cache.clear(retry=True)

    def close(self) -> None:
        if self._cache is not None:
            try:
                self._cache.close()
            except Exception:  # noqa: BLE001
                pass
            self._cache = None
