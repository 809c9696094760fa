"""Tuning of CPython's cyclic garbage collector for the platform's long-running processes.

Both hot paths hold large, long-lived object graphs in memory (the progress API's cache and framework objects, the
metric dataflow's window state), and CPython's default collector settings walk them again and again:

* a full (generation 2) collection walks every tracked object and stops the process meanwhile;
* with the default thresholds (700 allocations for a young collection) a dataflow that allocates millions of
  short-lived objects runs tens of thousands of young collections and, as its state grows, dozens of full ones.

What the collector costs with the defaults and with a raised young threshold is measured with ``gc.callbacks`` in
``bench/RESULTS.md`` (Flows: a replay; API: the full collections over the startup objects). Reference:
https://docs.python.org/3/library/gc.html (``set_threshold``, ``freeze``).
"""

from __future__ import annotations

import gc
import threading

__all__ = ["freeze_startup_objects", "raise_young_threshold"]

_startup_frozen = threading.Event()


def freeze_startup_objects() -> bool:
    """Once per process: collect garbage, then move every object alive now (modules, classes, FastAPI's and
    pydantic's schemas, compiled numba kernels, the engines' clients) out of the cyclic garbage collector's reach
    with :func:`gc.freeze`. Returns whether this call froze (False after the first).

    Why: a full (generation 2) collection walks every tracked object and stops the process meanwhile, i.e. a latency
    tail for every request in flight (its length over the API's startup objects: ``bench/RESULTS.md``, API).
    Frozen objects are never collected: a frozen object that later becomes cyclic garbage is kept (here: at most
    what existed at the first call, e.g. one test app per test process)."""
    if _startup_frozen.is_set():
        return False
    _startup_frozen.set()
    gc.collect()
    gc.freeze()
    return True


def raise_young_threshold(allocations: int) -> tuple[int, int, int]:
    """Set the young-generation threshold of the collector to ``allocations`` (net allocations of tracked
    objects between young collections; CPython's default is 700) and the older generations' to 50 and 100, unless
    the current one is already higher. ``allocations`` 0 leaves the collector as it is. Process-wide; returns the
    thresholds in force afterwards. Raises ``ValueError`` on a negative value.

    Garbage without reference cycles is still freed at once by reference counting; only cyclic garbage waits
    longer (up to ``allocations`` more allocations)."""
    if allocations < 0:
        raise ValueError(f"a collector threshold must be >= 0, got {allocations}")
    current = gc.get_threshold()
    if allocations and allocations > current[0]:
        gc.set_threshold(allocations, max(current[1], 50), max(current[2], 100))
    return gc.get_threshold()
