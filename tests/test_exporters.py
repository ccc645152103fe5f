"""Models as exporters write them, and graph shapes the selection must leave alone.

    legacy torch.onnx exporter (dynamo=False)   tied lm_head written as its own copy
    a real Llama (stories260K) through it       needs ../shared/data and gguf
    onnxruntime-genai's model builder           skipped unless onnxruntime_genai is importable
    If / Loop bodies, 3-D weights, shared weights: skipped or quantized once, end to end

docs/EXPORTERS.md records what was run and measured with each exporter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

if importlib.util.find_spec("adpq_onnx.passes") is None:
    pytest.skip("adpq_onnx.passes exists only once installed", allow_module_level=True)

torch = pytest.importorskip("torch")

from adpq_onnx import pipeline  # noqa: E402
from adpq_onnx.config import AdpQConfig  # noqa: E402
from adpq_onnx.report import Report  # noqa: E402

VOCAB, HIDDEN = 96, 64


class TinyDecoder(torch.nn.Module):
    """Embedding tied to lm_head, two MLP blocks with bias-free Linears (Llama-like)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict(
                {
                    "norm": torch.nn.LayerNorm(HIDDEN),
                    "up": torch.nn.Linear(HIDDEN, 2 * HIDDEN, bias=False),
                    "down": torch.nn.Linear(2 * HIDDEN, HIDDEN, bias=True),
                }
            )
            for _ in range(2)
        )
        self.lm_head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
        self.lm_head.weight = self.embed.weight  # tied

    def forward(self, ids):  # type: ignore[no-untyped-def]
        h = self.embed(ids)
        for b in self.blocks:
            h = h + b["down"](torch.nn.functional.silu(b["up"](b["norm"](h))))
        return self.lm_head(h)


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def legacy_export(request, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = TinyDecoder().eval()
    if request.param == "fp16":
        model = model.half()
    path = tmp_path_factory.mktemp("legacy") / "model.onnx"
    ids = torch.randint(0, VOCAB, (1, 5))
    torch.onnx.export(
        model,
        (ids,),
        str(path),
        dynamo=False,
        input_names=["input_ids"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}},
        opset_version=17,
    )
    return path


@pytest.mark.parametrize("quantize_embeddings", [False, True])
def test_legacy_torch_export_optimizes_and_runs(
    tmp_path, legacy_export, quantize_embeddings
) -> None:
    out = tmp_path / "q.onnx"
    config = AdpQConfig(
        bits=8,
        group_size=32,
        outlier_ratio=0.0,
        target="matmulnbits",
        quantize_embeddings=quantize_embeddings,
    )
    report = pipeline.optimize_file(legacy_export, out, config)
    nodes = {n for layer in report.layers for n in layer.nodes}
    # This exporter writes the tied lm_head as its own transposed copy of the table: the
    # graph no longer shows the tie, the data does.
    if quantize_embeddings:
        assert len(report.layers) == 5 and "/lm_head/MatMul" in nodes
    else:
        assert len(report.layers) == 4 and "/lm_head/MatMul" not in nodes
        assert [(s.node, s.reason) for s in report.skipped] == [
            ("/lm_head/MatMul", "tied to embedding embed.weight (by content)")
        ]
    result = pipeline.verify(legacy_export, out, config)
    assert result.outputs["logits"]["rel_error"] < 0.05
    assert np.isfinite(result.outputs["logits"]["max_abs"])


# --- a real Llama through the legacy exporter ---------------------------------------------


def _stories260k():  # type: ignore[no-untyped-def]
    """stories260K as a transformers model, or a skip saying what is missing."""
    folder = os.environ.get("ADPQ_SHARED_DATA")
    if folder is None or not (Path(folder) / "stories260K.gguf").is_file():
        pytest.skip("stories260K.gguf not found (../shared/data beside the checkout)")
    pytest.importorskip("gguf", reason="loading a GGUF file needs the gguf package")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file="stories260K.gguf", attn_implementation="eager"
    ).eval()


