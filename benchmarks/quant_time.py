"""Quantization wall time, side by side: AdpQ against ORT's calibration-free quantizers.

Each method quantizes the same float ONNX model (load → quantize every MatMul weight → save),
in one process, rounds interleaved with the order rotating; the median over rounds is
reported with the ratio to ORT's round-to-nearest.

    python benchmarks/quant_time.py .bench/smollm2/float/model.onnx --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from accuracy import _ort_quantize  # noqa: E402 - run as a script from benchmarks/

from adpq_onnx import AdpQConfig
from adpq_onnx.pipeline import optimize_file


def methods() -> dict:
    from onnxruntime.quantization import matmul_nbits_quantizer as mq

    def adpq(cfg):
        return lambda src, dst: optimize_file(src, dst, cfg)

    return {
        "adpq default (4b g128 α1% int8)": adpq(AdpQConfig()),
        "adpq 3b g64 α1% int8": adpq(AdpQConfig(bits=3, group_size=64)),
        "ort-rtn b4 g128": _ort_quantize(mq.RTNWeightOnlyQuantConfig, 4, 128),
        "ort-rtn b4 g64": _ort_quantize(mq.RTNWeightOnlyQuantConfig, 4, 64),
        "ort-default b4 g128": _ort_quantize(
            lambda: mq.DefaultWeightOnlyQuantConfig(block_size=128, bits=4), 4, 128
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    runs = methods()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                dst = Path(tmp) / "q.onnx"
                start = time.perf_counter()
                runs[name](args.model, dst)
                times[name].append(time.perf_counter() - start)
                for f in Path(tmp).iterdir():
                    f.unlink()
    base = statistics.median(times["ort-rtn b4 g128"])
    for name in names:
        med = statistics.median(times[name])
        row = {
            "method": name,
            "median_s": round(med, 2),
            "runs_s": [round(t, 2) for t in times[name]],
            "vs_ort_rtn_g128": round(med / base, 2),
        }
        print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
