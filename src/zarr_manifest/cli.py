"""The ``zarr-manifest`` command: build, append, info, validate, convert, upgrade.

Exit codes: 0 success; 1 ``validate`` found problems; 2 bad command line; 3 bad input
(a file that cannot be parsed, a store that breaks the spec, a refused source) or an
input/output error (a missing file, an output that exists or cannot be written).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from zarr_manifest.errors import ZarrManifestError

__all__ = ["main"]

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INPUT = 0, 1, 2, 3

_TARGETS = ("manifest", "kerchunk-json", "kerchunk-parquet", "icechunk")

_EPILOGS = {
    "build": """examples:
  zarr-manifest build data/*.nc -o air.manifest --concat-dim time
  zarr-manifest build 'tiles/*.nc' -o tiles.manifest --by-coords --workers 4
  zarr-manifest build data/*.nc -o refs.json --concat-dim time --to kerchunk-json""",
    "append": """examples:
  zarr-manifest append air.manifest data/2024-06-*.nc --dim time""",
    "info": """example:
  zarr-manifest info air.manifest""",
    "validate": """examples:
  zarr-manifest validate air.manifest
  zarr-manifest validate air.manifest --check-sources --allow data/""",
    "convert": """examples:
  zarr-manifest convert refs.json air.manifest
  zarr-manifest convert air.manifest refs.parq --to kerchunk-parquet""",
    "upgrade": """example:
  zarr-manifest upgrade old-virtualizarr.zarr""",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zarr-manifest",
        description="Virtual Zarr from legacy files: build, inspect, validate and convert "
        "manifest stores.",
        epilog="exit codes: 0 ok, 1 validation problems, 2 usage error, 3 bad input",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=_EPILOGS[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    b = command("build", "parse legacy files and write one virtual dataset")
    b.add_argument("files", nargs="+", help="files or URLs, or one quoted glob pattern")
    b.add_argument("-o", "--output", required=True, help="destination path or URL")
    how = b.add_mutually_exclusive_group()
    how.add_argument("--concat-dim", help="concatenate along this dimension, in input order")
    how.add_argument("--by-coords", action="store_true", help="order by coordinate values")
    b.add_argument("--format", help="input format (default: detected from magic bytes)")
    b.add_argument("--workers", type=int, default=1, help="parse files on N processes")
    loading = b.add_mutually_exclusive_group()
    loading.add_argument(
        "--load",
        action="append",
        help="store this variable inline (default: the dimension coordinates and their bounds)",
    )
    loading.add_argument(
        "--no-load", action="store_true", help="store no variable inline (coordinates too)"
    )
    b.add_argument(
        "--compat",
        choices=("equals", "identical", "override"),
        default="equals",
        help="variables without the concatenation dimension must have the same values "
        "(equals, the default), values and attributes (identical), or are taken from the "
        "first file (override)",
    )
    b.add_argument(
        "--compare-limit",
        type=int,
        metavar="BYTES",
        help="read variables without the concatenation dimension up to this size to compare "
        "their values (default 64 MiB; -1: no limit)",
    )
    b.add_argument("--drop", action="append", default=[], help="leave this variable out")
    b.add_argument("--to", choices=_TARGETS, default="manifest", help="output kind")
    b.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_split_above(b)
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_storage_options(b)

    a = command("append", "parse new files and append them to a manifest store along a dimension")
    a.add_argument("store", help="the manifest store (path or URL)")
    a.add_argument("files", nargs="+", help="new files or URLs, or one quoted glob pattern")
    a.add_argument("--dim", required=True, help="the dimension to append along")
    a.add_argument("--format", help="input format (default: detected from magic bytes)")
    a.add_argument("--load", action="append", default=None, help="store this variable inline")
    a.add_argument("--drop", action="append", default=[], help="leave this variable out")
    _add_split_above(a)
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_storage_options(a)

    i = command("info", "describe a manifest store (or kerchunk references)")
    i.add_argument("src")
    _add_storage_options(i)

    v = command("validate", "check a manifest store against the spec")
    v.add_argument("src")
    v.add_argument(
        "--check-sources",
        action="store_true",
        help="also check every referenced file exists, every range lies inside it, and "
        "files with a recorded fingerprint have not changed since the manifest was made",
    )
    v.add_argument("--allow", action="append", default=[], help="allowed source prefix")
    _add_storage_options(v)

    c = command("convert", "convert between manifest store, kerchunk JSON/parquet, icechunk")
    c.add_argument("src")
    c.add_argument("dest")
    c.add_argument("--to", choices=_TARGETS, help="output kind (default: from DEST's suffix)")
    c.add_argument("--overwrite", action="store_true")
    c.add_argument(
        "--allow",
        action="append",
        default=[],
        help="prefix a references file may point under besides its own directory",
    )
    _add_split_above(c)
    _add_storage_options(c)

    u = command("upgrade", "rewrite a store written by VirtualiZarr 1.x in the current form")
    u.add_argument("store", help="the store (path or URL); replaced atomically, in place")
    _add_storage_options(u)
    return parser


def _add_storage_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="storage_option",
        help="an obstore option for every URL (endpoint=http://..., region=..., "
        "client_options.allow_http=true; a JSON object for a URL prefix: "
        '\'s3://other/={"region": "eu-west-1"}\'); repeatable',
    )
    command.add_argument(
        "--anon",
        action="store_true",
        help="unsigned (anonymous) requests to S3, GCS and Azure (skip_signature=true)",
    )


#: obstore options (besides URL prefixes) whose value is a dict, given as JSON
_JSON_OPTIONS = frozenset({"default_headers"})


def storage_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``storage_options`` dict of ``--storage-option KEY=VALUE`` and ``--anon``.

    A dotted key sets a nested option (``client_options.timeout=30s``).  The value of a URL
    prefix (``s3://other/={"region": ...}``) is a JSON object, as is that of
    ``client_options.default_headers`` (obstore wants a dict there); any other value is a
    string (obstore parses ``"true"``, numbers and durations itself), so a secret of digits
    or a JSON ``service_account_key`` stays the string obstore expects.

    Raises
    ------
    ValueError
        An option without ``=``, or a URL prefix's value that is not a JSON object.
    """
    import json

    from zarr_manifest.format.storage_options import anonymous

    options: dict[str, Any] = dict(anonymous()) if args.anon else {}
    for item in args.storage_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option {item!r}: expected KEY=VALUE")
        parsed: Any = value
        if "://" in key or key.rsplit(".", 1)[-1] in _JSON_OPTIONS:
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(f"--storage-option {key}: the value is not JSON ({e})") from e
            if not isinstance(parsed, dict):
                raise ValueError(f"--storage-option {key}: the value must be a JSON object")
        target = options
        if "://" not in key:
            *parents, key = key.split(".")
            for parent in parents:
                target = target.setdefault(parent, {})
        target[key] = parsed
    return options


def _add_split_above(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--split-above",
        type=int,
        default=100_000,
        metavar="N",
        help="split manifests of arrays with more than N references by region (0: never)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if e.code in (0, None) else EXIT_USAGE
    try:
        args.storage_options = storage_options_from_args(args)
    except ValueError as e:
        print(f"zarr-manifest {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    import obstore.exceptions
    import zarr

    try:
        # `build` writes a rectilinear chunk grid for uneven inputs (monthly files); every
        # command must read such stores back, which zarr 3.4 only does with this flag on
        with zarr.config.set({"array.rectilinear_chunks": True}):
            return int(_COMMANDS[args.command](args))
    except ZarrManifestError as e:
        print(f"zarr-manifest {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_INPUT
    except (OSError, obstore.exceptions.BaseError) as e:
        # missing inputs, an existing output, an unwritable destination, storage refusing
        # the request (credentials): never a traceback with exit code 1, which means
        # "validate found problems"
        print(f"zarr-manifest {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_INPUT


def _build(args: argparse.Namespace) -> int:
    from zarr_manifest.build import build, expand_inputs

    files: Any = args.files[0] if len(args.files) == 1 else args.files
    options = args.storage_options
    if args.concat_dim is None and not args.by_coords and len(expand_inputs(files, options)) > 1:
        # a command-line mistake, not bad input: say so with the usage exit code
        print(
            "zarr-manifest build: several inputs need --concat-dim DIM or --by-coords",
            file=sys.stderr,
        )
        return EXIT_USAGE
    executor = None
    if args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        executor = ProcessPoolExecutor(args.workers)
    try:
        group = build(
            files,
            concat_dim=args.concat_dim,
            combine="by_coords" if args.by_coords else "nested",
            executor=executor,
            progress=not args.no_progress,
            format=args.format,
            load=() if args.no_load else args.load,
            drop=args.drop,
            compat=args.compat,
            compare_limit=_compare_limit(args.compare_limit),
            storage_options=options,
        )
    finally:
        if executor is not None:
            executor.shutdown()
    _write(
        group,
        args.output,
        args.to,
        overwrite=args.overwrite,
        split_above=args.split_above,
        storage_options=options,
    )
    print(f"wrote {args.to} {args.output}")
    return EXIT_OK


def _compare_limit(given: int | None) -> int | None:
    from zarr_manifest.combine import COMPARE_LIMIT

    if given is None:
        return COMPARE_LIMIT
    return None if given < 0 else given


def _write(
    group: Any,
    dest: str,
    kind: str,
    *,
    overwrite: bool,
    split_above: int,
    storage_options: dict[str, Any],
) -> None:
    if kind == "manifest":
        group.to_store(
            dest,
            overwrite=overwrite,
            split_above=split_above or None,
            storage_options=storage_options,
        )
    elif kind in ("kerchunk-json", "kerchunk-parquet"):
        from zarr_manifest.writers.kerchunk import to_kerchunk

        to_kerchunk(group, dest, format=kind.split("-")[1], overwrite=overwrite)  # type: ignore[arg-type]
    else:
        _write_icechunk(group, dest)


def _write_icechunk(group: Any, dest: str) -> None:
    """A new local icechunk repository at ``dest`` with the group as virtual references.

    Sources must be local files (one virtual chunk container per source directory); remote
    sources need credentials the command line does not take: use `to_icechunk` directly.
    """
    import icechunk

    from zarr_manifest.array import ManifestArray
    from zarr_manifest.errors import UnsupportedError
    from zarr_manifest.writers.icechunk import to_icechunk

    dirs: set[str] = set()
    for path, node in group.walk():
        if isinstance(node, ManifestArray):
            for url in node.manifest.path_table:
                if not url.startswith("file:///"):
                    raise UnsupportedError(
                        f"{path}: source {url} is not a local file; the command line writes "
                        "icechunk repositories for local sources only"
                    )
                dirs.add(url.rsplit("/", 1)[0] + "/")
    config = icechunk.RepositoryConfig.default()
    for prefix in sorted(dirs):
        local = prefix[len("file://") :]
        config.set_virtual_chunk_container(
            icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(local))
        )
    credentials = icechunk.containers_credentials(
        {p: icechunk.credentials.LocalFileSystemAccess for p in sorted(dirs)}
    )
    repo = icechunk.Repository.create(
        icechunk.local_filesystem_storage(os.path.abspath(dest)),
        config=config,
        authorize_virtual_chunk_access=credentials,
    )
    session = repo.writable_session("main")
    to_icechunk(group, session.store, commit_message="zarr-manifest")


def _read(src: str, storage_options: dict[str, Any], allow: Sequence[str] = ()) -> Any:
    """A ManifestGroup from a manifest store, or from kerchunk references / a legacy file
    (``allow``: where references may point, besides the references file's directory)."""
    from zarr_manifest.group import ManifestGroup

    if "://" in src and not src.startswith("file://"):
        # a prefix holding a root zarr.json is a store (as for a local directory)
        from zarr_manifest.format.location import open_location

        is_store = src.endswith("/") or open_location(src, storage_options=storage_options).exists(
            "zarr.json"
        )
    else:
        is_store = os.path.isdir(src) and os.path.exists(os.path.join(src, "zarr.json"))
    if is_store:
        return ManifestGroup.from_store(src, storage_options=storage_options)
    from zarr_manifest.builders import open_virtual

    return open_virtual(src, allowed_prefixes=allow, storage_options=storage_options)


def _append(args: argparse.Namespace) -> int:
    from zarr_manifest.append import append

    files: Any = args.files[0] if len(args.files) == 1 else args.files
    group = append(
        args.store,
        files,
        dim=args.dim,
        load=args.load,
        split_above=args.split_above or None,
        format=args.format,
        drop=args.drop,
        progress=not args.no_progress,
        storage_options=args.storage_options,
    )
    from zarr_manifest.group import ManifestGroup

    lengths = {
        node.shape[list(node.dimension_names or ()).index(args.dim)]
        for _, node in group.walk()
        if not isinstance(node, ManifestGroup) and args.dim in (node.dimension_names or ())
    }
    print(f"appended to {args.store}: {args.dim} is now {max(lengths, default=0)} long")
    return EXIT_OK


def _info(args: argparse.Namespace) -> int:
    from zarr_manifest.array import ManifestArray
    from zarr_manifest.group import ManifestGroup

    group = _read(args.src, args.storage_options)
    sources: set[str] = set()
    total_refs = total_bytes = 0
    print(f"{args.src}")
    for key, value in sorted(group.attributes.items())[:10]:
        print(f"  @{key} = {value!r}"[:100])
    for path, node in group.walk():
        depth = path.count("/") + 1
        pad = "  " * depth
        if isinstance(node, ManifestGroup):
            print(f"{pad}{path.rsplit('/', 1)[-1]}/")
            continue
        name = path.rsplit("/", 1)[-1]
        codecs = ",".join(c.to_dict()["name"] for c in node.metadata.codecs)
        dims = ",".join(str(d) for d in node.dimension_names or ())
        line = f"{pad}{name} {node.dtype} {node.shape} ({dims}) codecs={codecs}"
        if isinstance(node, ManifestArray):
            m = node.manifest
            size = 1
            for s in m.shape_chunk_grid:
                size *= s
            refs = len(m)
            nbytes = int(m.lengths.sum())
            total_refs += refs
            total_bytes += nbytes
            sources.update(m.path_table)
            line += f" references={refs} missing={size - refs} bytes={nbytes}"
        else:
            line += " inline"
        print(line)
    print(
        f"total: {total_refs} references, {total_bytes} bytes referenced, "
        f"{len(sources)} source files"
    )
    for source in sorted(sources)[:20]:
        print(f"  {source}")
    if len(sources) > 20:
        print(f"  ... and {len(sources) - 20} more")
    _print_outside_sources(args.src, sources)
    return EXIT_OK


def _print_outside_sources(src: str, sources: set[str]) -> None:
    """For a manifest store: one line naming the prefixes its sources outside it lie
    under, and what a reader must pass to read them."""
    from zarr_manifest.format.allowed_prefixes import allow_hint, suggested_prefixes
    from zarr_manifest.format.paths import is_absolute_url, is_url_under, local_path_to_url

    if "://" in src:
        root = src if src.endswith("/") else src + "/"
    elif os.path.isdir(src):
        root = local_path_to_url(os.path.abspath(src)) + "/"
    else:
        return  # references or a legacy file, not a store: its own rules apply
    outside = {u for u in sources if is_absolute_url(u) and not is_url_under(u, root)}
    if outside:
        prefixes = suggested_prefixes(outside)
        print(f"sources outside the store, under {', '.join(prefixes)}: readers refuse them")
        print(f"  by default; to read them, {allow_hint(prefixes)}")


def _validate(args: argparse.Namespace) -> int:
    import numpy as np

    from zarr_manifest.array import ManifestArray
    from zarr_manifest.format.allowed_prefixes import allow_hint, suggested_prefixes
    from zarr_manifest.format.location import open_location
    from zarr_manifest.format.paths import is_url_under, resolve_reference
    from zarr_manifest.format.storage_options import options_for
    from zarr_manifest.group import ManifestGroup
    from zarr_manifest.store._verify import stale_reason
    from zarr_manifest.store.sources import SourceRegistry

    options = args.storage_options
    group = ManifestGroup.from_store(args.src, storage_options=options)
    root = open_location(args.src, storage_options=options)
    registry = SourceRegistry()
    registry.register(root.url, root.store)
    for prefix in args.allow:
        registry.register(prefix, storage_options=options_for(prefix, options))
    problems: list[str] = []
    # sources under neither the store nor an --allow prefix: summed up in one line
    outside: set[str] = set()
    sizes: dict[str, int | None] = {}
    # whether each fingerprinted file changed: checked, and reported, once per file
    stale: dict[str, str | None] = {}
    for path, node in group.walk():
        if not isinstance(node, ManifestArray):
            continue
        m = node.manifest
        base = f"{root.url}{path}/"
        for pid, ref in enumerate(m.path_table):
            try:
                url = resolve_reference(ref, base)
                if not any(is_url_under(url, prefix) for prefix in registry.prefixes):
                    outside.add(url)
                    continue
                source = registry.resolve(url, key=path)
            except ZarrManifestError as e:
                problems.append(f"{path}: {e}")
                continue
            if not args.check_sources:
                continue
            if url not in sizes:
                sizes[url] = _source_size(source)
            size = sizes[url]
            if size is None:
                problems.append(f"{path}: source {url} does not exist")
                continue
            # one line per array and file, saying all that is wrong with the file
            issues = []
            recorded = node.fingerprints.get(ref)
            if recorded is not None and url not in stale:
                stale[url] = reason = stale_reason(recorded, _live_fingerprint(source))
                if reason is not None:
                    issues.append(f"source {url} changed since the manifest was made ({reason})")
            mask = m.path_ids == pid
            ends = m.offsets[mask] + m.lengths[mask]
            beyond = int(np.count_nonzero(ends > size))
            if beyond:
                issues.append(f"{beyond} chunk ranges end beyond the {size} bytes of {url}")
            if issues:
                problems.append(f"{path}: {'; '.join(issues)}")
    if outside:
        summary = (
            f"{len(outside)} source file(s) lie outside the store and the allowed prefixes "
            f"(readers refuse them by default); to read them, "
            f"{allow_hint(suggested_prefixes(outside))}"
        )
        if args.check_sources:
            problems.append(f"{summary}: not checked")
        else:
            print(f"note: {summary}")
    for p in problems:
        print(f"PROBLEM {p}")
    print(f"{args.src}: {'valid' if not problems else f'{len(problems)} problem(s)'}")
    return EXIT_OK if not problems else EXIT_INVALID


def _live_fingerprint(source: Any) -> Any:
    from zarr_manifest.store._verify import live_fingerprint

    try:
        return live_fingerprint(source)
    except OSError:
        return None


def _source_size(source: Any) -> int | None:
    import obstore

    if source.local_path is not None:
        try:
            return os.path.getsize(source.local_path)
        except OSError:
            return None
    try:
        return int(obstore.head(source.store, source.path)["size"])
    except FileNotFoundError:
        return None


def _convert(args: argparse.Namespace) -> int:
    kind = args.to
    if kind is None:
        dest = args.dest.rstrip("/")
        kind = (
            "kerchunk-json"
            if dest.endswith(".json")
            else "kerchunk-parquet"
            if dest.endswith((".parq", ".parquet"))
            else "icechunk"
            if dest.endswith(".icechunk")
            else "manifest"
        )
    group = _read(args.src, args.storage_options, args.allow)
    _write(
        group,
        args.dest,
        kind,
        overwrite=args.overwrite,
        split_above=args.split_above,
        storage_options=args.storage_options,
    )
    print(f"wrote {kind} {args.dest}")
    return EXIT_OK


def _upgrade(args: argparse.Namespace) -> int:
    from zarr_manifest.upgrade import upgrade

    if upgrade(args.store, storage_options=args.storage_options):
        print(f"{args.store}: upgraded (the old manifests stay until a clean)")
    else:
        print(f"{args.store}: already in the current form; nothing written")
    return EXIT_OK


_COMMANDS = {
    "build": _build,
    "append": _append,
    "info": _info,
    "validate": _validate,
    "convert": _convert,
    "upgrade": _upgrade,
}


if __name__ == "__main__":
    raise SystemExit(main())