class _WithMask(torch.nn.Module):
    """logits = model(input_ids, attention_mask): an explicit 2-D mask keeps transformers 5's
    mask code off the path that calls ``torch.diff`` (``aten::diff`` has no ONNX symbolic
    at any opset), which it takes when no mask is given."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).logits


@pytest.mark.slow
@pytest.mark.requires_custom_ops
def test_legacy_export_of_a_real_llama(tmp_path) -> None:
    import warnings

    from adpq_onnx import make_session

    model = _stories260k()
    path, out = tmp_path / "model.onnx", tmp_path / "q.onnx"
    ids = torch.randint(3, 512, (1, 8), generator=torch.Generator().manual_seed(0))
    dims = {0: "batch", 1: "seq"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and trace warnings
        torch.onnx.export(
            _WithMask(model),
            (ids, torch.ones_like(ids)),
            str(path),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": dims, "attention_mask": dims},
            opset_version=17,
        )
    report = pipeline.optimize_file(path, out, AdpQConfig())
    # 5 layers × (q, k, v, o, gate, up, down); llama2.c ties the classifier to the embedding
    # and the GGUF keeps both copies, so lm_head is recognised by content.
    assert len(report.layers) == 35
    assert (
        "/model/lm_head/MatMul",
        "tied to embedding model.model.embed_tokens.weight (by content)",
    ) in [(s.node, s.reason) for s in report.skipped]
    ids = torch.randint(3, 512, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(input_ids=ids).logits.numpy().astype(np.float64)
    feeds = {"input_ids": ids.numpy(), "attention_mask": np.ones((1, 24), np.int64)}
    got = make_session(out).run(["logits"], feeds)[0].astype(np.float64)
    # Measured 0.065 for the default 4-bit config (docs/EXPORTERS.md).
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.15


# --- onnxruntime-genai's model builder ----------------------------------------------------

_GENAI_MISSING = (
    "onnxruntime_genai is not importable (pip install --no-deps onnxruntime-genai into a "
    "separate --target on PYTHONPATH, so that it does not replace onnxruntime)"
)


def _tiny_llama_folder(folder: Path, tied: bool) -> None:
    """A random-weight Llama (head_size 16, which ORT's CPU GroupQueryAttention needs) and
    a word-level tokenizer, saved as a Hugging Face folder for the builder."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=2,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, 256)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(folder)


@pytest.fixture(scope="module", params=["fp32-tied", "fp32-untied", "fp16-tied", "fp16-untied"])
def genai_model(request, tmp_path_factory) -> tuple[Path, bool]:
    """(model.onnx written by the builder, whether the model ties lm_head to the embedding)."""
    if importlib.util.find_spec("onnxruntime_genai") is None:
        pytest.skip(_GENAI_MISSING)
    precision, tie = request.param.split("-")
    root = tmp_path_factory.mktemp(f"genai-{request.param}")
    _tiny_llama_folder(root / "hf", tied=tie == "tied")
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(root / "hf")]
    cmd += ["-o", str(root / "out"), "-p", precision, "-e", "cpu", "-c", str(root / "cache")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "out" / "model.onnx", tie == "tied"


def _genai_feeds(path: Path, ids: np.ndarray) -> dict[str, np.ndarray]:
    """input_ids, an all-ones mask, position_ids where asked, and an empty KV cache, for
    the builder's model at `path` (its genai_config.json gives the cache's shape)."""
    head = json.loads((path.parent / "genai_config.json").read_text())["model"]["decoder"]
    feeds: dict[str, np.ndarray] = {}
    for value in onnx.load(path, load_external_data=False).graph.input:
        t = value.type.tensor_type
        if value.name == "input_ids":
            feeds[value.name] = ids
        elif value.name == "attention_mask":
            feeds[value.name] = np.ones_like(ids)
        elif value.name == "position_ids":
            feeds[value.name] = np.arange(ids.shape[1], dtype=np.int64)[None]
        elif value.name.startswith("past_key_values."):
            shape = (ids.shape[0], head["num_key_value_heads"], 0, head["head_size"])
            feeds[value.name] = np.zeros(shape, helper.tensor_dtype_to_np_dtype(t.elem_type))
        else:
            raise AssertionError(f"unexpected genai input {value.name}")
    return feeds


@pytest.mark.slow
@pytest.mark.requires_custom_ops
def test_genai_builder_model_optimizes_and_runs(tmp_path, genai_model) -> None:
    import onnxruntime as ort

    from adpq_onnx import make_session

    model, tied = genai_model
    out = tmp_path / "q.onnx"
    report = pipeline.optimize_file(model, out, AdpQConfig(bits=8, group_size=32))
    graph = onnx.load(model, load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    matmuls = {n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights}
    quantized = {n for layer in report.layers for n in layer.nodes}
    # The builder writes plain MatMul(x, W[K, N]); a tied lm_head is MatMul(x, W) with
    # Gather(Transpose(W)) for the embedding, which stays float.
    if tied:
        assert matmuls - quantized == {"/lm_head/MatMul"}
        assert [(s.node, s.reason) for s in report.skipped] == [
            ("/lm_head/MatMul", "shared with Gather (tied embedding)")
        ]
    else:
        assert quantized == matmuls and not report.skipped
    ids = np.random.default_rng(0).integers(3, 256, size=(1, 16), dtype=np.int64)
    feeds = _genai_feeds(model, ids)  # the optimized model keeps the builder's inputs
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    want = ref.run(["logits"], feeds)[0].astype(np.float64)
    got = make_session(out).run(["logits"], feeds)[0].astype(np.float64)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.02


# --- graph shapes the selection skips, or quantizes once, end to end -----------------------

F32, I64, BOOL = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL
_NBITS = AdpQConfig(bits=8, group_size=32, outlier_ratio=0.0, target="matmulnbits")
OUT = ["d0", "d1"]  # graph outputs: a rank is all the checker wants


def _save(tmp_path: Path, nodes, inputs, outputs, inits) -> Path:  # type: ignore[no-untyped-def]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    return path


def _optimize_and_verify(tmp_path: Path, path: Path) -> tuple[Report, onnx.ModelProto]:
    out = tmp_path / "q.onnx"
    report = pipeline.optimize_file(path, out, _NBITS)
    result = pipeline.verify(path, out, _NBITS)
    assert all(e["rel_error"] < 0.02 for e in result.outputs.values()), result.outputs
    return report, onnx.load(out)


def _weight(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(shape[-2])).astype(np.float32)


def test_matmul_in_if_branch_is_skipped_and_still_runs(tmp_path, rng) -> None:
    def branch(name: str, weight: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("MatMul", ["h", weight], [f"{name}_y"], name=f"{name}/MatMul")],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_y", F32, [1, 64])],
        )

    nodes = [
        helper.make_node("MatMul", ["x", "W0"], ["h"], name="main/MatMul"),
        helper.make_node(
            "If", ["c"], ["y"], then_branch=branch("then", "W1"), else_branch=branch("else", "W2")
        ),
    ]
    inits = {f"W{i}": _weight(rng, 64, 64) for i in range(3)}
    path = _save(tmp_path, nodes, [("c", BOOL, []), ("x", F32, [1, 64])], [("y", F32, OUT)], inits)
    report, quantized = _optimize_and_verify(tmp_path, path)
    assert [layer.name for layer in report.layers] == ["W0"]
    assert sorted((s.node, s.weight, s.reason) for s in report.skipped) == [
        ("else/MatMul", "W2", "inside a subgraph (If/Loop/Scan body)"),
        ("then/MatMul", "W1", "inside a subgraph (If/Loop/Scan body)"),
    ]
    # The branches still read their float weights from the outer scope.
    assert {"W1", "W2"} <= {i.name for i in quantized.graph.initializer}


def test_matmul_in_loop_body_is_skipped_and_still_runs(tmp_path, rng) -> None:
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "W"], ["h_out"], name="body/MatMul"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", I64, []),
            helper.make_tensor_value_info("cond_in", BOOL, []),
            helper.make_tensor_value_info("h_in", F32, [1, 64]),
        ],
        [
            helper.make_tensor_value_info("cond_out", BOOL, []),
            helper.make_tensor_value_info("h_out", F32, [1, 64]),
        ],
    )
    nodes = [
        # The same weight outside and inside the body: quantized for the outer MatMul only.
        helper.make_node("MatMul", ["x", "W"], ["h"], name="main/MatMul"),
        helper.make_node("Loop", ["n", "", "h"], ["y"], body=body),
    ]
    inputs = [("n", I64, []), ("x", F32, [1, 64])]
    path = _save(tmp_path, nodes, inputs, [("y", F32, OUT)], {"W": _weight(rng, 64, 64)})
    report, quantized = _optimize_and_verify(tmp_path, path)
    assert [(layer.name, layer.nodes) for layer in report.layers] == [("W", ("main/MatMul",))]
    assert [(s.node, s.reason) for s in report.skipped] == [
        ("body/MatMul", "inside a subgraph (If/Loop/Scan body)")
    ]
    assert "W" in {i.name for i in quantized.graph.initializer}


