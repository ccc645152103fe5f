"""Sessions and the cache signature, including models that are not exports."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from adpq_onnx.errors import UserError
from adpq_onnx.models.runtime import ModelInfo, _session, open_model


def test_feeds_for_empty_and_filled_cache(stories_export):
    _, info = open_model(stories_export.path)
    empty = info.feeds(np.zeros((1, 3), np.int64))
    assert empty["past_key_values.0.key"].shape == (1, 4, 0, 8)
    assert empty["attention_mask"].shape == (1, 3)
    past = [np.zeros((1, 4, 5, 8), np.float32)] * 10
    assert info.feeds(np.zeros((1, 1), np.int64), past)["attention_mask"].shape == (1, 6)
    assert info.present_names()[:2] == ["present.0.key", "present.0.value"]


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        _session(tmp_path / "absent.onnx")


def test_a_model_without_the_interface_is_rejected(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "identity.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, path)
    with pytest.raises(UserError, match="input_ids"):
        ModelInfo.from_session(_session(path), path)
