"""segment-video's output folder: per-chunk parts while running, the final files once every chunk exists.

OUT/.parts/manifest.json            what the run is (video, classifier, settings): `--resume` must match it
OUT/.parts/chunk_NNNNN.{npz,mp4}    masks + uncertainty, overlay segment of one chunk of frames
OUT/.parts/chunk_NNNNN.json         its table rows, written LAST: a chunk is done iff this file exists
OUT/overlay.mp4, masks.npz, table.csv, table.parquet, labelmap.txt, classes.json, summary.json (last)
Final files are written under temporary names and renamed; summary.json is the completion marker and the
parts folder is removed after it. An interrupted run (Ctrl-C, SIGTERM, a kill, a full disk) leaves only
`.parts/` (and no file that looks final) for `--resume`; a run stopped by a corrupt or truncated input
removes `.parts/` (a resume of the same file would stop at the same frame; a repaired file is a different
video, which `--resume` refuses), and OUT itself when the run created it.

Masks are ONE compressed array file (`masks.npz`: `masks` (N, H, W) uint8 class ids at the frame's size,
`frame_index`, `time_s`, `uncertainty` (N, h, w) float16 JS maps at model size), not a PNG sequence:
a single file to move, download and load with `np.load`, deflate shrinks class-id masks 30-100×, it is
streamed chunk by chunk (memory stays one chunk), and one rename makes it appear complete or not at all.
"""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from ..data.classes import ClassTable
from ..scoring.metrics import ConfusionMatrix
from .frame_stats import flip_share
from .writer import concat_mp4
from ..errors import UserError

PARTS = ".parts"
FINAL_FILES = ("overlay.mp4", "masks.npz", "table.csv", "table.parquet", "labelmap.txt", "classes.json",
               "summary.json")


def parts_dir(out: Path) -> Path:
    return out / PARTS


def chunk_path(out: Path, c: int, ext: str) -> Path:
    return parts_dir(out) / f"chunk_{c:05d}.{ext}"


def chunk_done(out: Path, c: int) -> bool:
    return all(chunk_path(out, c, e).is_file() for e in ("json", "npz", "mp4"))


def is_complete(out: Path) -> bool:
    return (out / "summary.json").is_file()


def write_chunk(out: Path, c: int, masks: np.ndarray, unc: np.ndarray, index: np.ndarray, times: np.ndarray,
                rows: list[dict[str, Any]]) -> None:
    """The chunk's arrays, then its rows (the done marker). The overlay segment is already in place."""
    buf = io.BytesIO()
    # deflate level 3: a temporary file; 3× cheaper than savez_compressed's level 6 for 1.7× the size (the
    # final file uses 6)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=3) as zf:
        for key, arr in (("masks", masks), ("uncertainty", unc), ("frame_index", index), ("time_s", times)):
            with zf.open(_member(zf, key), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arr))
    write_bytes_atomic(chunk_path(out, c, "npz"), buf.getvalue())
    write_json_atomic(chunk_path(out, c, "json"), rows)


STORED_ARRAYS = ("uncertainty",)  # float16 JS maps: deflate keeps 92 % of their size for 1 ms a frame; stored


def _member(zf: zipfile.ZipFile, key: str) -> zipfile.ZipInfo:
    """The zip entry of array `key`: deflated at the file's level, or stored for arrays deflate cannot shrink."""
    info = zipfile.ZipInfo(f"{key}.npy", date_time=time.localtime()[:6])
    info.external_attr = 0o600 << 16
    info.compress_type = zipfile.ZIP_STORED if key in STORED_ARRAYS else zf.compression
    info._compresslevel = zf.compresslevel  # type: ignore[attr-defined]  # (public as compress_level from 3.13)
    return info


def _npy_header(f: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
    np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                             "fortran_order": False, "shape": shape})


def read_npy_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy stream `f`, which is left at the start of the data."""
    major, _ = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    return tuple(int(v) for v in shape), bool(fortran), dtype


def npz_shape(path: Path, key: str) -> tuple[int, ...]:
    """Shape of array `key` in an .npz file, from its .npy header: nothing else is decompressed."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
        return read_npy_header(f)[0]


def _stream_array(zf: zipfile.ZipFile, name: str, chunks: list[Path], key: str, dtype: np.dtype,
                  on_chunk: Callable[[np.ndarray], None] | None = None) -> None:
    shapes = [npz_shape(p, key) for p in chunks]
    total = sum(s[0] for s in shapes)
    with zf.open(_member(zf, name), "w", force_zip64=True) as f:
        _npy_header(f, (total, *shapes[0][1:]), dtype)
        for p in chunks:
            arr = np.load(p)[key].astype(dtype, copy=False)
            if on_chunk is not None:
                on_chunk(arr)
            f.write(np.ascontiguousarray(arr).tobytes())


