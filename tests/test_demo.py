"""The README's demo (`./dev.sh demo`) runs end to end and checks its own results."""

from __future__ import annotations

from pathlib import Path

import pytest

from zarr_manifest import demo


def test_demo_runs_and_checks_every_value(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert demo.main([str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "every variable equals netCDF4's values" in printed
    assert "virtual shards:" in printed and "the values are the same" in printed
    assert printed.rstrip().endswith("demo OK")
    assert (tmp_path / "out" / "air.manifest" / "air" / "manifest.json").is_file()
