"""Time a command and sample the summed RSS of its whole process tree (workers included).

    python benchmarks/large_model.py -- adpq-onnx optimize BIG.onnx -o OUT.onnx -j 2

Prints wall time, the peak of the tree's summed RSS, and the peak RSS of any single process,
as one JSON line (what BENCHMARKS.md, section 4, records). `/usr/bin/time -v` reports only the
largest single process, which misses the workers of `--jobs`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil


def measure(cmd: list[str], interval: float) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    root = psutil.Process(proc.pid)
    peak_tree = peak_single = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = [p.memory_info().rss for p in procs]
        except psutil.Error:
            rss = []
        if rss:
            peak_tree = max(peak_tree, sum(rss))
            peak_single = max(peak_single, max(rss))
        time.sleep(interval)
    return {
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_tree_rss_gib": round(peak_tree / 2**30, 2),
        "peak_process_rss_gib": round(peak_single / 2**30, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    result = measure(cmd, args.interval)
    print(json.dumps(result))
    sys.exit(int(result["returncode"]))


if __name__ == "__main__":
    main()
