"""Small graph predicates and builders shared by the passes.

The vocabulary: a *weight* is a 2-D float initializer that is a true constant (not also a
graph input, which a caller could override at run time); a *tied* weight is one that a
Gather also reads (a tied embedding / lm_head), or, when an exporter wrote the lm_head as its own
copy, one whose data equals a Gather's table (`same_content`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

FLOAT_WEIGHTS = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16})
# AdpQMatMul's T: the activation dtype, also the dtype of its output and bias.
ACTIVATIONS = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16})
# Ops that only re-lay or re-type a weight; looked through to find the initializer behind B.
_VIEW_OPS = frozenset({"Transpose", "Cast"})


def constant(value: ir.Value | None) -> ir.Value | None:
    """`value` itself if it is an initializer with data that no graph input overrides."""
    if value is None or not value.is_initializer() or value.const_value is None:
        return None
    if value.is_graph_input():
        return None
    return value


def is_float_weight(value: ir.Value) -> bool:
    return value.dtype in FLOAT_WEIGHTS and value.shape is not None and value.shape.rank() == 2


def cast_target(node: ir.Node) -> ir.DataType | None:
    """The dtype a Cast node converts to."""
    attr = node.attributes.get("to")
    return None if attr is None else ir.DataType(attr.as_int())


def weight_behind(b: ir.Value) -> tuple[ir.Value | None, ir.Node | None]:
    """(initializer, cast) when B is an initializer, or a Cast to an activation dtype of one.

    The Cast lets fp16/bf16-stored weights computed in fp32 be quantized straight from their
    stored values: AdpQMatMul takes the activation dtype from A, so the Cast becomes dead.
    """
    init = constant(b)
    if init is not None:
        return init, None
    node = b.producer()
    if node is None or node.op_type != "Cast" or node.domain not in ("", "ai.onnx"):
        return None, None
    init = constant(node.inputs[0])
    if init is None or cast_target(node) not in ACTIVATIONS or init.dtype not in FLOAT_WEIGHTS:
        return None, None
    return init, node


def activation_dtype(matmul: ir.Node) -> ir.DataType | None:
    """The dtype T of a MatMul's A (and Y), from A, or from B since MatMul ties them."""
    a, b = matmul.inputs[0], matmul.inputs[1]
    for value in (a, b):
        if value is not None and value.dtype is not None:
            return value.dtype
    producer = b.producer() if b is not None else None
    if producer is not None and producer.op_type == "Cast":
        return cast_target(producer)
    return None


def root_initializer(value: ir.Value | None) -> ir.Value | None:
    """The initializer behind a chain of Transpose / Cast nodes, if any."""
    for _ in range(4):
        if value is None:
            return None
        if constant(value) is not None:
            return value
        node = value.producer()
        if node is None or node.op_type not in _VIEW_OPS or not node.inputs:
            return None
        value = node.inputs[0]
    return None


def tied_gather(value: ir.Value | None) -> ir.Node | None:
    """A Gather that reads the initializer behind `value` as its table.

    Looks through Transpose / Cast both ways: back from `value` to its initializer, then
    forward from the initializer to the Gather, since exporters write a tied table either as
    ``Gather(W)`` with ``MatMul(x, Transpose(W))`` or, like onnxruntime-genai's model builder,
    as ``MatMul(x, W)`` with ``Gather(Transpose(W))``.
    """
    init = root_initializer(value)
    return None if init is None else _gather_reading(init, depth=4)


def _gather_reading(value: ir.Value, depth: int) -> ir.Node | None:
    for use in value.uses():
        node = use.node
        if node.op_type == "Gather" and use.idx == 0:
            return node
        if depth > 0 and node.op_type in _VIEW_OPS and node.domain in ("", "ai.onnx"):
            found = _gather_reading(node.outputs[0], depth - 1)
            if found is not None:
                return found
    return None


def gather_tables(graph: ir.Graph) -> list[ir.Value]:
    """The 2-D float initializers that some Gather reads as its table (directly or through
    Transpose / Cast), in graph order, each once: the embedding tables."""
    tables: dict[int, ir.Value] = {}
    for node in ir.traversal.RecursiveGraphIterator(graph):
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or not node.inputs:
            continue
        init = root_initializer(node.inputs[0])
        if init is not None and is_float_weight(init):
            tables.setdefault(id(init), init)
    return list(tables.values())


