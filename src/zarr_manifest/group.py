"""`ManifestGroup`: a hierarchy of virtual (and inline) arrays with attributes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from zarr_manifest.array import InlineArray, ManifestArray
from zarr_manifest.errors import MetadataError

if TYPE_CHECKING:
    import os

    from obstore.store import ObjectStore

    from zarr_manifest.format.hierarchy import StoredGroup

__all__ = ["ManifestGroup"]


class ManifestGroup:
    """A Zarr v3 group of `ManifestArray` / `InlineArray` members and child groups.

    Parameters
    ----------
    arrays
        Member arrays by name.
    groups
        Child groups by name.
    attributes
        The group's attributes (JSON-serialisable).

    Raises
    ------
    MetadataError
        A member name is empty, contains "/", starts with "__", is used twice, or a member
        is of the wrong type.
    """

    __slots__ = ("_arrays", "_attributes", "_groups")

    def __init__(
        self,
        arrays: Mapping[str, ManifestArray | InlineArray] | None = None,
        groups: Mapping[str, ManifestGroup] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ):
        arrays = dict(arrays or {})
        groups = dict(groups or {})
        for name, node in arrays.items():
            _check_name(name)
            if not isinstance(node, ManifestArray | InlineArray):
                raise MetadataError(f"array {name!r} is a {type(node).__name__}, not an array")
        for name, member in groups.items():
            _check_name(name)
            if not isinstance(member, ManifestGroup):
                raise MetadataError(
                    f"group {name!r} is a {type(member).__name__}, not a ManifestGroup"
                )
        both = sorted(set(arrays) & set(groups))
        if both:
            raise MetadataError(f"{both[0]!r} names both an array and a group")
        self._arrays = arrays
        self._groups = groups
        self._attributes = dict(attributes or {})

    @property
    def arrays(self) -> dict[str, ManifestArray | InlineArray]:
        """Member arrays by name (a copy)."""
        return dict(self._arrays)

    @property
    def groups(self) -> dict[str, ManifestGroup]:
        """Child groups by name (a copy)."""
        return dict(self._groups)

    @property
    def attributes(self) -> dict[str, Any]:
        """The group's attributes (a copy)."""
        return dict(self._attributes)

    def __getitem__(self, path: str) -> ManifestArray | InlineArray | ManifestGroup:
        """The member at ``path`` ("name" or "child/grandchild/name")."""
        node: ManifestArray | InlineArray | ManifestGroup = self
        for part in path.strip("/").split("/"):
            if not isinstance(node, ManifestGroup):
                raise KeyError(path)
            if part in node._arrays:
                node = node._arrays[part]
            elif part in node._groups:
                node = node._groups[part]
            else:
                raise KeyError(path)
        return node

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        try:
            self[path]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        yield from self._arrays
        yield from self._groups

    def __len__(self) -> int:
        return len(self._arrays) + len(self._groups)

    def walk(
        self, prefix: str = ""
    ) -> Iterator[tuple[str, ManifestArray | InlineArray | ManifestGroup]]:
        """Every descendant as ``(path, node)``, depth first, groups before their members."""
        for name, array in self._arrays.items():
            yield f"{prefix}{name}", array
        for name, group in self._groups.items():
            yield f"{prefix}{name}", group
            yield from group.walk(f"{prefix}{name}/")

    def replace(
        self,
        *,
        arrays: Mapping[str, ManifestArray | InlineArray] | None = None,
        groups: Mapping[str, ManifestGroup] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> ManifestGroup:
        """A copy with the given parts replaced."""
        return ManifestGroup(
            arrays=self._arrays if arrays is None else arrays,
            groups=self._groups if groups is None else groups,
            attributes=self._attributes if attributes is None else attributes,
        )

    def rename_paths(self, new: str | Callable[[str], str]) -> ManifestGroup:
        """A copy in which every manifest's paths are renamed (see `ChunkManifest.rename_paths`)."""
        return ManifestGroup(
            arrays={
                k: a.rename_paths(new) if isinstance(a, ManifestArray) else a
                for k, a in self._arrays.items()
            },
            groups={k: g.rename_paths(new) for k, g in self._groups.items()},
            attributes=self._attributes,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ManifestGroup):
            return NotImplemented
        return (
            self._attributes == other._attributes
            and self._arrays == other._arrays
            and self._groups == other._groups
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ManifestGroup<arrays={sorted(self._arrays)}, groups={sorted(self._groups)}, "
            f"attributes={len(self._attributes)}>"
        )

    # ---- on disk ------------------------------------------------------------------------
    # The model does not know the on-disk form; these entry points hand over to format/.

    def to_store(
        self,
        dest: str | os.PathLike[str] | ObjectStore,
        *,
        overwrite: bool = False,
        split_above: int | None = 100_000,
        region_shape: Sequence[int] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Write this hierarchy as a manifest store.

        Parameters
        ----------
        dest
            A local directory, a URL (``file://``, ``s3://``, ``gs://``, ``az://``,
            ``memory://``) or an obstore store.
        overwrite
            Replace an existing store at ``dest``; otherwise writing over one is an error.
        split_above
            Arrays with more references than this get a split manifest: one file per region
            of the chunk grid, which readers load region by region (spec: "Split
            manifests").  None writes every manifest as a single manifest.json.
        region_shape
            Chunks per region along each dimension for the split arrays; default: chosen per
            array (about 32k grid cells per region).
        storage_options
            For a URL ``dest``: credentials and client settings in obstore's vocabulary
            (see `zarr_manifest.open_virtual`).  Default: obstore's (credentials from the
            environment).
        """
        from zarr_manifest.format.hierarchy import write_group

        write_group(
            self,
            dest,
            overwrite=overwrite,
            split_above=split_above,
            region_shape=region_shape,
            storage_options=storage_options,
        )

    @classmethod
    def from_store(
        cls,
        src: str | os.PathLike[str] | ObjectStore,
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> ManifestGroup:
        """Read a manifest store back into memory (every manifest is parsed).

        ``storage_options``: for a URL ``src``, credentials and client settings in
        obstore's vocabulary (see `zarr_manifest.open_virtual`).

        Raises
        ------
        ManifestFormatError
            The store does not follow the spec; the message names the file at fault.
        """
        from zarr_manifest.format.hierarchy import read_hierarchy

        return cls._from_stored(read_hierarchy(src, storage_options=storage_options))

    @classmethod
    def _from_stored(cls, stored: StoredGroup) -> ManifestGroup:
        groups = {name: cls._from_stored(child) for name, child in stored.groups.items()}
        return cls(arrays=stored.arrays, groups=groups, attributes=stored.attributes)

    def to_kerchunk(
        self,
        dest: str | os.PathLike[str] | None = None,
        *,
        format: Literal["json", "parquet"] = "json",
        record_size: int = 100_000,
        categorical_threshold: int = 10,
        overwrite: bool = False,
    ) -> dict[str, Any]:
        """Kerchunk references (version 1) for this hierarchy, written to ``dest`` if given.

        See `zarr_manifest.writers.kerchunk.to_kerchunk`; readable by fsspec's
        ReferenceFileSystem with zarr (format 2).

        Raises
        ------
        UnsupportedError
            An array uses something kerchunk's Zarr v2 form cannot express (sharding, a
            rectilinear chunk grid, some codecs); the message names it.
        """
        from zarr_manifest._extras import extras_explained
        from zarr_manifest.writers.kerchunk import to_kerchunk

        with extras_explained("writing kerchunk references"):
            return to_kerchunk(
                self,
                dest,
                format=format,
                record_size=record_size,
                categorical_threshold=categorical_threshold,
                overwrite=overwrite,
            )

    def to_icechunk(
        self, store: Any, *, commit_message: str | None = None, path: str = ""
    ) -> str | None:
        """Write this hierarchy into an Icechunk session store, virtual arrays as virtual
        references (needs the ``icechunk`` extra).

        See `zarr_manifest.writers.icechunk.to_icechunk`; returns the snapshot id when
        ``commit_message`` is given.
        """
        from zarr_manifest._extras import extras_explained

        with extras_explained("writing Icechunk repositories"):
            from zarr_manifest.writers.icechunk import to_icechunk

            return to_icechunk(self, store, commit_message=commit_message, path=path)


_RESERVED_NAMES = {".", "..", "zarr.json", "manifest.json"}


def _check_name(name: str) -> None:
    """Member names become path segments of the store: no "/", backslash, control
    characters, reserved file names, or the "__" prefix zarr reserves."""
    if (
        not isinstance(name, str)
        or not name
        or name.startswith("__")
        or name in _RESERVED_NAMES
        or any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise MetadataError(f"invalid member name {name!r}")
