"""The benchmark harness: scenario and implementation registries, timing, reporting.

An *implementation* is a factory ``fn(data) -> work``, called once per scenario run (untimed
set-up: opening files, parsing, filling stores). ``work`` is what gets timed:

- a zero-argument callable (one phase, named by the scenario's ``default_phase``),
- a :class:`Phase` (a callable plus timing options),
- a mapping ``phase name -> callable | Phase`` (phases are timed in insertion order), or
- whatever the scenario's own ``measure`` function expects (the ``random`` scenario takes a
  ``read(selection)`` callable).

A factory may also be a generator function: it ``yield``\\ s the work, and the code after the
``yield`` runs as teardown once the harness is done with it. A factory that raises
``ModuleNotFoundError`` is reported as "not installed".

Adding an implementation is one line::

    IMPLEMENTATIONS["A"]["zarr-manifest"] = my_factory
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import json
import os
import shutil
import statistics
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Factory = Callable[[Any], Any]


@dataclass(frozen=True)
class Phase:
    """One timed step of an implementation.

    Parameters
    ----------
    fn
        The zero-argument callable to time; its return value of the last call is passed to
        the scenario's ``check``.
    repeats
        Timed calls (best is reported); ``None`` uses the run's ``--repeats``.
    warmup
        Call once untimed first (off for expensive one-shot steps such as writing 1M refs).
    memory
        Also run once under ``tracemalloc`` and report peak and retained bytes.
    per
        Count of items (e.g. references) to report time and memory per item; ``None`` for none.
    peak_rss
        Also report the process's peak RSS during the timed calls and its growth over the
        RSS before them (Linux: the kernel's high-water mark, reset before the phase).
        Unlike ``memory`` it adds no tracing overhead, so it suits long phases.
    """

    fn: Callable[[], Any]
    repeats: int | None = None
    warmup: bool = True
    memory: bool = False
    per: int | None = None
    peak_rss: bool = False


@dataclass
class RunConfig:
    """Options of one harness run shared by every scenario."""

    quick: bool
    repeats: int
    cache_dir: Path
    full_read: bool = False


@dataclass
class Scenario:
    """A benchmark scenario: data generation plus how implementations are measured.

    Parameters
    ----------
    key
        Short name used on the command line and in ``IMPLEMENTATIONS`` (``"A"``, ``"random"``).
    title
        One-line description for the report.
    baseline
        Implementation name whose figures the ratios are computed against.
    params
        ``params(config) -> dict`` of generation parameters (sizes, seeds); the cache key.
    generate
        ``generate(params, directory) -> None`` writes the data files into ``directory``.
    load
        ``load(params, directory, config) -> data`` builds the object handed to factories.
    default_phase
        Phase name used when a factory returns a bare callable.
    context
        Optional ``context(data) -> context manager yielding data`` entered around all the
        implementations of the scenario (e.g. an HTTP server in front of the files).
    check
        Optional ``check(phase, result, data)`` raising :class:`CheckError` when an
        implementation returns wrong values.
    measure
        Optional ``measure(work, data, config) -> metrics`` replacing phase timing.
    cache_key
        Optional scenario key whose cached data this scenario shares (R and random reuse A's).
    """

    key: str
    title: str
    baseline: str
    params: Callable[[RunConfig], dict[str, Any]]
    generate: Callable[[dict[str, Any], Path], None]
    load: Callable[[dict[str, Any], Path, RunConfig], Any]
    default_phase: str = "time"
    context: Callable[[Any], AbstractContextManager[Any]] | None = None
    check: Callable[[str, Any, Any], None] | None = None
    measure: Callable[[Any, Any, RunConfig], dict[str, dict[str, Any]]] | None = None
    cache_key: str | None = None


class CheckError(Exception):
    """An implementation returned values that differ from the data written."""


def expect(condition: bool, message: str) -> None:
    """Raise :class:`CheckError` with ``message`` unless ``condition`` holds.

    (Not ``assert``: checks must also run under ``python -O``.)
    """
    if not condition:
        raise CheckError(message)


SCENARIOS: dict[str, Scenario] = {}
IMPLEMENTATIONS: dict[str, dict[str, Factory]] = {}


def register_scenario(scenario: Scenario) -> Scenario:
    """Add ``scenario`` to :data:`SCENARIOS` and give it an empty implementation table."""
    SCENARIOS[scenario.key] = scenario
    IMPLEMENTATIONS.setdefault(scenario.key, {})
    return scenario


# --------------------------------------------------------------------------- data cache


def cached_data_dir(scenario: Scenario, config: RunConfig) -> tuple[dict[str, Any], Path]:
    """Return the scenario's params and a directory holding its generated data.

    The directory is keyed by the scenario (or its ``cache_key``) and a hash of the params,
    and is generated into a temporary sibling then renamed, so an interrupted generation
    never leaves a half-written cache entry behind.
    """
    params = scenario.params(config)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{scenario.cache_key or scenario.key}-{digest}"
    target = config.cache_dir / name
    if not (target / ".complete").exists():
        config.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=config.cache_dir))
        try:
            # generators write only data files, never absolute paths, so renaming is safe
            SCENARIOS[scenario.cache_key or scenario.key].generate(params, staging)
            (staging / ".complete").write_text(json.dumps(params, sort_keys=True))
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    return params, target


# --------------------------------------------------------------------------- measuring


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def latency_metrics(samples_s: list[float]) -> dict[str, dict[str, Any]]:
    """Summarise per-call latencies (seconds) as p50/p95/p99/mean metrics in milliseconds."""
    ms = [s * 1e3 for s in samples_s]
    return {
        "p50": {"value": _percentile(ms, 50), "unit": "ms"},
        "p95": {"value": _percentile(ms, 95), "unit": "ms"},
        "p99": {"value": _percentile(ms, 99), "unit": "ms"},
        "mean": {"value": statistics.fmean(ms), "unit": "ms"},
    }


def time_call(fn: Callable[[], Any], repeats: int, warmup: bool) -> tuple[list[float], Any]:
    """Call ``fn`` (once untimed if ``warmup``) then ``repeats`` times; return times, result."""
    result = None
    if warmup:
        result = fn()
    times = []
    for _ in range(repeats):
        result = None  # drop the previous result so repeats do not hold two copies
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def memory_call(fn: Callable[[], Any]) -> tuple[int, int, Any]:
    """Run ``fn`` once under tracemalloc; return (peak bytes, retained bytes, result).

    Retained bytes were allocated during the call and are still alive after it: what ``fn``
    built and returns, not its inputs (numpy reports its buffers to tracemalloc, so arrays
    count).
    """
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, retained, result


def _status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> int | None:
    """Reset the kernel's RSS high-water mark to the current RSS; return that RSS in bytes
    (None where the mark cannot be reset: off Linux, or before Linux 4.0)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status_bytes("VmRSS")


def as_phases(work: Any, default_phase: str) -> dict[str, Phase]:
    """Normalise what a factory returned (callable, Phase or mapping) to named phases."""
    if isinstance(work, Phase):
        return {default_phase: work}
    if callable(work):
        return {default_phase: Phase(work)}
    if isinstance(work, Mapping):
        return {
            name: step if isinstance(step, Phase) else Phase(step) for name, step in work.items()
        }
    raise TypeError(f"an implementation must return a callable, Phase or mapping, got {work!r}")


def measure_phases(
    scenario: Scenario, work: Any, data: Any, config: RunConfig
) -> dict[str, dict[str, Any]]:
    """Time each phase of ``work`` (best of repeats) and check its result."""
    metrics: dict[str, dict[str, Any]] = {}
    for name, phase in as_phases(work, scenario.default_phase).items():
        repeats = phase.repeats if phase.repeats is not None else config.repeats
        rss_before = reset_peak_rss() if phase.peak_rss else None
        times, result = time_call(phase.fn, repeats, phase.warmup)
        peak = _status_bytes("VmHWM") if rss_before is not None else None
        if scenario.check is not None:
            scenario.check(name, result, data)
        del result
        best = min(times)
        metrics[name] = {"value": best, "unit": "s", "runs": times}
        if phase.per:
            metrics[f"{name}/item"] = {"value": best / phase.per * 1e6, "unit": "us"}
        if rss_before is not None and peak is not None:
            metrics[f"{name} peak RSS"] = {"value": peak, "unit": "B"}
            metrics[f"{name} RSS growth"] = {"value": peak - rss_before, "unit": "B"}
        if phase.memory:
            peak, retained, result = memory_call(phase.fn)
            del result
            metrics[f"{name} peak mem"] = {"value": peak, "unit": "B"}
            metrics[f"{name} retained mem"] = {"value": retained, "unit": "B"}
            if phase.per:
                metrics[f"{name} B/item"] = {"value": retained / phase.per, "unit": "B"}
    return metrics


@dataclass
class ImplResult:
    """The outcome of one implementation on one scenario."""

    status: str  # "ok", "not installed", "error"
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    message: str = ""


def _enter_factory(factory: Factory, data: Any) -> tuple[Any, Iterator[Any] | None]:
    produced = factory(data)
    if inspect.isgenerator(produced):
        return next(produced), produced
    return produced, None


def run_implementation(
    scenario: Scenario, factory: Factory, data: Any, config: RunConfig
) -> ImplResult:
    """Set up, measure and tear down one implementation, catching its failures."""
    generator = None
    try:
        try:
            work, generator = _enter_factory(factory, data)
        except ModuleNotFoundError as exc:
            return ImplResult("not installed", message=f"module {exc.name!r} not found")
        if scenario.measure is not None:
            metrics = scenario.measure(work, data, config)
        else:
            metrics = measure_phases(scenario, work, data, config)
        return ImplResult("ok", metrics)
    except Exception as exc:
        detail = "".join(traceback.format_exception(exc, limit=-4))
        return ImplResult("error", message=f"{type(exc).__name__}: {exc}\n{detail}")
    finally:
        if generator is not None:
            # run the factory's teardown (the code after its ``yield``)
            next(generator, None)


def run_scenario(
    scenario: Scenario, config: RunConfig, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Generate (or reuse) the data and run every registered implementation on it."""
    params, directory = cached_data_dir(scenario, config)
    data = scenario.load(params, directory, config)
    # other work on the machine inflates times; record how busy it was
    load_before = os.getloadavg()[0]
    results: dict[str, ImplResult] = {}
    context = scenario.context(data) if scenario.context else nullcontext(data)
    with context as live_data:
        for name, factory in IMPLEMENTATIONS[scenario.key].items():
            log(f"  [{scenario.key}] {name} ...")
            start = time.perf_counter()
            results[name] = run_implementation(scenario, factory, live_data, config)
            log(
                f"  [{scenario.key}] {name}: {results[name].status}"
                f" ({time.perf_counter() - start:.1f} s)"
            )
    return {
        "title": scenario.title,
        "baseline": scenario.baseline,
        "params": params,
        "data_dir": str(directory),
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "implementations": {
            name: {"status": r.status, "message": r.message, "metrics": r.metrics}
            for name, r in results.items()
        },
    }


# --------------------------------------------------------------------------- reporting


def add_ratios(report: dict[str, Any]) -> None:
    """Add ``ratio`` (value / baseline value) to every metric the baseline also has."""
    impls = report["implementations"]
    base = impls.get(report["baseline"])
    if base is None or base["status"] != "ok":
        return
    for entry in impls.values():
        for name, metric in entry["metrics"].items():
            ref = base["metrics"].get(name)
            if ref and ref["value"]:
                metric["ratio"] = metric["value"] / ref["value"]


def format_value(value: float, unit: str) -> str:
    """Human-readable figure: seconds shown in s or ms, bytes in KiB/MiB."""
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.3g} us"
        return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"
    if unit == "B":
        for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(value) >= scale:
                return f"{value / scale:.1f} {suffix}"
        return f"{value:.0f} B"
    if unit == "cpu s":
        return format_value(value, "s") + " CPU"
    if unit == "ms":
        return f"{value * 1e3:.3g} us" if value < 0.1 else f"{value:.3g} ms"
    return f"{value:.3g} {unit}" if abs(value) < 1000 else f"{value:,.0f} {unit}"


def format_table(key: str, report: dict[str, Any]) -> str:
    """Render one scenario's results as a plain-text table, one line per metric."""
    rows = [["implementation", "metric", "value", "ratio"]]
    for impl, entry in report["implementations"].items():
        if entry["status"] != "ok":
            status = entry["status"]
            if status == "error":
                status = "error: " + entry["message"].splitlines()[0][:100]
            rows.append([impl, status, "", ""])
            continue
        for i, (name, metric) in enumerate(entry["metrics"].items()):
            ratio = f"x{metric['ratio']:.2f}" if "ratio" in metric else ""
            value = format_value(metric["value"], metric["unit"])
            rows.append(["" if i else impl, name, value, ratio])
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        f"== {key}: {report['title']}",
        f"   params {json.dumps(report['params'])}; ratio = value / {report['baseline']}'s",
    ]
    if "load_average_1min" in report:
        before, after = report["load_average_1min"]
        lines.append(f"   1-min load average {before:.1f} before, {after:.1f} after")
    for n, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[3]]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in [*widths, len(row[3])]))
    return "\n".join(lines)


