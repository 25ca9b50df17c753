"""The files of a local folder as object names, for the emulators' ``upload_dir``."""

from __future__ import annotations

import os
from pathlib import Path


def files_to_upload(local_dir: str | os.PathLike[str], prefix: str = "") -> list[tuple[str, Path]]:
    """Every file under ``local_dir`` with its object name ``prefix/relative/path``, sorted.

    Raises
    ------
    NotADirectoryError
        ``local_dir`` is not a directory.
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    return [
        ("/".join(filter(None, [prefix.strip("/"), path.relative_to(root).as_posix()])), path)
        for path in sorted(p for p in root.rglob("*") if p.is_file())
    ]
