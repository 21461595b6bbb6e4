"""Timing helpers shared by the benchmarks: alternated rounds, best of N, the spread, progress on stderr.

Every ratio in the benchmarks compares two functions that take the same inputs. They run in alternating order
(A B, B A, A B, ...) so a machine that speeds up or slows down during the run (other jobs on a shared CPU, GPU
clocks) affects both alike; each reported figure is the best of the rounds, and the spread is the lowest and highest
per-round ratio, which shows how much to trust it.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    # Run from a checkout without installing the package.
    sys.path.insert(0, REPO_ROOT)


def progress(message: str) -> None:
    """One line on stderr, so a long run shows it is alive without mixing into the results on stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def require(*modules: str) -> None:
    """Exit with the one-line install hint when an optional dependency of this benchmark is missing."""
    from hub_configs.families import missing_extra_message

    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            print(missing_extra_message(error.name or name), file=sys.stderr)
            raise SystemExit(2) from None


def synchronize(device) -> None:
    """Wait for queued accelerator work, so a timer stops when the work is done, not when it was launched."""
    import torch

    kind = getattr(device, "type", str(device)).split(":")[0]
    if kind == "cuda":
        torch.cuda.synchronize()


@dataclass
class Comparison:
    """Seconds per round of two functions timed alternately."""

    first: list[float]
    second: list[float]

    @property
    def ratio(self) -> float:
        """best(first) / best(second): above 1 means `second` is faster."""
        return min(self.first) / min(self.second)

    @property
    def spread(self) -> tuple[float, float]:
        ratios = [a / b for a, b in zip(self.first, self.second)]
        return min(ratios), max(ratios)

    def line(self, label: str, first_name: str, second_name: str, items: int, unit: str = "items") -> str:
        low, high = self.spread
        return (
            f"{label}: {first_name} {items / min(self.first):9.1f} {unit}/s, {second_name} "
            f"{items / min(self.second):9.1f} {unit}/s, ratio {second_name}/{first_name} {self.ratio:.2f} "
            f"(rounds {low:.2f}-{high:.2f})"
        )


def alternate(
    functions: Mapping[str, Callable[[], object]], repeats: int, label: str, device=None
) -> dict[str, list[float]]:
    """Seconds per call of each function over `repeats` rounds in rotating order (A B C, B C A, ...), after one
    warm-up call each; with an accelerator `device`, each timer stops when the device's work is done."""
    progress(f"{label}: warm-up")
    for function in functions.values():
        function()
    names = list(functions)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            functions[name]()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
        progress(f"{label}: round {round_index + 1}/{repeats}")
    return samples


def compare(
    first: Callable[[], object], second: Callable[[], object], repeats: int, label: str, device=None
) -> Comparison:
    """Time `first` and `second` alternately (A B, B A, ...) for `repeats` rounds after one warm-up call each."""
    samples = alternate({"first": first, "second": second}, repeats, label, device)
    return Comparison(first=samples["first"], second=samples["second"])


def pool_lines(model, device, processes: int, repeats: int, cases) -> list[str]:
    """`encode` through a sentence-transformers pool of `processes` processes on `device`, against each raw path.

    Args:
        model: The `SentenceTransformer`.
        cases: `(name, raw, items, count, batch_size)` per input kind: `raw()` is the direct path, `items` what
            `encode` gets (one chunk per batch), `count` the number of items a call embeds.

    Returns:
        One `Comparison.line` per case.
    """
    progress(f"starting a pool of {processes} processes on {device}")
    pool = model.start_multi_process_pool([str(device)] * processes)
    try:
        lines = []
        for name, raw, items, count, batch_size in cases:
            label = f"{name}, pool x{processes}"

            def pooled(items=items, batch_size=batch_size):
                model.encode(items, batch_size=batch_size, pool=pool, chunk_size=batch_size)

            lines.append(compare(raw, pooled, repeats, label).line(label, "raw", "encode", count))
        return lines
    finally:
        model.stop_multi_process_pool(pool)


def machine_line() -> str:
    """CPU count, torch threads and load average: the conditions a figure was measured under."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"GPU {gpu}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
