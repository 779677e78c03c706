"""Wall time and peak memory of ``capstream demo`` (all processes it starts, summed).

    python -m loadtest.demo_footprint [--runs N] [demo args...]

Samples the RSS of the demo process and every descendant (broker, Redis, SeaweedFS, the
worker process with both vLLM engines) every 0.2 s; prints one line per run and a JSON
summary. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import psutil


def _tree_rss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def measure(demo_args: list[str]) -> dict[str, float | int]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli.main", "demo", *demo_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = psutil.Process(proc.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, _tree_rss(root))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    return {"exit_code": code, "wall_s": round(time.monotonic() - started, 1), "peak_rss_mb": peak // 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    args, demo_args = parser.parse_known_args()
    results = []
    for i in range(args.runs):
        result = measure(demo_args)
        results.append(result)
        sys.stdout.write(
            f"run {i + 1}: exit={result['exit_code']} wall={result['wall_s']}s "
            f"peak_rss={result['peak_rss_mb']} MB (all demo processes)\n"
        )
    sys.stdout.write(json.dumps({"runs": results}) + "\n")
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
