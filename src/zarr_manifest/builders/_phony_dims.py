"""``phony_dim_N`` names for axes that have no dimension name (h5netcdf's scheme), shared
by the builders of HDF5-based files: HDF5 datasets without dimension scales, DMR++
``<Dim size=...>`` without a name."""

from __future__ import annotations

__all__ = ["PhonyDims"]


class PhonyDims:
    """``phony_dim_N`` names for unnamed axes, one set per scope (a group, a file).

    An axis of length L takes the scope's first phony dimension of length L that the same
    variable has not used yet, so one variable never repeats a name (h5netcdf's scheme).
    """

    def __init__(self) -> None:
        self._by_length: dict[int, list[str]] = {}
        self._count = 0

    def names(self, lengths: list[int]) -> list[str]:
        """The names of one variable's unnamed axes, of these lengths, in order."""
        used: dict[int, int] = {}
        out = []
        for length in lengths:
            k = used.get(length, 0)
            used[length] = k + 1
            names = self._by_length.setdefault(length, [])
            if k == len(names):
                names.append(f"phony_dim_{self._count}")
                self._count += 1
            out.append(names[k])
        return out
