"""Every code block in README.md runs, as a reader would run it.

Python blocks run top to bottom in one interpreter (a later block may use what an earlier one
defined, as a reader's session would), in a folder holding the files the README names:
``data/air.nc``, ``data/air_*.nc``, ``data/new/air_03.nc`` (which follows them in time),
``tiles/*.nc``, ``refs.json``.  ``s3://bucket/...`` is
moto's S3 server on 127.0.0.1, reached through the standard ``AWS_*`` environment variables
(how a user's credentials reach obstore), with ``bucket`` holding ``data/air_*.nc``, readable
anonymously, and a manifest store at ``stores/air.manifest``.

Shell blocks run line by line in a fresh copy of that folder.  ``./dev.sh JOB`` lines are
checked against the jobs ``dev.sh`` offers but not run from here: ``./dev.sh test`` is this
very suite, and ``./dev.sh demo`` has its own test (``test_demo.py``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from zarr_manifest.demo import make_sample_files
from zarr_manifest.testing import S3Server

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BUCKET = "bucket"


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, first line number in README.md and text."""

    language: str
    line: int
    text: str


def readme_blocks(path: Path = README) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[i])
        if opening is None:
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        blocks.append(Block(opening.group(1), start + 1, "\n".join(lines[start:end])))
        i = end + 1
    return blocks


def shell_commands(block: Block) -> list[tuple[int, str]]:
    """``(README line, command)`` for each non-comment line of a shell block."""
    commands = []
    for offset, raw in enumerate(block.text.splitlines()):
        command = raw.split(" #", 1)[0].strip()
        if command and not command.startswith("#"):
            commands.append((block.line + offset, command))
    return commands


def test_readme_has_blocks_of_known_languages() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 10
    # a block in another language would not be run by this module: say so here
    assert {b.language for b in blocks} <= {"python", "bash", ""}
    for block in blocks:
        if block.language == "":
            # unlabelled blocks are pictures (the layout tree), not code
            assert not re.search(r"^\s*(import |from \w+ import|zarr-manifest )", block.text, re.M)


# -- the folder a reader works in ---------------------------------------------------------


def _make_tiles(directory: Path) -> None:
    """A 2x2 tiling in (lat, lon) of two time steps, written with xarray's defaults."""
    import pandas as pd
    import xarray as xr

    directory.mkdir(parents=True)
    lat = np.arange(8, dtype="f8")
    lon = np.arange(10, dtype="f8")
    time = pd.date_range("2001-01-01", periods=4, freq="D")
    rng = np.random.default_rng(0)
    values = rng.standard_normal((4, 8, 10)).astype("f4")
    whole = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), values)}, coords={"time": time, "lat": lat, "lon": lon}
    )
    for ti, ts in enumerate((slice(0, 2), slice(2, 4))):
        for yi, ys in enumerate((slice(0, 4), slice(4, 8))):
            for xi, xs in enumerate((slice(0, 5), slice(5, 10))):
                part = whole.isel(time=ts, lat=ys, lon=xs)
                part.to_netcdf(directory / f"tile_{ti}_{yi}_{xi}.nc")


def _make_refs(source: Path, dest: Path) -> None:
    """kerchunk's references to ``source``, as kerchunk users have them."""
    from kerchunk.hdf import SingleHdf5ToZarr

    refs = SingleHdf5ToZarr(str(source), inline_threshold=0).translate()
    dest.write_text(json.dumps(refs))


@pytest.fixture(scope="module")
def reader_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder a README reader has: the data files the README names, and nothing else."""
    root = tmp_path_factory.mktemp("readme")
    files = make_sample_files(root / "data", n_files=4)
    shutil.copyfile(files[0], root / "data" / "air.nc")
    # a file that arrives later, to append: outside the glob data/air_*.nc
    (root / "data" / "new").mkdir()
    files[-1].rename(root / "data" / "new" / files[-1].name)
    _make_tiles(root / "tiles")
    _make_refs(root / "data" / "air.nc", root / "refs.json")
    return root


@pytest.fixture(scope="module")
def s3_environment(reader_folder: Path) -> Iterator[dict[str, str]]:
    """moto's S3 as ``s3://bucket``, reached through the environment a user's shell has."""
    import boto3

    with S3Server() as server:
        config = server.obstore_config()
        env = {
            "AWS_ENDPOINT_URL": config["endpoint"],
            "AWS_ACCESS_KEY_ID": server.access_key_id,
            "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
            "AWS_REGION": server.region,
            "AWS_DEFAULT_REGION": server.region,
            "AWS_ALLOW_HTTP": "true",
        }
        server.create_bucket(BUCKET)
        client = boto3.client(
            "s3",
            endpoint_url=config["endpoint"],
            aws_access_key_id=server.access_key_id,
            aws_secret_access_key=server.secret_access_key,
            region_name=server.region,
        )
        # a public dataset bucket: anonymous (unsigned) reads are allowed
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject", "s3:ListBucket"],
                    "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
                }
            ],
        }
        client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
        for path in sorted((reader_folder / "data").glob("air_*.nc")):
            client.upload_file(str(path), BUCKET, f"data/{path.name}")
        # the manifest store the README opens from the bucket, made as a user would
        script = f"""
