"""Write a Llama-7B-shaped float16 ONNX model with external data, in bounded memory.

    python benchmarks/make_llama7b_shaped.py OUT_DIR [--layers 32] [--hidden 4096]
        [--intermediate 11008] [--vocab 32000]

The graph is the skeleton of a decoder, enough to be run by ONNX Runtime and to give every
weight its real shape (B[K, N] as exporters write MatMul weights):

    embed[vocab, hidden] (Gather) → per layer:
        n  = LayerNorm(h)
        q, k, v = n·Wq, n·Wk, n·Wv                  [hidden, hidden] each
        h += (Sigmoid(q ⊙ k) ⊙ v)·Wo                 [hidden, hidden]
        n  = LayerNorm(h)
        h += (SiLU(n·Wgate) ⊙ n·Wup)·Wdown   gate, up [hidden, inter]; down [inter, hidden]
    logits = LayerNorm(h)·lm_head                    [hidden, vocab]

Weights are Gaussian (σ = 0.02) with one in 509 elements scaled ×8 (LLM-like outliers), made
and written a chunk at a time, so the generator stays well under 100 MB whatever the size.
At the defaults this is 6.74 B parameters, 13.5 GB of float16 in ``model.onnx.data``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

CHUNK = 8 * 1024 * 1024  # elements generated per step (16 MiB of float16)
FP16 = TensorProto.FLOAT16


class DataWriter:
    """Appends float16 tensors to one external-data file and makes their TensorProtos."""

    def __init__(self, path: Path, seed: int) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.rng = np.random.default_rng(seed)
        self.offset = 0

    def random(self, name: str, shape: tuple[int, ...], std: float = 0.02) -> TensorProto:
        count = int(np.prod(shape))
        start = self.offset
        done = 0
        while done < count:
            n = min(CHUNK, count - done)
            chunk = self.rng.standard_normal(n, dtype=np.float32) * std
            chunk[(done + np.arange(0, n)) % 509 == 0] *= 8.0
            self.file.write(chunk.astype(np.float16).tobytes())
            done += n
        return self._proto(name, shape, start)

    def constant(self, name: str, shape: tuple[int, ...], value: float) -> TensorProto:
        start = self.offset
        self.file.write(np.full(shape, value, dtype=np.float16).tobytes())
        return self._proto(name, shape, start)

    def _proto(self, name: str, shape: tuple[int, ...], start: int) -> TensorProto:
        self.offset = self.file.tell()
        # Keep every tensor 64-byte aligned, as onnx_ir and ORT prefer for memory mapping.
        pad = -self.offset % 64
        self.file.write(b"\0" * pad)
        t = TensorProto(name=name, data_type=FP16, dims=list(shape))
        t.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", self.path.name),
            ("offset", str(start)),
            ("length", str(self.offset - start)),
        ):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        self.offset += pad
        return t

    def close(self) -> None:
        self.file.close()


def build(out_dir: Path, layers: int, hidden: int, inter: int, vocab: int, seed: int) -> Path:
    """Write ``model.onnx`` and ``model.onnx.data`` into `out_dir`; returns the model path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.onnx"
    data = DataWriter(out_dir / "model.onnx.data", seed)
    inits = [
        data.random("embed_tokens.weight", (vocab, hidden)),
        data.constant("norm.weight", (hidden,), 1.0),
        data.constant("norm.bias", (hidden,), 0.0),
    ]
    nodes = [helper.make_node("Gather", ["embed_tokens.weight", "input_ids"], ["h0"], name="embed")]

    def norm(x: str, out: str) -> None:
        nodes.append(
            helper.make_node(
                "LayerNormalization", [x, "norm.weight", "norm.bias"], [out], name=out, axis=-1
            )
        )

    def op(op_type: str, ins: list[str], out: str) -> str:
        nodes.append(helper.make_node(op_type, ins, [out], name=out))
        return out

    h = "h0"
    for i in range(layers):
        p = f"layers.{i}"
        shapes = {
            "q_proj": (hidden, hidden),
            "k_proj": (hidden, hidden),
            "v_proj": (hidden, hidden),
            "o_proj": (hidden, hidden),
            "gate_proj": (hidden, inter),
            "up_proj": (hidden, inter),
            "down_proj": (inter, hidden),
        }
        for name, shape in shapes.items():
            inits.append(data.random(f"{p}.{name}.weight", shape))
        w = {name: f"{p}.{name}.weight" for name in shapes}
        norm(h, f"{p}.attn_norm")
        q = op("MatMul", [f"{p}.attn_norm", w["q_proj"]], f"{p}.q")
        k = op("MatMul", [f"{p}.attn_norm", w["k_proj"]], f"{p}.k")
        v = op("MatMul", [f"{p}.attn_norm", w["v_proj"]], f"{p}.v")
        gate = op("Sigmoid", [op("Mul", [q, k], f"{p}.qk")], f"{p}.attn_gate")
        mixed = op("Mul", [gate, v], f"{p}.attn")
        o = op("MatMul", [mixed, w["o_proj"]], f"{p}.o")
        h = op("Add", [h, o], f"{p}.h_attn")
        norm(h, f"{p}.mlp_norm")
        g = op("MatMul", [f"{p}.mlp_norm", w["gate_proj"]], f"{p}.gate")
        silu = op("Mul", [g, op("Sigmoid", [g], f"{p}.gate_sig")], f"{p}.silu")
        up = op("MatMul", [f"{p}.mlp_norm", w["up_proj"]], f"{p}.up")
        down = op("MatMul", [op("Mul", [silu, up], f"{p}.act"), w["down_proj"]], f"{p}.down")
        h = op("Add", [h, down], f"{p}.h_out")
    inits.append(data.random("lm_head.weight", (hidden, vocab)))
    norm(h, "final_norm")
    nodes.append(
        helper.make_node("MatMul", ["final_norm", "lm_head.weight"], ["logits"], name="lm_head")
    )
    data.close()
    graph = helper.make_graph(
        nodes,
        "llama7b_shaped",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", FP16, ["batch", "seq", vocab])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.save(model, model_path)
    return model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    path = build(args.out_dir, args.layers, args.hidden, args.intermediate, args.vocab, args.seed)
    size = os.path.getsize(path) + os.path.getsize(path.with_name(path.name + ".data"))
    print(f"wrote {path} ({size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