#: metrics left out of the plot (the table has them): tail latencies would triple the bars
_PLOT_SKIP = ("p95", "mean")


def plot(reports: dict[str, dict[str, Any]], path: Path) -> None:
    """Write a PNG: one panel per scenario, one horizontal bar per (metric, implementation),
    labelled on the axis (labels cannot overlap), the time printed at each bar's end.

    zarr-manifest's default path is dark blue, its opt-ins light blue, peers grey.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for key, report in reports.items():
        rows = []
        for metric in _time_metrics(report):
            if metric in _PLOT_SKIP:
                continue
            for impl, entry in report["implementations"].items():
                value = (
                    _in_seconds(entry["metrics"].get(metric)) if entry["status"] == "ok" else None
                )
                if value:
                    rows.append((metric, impl, value))
        if rows:
            panels.append((key, report, rows))
    if not panels:
        return
    labelled = [(key, report, rows, _bar_labels(rows)) for key, report, rows in panels]
    # a wrapped label (two lines) gets a taller row, so that neighbours cannot overlap
    heights = [
        1.2 + sum(0.24 + 0.11 * label.count("\n") for label in labels)
        for _, _, _, labels in labelled
    ]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(12, sum(heights)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, (key, report, rows, labels) in zip(axes[:, 0], labelled, strict=True):
        # rows stacked top down, two-line labels given more room
        steps = [1 + 0.45 * label.count("\n") for label in labels]
        ys = [-(sum(steps[:i]) + steps[i] / 2) for i in range(len(rows))]
        values = [v for _, _, v in rows]
        colors = [_bar_colour(impl, m) for m, impl, _ in rows]
        ax.barh(ys, values, color=colors, height=0.75)
        ax.set_ylim(-sum(steps), 0)
        ax.set_yticks(ys, labels, fontsize=7)
        for y, v in zip(ys, values, strict=True):
            ax.annotate(" " + _short_seconds(v), (v, y), va="center", ha="left", fontsize=7)
        if max(values) / min(values) > 30:
            # a log scale only where the figures span orders of magnitude
            ax.set_xscale("log")
            ax.set_xlim(min(values) / 2, max(values) * 6)
            ax.set_xlabel("seconds, log scale (lower is better)", fontsize=8)
        else:
            ax.set_xlim(0, max(values) * 1.18)
            ax.set_xlabel("seconds (lower is better)", fontsize=8)
        load = report.get("load_average_1min")
        busy = f"; 1-min load {load[0]:.1f}-{load[1]:.1f}" if load else ""
        ax.set_title(f"{key}: {report['title']}{busy}", fontsize=9, loc="left")
    fig.suptitle(
        "zarr-manifest benchmarks: time, lower is better "
        "(dark blue: zarr-manifest's default path; light blue: its opt-ins; grey: peers)",
        fontsize=9,
    )
    # room at the top for the figure title, so that it does not overlap the first panel's
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: labels longer than this are split before the metric, onto a second line
_LABEL_WIDTH = 48


def _bar_labels(rows: list[tuple[str, str, float]]) -> list[str]:
    """A bar's label: the implementation, and the metric when the panel has several; long
    ones on two lines (a label wider than the figure's margin would be cut off)."""
    import textwrap

    metrics = {m for m, _, _ in rows}
    labels = []
    for metric, impl, _ in rows:
        label = impl if len(metrics) == 1 else f"{impl}  [{metric}]"
        if len(label) > _LABEL_WIDTH:
            parts = [impl] if len(metrics) == 1 else [impl, f"[{metric}]"]
            lines = [ln for part in parts for ln in textwrap.wrap(part, _LABEL_WIDTH)]
            label = "\n".join(lines)
        labels.append(label)
    return labels


def _bar_colour(impl: str, metric: str) -> str:
    if not impl.startswith("zarr-manifest"):
        return "#9e9e9e"
    return "#8fb8e0" if "opt-in" in impl or "opt-in" in metric else "#1f4e8c"


def _short_seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.0f}us"
    if value < 1:
        return f"{value * 1e3:.0f}ms" if value >= 0.01 else f"{value * 1e3:.1f}ms"
    return f"{value:.2f}s"


def _time_metrics(report: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for entry in report["implementations"].values():
        if entry["status"] != "ok":
            continue
        for name, metric in entry["metrics"].items():
            if metric["unit"] in ("s", "ms") and name not in names:
                names.append(name)
    return names


def _in_seconds(metric: dict[str, Any] | None) -> float | None:
    if metric is None:
        return None
    return metric["value"] / 1e3 if metric["unit"] == "ms" else metric["value"]
