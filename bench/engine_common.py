"""Shared helpers of the engine benchmarks: where things are, what machine ran them, how results are saved."""

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "var" / "models"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Other processes may share the CPU; every result says how busy the machine was.
LOAD_AT_START = os.getloadavg()[0]


def machine_info() -> dict[str, Any]:
    """Describe the machine and libraries a result was measured with."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if cuda else "cpu",
        "cuda_name": torch.cuda.get_device_name(0) if cuda else None,
        "load_1min_at_start": round(LOAD_AT_START, 2),
        "load_1min_at_end": round(os.getloadavg()[0], 2),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def synchronize() -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it; a no-op on CPU."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """Return (seconds, result) of one call, GPU work included."""
    synchronize()
    started = time.perf_counter()
    result = function()
    synchronize()
    return time.perf_counter() - started, result


def write_result(name: str, summary_line: str, figures: dict[str, Any]) -> Path:
    """Print the one-line summary and save it with the figures and machine to bench/results/<name>.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {"name": name, "summary": summary_line, "machine": machine_info(), "figures": figures}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(summary_line, flush=True)
    return path
