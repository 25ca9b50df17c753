"""Regenerate the conformance examples of the ``chunk-manifest-json`` format.

Usage (from anywhere, with the project's Python)::

    python spec/examples/generate.py            # rewrite spec/examples/{valid,invalid}
    python spec/examples/generate.py --out DIR  # write them under DIR instead

Every example is a directory holding ``store/`` (a manifest store, see
``spec/chunk-manifest-json.md``) and either ``expected.json`` (valid examples: the values a
reader must return for every array) or ``expected-error.json`` (invalid examples: the error a
reader must raise).  Raw data files live inside the store root, under ``store/data/``, and
are referenced relatively from the manifests, so a checkout can be opened wherever it lies.

The output is deterministic: the same numpy, numcodecs (zstd) and zlib give byte-identical
files.  Only numpy, numcodecs, orjson, the standard library and zarr's metadata classes are
used; chunk bytes are encoded here by hand (not through zarr's codec pipeline) so that the
examples check a reader against an independent encoder.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import struct
import urllib.parse
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import orjson
from zarr.core.group import GroupMetadata
from zarr.core.metadata.v3 import ArrayV3Metadata

HERE = Path(__file__).resolve().parent
TRANSFORMER = "chunk-manifest-json"
# The top-level member of a referenced array's zarr.json that makes plain Zarr readers fail
# (section 4, rule 10): named as the transformer, and to be understood.
GUARD_MEMBER = TRANSFORMER
GUARD = {"must_understand": True}
MAX_INT64 = 2**63 - 1

JSON = Any
ChunkIndex = tuple[int, ...]

# Member order of a written array zarr.json: the order the Zarr v3 spec lists them in.
ARRAY_KEY_ORDER = (
    "zarr_format",
    "node_type",
    "shape",
    "data_type",
    "chunk_grid",
    "chunk_key_encoding",
    "fill_value",
    "codecs",
    "attributes",
    "dimension_names",
    "storage_transformers",
)


def bytes_codec(endian: str | None = "little") -> dict[str, JSON]:
    """The Zarr v3 ``bytes`` codec (``endian=None`` for one-byte data types)."""
    if endian is None:
        return {"name": "bytes"}
    return {"name": "bytes", "configuration": {"endian": endian}}


def gzip_codec(level: int) -> dict[str, JSON]:
    """The Zarr v3 ``gzip`` codec."""
    return {"name": "gzip", "configuration": {"level": level}}


def zstd_codec(level: int) -> dict[str, JSON]:
    """The Zarr v3 ``zstd`` codec (no content checksum)."""
    return {"name": "zstd", "configuration": {"level": level, "checksum": False}}


DEFAULT_SLASH = {"name": "default", "configuration": {"separator": "/"}}
DEFAULT_DOT = {"name": "default", "configuration": {"separator": "."}}
V2_DOT = {"name": "v2", "configuration": {"separator": "."}}
V2_SLASH = {"name": "v2", "configuration": {"separator": "/"}}


def dump_json(path: Path, obj: JSON) -> None:
    """Write ``obj`` as indented UTF-8 JSON, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")


def load_json(path: Path) -> JSON:
    """Read a JSON file."""
    return orjson.loads(path.read_bytes())


def json_values(values: np.ndarray) -> JSON:
    """Nested lists of ``values``; non-finite floats become "NaN", "Infinity", "-Infinity".

    JSON has no NaN or infinity, so the strings Zarr v3 uses for such fill values stand in.
    """

    def convert(v: JSON) -> JSON:
        if isinstance(v, list):
            return [convert(x) for x in v]
        if isinstance(v, float) and not np.isfinite(v):
            return "NaN" if np.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
        return v

    return convert(values.tolist())


def manifest_key(index: ChunkIndex) -> str:
    """The manifest key of a chunk: grid indices joined by ".", "0" for a 0-d array."""
    return ".".join(str(i) for i in index) if index else "0"


def gzip_member(data: bytes, level: int) -> bytes:
    """One gzip member (RFC 1952) with a fixed header: no time stamp, no name, OS "unknown".

    numcodecs.GZip stamps the current time into the header and ``gzip.compress`` the OS of
    the Python build; a fixed header keeps the examples identical wherever they are made.
    Any gzip decoder (numcodecs.GZip, so zarr's ``gzip`` codec) reads it.
    """
    deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflate.compress(data) + deflate.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # magic, deflate, no flags, mtime 0
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def encode_chunk(block: np.ndarray, codecs: list[dict[str, JSON]]) -> bytes:
    """Encode one full-size chunk with a ``bytes`` codec followed by bytes-to-bytes codecs.

    Parameters
    ----------
    block
        The chunk's values, already padded to the full chunk shape.
    codecs
        The array's codec list, as in zarr.json.
    """
    data = b""
    for codec in codecs:
        name = codec["name"]
        conf = codec.get("configuration", {})
        if name == "bytes":
            order = {"little": "<", "big": ">"}.get(conf.get("endian", ""), "|")
            data = np.ascontiguousarray(block, dtype=block.dtype.newbyteorder(order)).tobytes()
        elif name == "gzip":
            data = gzip_member(data, conf["level"])
        elif name == "zstd":
            data = numcodecs.Zstd(level=conf["level"], checksum=conf["checksum"]).encode(data)
        else:
            raise ValueError(f"generate.py cannot encode codec {name!r}")
    return data


@dataclass
class Ref:
    """A byte range of a data file."""

    file: DataFile
    offset: int
    length: int


class DataFile:
    """A raw data file under ``store/data/`` that chunks are appended to."""

    def __init__(self, path: Path, header: bytes = b"") -> None:
        self.path = path
        # A non-empty header makes offsets start past 0, as in real container files.
        self.content = bytearray(header)

    def append(self, blob: bytes) -> Ref:
        """Append ``blob`` and return its range."""
        ref = Ref(self, len(self.content), len(blob))
        self.content += blob
        return ref


