"""Builders for one-node AdpQMatMul models, shared by the custom-op tests (as fixtures, since
test modules are imported in importlib mode and cannot import each other)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from adpq_onnx.formats import PackedWeight, pack
from adpq_onnx.ops import spec
from adpq_onnx.quant import quantize_weight

# ORT 1.31 reads models up to IR version 13; onnx 1.23 writes 14 by default.
IR_VERSION = 10
OPSET = 21


def quantized(
    rng: np.random.Generator,
    k: int,
    n: int,
    bits: int,
    group_size: int,
    outlier_ratio: float = 0.01,
    outlier_dtype: str = "float16",
) -> PackedWeight:
    """A packed AdpQ weight of a random heavy-tailed W[N, K]."""
    w = rng.standard_t(df=4, size=(n, k)).astype(np.float32) * 0.05
    qw = quantize_weight(
        w,
        bits=bits,
        group_size=group_size,
        outlier_ratio=outlier_ratio,
        outlier_dtype=outlier_dtype,
    )
    return pack(qw)


def drop_outliers(pw: PackedWeight, rows: np.ndarray) -> PackedWeight:
    """pw without the outliers of `rows` (their slots then just hold the zero-point code)."""
    counts = np.diff(pw.outlier_ptr)
    keep = np.repeat(~np.isin(np.arange(pw.n), rows), counts)
    counts = np.where(np.isin(np.arange(pw.n), rows), 0, counts)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return dataclasses.replace(
        pw, outlier_ptr=ptr, outlier_idx=pw.outlier_idx[keep], outlier_val=pw.outlier_val[keep]
    )


def node_inputs(pw: PackedWeight, bias: np.ndarray | None) -> dict[str, np.ndarray | None]:
    """Input name -> array (None: absent) in spec.INPUTS order, A excluded."""
    t = pw.tensors()
    return {name: (bias if name == "bias" else t.get(name)) for name in spec.INPUTS[1:]}


def one_node_model(
    a_dtype: Any,
    inputs: dict[str, np.ndarray | None],
    attrs: dict[str, int],
    *,
    as_initializers: bool = True,
    domain: str = spec.DOMAIN,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A model Y = AdpQMatMul(A, **inputs) and the feeds it needs besides A.

    Absent (None) inputs get an empty name when a later input is present. With
    as_initializers=False every tensor is a graph input of unknown shape, so that a test can
    feed tensors of any shape at run time.
    """
    present = [name for name in spec.INPUTS[1:] if inputs.get(name) is not None]
    last = spec.INPUTS.index(present[-1]) if present else 0
    names = ["A"] + [n if inputs.get(n) is not None else "" for n in spec.INPUTS[1 : last + 1]]
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(a_dtype))
    graph_inputs = [helper.make_tensor_value_info("A", elem, None)]
    initializers, feeds = [], {}
    for name in present:
        arr = inputs[name]
        if as_initializers:
            initializers.append(numpy_helper.from_array(arr, name))
        else:
            graph_inputs.append(
                helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(arr.dtype), None
                )
            )
            feeds[name] = arr
    node = helper.make_node(spec.OP_TYPE, names, ["Y"], domain=domain, **attrs)
    graph = helper.make_graph(
        [node],
        "adpq_one_node",
        graph_inputs,
        [helper.make_tensor_value_info("Y", elem, None)],
        initializers,
    )
    model = helper.make_model(
        graph,
        ir_version=IR_VERSION,
        opset_imports=[
            helper.make_opsetid("", OPSET),
            helper.make_opsetid(domain, spec.DOMAIN_VERSION),
        ],
    )
    return model, feeds


def attrs_of(pw: PackedWeight) -> dict[str, int]:
    attrs = {"K": pw.k, "N": pw.n, "bits": pw.bits, "block_size": pw.group_size}
    return attrs | spec.layout_attrs(pw.bits)


class OpHelpers:
    """The builders above, handed to tests by the `adpq` fixture."""

    quantized = staticmethod(quantized)
    drop_outliers = staticmethod(drop_outliers)
    node_inputs = staticmethod(node_inputs)
    one_node_model = staticmethod(one_node_model)
    attrs_of = staticmethod(attrs_of)

    @staticmethod
    def session(model: onnx.ModelProto, threads: int = 0):
        import onnxruntime as ort

        from adpq_onnx.ops.library import make_session

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # keep expected errors out of the test log
        return make_session(model, session_options=options)


@pytest.fixture
def adpq() -> OpHelpers:
    return OpHelpers()
