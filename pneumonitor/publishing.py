"""Writing output files and folders so that no reader ever sees a partial one; the one HTML page shell.

Every writer of the package and of the apps goes through this module:

* **files**: :func:`atomic_path` hands out a hidden temporary sibling ``.<name>.<pid>-<random>.tmp<ext>`` (``<ext>``
  is the target's format suffix, ``.png`` or ``.nii.gz``, for writers that infer the format from the name); when the
  ``with`` block ends it is renamed onto the target (``os.replace``: atomic on one file system), when the block
  raises (any exception, Ctrl-C, the ``KeyboardInterrupt`` that ``analyze`` turns SIGTERM into) it is removed.
  :func:`write_text`, :func:`write_bytes`, :func:`write_json`, :func:`write_csv`, :func:`write_png` and
  :func:`save_figure` are the usual cases. Files get the permissions of a plain ``open`` (0666 less the umask).
* **folders**: :func:`atomic_folder` builds a whole folder under ``.<name>.<pid>-<random>.tmp`` and renames it onto
  the target when complete (an existing target is replaced as a whole); on failure the temporary folder is removed.
* **leftovers**: a killed process cannot clean up; :func:`remove_stale_temporaries` removes the temporaries in a
  folder whose process is gone (never those of a live process: two runs may share a folder).
* **JSON**: one NaN policy: NaN and +-inf are written as ``null``, so every JSON file is strict JSON
  (``allow_nan=False``); numpy scalars and arrays become numbers and lists, paths and other objects their text.
* **HTML**: :func:`html_page` is the shell of the three reports (evaluation, monitoring, duality study).
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_folder",
    "write_text",
    "write_bytes",
    "write_json",
    "json_safe",
    "write_csv",
    "write_png",
    "save_figure",
    "remove_stale_temporaries",
    "html_page",
    "DISCLAIMER",
]

#: what every temporary name carries (``.<name>.<pid>-<random>.tmp[<ext>]``)
TEMPORARY_MARK = ".tmp"
#: a temporary of this module, or of the writers before it (``.<name>.tmp``, Deploy's ``.<uid>.partial-<pid>``)
_TEMPORARY = re.compile(
    r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)-[0-9a-f]+\.tmp(?:\.[A-Za-z0-9]+){0,2}|tmp(?:\.[A-Za-z0-9]+)?"
    r"|partial-(?P<old_pid>\d+))$"
)
#: the line every report ends with
DISCLAIMER = "Research software, not for clinical use."


def _format_suffix(path: Path) -> str:
    """The suffix that names the file format: ``.nii.gz`` for compressed NIfTI, else the last one."""
    suffixes = [s for s in path.suffixes if s.replace(".", "").isalnum()]
    if len(suffixes) >= 2 and suffixes[-1].lower() == ".gz":
        return "".join(suffixes[-2:])
    return path.suffix if path.suffix.replace(".", "").isalnum() else ""


def _temporary_name(path: Path, folder: bool = False) -> Path:
    tail = "" if folder else _format_suffix(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMPORARY_MARK}{tail}")


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """A new, empty temporary file next to ``path`` to write into; renamed onto ``path`` when the block succeeds.

    For writers that take a file name (``torch.save``, ``DataFrame.to_csv``, SimpleITK): the temporary name ends
    with the target's format suffix. On any exception the temporary file is removed and the target is untouched.
    ``durable``: the file and the rename are on disk (``fsync``) when the block ends, for what a person made (the
    Label app's labels); outputs that a run can write again skip the cost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temporary_name(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # 0666 less the umask, as open()
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A new temporary folder next to ``path`` to build into; it replaces ``path`` (as a whole) when the block
    succeeds, and is removed when the block raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    building = _temporary_name(path, folder=True)
    building.mkdir(0o777)
    try:
        yield building
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise FileExistsError(f"{path} exists and is not a folder; not replaced")
        if path.exists():
            retired = _temporary_name(path, folder=True)
            path.rename(retired)
            try:
                building.rename(path)
            except BaseException:
                retired.rename(path)  # the earlier folder stays in place
                raise
            shutil.rmtree(retired, ignore_errors=True)
        else:
            building.rename(path)
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """``value`` with NaN and +-inf replaced by ``None`` (recursively, numpy included): the module's NaN policy."""
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":  # numpy scalars and arrays
        return json_safe(value.tolist())
    return value


def _json_default(value: Any) -> Any:
    return str(value)  # Path, dtype, anything else a settings dict may hold: its text


def write_json(path: str | os.PathLike, payload: Any, indent: int | None = 2) -> Path:
    """Write ``payload`` as strict JSON (NaN and inf as ``null``, see :func:`json_safe`), ending with a newline."""
    text = json.dumps(json_safe(payload), indent=indent, default=_json_default, allow_nan=False)
    return write_text(path, text + "\n")


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str],
              **options: Any) -> Path:
    """Write ``rows`` under a header of ``fieldnames`` (``csv.DictWriter`` ``options``, e.g. ``restval``)."""
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fieldnames), **options)
            writer.writeheader()
            writer.writerows(rows)
    return Path(path)


def unit_to_uint8(array: Any) -> Any:
    """A [0, 1] map as 8-bit: ``round(255 * clip(x, 0, 1))`` (how heatmaps, masks and packed maps are stored)."""
    import numpy as np

    return np.rint(np.clip(np.asarray(array, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def write_png(path: str | os.PathLike, array: Any, compress_level: int = 6, durable: bool = False) -> Path:
    """Write a ``[H, W]`` or ``[H, W, 3]`` uint8 array as PNG atomically (bool masks as 0/255).

    ``compress_level`` is zlib's (Pillow's default 6; 1 is ~5x faster on 1-4 MP images and masks stay small);
    ``durable``: see :func:`atomic_path`."""
    import numpy as np
    from PIL import Image

    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    with atomic_path(path, durable=durable) as tmp:
        Image.fromarray(array.astype(np.uint8, copy=False)).save(tmp, format="PNG", compress_level=compress_level)
    return Path(path)


def save_figure(figure: Any, path: str | os.PathLike, close: bool = True, **savefig: Any) -> Path:
    """Save a matplotlib ``figure`` as PNG atomically (``savefig`` options: ``dpi``, ``bbox_inches``); closes it."""
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", **savefig)
    finally:
        if close:
            import matplotlib.pyplot as plt

            plt.close(figure)
    return Path(path)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process's own leftover: whatever wrote it has finished or failed
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(*folders: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders in ``folders`` (not below) whose writing process is gone; returns them.

    Names without a process id (``.<name>.tmp``, written before this module) count as stale, and so do this
    process's own: call it before this process starts writing there. Links and other names are never touched."""
    removed = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for path in folder.glob(".*"):
            match = _TEMPORARY.match(path.name)
            if match is None or path.is_symlink():
                continue
            pid = match["pid"] or match["old_pid"]
            if pid is not None and _process_alive(int(pid)):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_file():
                path.unlink(missing_ok=True)
            else:
                continue
            removed.append(path)
    return removed


def html_page(title: str, body: str, style: str = "", note: str = DISCLAIMER) -> str:
    """A self-contained HTML page: ``title`` (escaped), the report's ``style`` sheet, ``body`` (HTML), ``note``
    (escaped) at the end."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n{body}\n<p class=\"note\">{html.escape(note)}</p></body></html>\n"
    )