@dataclass
class ArraySpec:
    """An array of an example: its values and how it is chunked and encoded.

    ``missing`` lists chunk grid indices that are not stored (the reader returns the fill
    value there); ``pad`` is what fills the part of a boundary chunk that lies outside the
    array (the fill value when ``None``); readers must ignore it.
    """

    path: str
    values: np.ndarray
    chunks: tuple[int, ...]
    codecs: list[dict[str, JSON]]
    fill_value: JSON
    dimension_names: list[str] | None = None
    attributes: dict[str, JSON] = field(default_factory=dict)
    chunk_key_encoding: dict[str, JSON] = field(default_factory=lambda: dict(DEFAULT_SLASH))
    missing: frozenset[ChunkIndex] = frozenset()
    pad: JSON = None

    def metadata(self) -> ArrayV3Metadata:
        """Zarr's own parse of this array's zarr.json (without storage transformers)."""
        doc: dict[str, JSON] = {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(self.values.shape),
            "data_type": str(self.values.dtype.newbyteorder("=")),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(self.chunks)}},
            "chunk_key_encoding": self.chunk_key_encoding,
            "fill_value": self.fill_value,
            "codecs": self.codecs,
            "attributes": self.attributes,
        }
        if self.dimension_names is not None:
            doc["dimension_names"] = self.dimension_names
        return ArrayV3Metadata.from_dict(doc)

    def zarr_json(self) -> dict[str, JSON]:
        """The zarr.json document zarr itself would write, members in spec order."""
        d = self.metadata().to_dict()
        return {k: d[k] for k in ARRAY_KEY_ORDER if k in d}

    def grid_shape(self) -> tuple[int, ...]:
        """Number of chunks along each dimension (regular grid)."""
        return tuple(-(-s // c) for s, c in zip(self.values.shape, self.chunks, strict=True))

    def region(self, index: ChunkIndex) -> tuple[slice, ...]:
        """The part of the array that chunk ``index`` covers."""
        return tuple(
            slice(i * c, min((i + 1) * c, s))
            for i, c, s in zip(index, self.chunks, self.values.shape, strict=True)
        )

    def stored_chunks(self) -> dict[ChunkIndex, bytes]:
        """Encoded bytes of every stored chunk, in row-major grid order."""
        fill = self.metadata().fill_value
        pad = fill if self.pad is None else self.pad
        out: dict[ChunkIndex, bytes] = {}
        for index in np.ndindex(*self.grid_shape()):
            if index in self.missing:
                continue
            region = self.region(index)
            block = np.full(self.chunks, pad, dtype=self.values.dtype)
            block[tuple(slice(0, r.stop - r.start) for r in region)] = self.values[region]
            out[index] = encode_chunk(block, self.codecs)
        return out

    def expected(self) -> dict[str, JSON]:
        """The entry of expected.json: what a reader must return for this array."""
        meta = self.metadata()
        want = self.values.copy()
        for index in self.missing:
            want[self.region(index)] = meta.fill_value
        return {
            "dtype": meta.data_type.to_json(zarr_format=3),
            "shape": list(want.shape),
            "values": json_values(want),
        }


class Store:
    """Writes one manifest store (``<example>/store``) and its expected.json."""

    def __init__(self, example: Path) -> None:
        self.example = example
        self.root = example / "store"
        self.expected: dict[str, JSON] = {}
        self.files: list[DataFile] = []
        # What a Zarr library that does not know the format does with the store as stored
        # (plain-reader.json; section 4, rule 10), for the examples that show it.
        self.plain_reader: dict[str, JSON] | None = None

    def group(self, path: str, attributes: dict[str, JSON] | None = None) -> None:
        """Write a group's zarr.json (``path`` "" is the root group)."""
        dump_json(self.root / path / "zarr.json", GroupMetadata(attributes=attributes).to_dict())

    def data_file(self, name: str, header: bytes = b"") -> DataFile:
        """A new data file ``store/data/<name>``."""
        f = DataFile(self.root / "data" / name, header)
        self.files.append(f)
        return f

    def referenced(
        self,
        spec: ArraySpec,
        refs: dict[ChunkIndex, Ref],
        configuration: dict[str, JSON] | None = None,
        guard: bool = True,
    ) -> None:
        """Write a referenced array: zarr.json with the transformer, plus manifest.json.

        ``refs`` maps chunk indices to byte ranges; its order is the manifest's order.
        ``configuration`` replaces the transformer configuration ``{"manifest": ...}``;
        ``guard=False`` leaves out the plain-reader guard (the form written before it).
        """
        array_dir = self.root / spec.path
        doc = spec.zarr_json()
        conf = {"manifest": "./manifest.json"} if configuration is None else configuration
        doc["storage_transformers"] = [{"name": TRANSFORMER, "configuration": conf}]
        if guard:
            doc[GUARD_MEMBER] = dict(GUARD)
        dump_json(array_dir / "zarr.json", doc)
        manifest = {
            manifest_key(index): {
                "path": relative_reference(ref.file.path, array_dir),
                "offset": ref.offset,
                "length": ref.length,
            }
            for index, ref in refs.items()
        }
        dump_json(array_dir / "manifest.json", manifest)
        self.expected[spec.path] = spec.expected()

    def reference(
        self,
        spec: ArraySpec,
        file: DataFile,
        order: Callable[[list[ChunkIndex]], Iterable[ChunkIndex]] = list,
        guard: bool = True,
    ) -> dict[ChunkIndex, Ref]:
        """Append ``spec``'s chunks to ``file`` (in ``order``) and write the array."""
        blobs = spec.stored_chunks()
        refs = {index: file.append(blobs[index]) for index in order(list(blobs))}
        self.referenced(spec, refs, guard=guard)
        return refs

    def inline(self, spec: ArraySpec) -> None:
        """Write an ordinary Zarr v3 array: chunks stored in the hierarchy."""
        array_dir = self.root / spec.path
        dump_json(array_dir / "zarr.json", spec.zarr_json())
        meta = spec.metadata()
        for index, blob in spec.stored_chunks().items():
            chunk = array_dir / meta.encode_chunk_key(index)
            chunk.parent.mkdir(parents=True, exist_ok=True)
            chunk.write_bytes(blob)
        self.expected[spec.path] = spec.expected()

    def finish(self, expected: bool = True) -> None:
        """Write the data files, and expected.json unless told not to."""
        for f in self.files:
            f.path.parent.mkdir(parents=True, exist_ok=True)
            f.path.write_bytes(bytes(f.content))
        if expected:
            dump_json(self.example / "expected.json", dict(sorted(self.expected.items())))
        if self.plain_reader is not None:
            dump_json(self.example / "plain-reader.json", self.plain_reader)


def split_array(
    s: Store,
    array: str,
    region_shape: list[int],
    *,
    version: JSON = 1,
    stray: dict[str, JSON] | None = None,
) -> None:
    """Rewrite ``array``'s manifest.json as a split manifest (spec section 14).

    The entries go, in their order, to ``manifest/<region key>.json`` of the region
    ``index // region_shape`` of their key; ``index.json`` lists the regions that got an
    entry, in row-major order.  ``stray`` maps region keys to files written for regions
    that the index does not list (readers must ignore them).
    """
    array_dir = s.root / array
    manifest = load_json(array_dir / "manifest.json")
    (array_dir / "manifest.json").unlink()
    regions: dict[ChunkIndex, dict[str, JSON]] = {}
    for key, entry in manifest.items():
        index = tuple(int(i) for i in key.split(".")) if region_shape else ()
        region = tuple(i // r for i, r in zip(index, region_shape, strict=True))
        regions.setdefault(region, {})[key] = entry
    for region, entries in regions.items():
        dump_json(array_dir / "manifest" / f"{manifest_key(region)}.json", entries)
    for key, entries in (stray or {}).items():
        dump_json(array_dir / "manifest" / f"{key}.json", entries)
    dump_json(
        array_dir / "manifest" / "index.json",
        {"regions": [manifest_key(r) for r in sorted(regions)]},
    )
    doc = load_json(array_dir / "zarr.json")
    doc["storage_transformers"] = [
        {
            "name": TRANSFORMER,
            "configuration": {
                "manifest": "./manifest/",
                "split": {"version": version, "region_shape": region_shape},
            },
        }
    ]
    dump_json(array_dir / "zarr.json", doc)


def relative_reference(target: Path, array_dir: Path) -> str:
    """The relative URL reference from an array's directory to ``target``, percent-encoded."""
    return urllib.parse.quote(Path(os.path.relpath(target, array_dir)).as_posix(), safe="/")


# ---------------------------------------------------------------------------------------
# Valid examples.  Each function fills a Store; expected.json is derived from the ArraySpecs.
# ---------------------------------------------------------------------------------------


def valid_int32_1d(s: Store) -> None:
    """A 1-D uncompressed little-endian int32 array, two chunks back to back in one file.

    Its plain-reader.json says what a Zarr library that does not know the format must do
    with the store as stored: fail, because of the guard member."""
    s.group("", {"description": "1-D int32, bytes codec only"})
    spec = ArraySpec(
        "counts",
        np.arange(8, dtype="int32") * 3 - 7,
        (4,),
        [bytes_codec("little")],
        0,
        ["x"],
    )
    s.reference(spec, s.data_file("counts.bin"))
    s.plain_reader = {
        "fails": True,
        "arrays": ["counts"],
        "why": f'the zarr.json of "counts" holds the member "{GUARD_MEMBER}" with '
        '"must_understand": true, which a Zarr v3 reader that does not know it must refuse',
    }


def valid_float64_2d_bigendian_gzip(s: Store) -> None:
    """2-D big-endian float64 + gzip, and little-endian float32 + zstd.

    The data file starts with a header and holds the chunks in reverse grid order, and the
    manifest lists them in that order: neither offsets nor member order follow the grid.
    """
    s.group("", {"description": "compressed 2-D arrays"})
    temperature = np.arange(24, dtype=">f8").reshape(4, 6) * 0.25 - 1.5
    temperature[1, 4] = np.nan
    temperature[3, 0] = np.inf
    temperature[0, 5] = -np.inf
    f = s.data_file("temperature.bin", header=b"HEADER\n")
    s.reference(
        ArraySpec(
            "temperature",
            temperature,
            (2, 3),
            [bytes_codec("big"), gzip_codec(5)],
            "NaN",
            ["y", "x"],
            attributes={"long_name": "air temperature anomaly"},
        ),
        f,
        order=reversed,
    )
    pressure = (np.arange(24, dtype="<f4").reshape(4, 6) + 1000.5).astype("<f4")
    s.reference(
        ArraySpec(
            "pressure",
            pressure,
            (2, 3),
            [bytes_codec("little"), zstd_codec(3)],
            0.0,
            ["y", "x"],
        ),
        s.data_file("pressure.bin"),
    )


def valid_missing_chunks(s: Store) -> None:
    """Chunks absent from the manifest read as the fill value (int, NaN, and all-missing)."""
    s.group("", {"description": "sparse manifests"})
    s.reference(
        ArraySpec(
            "sparse_int",
            np.arange(24, dtype="int16").reshape(4, 6),
            (2, 3),
            [bytes_codec("little")],
            -9999,
            ["y", "x"],
            missing=frozenset({(0, 1), (1, 0)}),
        ),
        s.data_file("sparse_int.bin"),
    )
    s.reference(
        ArraySpec(
            "sparse_float",
            np.linspace(0.0, 2.3, 24, dtype="float32").reshape(4, 6),
            (2, 2),
            [bytes_codec("little"), gzip_codec(1)],
            "NaN",
            ["y", "x"],
            missing=frozenset({(0, 0), (0, 2), (1, 0), (1, 1)}),
        ),
        s.data_file("sparse_float.bin"),
    )
    # Nothing stored at all: manifest.json is {} and every element is the fill value.
    s.referenced(
        ArraySpec(
            "empty",
            np.zeros(3, dtype="uint8"),
            (2,),
            [bytes_codec(None)],
            7,
            ["z"],
            missing=frozenset({(0,), (1,)}),
        ),
        {},
    )


def valid_scalar_0d(s: Store) -> None:
    """0-d arrays: the one chunk has manifest key "0" (store key "c" or, for v2, "0")."""
    s.group("", {"description": "scalars"})
    f = s.data_file("scalars.bin")
    s.reference(
        ArraySpec("answer", np.array(42, dtype="int64"), (), [bytes_codec("little")], 0, []), f
    )
    s.reference(
        ArraySpec(
            "pi_v2",
            np.array(3.141592653589793, dtype="float64"),
            (),
            [bytes_codec("big"), gzip_codec(9)],
            0.0,
            [],
            chunk_key_encoding=dict(V2_DOT),
        ),
        f,
    )
    s.referenced(
        ArraySpec(
            "unset",
            np.array(0.0, dtype="float32"),
            (),
            [bytes_codec("little")],
            2.5,
            [],
            missing=frozenset({()}),
        ),
        {},
    )


def valid_chunk_key_encodings(s: Store) -> None:
    """The same manifest keys serve arrays of every chunk key encoding."""
    s.group("", {"description": "chunk key encodings"})
    encodings = {
        "default_slash": DEFAULT_SLASH,
        "default_dot": DEFAULT_DOT,
        "v2_dot": V2_DOT,
        "v2_slash": V2_SLASH,
    }
    f = s.data_file("encodings.bin")
    for n, (name, encoding) in enumerate(encodings.items()):
        s.reference(
            ArraySpec(
                name,
                (np.arange(16, dtype="uint16") + 100 * n).reshape(4, 4),
                (2, 2),
                [bytes_codec("little")],
                0,
                ["y", "x"],
                chunk_key_encoding=dict(encoding),
            ),
            f,
        )


def valid_uneven_last_chunk(s: Store) -> None:
    """Boundary chunks are stored at full chunk size; the padding is not array data.

    The padding is a sentinel unequal to the fill value, so a reader that leaks it fails.
    """
    s.group("", {"description": "shapes that are not multiples of the chunk shape"})
    s.reference(
        ArraySpec(
            "grid",
            np.arange(35, dtype="int32").reshape(5, 7) - 10,
            (2, 3),
            [bytes_codec("little"), zstd_codec(1)],
            0,
            ["y", "x"],
            pad=99999,
        ),
        s.data_file("grid.bin"),
    )
    s.reference(
        ArraySpec(
            "series",
            np.linspace(-1.0, 1.0, 10, dtype="float32"),
            (4,),
            [bytes_codec("little")],
            0.0,
            ["t"],
            pad=-1.0e30,
        ),
        s.data_file("series.bin"),
    )


def valid_nested_groups(s: Store) -> None:
    """Groups two levels deep, with attributes; paths climb back to the store's data/."""
    s.group("", {"title": "nested groups", "version": 1})
    s.group("model", {"description": "a model run", "tags": ["a", "b"]})
    s.group("model/run1", {"members": [1, 2, 3], "nested": {"ok": True}})
    f = s.data_file("model.bin")
    s.reference(
        ArraySpec(
            "model/run1/wind",
            (np.arange(12, dtype="float32").reshape(3, 4) * 1.5).astype("float32"),
            (3, 2),
            [bytes_codec("little"), gzip_codec(6)],
            "NaN",
            ["lat", "lon"],
            attributes={"long_name": "wind speed", "valid_range": [0.0, 50.0]},
        ),
        f,
    )
    s.reference(
        ArraySpec(
            "model/mask",
            np.array([True, False, False, True, True]),
            (3,),
            [bytes_codec(None)],
            False,
            ["station"],
            attributes={"flag_meaning": "station reported"},
        ),
        f,
    )


def valid_inline_array(s: Store) -> None:
    """Referenced data beside ordinary (inline) Zarr arrays, e.g. coordinates loaded in."""
    s.group("", {"description": "referenced and inline arrays"})
    s.reference(
        ArraySpec(
            "temperature",
            (np.arange(12, dtype="float32").reshape(3, 4) / 4).astype("float32"),
            (3, 2),
            [bytes_codec("little")],
            "NaN",
            ["time", "station"],
        ),
        s.data_file("temperature.bin"),
    )
    s.inline(
        ArraySpec(
            "time",
            np.array([0, 6, 12], dtype="int64"),
            (3,),
            [bytes_codec("little")],
            0,
            ["time"],
            attributes={"long_name": "hours after start"},
            chunk_key_encoding=dict(V2_DOT),
        )
    )
    # Chunk 1 has no file: inline arrays use Zarr's own rule, the fill value.
    s.inline(
        ArraySpec(
            "station",
            np.array([10, 20, 30, 40], dtype="int32"),
            (2,),
            [bytes_codec("little"), gzip_codec(4)],
            -1,
            ["station"],
            missing=frozenset({(1,)}),
        )
    )


def valid_shared_data_file(s: Store) -> None:
    """Two arrays interleaved in one file; a third whose two keys share one byte range."""
    s.group("", {"description": "one data file, many arrays"})
    f = s.data_file("uv.bin", header=b"UVFILE-v1\n\x00")
    u = ArraySpec(
        "u",
        np.array([1, 2, 3, 4, 5, 6], dtype="float32"),
        (3,),
        [bytes_codec("little")],
        0.0,
        ["x"],
    )
    v = ArraySpec(
        "v",
        np.array([-1, -2, -3, -4, -5, -6], dtype="float32"),
        (3,),
        [bytes_codec("little")],
        0.0,
        ["x"],
    )
    u_blobs, v_blobs = u.stored_chunks(), v.stored_chunks()
    u_refs: dict[ChunkIndex, Ref] = {}
    v_refs: dict[ChunkIndex, Ref] = {}
    for index in u_blobs:
        u_refs[index] = f.append(u_blobs[index])
        v_refs[index] = f.append(v_blobs[index])
    s.referenced(u, u_refs)
    s.referenced(v, v_refs)
    # Both chunks of "w" are the same bytes (deduplicated by the writer): allowed.
    w = ArraySpec(
        "w",
        np.array([7, 8, 9, 7, 8, 9], dtype="float32"),
        (3,),
        [bytes_codec("little")],
        0.0,
        ["x"],
    )
    shared = f.append(w.stored_chunks()[(0,)])
    s.referenced(w, {(0,): shared, (1,): shared})


def valid_ignorable_extension(s: Store) -> None:
    """An unknown configuration member marked ``must_understand: false`` may be ignored."""
    s.group("", {"description": "a forward-compatible extension member"})
    spec = ArraySpec(
        "a", np.array([5, -5, 6, -6], dtype="int8"), (2,), [bytes_codec(None)], 0, ["x"]
    )
    f = s.data_file("a.bin")
    blobs = spec.stored_chunks()
    refs = {index: f.append(blob) for index, blob in blobs.items()}
    s.referenced(
        spec,
        refs,
        configuration={
            "manifest": "./manifest.json",
            "x-region-index": {"must_understand": False, "path": "./regions.json"},
        },
    )


def valid_percent_encoded_path(s: Store) -> None:
    """A data file whose name has a space and a "#": written percent-encoded in the manifest."""
    s.group("", {"description": "percent-encoded references"})
    s.reference(
        ArraySpec(
            "a",
            np.array([1.5, 2.5, 3.5], dtype="float64"),
            (2,),
            [bytes_codec("little")],
            0.0,
            ["x"],
        ),
        s.data_file("run 1 #2.bin"),
    )


def valid_split_manifest(s: Store) -> None:
    """A split manifest: one file per region of 2 x 3 chunks, an absent region, and a file
    for that absent region that the index does not list (it must be ignored)."""
    s.group("", {"description": "split manifest (extension, version 1)"})
    spec = ArraySpec(
        "grid",
        np.arange(48, dtype="int16").reshape(6, 8) * 3 - 50,
        (2, 2),
        [bytes_codec("little")],
        -1,
        ["y", "x"],
        # (0, 1) lies in region 0.0, which has other chunks; (2, 3) is all of region 1.1
        missing=frozenset({(0, 1), (2, 3)}),
    )
    refs = s.reference(spec, s.data_file("grid.bin"))
    # The stray file points chunk (2, 3) at chunk (0, 0)'s bytes: a reader that reads it
    # returns those values instead of the fill value.
    first = refs[(0, 0)]
    stray = {"2.3": {"path": "../data/grid.bin", "offset": first.offset, "length": first.length}}
    split_array(s, "grid", [2, 3], stray={"1.1": stray})
    scalar = ArraySpec("scalar", np.array(7.25, dtype="float64"), (), [bytes_codec("big")], 0.0)
    s.reference(scalar, s.data_file("scalar.bin"))
    split_array(s, "scalar", [])


def valid_without_plain_reader_guard(s: Store) -> None:
    """A referenced array in the form written before the plain-reader guard (Appendix C):
    readers of the format still read it.  Its plain-reader.json shows why the guard exists:
    a Zarr library that ignores storage_transformers returns the fill value everywhere."""
    s.group("", {"description": "referenced array without the plain-reader guard"})
    spec = ArraySpec(
        "a", np.array([3.0, -1.5, 8.25, 0.5], dtype="float32"), (2,), [bytes_codec()], "NaN"
    )
    s.reference(spec, s.data_file("a.bin"), guard=False)
    meta = spec.metadata()
    s.plain_reader = {
        "fails": False,
        "sees": {
            "a": {
                "dtype": meta.data_type.to_json(zarr_format=3),
                "shape": list(spec.values.shape),
                "values": json_values(np.full(spec.values.shape, meta.fill_value)),
            }
        },
        "why": "zarr-python 3.4 opens the array through its group without looking at "
        "storage_transformers, finds no chunk files, and returns the fill value: silently "
        "wrong, which the guard member prevents",
    }


def sha256_checksum(blob: bytes) -> str:
    """The ``checksum`` member of an entry for ``blob``, SHA-256 (spec 5.5)."""
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def crc32c_checksum(blob: bytes) -> str:
    """The ``checksum`` member for ``blob``, CRC-32C: numcodecs' codec appends the value
    little-endian; the member spells it as 8 hex digits, most significant first."""
    value = int.from_bytes(numcodecs.CRC32C().encode(blob)[-4:], "little")
    return f"crc32c:{value:08x}"


def edit_array_manifest(s: Store, array: str, fn: Callable[[dict[str, Any]], None]) -> None:
    """Change ``array``'s manifest.json in place with ``fn``."""
    path = s.root / array / "manifest.json"
    manifest = load_json(path)
    fn(manifest)
    dump_json(path, manifest)


def valid_whole_object_entries(s: Store) -> None:
    """zarr-specs#287's whole-object entries (spec 5.5): each chunk of "a" is a file of its
    own, named by a path alone; its size is the file's.  One explicit entry beside them."""
    s.group("", {"description": "entries with a path only: the whole object is the chunk"})
    spec = ArraySpec("a", np.arange(10, dtype="int16") * 7 - 30, (4,), [bytes_codec()], 0, ["x"])
    blobs = spec.stored_chunks()
    refs = {index: s.data_file(f"a-{index[0]}.bin").append(blob) for index, blob in blobs.items()}
    s.referenced(spec, refs)

    def whole(manifest: dict[str, Any]) -> None:
        for key in ("0", "2"):
            del manifest[key]["offset"], manifest[key]["length"]

    edit_array_manifest(s, "a", whole)


def valid_checksums(s: Store) -> None:
    """Entries with a ``checksum`` (spec 5.5): CRC-32C and SHA-256 of each chunk's bytes,
    verified on read; one chunk without, one whole-object entry with one."""
    s.group("", {"description": "entries with checksums, verified on read"})
    spec = ArraySpec(
        "a",
        np.linspace(-1.0, 1.0, 12).reshape(3, 4),
        (1, 4),
        [bytes_codec(), gzip_codec(5)],
        "NaN",
        ["y", "x"],
    )
    blobs = spec.stored_chunks()
    shared = s.data_file("a.bin")
    refs = {(0, 0): shared.append(blobs[(0, 0)]), (1, 0): shared.append(blobs[(1, 0)])}
    refs[(2, 0)] = s.data_file("a-2.bin").append(blobs[(2, 0)])
    s.referenced(spec, refs)

    def checksums(manifest: dict[str, Any]) -> None:
        manifest["0.0"]["checksum"] = crc32c_checksum(blobs[(0, 0)])
        del manifest["2.0"]["offset"], manifest["2.0"]["length"]
        manifest["2.0"]["checksum"] = sha256_checksum(blobs[(2, 0)])

    edit_array_manifest(s, "a", checksums)


def valid_inline_manifest(s: Store) -> None:
    """zarr-specs#287's manifest inlined in the transformer configuration (spec 4.4):
    no manifest.json; the entries are the value of ``manifest``."""
    s.group("", {"description": "a manifest inlined in zarr.json"})
    spec = ArraySpec(
        "a", np.array([[1, 2, 3], [4, 5, 6]], dtype="uint8"), (1, 3), [bytes_codec()], 0
    )
    s.reference(spec, s.data_file("a.bin"))
    inline_the_manifest(s, "a")


def inline_the_manifest(s: Store, array: str) -> None:
    """Move ``array``'s manifest.json into its configuration."""
    manifest_path = s.root / array / "manifest.json"
    manifest = load_json(manifest_path)
    manifest_path.unlink()
    path = s.root / array / "zarr.json"
    doc = load_json(path)
    doc["storage_transformers"][0]["configuration"]["manifest"] = manifest
    dump_json(path, doc)


VALID: dict[str, Callable[[Store], None]] = {
    "int32-1d": valid_int32_1d,
    "float64-2d-bigendian-gzip": valid_float64_2d_bigendian_gzip,
    "missing-chunks": valid_missing_chunks,
    "scalar-0d": valid_scalar_0d,
    "chunk-key-encodings": valid_chunk_key_encodings,
    "uneven-last-chunk": valid_uneven_last_chunk,
    "nested-groups": valid_nested_groups,
    "inline-array": valid_inline_array,
    "shared-data-file": valid_shared_data_file,
    "ignorable-extension": valid_ignorable_extension,
    "percent-encoded-path": valid_percent_encoded_path,
    "split-manifest": valid_split_manifest,
    "without-plain-reader-guard": valid_without_plain_reader_guard,
    "whole-object-entries": valid_whole_object_entries,
    "checksums": valid_checksums,
    "inline-manifest": valid_inline_manifest,
}


# ---------------------------------------------------------------------------------------
# Invalid examples: a small valid base store with one thing broken.
# ---------------------------------------------------------------------------------------


@dataclass
class Broken:
    """What an invalid example breaks, and the error a reader must raise."""

    error: str
    reason: str
    level: str = "MUST"
    array: str = "a"
    # Directory (relative to the store root) whose file URL, given as an allowed prefix,
    # makes the reference readable: then the reader must return the base values.
    allow_dir: str | None = None


def base_spec() -> ArraySpec:
    """Array "a": eight int32 in two chunks of 16 bytes, data/a.bin is 32 bytes."""
    return ArraySpec(
        "a", np.arange(8, dtype="int32") * 11 - 20, (4,), [bytes_codec("little")], 0, ["x"]
    )


def base_store(example: Path) -> tuple[Store, ArraySpec]:
    """A valid store: root group and referenced array "a" (written, data included)."""
    s = Store(example)
    s.group("", {"description": "conformance: must be refused"})
    spec = base_spec()
    s.reference(spec, s.data_file("a.bin"))
    s.finish(expected=False)
    return s, spec


def edit_manifest(s: Store, fn: Callable[[dict[str, JSON]], JSON], array: str = "a") -> None:
    """Rewrite ``array``'s manifest.json as ``fn`` of its parsed content."""
    path = s.root / array / "manifest.json"
    dump_json(path, fn(load_json(path)))


def edit_entry(s: Store, key: str, **changes: JSON) -> None:
    """Change members of one manifest entry (a value of ``...`` deletes the member)."""

    def fn(m: dict[str, JSON]) -> dict[str, JSON]:
        for name, value in changes.items():
            if value is ...:
                del m[key][name]
            else:
                m[key][name] = value
        return m

    edit_manifest(s, fn)


def rekey(s: Store, old: str, new: str) -> None:
    """Rename a manifest key, keeping the member order."""
    edit_manifest(s, lambda m: {(new if k == old else k): v for k, v in m.items()})


def set_transformers(s: Store, transformers: JSON, array: str = "a") -> None:
    """Replace ``storage_transformers`` in ``array``'s zarr.json."""
    path = s.root / array / "zarr.json"
    doc = load_json(path)
    doc["storage_transformers"] = transformers
    dump_json(path, doc)


def write_outside(s: Store) -> Path:
    """A copy of data/a.bin next to (outside) the store root: a reader must not read it."""
    outside = s.example / "outside.bin"
    outside.write_bytes((s.root / "data" / "a.bin").read_bytes())
    return outside


def inv_escape_dotdot(s: Store) -> Broken:
    write_outside(s)
    edit_entry(s, "0", path="../../outside.bin")
    edit_entry(s, "1", path="../../outside.bin")
    return Broken(
        "SourceNotAllowedError",
        '"../../outside.bin" resolves to a file outside the store root (a ../ escape)',
        allow_dir="..",
    )


def inv_escape_percent_encoded(s: Store) -> Broken:
    write_outside(s)
    edit_entry(s, "0", path="%2e%2e/%2E%2E/outside.bin")
    edit_entry(s, "1", path="%2e%2e/%2E%2E/outside.bin")
    return Broken(
        "SourceNotAllowedError",
        "%2e%2e is '..': after percent-decoding and dot-segment removal the reference lies "
        "outside the store root",
        allow_dir="..",
    )


def inv_escape_symlink(s: Store) -> Broken:
    write_outside(s)
    os.symlink("../../outside.bin", s.root / "data" / "link.bin")
    edit_entry(s, "0", path="../data/link.bin")
    edit_entry(s, "1", path="../data/link.bin")
    return Broken(
        "SourceNotAllowedError",
        "data/link.bin is inside the store root but is a symlink to a file outside it",
        allow_dir="..",
    )


def inv_inline_chunk_symlink(s: Store) -> Broken:
    write_outside(s)
    # 32 bytes, like the outside file, so a reader that follows the link reads "valid" data.
    spec = ArraySpec("b", np.arange(8, dtype="int32"), (8,), [bytes_codec("little")], 0, ["y"])
    dump_json(s.root / "b" / "zarr.json", spec.zarr_json())
    (s.root / "b" / "c").mkdir()
    os.symlink("../../../outside.bin", s.root / "b" / "c" / "0")
    return Broken(
        "SourceNotAllowedError",
        "the inline array's chunk file b/c/0 is a symlink to a file outside the store root",
        array="b",
    )


def inv_absolute_local_path(s: Store) -> Broken:
    edit_entry(s, "0", path="/etc/passwd")
    return Broken(
        "ManifestFormatError",
        "an absolute local path without a scheme is not a valid reference "
        "(writers write file:///...)",
    )


def inv_file_url_outside_root(s: Store) -> Broken:
    edit_entry(s, "0", path="file:///etc/passwd")
    return Broken(
        "SourceNotAllowedError",
        "file:///etc/passwd is outside the store root and not an allowed prefix",
    )


def inv_internal_http_url(s: Store) -> Broken:
    # Stands in for a cloud metadata endpoint (http://169.254.169.254/...); loopback so that
    # a non-conforming reader that does try to connect is refused at once.
    edit_entry(s, "0", path="http://127.0.0.1:1/latest/meta-data/iam/security-credentials/")
    return Broken(
        "SourceNotAllowedError",
        "an http URL to an internal host that was not allowed; no request may be made",
    )


def inv_unknown_scheme(s: Store) -> Broken:
    edit_entry(s, "0", path="ftp://127.0.0.1/a.bin")
    return Broken("ManifestFormatError", "ftp is not one of the URL schemes the format allows")


def inv_network_path_reference(s: Store) -> Broken:
    edit_entry(s, "0", path="//127.0.0.1/data/a.bin")
    return Broken(
        "ManifestFormatError",
        "a reference starting with '/' (here a network-path reference '//host/...') is not allowed",
    )


def inv_key_outside_grid(s: Store) -> Broken:
    edit_manifest(s, lambda m: {**m, "2": m["1"]})
    return Broken("ManifestFormatError", 'key "2" is outside the chunk grid (2 chunks)')


def inv_negative_key(s: Store) -> Broken:
    rekey(s, "1", "-1")
    return Broken("ManifestFormatError", 'key "-1" is negative')


def inv_non_canonical_key(s: Store) -> Broken:
    rekey(s, "1", "01")
    return Broken("ManifestFormatError", 'key "01" has a leading zero (not canonical)')


def inv_non_canonical_key_plus(s: Store) -> Broken:
    rekey(s, "1", "+1")
    return Broken("ManifestFormatError", 'key "+1" has a sign (not canonical)')


def inv_non_canonical_key_underscore(s: Store) -> Broken:
    rekey(s, "1", "0_1")
    return Broken(
        "ManifestFormatError", 'key "0_1" is not a decimal integer (Python\'s int() accepts it)'
    )


def inv_wrong_ndim_key(s: Store) -> Broken:
    rekey(s, "1", "1.0")
    return Broken("ManifestFormatError", 'key "1.0" has 2 indices for a 1-d array')


def inv_negative_offset(s: Store) -> Broken:
    edit_entry(s, "1", offset=-4)
    return Broken("ManifestFormatError", "offset -4 is negative")


def inv_offset_too_large(s: Store) -> Broken:
    edit_entry(s, "1", offset=MAX_INT64 - 8)
    return Broken("ManifestFormatError", "offset + length exceeds 2**63 - 1")


def inv_missing_length(s: Store) -> Broken:
    edit_entry(s, "1", length=...)
    return Broken("ManifestFormatError", 'entry "1" has no length member')


def inv_float_length(s: Store) -> Broken:
    edit_entry(s, "1", length=16.0)
    return Broken("ManifestFormatError", "length 16.0 is a JSON number with a fraction part")


def inv_string_offset(s: Store) -> Broken:
    edit_entry(s, "1", offset="16")
    return Broken("ManifestFormatError", "offset is a string, not an integer")


def inv_extra_entry_field(s: Store) -> Broken:
    edit_entry(s, "1", size=16)
    return Broken(
        "ManifestFormatError", 'entry "1" has a member other than path/offset/length/checksum'
    )


def inv_whole_object_missing_source(s: Store) -> Broken:
    edit_entry(s, "1", path="../data/gone.bin", offset=..., length=...)
    return Broken(
        "ChunkReadError", 'entry "1" is a whole object (path only) whose file does not exist'
    )


def inv_checksum_mismatch(s: Store) -> Broken:
    edit_entry(s, "1", checksum="crc32c:00000000")
    return Broken(
        "ChecksumMismatchError", "the bytes of chunk 1 do not have the CRC-32C its entry records"
    )


def inv_checksum_unknown_algorithm(s: Store) -> Broken:
    edit_entry(s, "1", checksum="md5:" + "0" * 32)
    return Broken("ManifestFormatError", "md5 is not a checksum algorithm of spec 5.5")


def inv_inline_manifest_bad_key(s: Store) -> Broken:
    inline_the_manifest(s, "a")
    path = s.root / "a" / "zarr.json"
    doc = load_json(path)
    entries = doc["storage_transformers"][0]["configuration"]["manifest"]
    entries["01"] = entries.pop("1")
    dump_json(path, doc)
    return Broken("ManifestFormatError", 'the inlined manifest has the non-canonical key "01"')


def inv_kerchunk_style_entry(s: Store) -> Broken:
    edit_manifest(s, lambda m: {**m, "1": [m["1"]["path"], m["1"]["offset"], m["1"]["length"]]})
    return Broken(
        "ManifestFormatError", 'entry "1" is a [path, offset, length] list, not an object'
    )


def inv_empty_path(s: Store) -> Broken:
    edit_entry(s, "1", path="")
    return Broken("ManifestFormatError", "path is the empty string")


def inv_unknown_config_member(s: Store) -> Broken:
    set_transformers(
        s,
        [
            {
                "name": TRANSFORMER,
                "configuration": {
                    "manifest": "./manifest.json",
                    "x-source-index": "./sources.json",
                },
            }
        ],
    )
    return Broken(
        "ManifestFormatError", 'configuration member "x-source-index" is unknown and not optional'
    )


def inv_unknown_config_member_object(s: Store) -> Broken:
    set_transformers(
        s,
        [
            {
                "name": TRANSFORMER,
                "configuration": {
                    "manifest": "./manifest.json",
                    "x-checksums": {"algorithm": "crc32c", "must_understand": True},
                },
            }
        ],
    )
    return Broken(
        "ManifestFormatError",
        'configuration member "x-checksums" is unknown and says must_understand: true',
    )


def inv_missing_manifest_member(s: Store) -> Broken:
    set_transformers(s, [{"name": TRANSFORMER, "configuration": {}}])
    return Broken("ManifestFormatError", 'the configuration has no "manifest" member')


def inv_transformer_without_configuration(s: Store) -> Broken:
    set_transformers(s, [{"name": TRANSFORMER}])
    return Broken("ManifestFormatError", "the transformer entry has no configuration")


def inv_manifest_escapes_array_dir(s: Store) -> Broken:
    # "b" is a complete, valid referenced array; "a" points at b's manifest.
    b = ArraySpec("b", base_spec().values, (4,), [bytes_codec("little")], 0, ["x"])
    blobs = b.stored_chunks()
    refs = {
        index: Ref(DataFile(s.root / "data" / "a.bin"), 16 * i, len(blob))
        for i, (index, blob) in enumerate(blobs.items())
    }
    s.referenced(b, refs)
    set_transformers(
        s, [{"name": TRANSFORMER, "configuration": {"manifest": "../b/manifest.json"}}]
    )
    return Broken(
        "ManifestFormatError",
        'the manifest value "../b/manifest.json" leaves the array\'s directory',
    )


def inv_manifest_control_character(s: Store) -> Broken:
    set_transformers(
        s, [{"name": TRANSFORMER, "configuration": {"manifest": "./manifest\u0000.json"}}]
    )
    return Broken(
        "ManifestFormatError",
        "the manifest value holds a NUL: it is not a relative-path reference (RFC 3986)",
    )


def inv_unknown_storage_transformer(s: Store) -> Broken:
    set_transformers(
        s,
        [
            {"name": TRANSFORMER, "configuration": {"manifest": "./manifest.json"}},
            {"name": "x-encrypt", "configuration": {"key": "k1"}},
        ],
    )
    return Broken("ManifestFormatError", "a second, unsupported storage transformer is listed")


def inv_guard_without_transformer(s: Store) -> Broken:
    path = s.root / "a" / "zarr.json"
    doc = load_json(path)
    del doc["storage_transformers"]
    dump_json(path, doc)
    return Broken(
        "ManifestFormatError",
        f'the member "{GUARD_MEMBER}" marks a referenced array, but "a" declares no '
        "storage transformer",
    )


def inv_guard_not_must_understand(s: Store) -> Broken:
    path = s.root / "a" / "zarr.json"
    doc = load_json(path)
    doc[GUARD_MEMBER] = {"must_understand": False}
    dump_json(path, doc)
    return Broken(
        "ManifestFormatError",
        f'the member "{GUARD_MEMBER}" says must_understand: false, so a plain Zarr '
        "reader would read the array as fill values",
    )


def inv_missing_manifest_file(s: Store) -> Broken:
    (s.root / "a" / "manifest.json").unlink()
    return Broken(
        "ManifestFormatError", "zarr.json declares the transformer but manifest.json is absent"
    )


def inv_malformed_json(s: Store) -> Broken:
    path = s.root / "a" / "manifest.json"
    path.write_bytes(path.read_bytes()[:40])
    return Broken("ManifestFormatError", "manifest.json is truncated (not valid JSON)")


def inv_deeply_nested_json(s: Store) -> Broken:
    depth = 10_000
    (s.root / "a" / "manifest.json").write_bytes(b'{"0": ' + b"[" * depth + b"]" * depth + b"}\n")
    return Broken(
        "ManifestFormatError",
        "10000 nested arrays: must fail as a format error, not as a parser recursion crash",
    )


def inv_non_object_manifest(s: Store) -> Broken:
    edit_manifest(s, lambda m: list(m.values()))
    return Broken("ManifestFormatError", "manifest.json is a JSON array, not an object")


def inv_duplicate_key(s: Store) -> Broken:
    path = s.root / "a" / "manifest.json"
    m = load_json(path)
    first, second = (orjson.dumps(m[k]).decode() for k in ("0", "1"))
    path.write_text(f'{{"0": {first}, "1": {second}, "0": {second}}}\n')
    return Broken(
        "ManifestFormatError",
        'key "0" occurs twice (JSON parsers silently keep one of them)',
        level="SHOULD",
    )


def inv_length_beyond_source(s: Store) -> Broken:
    edit_entry(s, "1", length=2**40)
    return Broken(
        "ChunkReadError",
        "a 1 TiB length on a 32-byte file: refused without allocating it",
    )


def inv_range_past_end(s: Store) -> Broken:
    edit_entry(s, "1", length=20)
    return Broken(
        "ChunkReadError", "bytes 16..36 of a 32-byte file: the source returns fewer bytes"
    )


def inv_split_key_outside_region(s: Store) -> Broken:
    split_array(s, "a", [1])
    region = s.root / "a" / "manifest"
    # region 0's file also holds key "1", which belongs to region 1
    both = {**load_json(region / "0.json"), **load_json(region / "1.json")}
    dump_json(region / "0.json", both)
    return Broken("ManifestFormatError", 'region file 0.json holds key "1", which lies in region 1')


def inv_split_region_file_missing(s: Store) -> Broken:
    split_array(s, "a", [1])
    (s.root / "a" / "manifest" / "1.json").unlink()
    return Broken("ManifestFormatError", "index.json lists region 1, but manifest/1.json is absent")


def inv_split_missing_index(s: Store) -> Broken:
    split_array(s, "a", [1])
    (s.root / "a" / "manifest" / "index.json").unlink()
    return Broken("ManifestFormatError", "the manifest directory has no index.json")


def inv_split_unknown_version(s: Store) -> Broken:
    split_array(s, "a", [1], version=2)
    return Broken("ManifestFormatError", "split version 2 is unknown to a version 1 reader")


def inv_split_bad_region_shape(s: Store) -> Broken:
    split_array(s, "a", [1])
    path = s.root / "a" / "zarr.json"
    doc = load_json(path)
    doc["storage_transformers"][0]["configuration"]["split"]["region_shape"] = [0]
    dump_json(path, doc)
    return Broken("ManifestFormatError", "region_shape [0] is not a positive integer")


INVALID: dict[str, Callable[[Store], Broken]] = {
    "escape-dotdot": inv_escape_dotdot,
    "escape-percent-encoded": inv_escape_percent_encoded,
    "escape-symlink": inv_escape_symlink,
    "inline-chunk-symlink": inv_inline_chunk_symlink,
    "absolute-local-path": inv_absolute_local_path,
    "file-url-outside-root": inv_file_url_outside_root,
    "internal-http-url": inv_internal_http_url,
    "unknown-scheme": inv_unknown_scheme,
    "network-path-reference": inv_network_path_reference,
    "key-outside-grid": inv_key_outside_grid,
    "negative-key": inv_negative_key,
    "non-canonical-key": inv_non_canonical_key,
    "non-canonical-key-plus": inv_non_canonical_key_plus,
    "non-canonical-key-underscore": inv_non_canonical_key_underscore,
    "wrong-ndim-key": inv_wrong_ndim_key,
    "negative-offset": inv_negative_offset,
    "offset-too-large": inv_offset_too_large,
    "missing-length": inv_missing_length,
    "float-length": inv_float_length,
    "string-offset": inv_string_offset,
    "extra-entry-field": inv_extra_entry_field,
    "kerchunk-style-entry": inv_kerchunk_style_entry,
    "whole-object-missing-source": inv_whole_object_missing_source,
    "checksum-mismatch": inv_checksum_mismatch,
    "checksum-unknown-algorithm": inv_checksum_unknown_algorithm,
    "inline-manifest-bad-key": inv_inline_manifest_bad_key,
    "empty-path": inv_empty_path,
    "unknown-config-member": inv_unknown_config_member,
    "unknown-config-member-object": inv_unknown_config_member_object,
    "missing-manifest-member": inv_missing_manifest_member,
    "transformer-without-configuration": inv_transformer_without_configuration,
    "manifest-escapes-array-dir": inv_manifest_escapes_array_dir,
    "manifest-control-character": inv_manifest_control_character,
    "unknown-storage-transformer": inv_unknown_storage_transformer,
    "guard-without-transformer": inv_guard_without_transformer,
    "guard-not-must-understand": inv_guard_not_must_understand,
    "missing-manifest-file": inv_missing_manifest_file,
    "malformed-json": inv_malformed_json,
    "deeply-nested-json": inv_deeply_nested_json,
    "non-object-manifest": inv_non_object_manifest,
    "duplicate-key": inv_duplicate_key,
    "length-beyond-source": inv_length_beyond_source,
    "range-past-end": inv_range_past_end,
    "split-key-outside-region": inv_split_key_outside_region,
    "split-region-file-missing": inv_split_region_file_missing,
    "split-missing-index": inv_split_missing_index,
    "split-unknown-version": inv_split_unknown_version,
    "split-bad-region-shape": inv_split_bad_region_shape,
}


def generate(out: Path) -> None:
    """Write every example under ``out/valid`` and ``out/invalid`` (replacing them)."""
    for kind in ("valid", "invalid"):
        if (out / kind).exists():
            shutil.rmtree(out / kind)
    for name, make in VALID.items():
        s = Store(out / "valid" / name)
        make(s)
        s.finish()
    for name, breaks in INVALID.items():
        s, spec = base_store(out / "invalid" / name)
        broken = breaks(s)
        error: dict[str, JSON] = {
            "error": broken.error,
            "reason": broken.reason,
            "level": broken.level,
            "array": broken.array,
        }
        if broken.allow_dir is not None:
            error["readable_if_allowed"] = {
                "allow_dir": broken.allow_dir,
                "expected": {spec.path: spec.expected()},
            }
        dump_json(s.example / "expected-error.json", error)


def main(argv: list[str] | None = None) -> None:
    """Command line entry: ``generate.py [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write into")
    args = parser.parse_args(argv)
    generate(args.out)


if __name__ == "__main__":
    main()
