"""The CF attributes that say how stored numbers become values, and the check that two
arrays about to be joined agree on them.

Joining the references of two arrays keeps one set of attributes for the whole.  If the
inputs disagree on how their stored numbers are decoded (``scale_factor``, ``units`` of a
time axis ...), every value taken from the other inputs would be decoded wrongly, and no
reader could tell.  xarray does not compare these between the variables it concatenates
(its default keeps the first input's attributes), so the check happens here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from zarr_manifest.errors import CombineError

__all__ = ["DECODING_ATTRIBUTES", "check_decoding_attributes", "same_value"]

#: attributes whose values change what a stored number means
DECODING_ATTRIBUTES = (
    "units",
    "calendar",
    "scale_factor",
    "add_offset",
    "_FillValue",
    "missing_value",
)


def check_decoding_attributes(
    name: str, first: Mapping[str, Any], other: Mapping[str, Any], *, inputs: str = ""
) -> None:
    """Refuse to join two arrays whose decoding attributes differ.

    Parameters
    ----------
    name
        What the arrays are (a variable name), for the message.
    first, other
        The two arrays' attributes (or encodings).
    inputs
        Optional: which inputs are compared (e.g. ``"files a.nc and b.nc"``), for the message.

    Raises
    ------
    CombineError
        An attribute of `DECODING_ATTRIBUTES` is present in one and absent from the other, or
        has different values; the message names the variable, the attribute and both values.
    """
    for attribute in DECODING_ATTRIBUTES:
        a = first.get(attribute, _ABSENT)
        b = other.get(attribute, _ABSENT)
        if not same_value(a, b):
            where = f" ({inputs})" if inputs else ""
            raise CombineError(
                f"cannot join {name!r}: its {attribute} is {_show(a)} in one input and "
                f"{_show(b)} in another{where}; joined references would decode the values "
                "of one of them wrongly"
            )


class _Absent:
    def __repr__(self) -> str:
        return "absent"


_ABSENT = _Absent()


def _show(value: Any) -> str:
    return "absent" if value is _ABSENT else repr(value)


def same_value(a: Any, b: Any) -> bool:
    """Whether two attribute values are the same (arrays by value, NaN equal to NaN)."""
    if a is _ABSENT or b is _ABSENT:
        return a is b
    if isinstance(a, str) or isinstance(b, str):
        return bool(a == b)
    try:
        x, y = np.asarray(a), np.asarray(b)
    except (TypeError, ValueError):
        return bool(a == b)
    if x.shape != y.shape:
        return False
    if x.dtype.kind in "fc" or y.dtype.kind in "fc":
        # NaN fill values are the same fill value
        return bool(np.array_equal(x, y, equal_nan=True))
    return bool(np.array_equal(x, y))
