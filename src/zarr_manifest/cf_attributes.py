"""The CF attributes that say how stored numbers become values, and the check that two
arrays about to be joined agree on them.

Joining the references of two arrays keeps one set of attributes for the whole.  If the
inputs disagree on how their stored numbers are decoded (``scale_factor``, ``units`` of a
time axis ...), every value taken from the other inputs would be decoded wrongly, and no
reader could tell.  xarray does not compare these between the variables it concatenates
(its default keeps the first input's attributes), so the check happens here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from zarr_manifest.errors import CombineError

__all__ = [
    "ABSENT",
    "DECODING_ATTRIBUTES",
    "check_decoding_attributes",
    "first_difference",
    "same_value",
]

#: attributes whose values change what a stored number means (xarray's CF decoding: times,
#: masking, packing, unsigned integers, booleans)
DECODING_ATTRIBUTES = (
    "units",
    "calendar",
    "scale_factor",
    "add_offset",
    "_FillValue",
    "missing_value",
    "_Unsigned",
    "dtype",
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
    difference = first_difference(first, other)
    if difference is not None:
        attribute, a, b = difference
        where = f" ({inputs})" if inputs else ""
        raise CombineError(
            f"cannot join {name!r}: its {attribute} is {_show(a)} in one input and "
            f"{_show(b)} in another{where}; joined references would decode the values "
            "of one of them wrongly"
        )


def first_difference(
    first: Mapping[str, Any], other: Mapping[str, Any], keys: Iterable[str] = DECODING_ATTRIBUTES
) -> tuple[str, Any, Any] | None:
    """The first of ``keys`` whose value differs between ``first`` and ``other``, as
    ``(key, first's, other's)`` (`ABSENT` where one lacks it); None when they agree.

    Time units that name the same instants (``"days since 2000-01-01"`` and ``"days since
    2000-01-01 00:00:00"``, in the same calendar) agree.
    """
    for key in keys:
        a, b = first.get(key, ABSENT), other.get(key, ABSENT)
        if same_value(a, b):
            continue
        if key == "units" and same_time_units(a, b, first.get("calendar"), other.get("calendar")):
            continue
        return key, a, b
    return None


class _Absent:
    def __repr__(self) -> str:
        return "absent"


#: what `first_difference` reports for an attribute one side lacks
ABSENT = _Absent()


def _show(value: Any) -> str:
    return "absent" if value is ABSENT else repr(value)


def same_value(a: Any, b: Any) -> bool:
    """Whether two attribute values are the same (arrays by value, NaN equal to NaN)."""
    if a is ABSENT or b is ABSENT:
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


def same_time_units(a: Any, b: Any, calendar_a: Any, calendar_b: Any) -> bool:
    """Whether two "<unit> since <date>" strings mean the same (``"days since 2000-01-01"``
    and ``"days since 2000-01-01 00:00:00"``): they decode 0 and 1 to the same dates."""
    if not (isinstance(a, str) and isinstance(b, str) and "since" in a and "since" in b):
        return False
    if not same_value(calendar_a, calendar_b):
        return False
    try:
        from xarray.coding.times import decode_cf_datetime
    except ImportError:
        return False
    probe = np.array([0, 1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            da = decode_cf_datetime(probe, a, calendar_a)
            db = decode_cf_datetime(probe, b, calendar_b)
    except Exception:
        return False
    return bool(np.array_equal(da, db))
