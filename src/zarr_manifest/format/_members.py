"""The extension rule of the format: an unknown member must be ignorable to be ignored."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from zarr_manifest.errors import ManifestFormatError

__all__ = ["refuse_unknown_members"]


def refuse_unknown_members(
    members: Mapping[str, Any],
    known: Collection[str],
    *,
    what: str,
    location: str,
    field: str | None = None,
) -> None:
    """Raise for the first member of ``members`` that is neither ``known`` nor an object
    marked ``"must_understand": false`` (which a reader may ignore).

    ``what`` names the member in the message, with ``{member}`` standing for its quoted
    name; ``field`` is the error's field (default: the member).

    Raises
    ------
    ManifestFormatError
        Naming the member and ``location``.
    """
    for member, value in members.items():
        if member in known:
            continue
        if isinstance(value, dict) and value.get("must_understand") is False:
            continue
        raise ManifestFormatError(
            f"{location}: unknown {what.format(member=repr(member))} (not marked "
            "must_understand: false); this reader does not support it",
            location=location,
            field=field or member,
        )
