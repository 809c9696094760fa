"""Facts about the machine and processes a benchmark reports, and the section writer of ``bench/RESULTS.md``.

Linux only: everything is read from ``/proc``. Shared by the benchmarks under ``bench/`` so that each records the
machine, the load and the memory the same way.
"""

from __future__ import annotations

import os
import platform as platform_module
import time
from pathlib import Path
from typing import Any

__all__ = [
    "children",
    "cpu_seconds",
    "loadavg",
    "machine",
    "proc_status_kib",
    "replace_section",
    "wait_for_quiet",
]


def loadavg() -> tuple[float, float, float]:
    """1, 5 and 15-minute load averages from ``/proc/loadavg``."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "ram_gib": round(mem_kib / 1024**2, 1),
        "os": platform_module.platform(),
        "gpu": "none",
    }


def wait_for_quiet(threshold: float, max_wait_s: float) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``threshold`` (checked every 15 s, at most ``max_wait_s``)."""
    started = time.monotonic()
    while True:
        load = loadavg()
        waited = time.monotonic() - started
        if load[0] < threshold or waited >= max_wait_s:
            return {"load_at_start": load, "waited_s": round(waited), "quiet": load[0] < threshold}
        print(f"load average {load[0]:.2f} >= {threshold}; waiting ({waited:.0f}/{max_wait_s:.0f} s)", flush=True)
        time.sleep(15)


def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``/proc/<pid>/status`` field in KiB (``VmHWM`` = peak RSS, ``VmRSS``), or None when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (``/proc/<pid>/stat``), or None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def replace_section(path: Path, heading: str, markdown: str) -> None:
    """Replace the section of ``path`` that starts with the line ``heading`` (e.g. ``"## Flows"``) up to the next
    ``## `` heading with ``markdown`` (which starts with ``heading``); appended when missing, the file created with a
    ``# Benchmark results`` title when absent. Other sections are kept byte for byte."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    section = markdown.rstrip("\n").splitlines()
    if start is None:
        lines = [*lines, "", *section] if lines else section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = lines[end:]
        lines = [*lines[:start], *section, *([""] if tail else []), *tail]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
