"""The corpus' ENVI entry: spectral's values of an ENVI image, as ``open_virtual`` names them.

Registered by ``tests/corpus/corpus.py``::

    from envi_format import envi_features, envi_magic, envi_reference
    register(Format("envi", envi_magic, envi_reference, envi_features))

A corpus file is the ``.hdr`` header (the data file beside it has no magic bytes; the
packages' ``keep`` patterns collect it).  ``open_virtual`` gives one array, ``data``, of
shape ``(band, line, sample)`` whatever the interleave; spectral's memory map in ``bsq``
order has that shape, with the raw values (no ``reflectance scale factor``).  spectral does
not read whole-file gzip images (``file compression = 1``): the reference then gunzips the
data file into a temporary folder and lets spectral read that, under the same header
without the compression line.
"""

from __future__ import annotations

import gzip
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["envi_features", "envi_magic", "envi_reference"]

_COMPRESSED = re.compile(r"^\s*file compression\s*=\s*1\s*$", re.IGNORECASE | re.MULTILINE)


def envi_magic(head: bytes) -> bool:
    """An ENVI header's first line is ``ENVI``."""
    return head.startswith(b"ENVI") and head[4:5] in (b"\r", b"\n", b" ", b"")


def _bsq(header: Path) -> np.ndarray:
    import spectral.io.envi as envi

    image = envi.open(str(header))
    return np.array(image.open_memmap(interleave="bsq"))


def envi_reference(path: Path) -> dict[str, Any]:
    """``{"data": values (band, line, sample)}`` as spectral reads the image of ``path``."""
    import spectral.io.envi as envi

    text = path.read_text(errors="replace")
    if not _COMPRESSED.search(text):
        return {"data": _bsq(path)}
    data = Path(envi.open(str(path)).filename)
    with tempfile.TemporaryDirectory() as tmp:
        header = Path(tmp) / path.name
        header.write_text(_COMPRESSED.sub("", text))
        (Path(tmp) / data.name).write_bytes(gzip.decompress(data.read_bytes()))
        return {"data": _bsq(header)}


def envi_features(path: Path) -> set[str]:
    """Interleave, data type, byte order and compression of the header's image."""
    from zarr_manifest.builders.envi import parse_envi_header

    fields = parse_envi_header(path.read_text(errors="replace"))
    out = {
        f"interleave:{fields.get('interleave', 'bsq').lower()}",
        f"data type:{fields.get('data type', '?')}",
        "byte order:big" if fields.get("byte order", "0").strip() == "1" else "byte order:little",
    }
    if fields.get("file compression", "0").strip() == "1":
        out.add("compression:gzip")
    if int(fields.get("header offset", "0") or 0):
        out.add("header offset")
    return out
