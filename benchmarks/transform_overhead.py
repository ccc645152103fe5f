"""Inference cost of the learned transforms: AdpQ with and without them, side by side (CPU EP).

The transforms fold into existing initializers, so the two models must have the same nodes (op
types and counts) and the same packed sizes; this script checks that, then times prefill and
decode of both, interleaved, with cpu_e2e.py's protocol (median of rounds, spinning off).

    python benchmarks/transform_overhead.py --float .bench/smollm2/float/model.onnx \
        --transforms attn --json benchmarks/results/transform_overhead.json
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from adpq_onnx import AdpQConfig
from adpq_onnx.pipeline import optimize_file

sys.path.insert(0, str(Path(__file__).parent))
from cpu_e2e import one_round, session  # noqa: E402


def op_counts(path: Path) -> dict[str, int]:
    model = onnx.load(str(path), load_external_data=False)
    return dict(collections.Counter(n.op_type for n in model.graph.node))


def data_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--float", type=Path, required=True)
    p.add_argument("--workdir", type=Path, default=Path(".bench/overhead"))
    p.add_argument("--bits", type=int, default=3)
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--transforms", default="attn")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    base = AdpQConfig(bits=args.bits, group_size=args.group_size)
    configs = {
        "adpq": base,
        f"adpq+{args.transforms}": base.replace(
            transforms={"kinds": tuple(args.transforms.split(","))}
        ),
    }
    paths = {}
    for name, cfg in configs.items():
        path = args.workdir / f"{name.replace('+', '_').replace(',', '_')}.onnx"
        if not path.exists():
            t = time.perf_counter()
            optimize_file(args.float, path, cfg)
            print(f"built {name} in {time.perf_counter() - t:.0f} s", flush=True)
        paths[name] = path
    counts = {name: op_counts(path) for name, path in paths.items()}
    sizes = {name: data_bytes(path) for name, path in paths.items()}
    same_graph = len({json.dumps(c, sort_keys=True) for c in counts.values()}) == 1
    print(f"same op types and counts: {same_graph}; bytes: {sizes}")

    sessions = {name: session(path, args.threads) for name, path in paths.items()}
    vocab = next(iter(sessions.values()))[1].vocab_size or 20000
    prompt = np.random.default_rng(0).integers(0, min(vocab, 20000), size=args.prompt_tokens)
    for sess, info in sessions.values():
        one_round(sess, info, prompt[:16], 4)
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in sessions}
    names = list(sessions)
    for rnd in range(args.rounds):
        for name in names[rnd % 2 :] + names[: rnd % 2]:
            sess, info = sessions[name]
            pre, dec, _ = one_round(sess, info, prompt, args.decode_tokens)
            times[name][0].append(pre)
            times[name][1].append(dec)
    rows = []
    for name in names:
        pre, dec = (statistics.median(x) for x in times[name])
        rows.append(
            {
                "model": name,
                "prefill_tok_s": args.prompt_tokens / pre,
                "decode_tok_s": 1 / dec,
                "nodes": sum(counts[name].values()),
                "bytes": sizes[name],
            }
        )
        print(
            f"  {name:20s} prefill {rows[-1]['prefill_tok_s']:7.1f} tok/s  "
            f"decode {rows[-1]['decode_tok_s']:6.1f} tok/s  {rows[-1]['nodes']} nodes"
        )
    ratio = rows[1]["decode_tok_s"] / rows[0]["decode_tok_s"]
    print(f"decode speed with / without transforms: {ratio:.3f}")
    if args.json:
        out = {
            "date": time.strftime("%Y-%m-%d"),
            "same_graph": same_graph,
            "rows": rows,
            "decode_ratio": ratio,
            "settings": vars(args) | {"float": str(args.float), "workdir": str(args.workdir)},
        }
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