# Rows of the table compared before the full compare of a same-shaped candidate.
_SAMPLED_ROWS = 8
# Rows per slice of the full compare, so that it never materialises a whole transpose.
_COMPARE_ROWS = 1024


def same_content(weight: ir.Value, table: ir.Value) -> bool:
    """Whether B[K, N] holds exactly the bytes of a table [N, K] transposed, or of [K, N].

    Cheap for the common case of no tie: shapes and dtypes first, then a few sampled rows,
    and only then the whole tensor, compared bit for bit in slices.
    """
    if weight is table or weight.dtype != table.dtype:
        return False
    if weight.shape is None or table.shape is None:
        return False
    if weight.const_value is None or table.const_value is None:
        return False
    k, n = weight.shape.dims
    v, d = table.shape.dims
    orientations = [t for t, ok in ((True, (v, d) == (n, k)), (False, (v, d) == (k, n))) if ok]
    if not orientations:
        return False
    b = _bits(weight.const_value.numpy())
    t = _bits(table.const_value.numpy())
    v = t.shape[0]  # a concrete int (the shape's dims may be symbolic in type)
    for transposed in orientations:
        view = b.T if transposed else b
        rows = np.unique(np.linspace(0, v - 1, num=min(v, _SAMPLED_ROWS)).astype(np.int64))
        if not np.array_equal(view[rows], t[rows]):
            continue
        if all(
            np.array_equal(view[i : i + _COMPARE_ROWS], t[i : i + _COMPARE_ROWS])
            for i in range(0, v, _COMPARE_ROWS)
        ):
            return True
    return False


def _bits(array: np.ndarray) -> np.ndarray:
    """The array's elements as unsigned integers of the same width (exact, NaN-safe compare)."""
    array = np.asarray(array)
    return array.view(f"u{array.dtype.itemsize}")


def transpose_perm(node: ir.Node) -> list[int] | None:
    attr = node.attributes.get("perm")
    return None if attr is None else list(attr.as_ints())


class NameScope:
    """Hands out value names not yet used anywhere in a graph (subgraphs included)."""

    def __init__(self, graph: ir.Graph) -> None:
        self._taken = set(ir.convenience.create_value_mapping(graph))

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self._taken:
            name, i = f"{base}.{i}", i + 1
        self._taken.add(name)
        return name


def add_initializer(graph: ir.Graph, name: str, tensor: ir.TensorProtocol) -> ir.Value:
    """Register `tensor` as a new initializer called `name` (which must be free)."""
    value = ir.Value(
        name=name,
        const_value=tensor,
        shape=ir.Shape(tensor.shape.numpy()),
        type=ir.TensorType(tensor.dtype),
    )
    graph.register_initializer(value)
    return value


def add_transposed(graph: ir.Graph, init: ir.Value, names: NameScope) -> ir.Value:
    """A new initializer holding init[K, N]ᵀ, evaluated lazily.

    Lazy, so that a weight that is then quantized is never held twice in memory: its
    quantizer reads the transpose as a numpy view of the original data.
    """
    src = init.const_value
    assert src is not None and init.name is not None
    rows, cols = src.shape.numpy()
    name = names.fresh(f"{init.name}.T")

    def transposed() -> ir.TensorProtocol:
        return ir.tensor(np.asarray(src.numpy()).T, dtype=src.dtype, name=name)

    lazy = ir.LazyTensor(transposed, dtype=src.dtype, shape=ir.Shape([cols, rows]), name=name)
    return add_initializer(graph, name, lazy)


def in_main_graph(node: ir.Node, model: ir.Model) -> bool:
    return node.graph is model.graph


def bias_add(node: ir.Node, n: int) -> tuple[ir.Node | None, ir.Value | None]:
    """(Add, bias) when the MatMul's output only feeds ``Add(Y, bias[N])``, else (None, None)."""
    y = node.outputs[0]
    uses = list(y.uses())
    if y.is_graph_output() or len(uses) != 1:
        return None, None
    add = uses[0].node
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.inputs) != 2:
        return None, None
    bias = constant(add.inputs[1 - uses[0].idx])
    t = activation_dtype(node)
    if bias is None or t is None or bias.dtype != t:
        return None, None
    if bias.shape is None or bias.shape.dims != (n,):
        return None, None
    return add, bias