def finalize(out: Path, n_chunks: int, classes: ClassTable, summary: dict[str, Any],
             truth: np.ndarray | None = None) -> dict[str, Any]:
    """Join every chunk into the final files; flicker and (with `truth`) per-frame mIoU are computed here."""
    missing = [c for c in range(n_chunks) if not chunk_done(out, c)]
    if missing:
        raise RuntimeError(f"{out}: chunks {missing[:5]} are missing; run again with --resume")
    npzs = [chunk_path(out, c, "npz") for c in range(n_chunks)]
    rows: list[dict[str, Any]] = []
    for c in range(n_chunks):
        rows.extend(json.loads(chunk_path(out, c, "json").read_text()))
    prev: list[np.ndarray | None] = [None]
    flips: list[float] = []
    total_cm = ConfusionMatrix(classes.num_classes) if truth is not None else None
    per_frame_miou: list[float] = []

    def measure(masks: np.ndarray) -> None:
        for m in masks:
            flips.append(flip_share(prev[0], m))
            prev[0] = m
            if truth is not None and total_cm is not None:
                i = len(per_frame_miou)
                t = truth[int(rows[i]["frame"])]
                if t.shape != m.shape:
                    raise UserError(f"truth masks are {t.shape[1]}×{t.shape[0]}, frames {m.shape[1]}×{m.shape[0]}")
                cm = ConfusionMatrix(classes.num_classes).update(m, t)
                total_cm.update(m, t)
                per_frame_miou.append(float(np.nanmean(cm.iou())))

    tmp = out / ".masks.npz.part"
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            _stream_array(zf, "masks", npzs, "masks", np.dtype(np.uint8), measure)
            _stream_array(zf, "uncertainty", npzs, "uncertainty", np.dtype(np.float16))
            for key, dt in (("frame_index", np.int64), ("time_s", np.float64)):
                buf = io.BytesIO()
                np.save(buf, np.concatenate([np.load(p)[key] for p in npzs]).astype(dt))
                zf.writestr(f"{key}.npy", buf.getvalue())
        os.replace(tmp, out / "masks.npz")
    finally:
        tmp.unlink(missing_ok=True)
    for r, f in zip(rows, flips):
        r["flip_share"] = f
    if truth is not None:
        for r, m in zip(rows, per_frame_miou):
            r["miou"] = m
    write_table(out, rows)
    n_video = concat_mp4([chunk_path(out, c, "mp4") for c in range(n_chunks)], out / "overlay.mp4")
    write_text_atomic(out / "labelmap.txt", classes.labelmap_txt())
    write_json_atomic(out / "classes.json", classes.to_dict())
    valid = [f for f in flips if not math.isnan(f)]
    summary = {**summary, "frames": len(rows), "overlay_frames": n_video,
               "flicker": float(np.mean(valid)) if valid else None,
               "review_frames": int(sum(bool(r.get("review")) for r in rows))}
    if truth is not None and total_cm is not None:
        from ..scoring.metrics import summarize

        s = summarize(total_cm, classes.names)
        summary["truth"] = {"miou": s["miou"], "per_class_iou": s["per_class_iou"],
                            "pixel_accuracy": s["pixel_accuracy"],
                            "per_frame_miou_min": float(np.nanmin(per_frame_miou)),
                            "per_frame_miou_mean": float(np.nanmean(per_frame_miou))}
    write_json_atomic(out / "summary.json", summary)
    shutil.rmtree(parts_dir(out), ignore_errors=True)
    return summary


def warm_table_imports() -> None:
    """Import what `write_table` needs (pandas, pyarrow: about 0.3 s) ahead of time, on a thread started with
    the run, so the import overlaps the UNet instead of delaying the final files."""
    try:
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except Exception:  # noqa: BLE001 - write_table reports a real import problem where it happens
        pass


def write_table(out: Path, rows: list[dict[str, Any]]) -> None:
    """table.csv and table.parquet (pyarrow), both atomically."""
    import pandas as pd

    df = pd.DataFrame(rows)
    write_text_atomic(out / "table.csv", df.to_csv(index=False, float_format="%.6g"))
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    write_bytes_atomic(out / "table.parquet", buf.getvalue())


def discard_parts(out: Path, remove_out: bool) -> None:
    """Remove `.parts/` of a run that can never finish (its input is corrupt or truncated); OUT too when
    `remove_out` and nothing else is in it. Final files of another run are never touched."""
    shutil.rmtree(parts_dir(out), ignore_errors=True)
    if remove_out:
        try:
            out.rmdir()  # only when empty
        except OSError:
            pass


def clear_final(out: Path) -> None:
    """Remove final files of an earlier, different run (only ours, by name) before a fresh one."""
    for name in FINAL_FILES:
        (out / name).unlink(missing_ok=True)
