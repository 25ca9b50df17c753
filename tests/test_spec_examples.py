"""Conformance: the stores in spec/examples read, or fail, as spec/chunk-manifest-json.md says.

Valid examples must read back exactly the values in their expected.json (through zarr, and
through xarray where every array of a group has dimension names); invalid examples must
raise the documented error class from `zarr_manifest.errors`, when the store is opened or
the array is read.  The examples themselves are checked to be what generate.py makes.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import xarray as xr
import zarr
from zarr.errors import MetadataValidationError

import zarr_manifest
from zarr_manifest import errors

EXAMPLES = Path(__file__).resolve().parents[1] / "spec" / "examples"
VALID = sorted(p for p in (EXAMPLES / "valid").iterdir() if p.is_dir())
INVALID = sorted(p for p in (EXAMPLES / "invalid").iterdir() if p.is_dir())

# JSON has no NaN or infinities; expected.json spells them as Zarr v3 fill values do.
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def _decode(values: Any) -> Any:
    if isinstance(values, list):
        return [_decode(v) for v in values]
    if isinstance(values, str):
        return _NON_FINITE[values]
    return values


def _expected_array(entry: dict[str, Any]) -> np.ndarray:
    """An expected.json entry as a numpy array of the entry's dtype and shape."""
    return np.array(_decode(entry["values"]), dtype=entry["dtype"]).reshape(entry["shape"])


def _same_dtype(got: np.dtype, name: str) -> bool:
    # The byte order of the decoded array is the codec's business, not the data type's.
    return got.newbyteorder("=") == np.dtype(name)


def _check_arrays(group: zarr.Group, expected: dict[str, Any]) -> None:
    for path, entry in expected.items():
        array = group[path]
        assert isinstance(array, zarr.Array), path
        want = _expected_array(entry)
        assert array.shape == want.shape, path
        assert _same_dtype(array.dtype, entry["dtype"]), (path, array.dtype)
        got = np.asarray(array[...])
        assert got.shape == want.shape, path
        # assert_array_equal counts NaN == NaN, so fill values of NaN compare.
        np.testing.assert_array_equal(got, want, err_msg=f"array {path!r}")


def _xarray_groups() -> list[Any]:
    """(example, group path) for every group whose arrays all have dimension names."""
    out = []
    for example in VALID:
        store = example / "store"
        for meta_path in sorted(store.rglob("zarr.json")):
            if _load(meta_path)["node_type"] != "group":
                continue
            group_dir = meta_path.parent
            arrays = [
                _load(child / "zarr.json")
                for child in sorted(group_dir.iterdir())
                if (child / "zarr.json").is_file()
                and _load(child / "zarr.json")["node_type"] == "array"
            ]
            if arrays and all(a.get("dimension_names") is not None for a in arrays):
                rel = group_dir.relative_to(store).as_posix()
                path = "" if rel == "." else rel
                out.append(pytest.param(example, path, id=f"{example.name}:/{path}"))
    return out


@pytest.mark.parametrize("example", VALID, ids=lambda p: p.name)
def test_valid_example_reads_expected_values(example: Path) -> None:
    expected = _load(example / "expected.json")
    group = zarr.open_group(zarr_manifest.ManifestStore(example / "store"), mode="r")
    found = {path for path, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}
    assert found == set(expected)
    _check_arrays(group, expected)


@pytest.mark.parametrize(("example", "group"), _xarray_groups())
def test_valid_example_opens_in_xarray(example: Path, group: str) -> None:
    expected = _load(example / "expected.json")
    ds = xr.open_zarr(
        zarr_manifest.ManifestStore(example / "store"), group=group or None, consolidated=False
    )
    prefix = f"{group}/" if group else ""
    in_group = {
        path[len(prefix) :]: entry
        for path, entry in expected.items()
        if path.startswith(prefix) and "/" not in path[len(prefix) :]
    }
    assert set(ds.variables) == set(in_group)
    for name, entry in in_group.items():
        meta = _load(example / "store" / prefix / name / "zarr.json")
        assert ds[name].dims == tuple(meta["dimension_names"]), name
        np.testing.assert_array_equal(
            ds[name].values, _expected_array(entry), err_msg=f"variable {name!r}"
        )