def test_3d_weight_is_skipped_with_its_shape(tmp_path, rng) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="proj/MatMul"),
        helper.make_node("MatMul", ["h", "W3"], ["y"], name="batched/MatMul"),
    ]
    inits = {"W": _weight(rng, 64, 64), "W3": _weight(rng, 2, 64, 32)}
    path = _save(tmp_path, nodes, [("x", F32, [2, 1, 64])], [("y", F32, ["a", "b", "c"])], inits)
    report, _ = _optimize_and_verify(tmp_path, path)
    assert [layer.name for layer in report.layers] == ["W"]
    assert [(s.node, s.weight, s.reason) for s in report.skipped] == [
        ("batched/MatMul", "W3", "B is not 2-D (shape [2,64,32])")
    ]


def test_shared_weight_is_quantized_once(tmp_path, rng) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="first/MatMul"),
        helper.make_node("MatMul", ["h", "W"], ["y"], name="second/MatMul"),
    ]
    path = _save(
        tmp_path, nodes, [("x", F32, [1, 64])], [("y", F32, OUT)], {"W": _weight(rng, 64, 64)}
    )
    report, quantized = _optimize_and_verify(tmp_path, path)
    assert [(layer.name, layer.nodes) for layer in report.layers] == [
        ("W", ("first/MatMul", "second/MatMul"))
    ]
    ops = [n for n in quantized.graph.node if n.op_type == "MatMulNBits"]
    assert len(ops) == 2 and ops[0].input[1:] == ops[1].input[1:]
    packed = [i for i in quantized.graph.initializer if i.name in ops[0].input[1:]]
    assert len(packed) == len([n for n in ops[0].input[1:] if n])
    assert "W" not in {i.name for i in quantized.graph.initializer}
