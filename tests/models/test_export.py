"""Export of stories260K: interface, Linear weights as MatMul initializers, parity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from adpq_onnx.cli import main
from adpq_onnx.errors import UserError
from adpq_onnx.models.parity import MAX_ABS_DIFF_FLOAT32
from adpq_onnx.models.runtime import META_PREFIX, open_model

LAYERS = 5
LINEARS_PER_LAYER = 7  # q, k, v, o, gate, up, down


def test_parity_with_and_without_cache(stories_export):
    parity = stories_export.parity
    assert parity["prefill"] <= MAX_ABS_DIFF_FLOAT32
    assert parity["decode"] <= MAX_ABS_DIFF_FLOAT32


def test_interface_names_and_dynamic_dims(stories_export):
    model = onnx.load(str(stories_export.path), load_external_data=False)
    inputs = {i.name: i.type.tensor_type.shape.dim for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    assert [d.dim_param for d in inputs["input_ids"]] == ["batch", "seq"]
    key = inputs["past_key_values.4.key"]
    assert key[0].dim_param == "batch" and key[2].dim_param == "past"
    assert (key[1].dim_value, key[3].dim_value) == (4, 8)
    assert len(inputs) == 2 + 2 * LAYERS
    assert {"logits", "present.0.key", "present.4.value"} <= outputs


def test_metadata_and_tokenizer_saved(stories_export):
    meta = stories_export.metadata
    assert meta[META_PREFIX + "num_layers"] == str(LAYERS)
    assert meta[META_PREFIX + "vocab_size"] == "512"
    assert meta[META_PREFIX + "bos_token_id"] == "1"
    assert (stories_export.path.parent / "tokenizer.json").is_file()
    _, info = open_model(stories_export.path)
    assert (info.num_layers, info.kv_heads, info.head_dim, info.vocab_size) == (5, 4, 8, 512)
    assert info.token_id("eos_token_id") == 2


def test_every_linear_is_a_matmul_on_a_named_kn_initializer(stories_export):
    graph = onnx.load(str(stories_export.path)).graph
    inits = {t.name: tuple(t.dims) for t in graph.initializer}
    weights = {
        n.name: n.input[1] for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits
    }
    assert len(weights) == LAYERS * LINEARS_PER_LAYER + 1  # + lm_head (not tied here)
    assert weights["/model/layers.0/mlp/down_proj/MatMul"] == (
        "model.layers.0.mlp.down_proj.MatMul.weight"
    )
    assert inits["model.layers.0.mlp.down_proj.MatMul.weight"] == (172, 64)  # [K, N]
    assert inits["model.layers.0.self_attn.k_proj.MatMul.weight"] == (64, 32)
    assert "Gemm" not in {n.op_type for n in graph.node}


def test_batch_rows_match_single_sequences(stories_export):
    session, info = open_model(stories_export.path)
    ids = np.array([[1, 403, 407, 261], [1, 300, 20, 7]])
    both = session.run(["logits"], info.feeds(ids))[0]
    for row in range(2):
        alone = session.run(["logits"], info.feeds(ids[row : row + 1]))[0]
        np.testing.assert_allclose(both[row], alone[0], atol=1e-5)


@pytest.mark.slow
def test_float16_export_parity(shared_data, tmp_path):
    from adpq_onnx.models.export import export_model

    result = export_model(shared_data / "stories260K.gguf", tmp_path / "m.onnx", dtype="float16")
    assert result.parity["decode"] <= result.parity["budget"]
    _, info = open_model(result.path)
    assert info.cache_dtype == np.float16


def test_bad_dtype_and_source_are_user_errors(tmp_path):
    from adpq_onnx.models.export import export_model

    with pytest.raises(UserError, match="--dtype"):
        export_model("x", tmp_path / "m.onnx", dtype="int8")
    with pytest.raises(UserError, match="no such file"):
        export_model(tmp_path / "absent.gguf", tmp_path / "m.onnx")


def test_cli_reports_user_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "absent.gguf"), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err
