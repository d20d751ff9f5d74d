"""Shared helpers for the benchmark scripts: machine description and rewriting one section of RESULTS.md."""
from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """One line describing where the numbers were taken."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{gpu}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")


def write_section(heading: str, body: str) -> None:
    """Replace (or append) the section `## heading` of bench/RESULTS.md with `body`."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nRewritten by `make bench`; each section by its own script.\n"
    block = f"## {heading}\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    RESULTS.write_text(text)


def best_of(fn, repeat: int = 3, number: int = 1) -> float:
    """Best wall time in seconds of `number` calls, over `repeat` tries."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best
