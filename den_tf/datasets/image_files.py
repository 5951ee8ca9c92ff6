"""Shared parts of the builders that read image folders: layout checks and unreadable files.

A folder in the wrong layout stops the build with a message saying what was expected where; an
image file that cannot be decoded (corrupt, truncated, wrong size) is skipped, and all skipped
files of a split are counted and listed in one warning when the split is finished.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class DatasetLayoutError(ValueError):
    """A dataset folder does not have the expected layout."""


class UnreadableImageError(Exception):
    """An image file that is skipped: it cannot be decoded or is not what the dataset expects."""


def require(path: Path, what: str, layout: str) -> Path:
    """``path`` if it exists, else DatasetLayoutError naming ``what`` and the ``layout``."""
    if not path.exists():
        raise DatasetLayoutError(f"expected {what} at {path}, but it does not exist. {layout}")
    return path


def require_class_folders(folder: Path, wnids: Iterable[str], what: str, layout: str) -> None:
    """Raises DatasetLayoutError listing the class folders ``folder/<wnid>`` that are missing."""
    missing = [w for w in wnids if not (folder / w).is_dir()]
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        raise DatasetLayoutError(
            f"expected {what} in per-class folders {folder}/<wnid>/, but {len(missing)} are "
            f"missing: {shown}. {layout}"
        )


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def class_images(folder: Path, what: str, layout: str) -> list[Path]:
    """``image_files(folder)``, or DatasetLayoutError naming ``what`` if there are none: a
    class with no images (an incomplete copy) would otherwise train on nothing, silently."""
    files = image_files(folder)
    if not files:
        raise DatasetLayoutError(
            f"expected {what} in {folder}, but it holds no image files "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); an incomplete copy or extraction? {layout}")
    return files


def open_image(path: Path, draft_size: int | None = None) -> tuple[bytes, Image.Image]:
    """The file's bytes and its fully decoded image; UnreadableImageError if it cannot be decoded.

    ``draft_size`` lets the JPEG decoder scale down by a power of two while staying at least that
    size on both sides, which makes decoding large photos several times faster.
    """
    try:
        data = path.read_bytes()
        image = Image.open(io.BytesIO(data))
        if draft_size is not None:
            image.draft("RGB", (draft_size, draft_size))
        image.load()
    except UnidentifiedImageError as e:  # its message names the BytesIO, not the file
        raise UnreadableImageError("not an image file PIL can identify") from e
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for corrupt/truncated files
        raise UnreadableImageError(f"{type(e).__name__}: {e}") from e
    return data, image


def generate_examples(
    items: Iterable[tuple[Path, str]], encode: Callable[[Path], Any], description: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """TFDS examples (key = file name) from (image file, label) pairs, skipping unreadable files.

    ``encode`` turns a file into what the ``image`` feature takes, or raises UnreadableImageError.
    The skipped files are listed in one warning at the end, naming ``description``.
    """
    skipped = []
    for path, label in items:
        if not path.is_file():  # listed but absent: the copy is incomplete, not the file corrupt
            raise DatasetLayoutError(f"{description}: {path} is listed but does not exist; an "
                                     "incomplete copy or extraction?")
        try:
            image = encode(path)
        except UnreadableImageError as e:
            skipped.append(f"{path}: {e}")
            continue
        yield path.name, {"image": image, "label": label, "file_name": path.name}
    if skipped:
        warnings.warn(
            f"{description}: skipped {len(skipped)} unreadable image file(s):\n  "
            + "\n  ".join(skipped),
            stacklevel=2,
        )