@pytest.mark.parametrize("example", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_refused(example: Path) -> None:
    spec = _load(example / "expected-error.json")
    error = getattr(errors, spec["error"])
    with pytest.raises(error):
        group = zarr.open_group(zarr_manifest.ManifestStore(example / "store"), mode="r")
        group[spec["array"]][...]


@pytest.mark.parametrize(
    "example",
    [p for p in INVALID if "readable_if_allowed" in _load(p / "expected-error.json")],
    ids=lambda p: p.name,
)
def test_escape_is_readable_once_allowed(example: Path) -> None:
    """Default-deny is a default: granting the outside directory makes the reference readable."""
    allowed = _load(example / "expected-error.json")["readable_if_allowed"]
    prefix = (example / "store" / allowed["allow_dir"]).resolve().as_uri() + "/"
    store = zarr_manifest.ManifestStore(example / "store", allowed_prefixes=[prefix])
    _check_arrays(zarr.open_group(store, mode="r"), allowed["expected"])


def _tree(root: Path) -> dict[str, bytes]:
    """Every file (contents) and symlink (target) under ``root``, by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = b"-> " + os.readlink(path).encode()
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out


def test_examples_are_what_generate_py_writes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "spec_examples_generate", EXAMPLES / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being made.
    sys.modules[spec.name] = generate
    try:
        spec.loader.exec_module(generate)
        generate.generate(tmp_path)
    finally:
        del sys.modules[spec.name]
    for kind in ("valid", "invalid"):
        committed, fresh = _tree(EXAMPLES / kind), _tree(tmp_path / kind)
        assert sorted(committed) == sorted(fresh), f"{kind}: rerun spec/examples/generate.py"
        changed = [rel for rel in fresh if committed[rel] != fresh[rel]]
        assert not changed, f"{kind}: rerun spec/examples/generate.py; differs: {changed}"


def _referenced_arrays(store: Path) -> list[str]:
    return sorted(
        p.parent.relative_to(store).as_posix()
        for p in store.rglob("zarr.json")
        if _load(p).get("storage_transformers")
    )


@pytest.mark.parametrize("example", VALID, ids=lambda p: p.name)
def test_plain_zarr_refuses_every_referenced_array(example: Path) -> None:
    """Section 4, rule 10: opened without a reader of the format, through the group as
    xarray does, every referenced array fails (except in the example of the older form)."""
    store = example / "store"
    plain = _load(example / "plain-reader.json") if (example / "plain-reader.json").exists() else {}
    group = zarr.open_group(zarr.storage.LocalStore(store, read_only=True), mode="r")
    for path in _referenced_arrays(store):
        if plain.get("fails") is False:
            continue
        with pytest.raises(MetadataValidationError, match="chunk-manifest-json"):
            group[path]
    if plain.get("fails"):
        assert sorted(plain["arrays"]) == _referenced_arrays(store)


@pytest.mark.parametrize(
    "example",
    [p for p in VALID if (p / "plain-reader.json").exists()],
    ids=lambda p: p.name,
)
def test_plain_reader_sees_what_plain_reader_json_says(example: Path) -> None:
    plain = _load(example / "plain-reader.json")
    group = zarr.open_group(zarr.storage.LocalStore(example / "store", read_only=True), mode="r")
    if plain["fails"]:
        for path in plain["arrays"]:
            with pytest.raises(MetadataValidationError, match="chunk-manifest-json"):
                group[path]
    else:
        _check_arrays(group, plain["sees"])
        # and a reader of the format returns the stored values, not those
        expected = _load(example / "expected.json")
        assert expected != plain["sees"]
        _check_arrays(
            zarr.open_group(zarr_manifest.ManifestStore(example / "store"), mode="r"), expected
        )
