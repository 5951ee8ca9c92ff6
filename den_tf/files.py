"""Files that mark or feed later steps, written so that an interruption never leaves part of
one: the old file stays, or none."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from typing import IO, Any


def check_local(directory: str) -> None:
    """Raises ValueError for a URL (gs://, s3://...): results, configs and figures are written
    with Python's file functions, which would put its files in a local folder named after it
    while TensorFlow's checkpoints went to the URL."""
    if "://" in directory:
        raise ValueError(
            f"{directory}: the work directory must be a local path (or a mounted one); on a "
            "Cloud TPU VM use the VM's disk and copy the directory to a bucket afterwards")


@contextlib.contextmanager
def replaced_atomically(path: str, binary: bool = False) -> Iterator[IO]:
    """An open file that replaces ``path`` once the block completes: it is written beside it
    (``<path>.partial``) and renamed, so readers see the old file or the whole new one."""
    partial = path + ".partial"
    with open(partial, "wb" if binary else "w") as f:
        yield f
    os.replace(partial, path)


@contextlib.contextmanager
def replaced_directory(path: str) -> Iterator[str]:
    """A new directory to fill, which replaces ``path`` once the block completes: it is
    filled beside it (``<path>.partial``, removed if the block fails), then renamed into
    place, the old directory moved aside (``<path>.old``) just before and removed after. So
    ``path`` holds the old directory or the whole new one, never a mix (an export whose
    model is new and whose manifest is old would load); a process killed between the two
    renames leaves the old one at ``<path>.old``."""
    path = os.path.normpath(path)  # ("export/" would put its siblings inside it)
    partial, old = path + ".partial", path + ".old"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    had_old = os.path.exists(path)
    if had_old:
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    try:
        os.replace(partial, path)
    except BaseException:
        if had_old:
            os.replace(old, path)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float (nested in dicts, lists and tuples) made
    None, which JSON writes as null: Python's NaN token is not JSON, and other readers fail
    on it (a quintile of fewer than five instances has no accuracy)."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, value: dict | list) -> None:
    """``value`` as strict JSON at ``path`` (``finite_or_none``), replaced atomically:
    results.json and budget.json mark a finished run and measurement (``sweep.run_seeds``
    skips what they mark)."""
    with replaced_atomically(path) as f:
        json.dump(finite_or_none(value), f, indent=1, allow_nan=False)
