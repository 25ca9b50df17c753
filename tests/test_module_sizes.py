"""One idea per module: a module of ``src/zarr_manifest`` longer than `MAX_LINES` says at its
top why it is one idea (issue 18).

The convention, checked here: the module's docstring holds a paragraph starting with
``One idea:`` and a sentence or two of reason, e.g. (``store/fetch.py``)::

    One idea: the last step of every chunk read, bytes for byte ranges.  Its layers share
    one contract ...

A long module without it is either split along its seams or given its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import zarr_manifest

SRC = Path(zarr_manifest.__file__).parent
MAX_LINES = 800
MARKER = "One idea:"


def _has_reason(docstring: str | None) -> bool:
    """Whether a docstring has a paragraph starting with the marker and some words after it."""
    for paragraph in (docstring or "").split("\n\n"):
        text = " ".join(paragraph.split())
        if text.startswith(MARKER) and len(text[len(MARKER) :].split()) >= 5:
            return True
    return False


def test_the_marker_is_recognised() -> None:
    assert _has_reason("Title.\n\nOne idea: reading byte ranges, sync and async, checked.\n")
    assert not _has_reason("Title.\n\nOne idea:\n")  # a marker without a reason
    assert not _has_reason("Title.  One idea: in the middle of a paragraph, not its start.")
    assert not _has_reason(None)


def test_long_modules_say_why_they_are_one_idea() -> None:
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > MAX_LINES and not _has_reason(ast.get_docstring(ast.parse(text))):
            missing.append(f"{path.relative_to(SRC)} ({lines} lines)")
    assert not missing, (
        f"modules over {MAX_LINES} lines without a '{MARKER}' paragraph in their docstring "
        "(split them, or say why they are one idea): " + ", ".join(missing)
    )
