"""GRIB2 -> `ManifestGroup`, through kerchunk's GRIB scanner.

``kerchunk.grib2.scan_grib`` (eccodes + cfgrib) references each GRIB message as one chunk
whose bytes the numcodecs ``grib`` codec (kerchunk's) decodes with eccodes; coordinates
(latitude, longitude, level, time...) come inline.  The references go through the one
translator (`zarr_manifest.builders.kerchunk.from_kerchunk_refs`).

Layout:

- ``tree=True`` (default): kerchunk's ``grib_tree`` hierarchy ``<variable>/<stepType>/
  <typeOfLevel>/`` with the messages of each variable concatenated along time/step/level
  (messages whose variable eccodes cannot name, "unknown", are left out by ``grib_tree``);
- ``tree=False``: one group ``message_<i>`` per message, as ``scan_grib`` sees it.

Zarr v3 has no GRIB codec of its own: `GribCodec` is the Zarr v3 (array->bytes) form of the
numcodecs ``grib`` codec, registered with zarr as ``numcodecs.grib`` (the name zarr gives the
v3 wrapper of a numcodecs codec).  Readers need it registered: importing this module does it,
and the package's ``zarr.codecs`` entry point does it for zarr on its own.  Decoding needs
eccodes (``pip install eccodes cfgrib``).
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import JSON, parse_named_configuration
from zarr.registry import register_codec

from zarr_manifest.builders._source import Source, open_source
from zarr_manifest.builders.kerchunk import expand_refs, from_kerchunk_refs, url_to_fsspec_path
from zarr_manifest.errors import BuildError, UnsupportedError
from zarr_manifest.group import ManifestGroup

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

__all__ = ["GRIB_CODEC_NAME", "GribCodec", "build_grib", "grib_refs"]

#: The Zarr v3 codec name of GRIB messages.
GRIB_CODEC_NAME = "numcodecs.grib"


@dataclass(frozen=True)
class GribCodec(ArrayBytesCodec):
    """Decode one GRIB message (a chunk) into its field, with eccodes (read-only).

    Parameters
    ----------
    var
        The variable the chunk holds: ``"latitude"``/``"longitude"`` read the grid's
        coordinates, anything else the message's values (missing values become NaN).
    dtype
        The numpy dtype eccodes' values are returned as (kerchunk's ``dtype``).
    """

    is_fixed_size = False

    var: str
    dtype: str | None

    def __init__(self, *, var: str, dtype: str | None = None) -> None:
        object.__setattr__(self, "var", str(var))
        object.__setattr__(self, "dtype", None if dtype is None else str(dtype))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(
            data, GRIB_CODEC_NAME, require_configuration=True
        )
        return cls(**(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        conf: dict[str, JSON] = {"var": self.var}
        if self.dtype is not None:
            conf["dtype"] = self.dtype
        return {"name": GRIB_CODEC_NAME, "configuration": conf}

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        from kerchunk.codecs import GRIBCodec as NumcodecsGrib

        values = NumcodecsGrib(var=self.var, dtype=self.dtype).decode(chunk_bytes.to_bytes())
        native = chunk_spec.dtype.to_native_dtype()
        arr = np.asarray(values).astype(native, copy=False)
        if arr.size != int(np.prod(chunk_spec.shape)):
            raise ValueError(
                f"GRIB message holds {arr.size} values, the chunk has shape {chunk_spec.shape}"
            )
        return chunk_spec.prototype.nd_buffer.from_numpy_array(arr.reshape(chunk_spec.shape))

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        raise UnsupportedError("GRIB messages can be read, not written: load the data instead")

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise UnsupportedError("the size of an encoded GRIB message is not known in advance")


register_codec(GRIB_CODEC_NAME, GribCodec)


def _check_layout(source: Source) -> int:
    """Walk the GRIB2 message headers; the number of messages.

    kerchunk's scanner loops forever on bytes after the last message (and on files without
    any), and splits GRIB1 messages wrongly, so such files are refused here first.  Bytes
    between messages (bulletin headers) are skipped, as kerchunk does.

    Raises
    ------
    BuildError
        No message, a truncated message, or trailing bytes after the last message.
    UnsupportedError
        A GRIB edition 1 message.
    """
    block = 1 << 16
    with source.open() as f:
        size = f.seek(0, 2)
        offset = 0
        count = 0
        while offset < size:
            f.seek(offset)
            head = bytes(f.read(16))
            if not head.startswith(b"GRIB"):
                # skip to the next "GRIB" (kerchunk does the same between messages)
                f.seek(offset)
                found = -1
                while found < 0 and f.tell() < size:
                    start = f.tell()
                    chunk = bytes(f.read(block))
                    found = chunk.find(b"GRIB")
                    if found >= 0:
                        offset = start + found
                    elif len(chunk) > 3:
                        f.seek(start + len(chunk) - 3)  # "GRIB" may straddle two blocks
                    else:
                        break
                if found < 0:
                    what = "bytes after the last GRIB message" if count else "no GRIB message"
                    raise BuildError(f"{source.url}: {what} (from offset {offset} of {size})")
                continue
            if len(head) < 16:
                raise BuildError(f"{source.url}: truncated GRIB message at offset {offset}")
            if head[7] != 2:
                raise UnsupportedError(
                    f"{source.url}: the message at offset {offset} is GRIB edition {head[7]}; "
                    "only GRIB2 is supported (kerchunk's scanner)"
                )
            length = int.from_bytes(head[8:16], "big")
            if length < 16 or offset + length > size:
                raise BuildError(f"{source.url}: truncated GRIB message at offset {offset}")
            offset += length
            count += 1
    if not count:
        raise BuildError(f"{source.url}: no GRIB message")
    return count


def grib_refs(
    source: Source, *, tree: bool = True, filter: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """kerchunk references (version 0, expanded) of a GRIB file.

    Raises
    ------
    BuildError
        eccodes cannot read the file, or it holds no message (after ``filter``).
    UnsupportedError
        eccodes / cfgrib are not installed.
    """
    try:
        from kerchunk.grib2 import grib_tree, scan_grib
    except ImportError as e:
        raise UnsupportedError(f"{source.url}: GRIB needs eccodes and cfgrib ({e})") from e
    _check_layout(source)
    raw = url_to_fsspec_path(source.url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            messages = scan_grib(raw, filter=dict(filter or {}))
    except Exception as e:  # eccodes/cfgrib raise assorted errors on bad input
        raise BuildError(f"{source.url}: not a readable GRIB file ({type(e).__name__}: {e})") from e
    if not messages:
        raise BuildError(f"{source.url}: no GRIB messages found (filter {dict(filter or {})})")
    if tree:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                combined = grib_tree(messages)
        except Exception as e:  # grib_tree asserts its assumptions about the messages
            raise BuildError(
                f"{source.url}: kerchunk's grib_tree cannot combine the messages ({e}); "
                "use tree=False for one group per message"
            ) from e
        return expand_refs(combined, location=source.url)
    refs: dict[str, Any] = {".zgroup": '{"zarr_format": 2}', ".zattrs": "{}"}
    for i, message in enumerate(messages):
        for key, value in expand_refs(message, location=source.url).items():
            refs[f"message_{i}/{key}"] = value
    return refs


def build_grib(
    source: Source | str | os.PathLike[str],
    *,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] = (),
    tree: bool = True,
    filter: Mapping[str, Any] | None = None,
    **options: Any,
) -> ManifestGroup:
    """Reference the messages of a GRIB file in place.

    Parameters
    ----------
    source
        The file: a `Source`, local path or URL (remote URLs need an fsspec backend for the
        scheme, which kerchunk's scanner opens the file with).
    group
        A group of the hierarchy to start from (``"t/instant/isobaricInhPa"``).
    drop, load
        Arrays to leave out / read now, by path relative to ``group``.
    tree
        kerchunk's ``grib_tree`` hierarchy (True) or one group per message (False).
    filter
        cfgrib-style key filter passed to ``scan_grib`` (``{"typeOfLevel": "surface"}``).
    **options
        obstore options when ``source`` is a path or URL.

    Raises
    ------
    BuildError
        Not a GRIB file; no messages; unknown ``group``/``drop``/``load``.
    UnsupportedError
        eccodes/cfgrib not installed.
    """
    if not isinstance(source, Source):
        source = open_source(source, **options)
    elif options:
        raise TypeError(f"build_grib: unexpected options {sorted(options)}")
    refs = grib_refs(source, tree=tree, filter=filter)
    return from_kerchunk_refs(refs, group=group, drop=drop, load=load, location=source.url)