import zarr_manifest as zm
g = zm.build("s3://{BUCKET}/data/air_*.nc", concat_dim="time")
g.to_store("s3://{BUCKET}/stores/air.manifest")
"""
        _run_python(script, cwd=reader_folder, env=env, what="making s3://bucket/stores")
        yield env


def copy_reader_folder(source: Path, dest: Path) -> Path:
    """A copy of the reader's folder at ``dest``, its references file pointing into the copy."""
    shutil.copytree(source, dest)
    refs = dest / "refs.json"
    refs.write_text(refs.read_text().replace(str(source), str(dest)))
    return dest


def _subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return env


def _run_python(script: str, *, cwd: Path, env: dict[str, str], what: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=_subprocess_env(env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{what} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# -- the tests ----------------------------------------------------------------------------

_RUNNER = """
import sys, traceback
from importlib.metadata import entry_points

if not entry_points(group="xarray.backends", name="manifest"):
    # installed before pyproject declared the engine: register it as the entry point does
    from xarray.backends import plugins
    plugins.BACKEND_ENTRYPOINTS["manifest"] = (None, __import__(
        "zarr_manifest.xarray", fromlist=["x"]).ManifestBackendEntrypoint)
    plugins.refresh_engines()

def main():
    namespace = {"__name__": "__readme__"}
    for line, code in BLOCKS:
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except BaseException:
            print(f"README.md block at line {line} failed:", file=sys.stderr)
            traceback.print_exc()
            sys.exit(1)
        print(f"block at line {line}: ok")

if __name__ == "__main__":
    main()
"""


def test_python_blocks_run_top_to_bottom(
    reader_folder: Path, s3_environment: dict[str, str], tmp_path: Path
) -> None:
    work = copy_reader_folder(reader_folder, tmp_path / "reader")
    blocks = [b for b in readme_blocks() if b.language == "python"]
    assert blocks
    # line numbers are kept by padding each block with blank lines in its own compile()
    payload = [(b.line, "\n" * (b.line - 1) + textwrap.dedent(b.text)) for b in blocks]
    script = f"BLOCKS = {payload!r}\n{_RUNNER}"
    runner = tmp_path / "run_readme.py"
    runner.write_text(script)
    done = subprocess.run(
        [sys.executable, str(runner)],
        cwd=work,
        env=_subprocess_env(s3_environment),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": ok") == len(blocks)


def _dev_sh_jobs() -> set[str]:
    text = (REPO / "dev.sh").read_text()
    return set(re.findall(r"^\s{4}([a-z]+)\)\s*$", text, re.M))


def _shell_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.language == "bash"]


@pytest.mark.parametrize("block", _shell_blocks(), ids=lambda b: f"line{b.line}")
def test_shell_block_runs(
    block: Block, reader_folder: Path, tmp_path: Path, s3_environment: dict[str, str]
) -> None:
    work = copy_reader_folder(reader_folder, tmp_path / "reader")
    path = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), os.environ.get("PATH")]))
    assert (Path(sys.executable).parent / "zarr-manifest").exists(), "zarr-manifest not installed"
    env = _subprocess_env(s3_environment) | {"PATH": path}
    for line, command in shell_commands(block):
        words = command.split()
        if words[0] == "./dev.sh":
            assert words[1] in _dev_sh_jobs(), f"README.md:{line}: dev.sh has no job {words[1]!r}"
            continue
        assert words[0] == "zarr-manifest", f"README.md:{line}: unexpected command {command!r}"
        done = subprocess.run(
            ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"README.md:{line}: {command}\n{done.stdout}\n{done.stderr}"
