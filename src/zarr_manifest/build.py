"""`build`: many legacy files → one virtual dataset, parsing in parallel on any executor."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Executor, Future, as_completed
from typing import Any, Literal

from zarr_manifest.builders import default_load
from zarr_manifest.combine import COMPARE_LIMIT, Compat, combine_by_coords, concat
from zarr_manifest.errors import BuildError
from zarr_manifest.format.storage_options import StorageOptions, merge_storage_options
from zarr_manifest.group import ManifestGroup

__all__ = ["build", "expand_inputs"]


def expand_inputs(
    urls_or_glob: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    storage_options: StorageOptions | None = None,
) -> list[str]:
    """The input list: a glob pattern (local, or a URL whose last parts hold wildcards) is
    expanded and sorted; a list is taken as given.  A URL pattern is listed with the
    ``storage_options`` that apply to its directory.

    Raises
    ------
    BuildError
        A pattern matches nothing.
    """
    if isinstance(urls_or_glob, str | os.PathLike):
        text = os.fspath(urls_or_glob)
        if not any(c in text for c in "*?["):
            return [text]
        matches = (
            _glob_url(text, storage_options)
            if "://" in text
            else sorted(glob.glob(os.path.expanduser(text)))
        )
        if not matches:
            raise BuildError(f"no input matches {text!r}")
        return matches
    return [os.fspath(u) for u in urls_or_glob]


def build(
    urls_or_glob: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    concat_dim: str | None = None,
    combine: Literal["nested", "by_coords"] = "nested",
    executor: Executor | None = None,
    progress: bool | Callable[[int, int, str], None] = False,
    format: str | None = None,
    group: str | None = None,
    drop: Collection[str] = (),
    load: Collection[str] | None = None,
    compat: Compat = "equals",
    compare_limit: int | None = COMPARE_LIMIT,
    storage_options: StorageOptions | None = None,
    **obstore_kwargs: Any,
) -> ManifestGroup:
    """Parse every file into a virtual dataset and combine them into one.

    Parameters
    ----------
    urls_or_glob
        Local paths or URLs, or one glob pattern (``"data/*.nc"``, ``"s3://b/p/*.nc"``).
    concat_dim
        For ``combine="nested"``: the dimension to concatenate along, in input order.
    combine
        ``"nested"`` (input order along ``concat_dim``) or ``"by_coords"`` (ordered by the
        values of 1-D coordinates, over several dimensions if need be).
    executor
        Where files are parsed: any `concurrent.futures.Executor` — a thread or process
        pool, or a dask.distributed ``Client.get_executor()`` to parse on a cluster.
        Default: in this thread, one file after the other.
    progress
        True for a progress bar on stderr (rich if installed), or a callable
        ``(done, total, url)`` called after each file.
    load
        Variables to store inline instead of referencing.  Default (None): as
        `open_virtual`, the dimension coordinates (1-D arrays named like their dimension)
        of the first file and the bounds variables they name, in every file, so that they
        compare by value and per-file time units are re-encoded into one.  ``()`` keeps
        everything referenced.
    compat, compare_limit
        How variables without ``concat_dim`` are checked between files (see `concat`):
        default, the same decoded values, read when their references differ and they are at
        most ``compare_limit`` bytes.
    storage_options
        Credentials and client settings for remote inputs, in obstore's vocabulary, with
        URL-prefix overrides (see `open_virtual`): used to list a glob pattern, to parse
        every file and to read the values compared.  Default: obstore's (credentials from
        the environment).
    format, group, drop, **obstore_kwargs
        Passed to `open_virtual` for every file (``obstore_kwargs``: options too, the form
        taken before ``storage_options``; merged into it).

    Raises
    ------
    BuildError
        One or more files failed to parse: the message lists every file with its cause
        (nothing is combined or written in that case).
    CombineError
        The parsed datasets cannot be combined as asked.
    """
    obstore_kwargs = merge_storage_options(storage_options, obstore_kwargs)
    urls = expand_inputs(urls_or_glob, obstore_kwargs)
    if not urls:
        raise BuildError("build needs at least one input")
    if combine not in ("nested", "by_coords"):
        raise BuildError(f"combine must be 'nested' or 'by_coords', got {combine!r}")
    if combine == "nested" and concat_dim is None and len(urls) > 1:
        raise BuildError("combine='nested' over several files needs concat_dim")
    if load is None:
        # the first file says which variables are loaded by default, and every file loads
        # the same ones (so they combine alike); only that file is parsed twice
        try:
            first = parse_one(urls[0], _options(format, group, drop, ()), obstore_kwargs)
        except Exception:
            # the main pass parses this file again and reports it with every other failure
            load = ()
        else:
            load = default_load(first)
    options = _options(format, group, drop, load)
    groups = _parse_all(urls, options, obstore_kwargs, executor, _reporter(progress, len(urls)))
    if len(groups) == 1:
        return groups[0]
    labels = _labels(urls)
    checks: dict[str, Any] = {
        "labels": labels,
        "compat": compat,
        "compare_limit": compare_limit,
        "store_options": obstore_kwargs,
    }
    if combine == "by_coords":
        return combine_by_coords(groups, **checks)
    assert concat_dim is not None
    return concat(groups, concat_dim, **checks)


def _labels(urls: Sequence[str]) -> list[str]:
    """How errors name the inputs: file names, or whole paths when file names repeat
    (``2020/air.nc``, ``2021/air.nc``), so a message always says which file."""
    names = [u.rstrip("/").rsplit("/", 1)[-1] for u in urls]
    if len(set(names)) < len(names):
        names = list(urls)
    return [repr(n) for n in names]


def _options(
    format: str | None, group: str | None, drop: Collection[str], load: Collection[str]
) -> dict[str, Any]:
    return {"format": format, "group": group, "drop": tuple(drop), "load": tuple(load)}


def parse_one(url: str, options: dict[str, Any], obstore_kwargs: dict[str, Any]) -> ManifestGroup:
    """Parse one file (the unit of work of a serial build; importable and picklable)."""
    from zarr_manifest.builders import open_virtual

    return open_virtual(url, **options, **obstore_kwargs)


def parse_batch(
    urls: Sequence[str], options: dict[str, Any], obstore_kwargs: dict[str, Any]
) -> list[ManifestGroup | BaseException]:
    """Parse several files: the unit of work sent to executors (importable and picklable).

    One file's failure does not stop the others: its exception takes its place in the list.
    """
    import pickle

    results: list[ManifestGroup | BaseException] = []
    for url in urls:
        try:
            results.append(parse_one(url, options, obstore_kwargs))
        except Exception as e:
            try:
                pickle.dumps(e)
            except Exception:
                # sent back from another process, it would fail the whole batch
                e = BuildError(f"{type(e).__name__}: {e}")
            results.append(e)
    return results


#: An executor gets the files in about this many tasks per worker (batches of 1 to
#: `MAX_BATCH` files): enough to keep every worker busy to the end, few enough that the cost
#: of a task (a submission, a round trip, a pickled call and result: milliseconds on a dask
#: cluster) stays small against parsing.
TASKS_PER_WORKER = 8
#: The most files one executor task parses.
MAX_BATCH = 64


def _batches(urls: Sequence[str], workers: int) -> list[range]:
    """Index ranges of the batches of files sent to an executor, in input order."""
    tasks = max(1, TASKS_PER_WORKER * workers)
    size = min(MAX_BATCH, max(1, -(-len(urls) // tasks)))
    return [range(i, min(i + size, len(urls))) for i in range(0, len(urls), size)]


def _workers(executor: Executor) -> int:
    """How many tasks ``executor`` runs at once, as far as it says (else the CPU count)."""
    count = getattr(executor, "_max_workers", None)  # thread and process pools
    if isinstance(count, int) and count > 0:
        return count
    client = getattr(executor, "_client", None)  # dask.distributed's ClientExecutor
    if client is not None:
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:
            pass
    return os.cpu_count() or 4


def _parse_all(
    urls: Sequence[str],
    options: dict[str, Any],
    obstore_kwargs: dict[str, Any],
    executor: Executor | None,
    report: Callable[[str], None],
) -> list[ManifestGroup]:
    results: list[ManifestGroup | None] = [None] * len(urls)
    failures: list[tuple[int, BaseException]] = []
    if executor is None:
        for i, url in enumerate(urls):
            try:
                results[i] = parse_one(url, options, obstore_kwargs)
            except Exception as e:
                failures.append((i, e))
            report(url)
    else:
        futures: dict[Future[list[ManifestGroup | BaseException]], range] = {
            executor.submit(parse_batch, [urls[i] for i in batch], options, obstore_kwargs): batch
            for batch in _batches(urls, _workers(executor))
        }
        for future in as_completed(futures):
            batch = futures.pop(future)
            try:
                parsed: list[ManifestGroup | BaseException] = future.result()
            except Exception as e:
                # the task itself failed (a worker died, a result that cannot be sent back):
                # every file of the batch is reported with that cause
                parsed = [e] * len(batch)
            for i, outcome in zip(batch, parsed, strict=True):
                if isinstance(outcome, BaseException):
                    failures.append((i, outcome))
                else:
                    results[i] = outcome
                report(urls[i])
    if failures:
        failures.sort(key=lambda f: f[0])
        lines = "\n".join(f"  {urls[i]}: {type(e).__name__}: {e}" for i, e in failures)
        error = BuildError(f"{len(failures)} of {len(urls)} files failed to parse:\n{lines}")
        raise error from failures[0][1]
    return [g for g in results if g is not None]


def _reporter(
    progress: bool | Callable[[int, int, str], None], total: int
) -> Callable[[str], None]:
    done = 0
    if callable(progress):

        def call(url: str) -> None:
            nonlocal done
            done += 1
            progress(done, total, url)

        return call
    if not progress:
        return lambda url: None
    try:
        from rich.console import Console
        from rich.progress import Progress
    except ImportError:
        import sys

        def plain(url: str) -> None:
            nonlocal done
            done += 1
            print(f"\r[{done}/{total}] {url}", end="\n" if done == total else "", file=sys.stderr)

        return plain
    # on stderr, as documented: stdout stays for the command's own output
    bar = Progress(console=Console(stderr=True), transient=False)
    task = bar.add_task("parsing", total=total)
    bar.start()

    def rich_step(url: str) -> None:
        nonlocal done
        done += 1
        bar.update(task, advance=1, description=f"parsing {url.rsplit('/', 1)[-1]}")
        if done == total:
            bar.stop()

    return rich_step


def _glob_url(pattern: str, storage_options: StorageOptions | None) -> list[str]:
    import fnmatch

    import obstore

    from zarr_manifest.format.location import open_location

    first = min(i for i, c in enumerate(pattern) if c in "*?[")
    base = pattern[: pattern.rfind("/", 0, first) + 1]
    location = open_location(base, storage_options=storage_options)
    names = [m["path"] for m in obstore.list(location.store).collect()]
    rest = pattern[len(base) :]
    return sorted(base + n for n in names if fnmatch.fnmatchcase(n, rest))
