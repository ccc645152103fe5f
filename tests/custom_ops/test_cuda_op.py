"""The CUDA AdpQMatMul kernels against the executable spec (adpq_onnx.ops.reference).

Every test is skipped, with the reason, unless onnxruntime has the CUDAExecutionProvider
(onnxruntime-gpu), the CUDA EP starts on this machine, and the op library was built with
ADPQ_CUDA=ON (`cmake -S . -B build-cuda -DADPQ_CUDA=ON`, then ADPQ_LIB=...). Sessions disable
the CPU fallback (session.disable_cpu_ep_fallback), so a node that the CUDA EP did not take is an
error, never a silent CPU run.

Each case runs through both CUDA kernels and the automatic choice: the library reads
ADPQ_CUDA_KERNEL (gemv | mma | unset) at every run. bfloat16 goes through Cast nodes, because
numpy has no bfloat16: A is fed as float32, cast on the GPU, and the reference uses the same
bfloat16-rounded A.

Error budgets, relative to max |reference| plus one unit in the last place of the output type:
float32 computes with exact dequantized weights, like the CPU kernel; float16 and bfloat16 may
round the dequantized weights to the activation type on the tensor-core path.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from adpq_onnx.ops import reference, spec

pytestmark = [pytest.mark.requires_custom_ops, pytest.mark.requires_cuda]

IR_VERSION = 10
OPSET = 21
CUDA_EP = "CUDAExecutionProvider"
KERNELS = ("auto", "gemv", "mma")
MAX_REL_ERR = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2}
ELEM = {
    "float32": onnx.TensorProto.FLOAT,
    "float16": onnx.TensorProto.FLOAT16,
    "bfloat16": onnx.TensorProto.BFLOAT16,
}


# --- bfloat16 without a bfloat16 numpy type -------------------------------------------------


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounded to nearest even, NaN kept NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return np.where(np.isnan(x), 0x7FC0, rounded).astype(np.uint16)


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16, as float32."""
    return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32)


def ulp(ref: np.ndarray, dtype: str) -> np.ndarray:
    """One unit in the last place of `dtype` at each value of ref (float32)."""
    if dtype == "float32":
        return np.spacing(np.abs(ref)).astype(np.float32)
    if dtype == "float16":
        return np.spacing(np.abs(ref.astype(np.float16))).astype(np.float32)
    exponent = np.floor(np.log2(np.maximum(np.abs(ref), np.float32(2.0**-126))))
    return np.exp2(exponent - 7).astype(np.float32)


def assert_close(y: np.ndarray, ref: np.ndarray, dtype: str) -> None:
    assert y.shape == ref.shape
    scale = float(np.abs(ref).max(initial=0.0)) or 1.0
    err = np.abs(y.astype(np.float32) - ref)
    budget = ulp(ref, dtype) + MAX_REL_ERR[dtype] * scale
    worst = float((err - budget).max(initial=-1.0))
    assert worst <= 0, f"max error {float(err.max()):.3g} over budget (scale {scale:.3g})"


# --- models ---------------------------------------------------------------------------------


def tensor(name: str, arr: np.ndarray, dtype: str | None = None) -> onnx.TensorProto:
    """An initializer; dtype "bfloat16" stores float32 `arr` rounded to bfloat16 bits."""
    if dtype == "bfloat16":
        return helper.make_tensor(
            name, onnx.TensorProto.BFLOAT16, arr.shape, bf16_bits(arr).tobytes(), raw=True
        )
    return numpy_helper.from_array(arr, name)


def build_model(
    pw, dtype: str, bias: np.ndarray | None, as_initializers: bool = True
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Y = AdpQMatMul(A, packed pw, bias) with A, bias, Y of `dtype`.

    bfloat16: graph input A and output Y are float32, cast on the device. Weights are
    initializers, or graph inputs fed at run time (as_initializers=False; bias stays an
    initializer). Returns the model and the feeds besides A.
    """
    tensors = pw.tensors()
    names = ["A_t" if dtype == "bfloat16" else "A"]
    inits: list[onnx.TensorProto] = []
    inputs = []
    feeds = {}
    for name in spec.INPUTS[1:]:
        if name == "bias":
            if bias is not None:
                inits.append(tensor("bias", bias, dtype))
            names.append("bias" if bias is not None else "")
            continue
        if name not in tensors:
            continue
        names.append(name)
        if as_initializers:
            inits.append(numpy_helper.from_array(tensors[name], name))
        else:
            elem = helper.np_dtype_to_tensor_dtype(tensors[name].dtype)
            inputs.append(helper.make_tensor_value_info(name, elem, None))
            feeds[name] = tensors[name]
    while names[-1] == "":
        names.pop()
    attrs = {"K": pw.k, "N": pw.n, "bits": pw.bits, "block_size": pw.group_size}
    attrs |= spec.layout_attrs(pw.bits)
    io_elem = onnx.TensorProto.FLOAT if dtype == "bfloat16" else ELEM[dtype]
    nodes = [
        helper.make_node(
            spec.OP_TYPE,
            names,
            ["Y_t" if dtype == "bfloat16" else "Y"],
            domain=spec.DOMAIN,
            **attrs,
        )
    ]
    if dtype == "bfloat16":
        nodes.insert(0, helper.make_node("Cast", ["A"], ["A_t"], to=onnx.TensorProto.BFLOAT16))
        nodes.append(helper.make_node("Cast", ["Y_t"], ["Y"], to=onnx.TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes,
        "adpq_cuda",
        [helper.make_tensor_value_info("A", io_elem, None), *inputs],
        [helper.make_tensor_value_info("Y", io_elem, None)],
        inits,
    )
    model = helper.make_model(
        graph,
        ir_version=IR_VERSION,
        opset_imports=[
            helper.make_opsetid("", OPSET),
            helper.make_opsetid(spec.DOMAIN, spec.DOMAIN_VERSION),
        ],
    )
    return model, feeds


def cuda_session(model: onnx.ModelProto):
    import onnxruntime as ort

    from adpq_onnx.ops.library import make_session

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return make_session(model, providers=[CUDA_EP], session_options=options)


@functools.cache
def cuda_missing() -> str | None:
    """Why the CUDA kernels cannot be tested here, or None."""
    import onnxruntime as ort

    from adpq_onnx.ops.library import LibraryNotFoundError, library_path

    if CUDA_EP not in ort.get_available_providers():
        return (
            f"onnxruntime {ort.__version__} has no {CUDA_EP} (CPU-only wheel; the CUDA kernels "
            "need onnxruntime-gpu and a GPU)"
        )
    try:
        library_path()
    except LibraryNotFoundError as e:
        return str(e)
    from adpq_onnx.formats import pack
    from adpq_onnx.quant import quantize_weight

    w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    pw = pack(quantize_weight(w, bits=4, group_size=32, outlier_ratio=0.0))
    model, _ = build_model(pw, "float16", None)
    try:
        session = cuda_session(model)
    except Exception as e:  # any failure to place the node on the CUDA EP
        text = str(e)
        if "fallback" in text.lower() or "CPU" in text:
            return (
                "the op library has no CUDA kernels (built without ADPQ_CUDA=ON?), or the CUDA "
                f"EP rejected the node: {text.splitlines()[0]}"
            )
        raise
    if CUDA_EP not in session.get_providers():
        return f"the {CUDA_EP} did not start (driver, CUDA or cuDNN libraries missing?)"
    return None


@pytest.fixture(autouse=True)
def _needs_cuda() -> None:
    reason = cuda_missing()
    if reason is not None:
        pytest.skip(f"requires_cuda: {reason}")


def run_case(
    adpq,
    rng,
    monkeypatch,
    *,
    k,
    n,
    bits,
    group_size,
    dtype,
    lead=(3,),
    kernel="auto",
    bias=False,
    outlier_ratio=0.01,
    outlier_dtype="int8",
    no_outlier_rows=None,
    as_initializers=True,
):
    pw = adpq.quantized(rng, k, n, bits, group_size, outlier_ratio, outlier_dtype)
    if no_outlier_rows is not None:
        pw = adpq.drop_outliers(pw, no_outlier_rows)
    # float32 stands for bfloat16 in numpy; build_model and bf16_round round it.
    np_type = np.float16 if dtype == "float16" else np.float32
    b = rng.standard_normal(n).astype(np_type) if bias else None
    model, feeds = build_model(pw, dtype, b, as_initializers)
    a = rng.standard_normal((*lead, k)).astype(np_type)
    # The reference sees exactly the values the kernel gets (A and bias in the op's type).
    a_ref = bf16_round(a) if dtype == "bfloat16" else a.astype(np.float32)
    b_ref = None if b is None else (bf16_round(b) if dtype == "bfloat16" else b)
    if kernel != "auto":
        monkeypatch.setenv("ADPQ_CUDA_KERNEL", kernel)
    y = cuda_session(model).run(None, {"A": a, **feeds})[0]
    monkeypatch.delenv("ADPQ_CUDA_KERNEL", raising=False)
    ref = reference.adpq_matmul(a_ref, pw, None if b_ref is None else b_ref.astype(np.float32))
    assert_close(y, ref, dtype)
    return y


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("m", [1, 3, 16, 64, 300])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_bits_dtypes_and_rows(adpq, rng, monkeypatch, bits, dtype, m, kernel):
    # K=576 at G=128: four full groups and a last one of 64; N=67: a partial 128-channel tile
    # and an odd channel count for the two-channel GEMV warps.
    run_case(
        adpq,
        rng,
        monkeypatch,
        k=576,
        n=67,
        bits=bits,
        group_size=128,
        dtype=dtype,
        lead=(m,),
        kernel=kernel,
        bias=True,
    )


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize(
    ("k", "group_size"), [(1, 32), (45, 64), (100, 32), (300, 96), (1000, 256)]
)
def test_k_not_a_multiple_of_32_or_8(adpq, rng, monkeypatch, k, group_size, dtype, kernel):
    # K % 8 != 0 takes the element-wise A copy in the MMA kernel and scalar loads in the GEMV.
    for m in (2, 37):
        run_case(
            adpq,
            rng,
            monkeypatch,
            k=k,
            n=9,
            bits=3,
            group_size=group_size,
            dtype=dtype,
            lead=(m,),
            kernel=kernel,
        )


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("outlier_dtype", ["float16", "int8"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_rows_without_outliers(adpq, rng, monkeypatch, dtype, outlier_dtype, kernel):
    run_case(
        adpq,
        rng,
        monkeypatch,
        k=256,
        n=140,
        bits=4,
        group_size=64,
        dtype=dtype,
        lead=(20,),
        kernel=kernel,
        outlier_ratio=0.03,
        outlier_dtype=outlier_dtype,
        no_outlier_rows=np.arange(0, 140, 3),
    )


@pytest.mark.parametrize("kernel", KERNELS)
def test_no_outliers_at_all(adpq, rng, monkeypatch, kernel):
    run_case(
        adpq,
        rng,
        monkeypatch,
        k=200,
        n=12,
        bits=4,
        group_size=64,
        dtype="float16",
        kernel=kernel,
        outlier_ratio=0.0,
    )


@pytest.mark.parametrize("m", [1, 16, 200])
@pytest.mark.parametrize("bits", [3, 4])
def test_split_k(adpq, rng, monkeypatch, bits, m):
    # Few tiles for the SMs: the MMA kernel splits K (8 splits of 4 k-tiles here), each split
    # finding its first outlier by binary search, and sums in the fp32 workspace.
    run_case(
        adpq,
        rng,
        monkeypatch,
        k=2048,
        n=300,
        bits=bits,
        group_size=128,
        dtype="float16",
        lead=(m,),
        kernel="mma",
        bias=True,
        outlier_ratio=0.02,
    )


@pytest.mark.parametrize("lead", [(), (1,), (2, 3), (2, 1, 70)], ids=str)
def test_leading_shapes(adpq, rng, monkeypatch, lead):
    y = run_case(
        adpq, rng, monkeypatch, k=96, n=17, bits=4, group_size=32, dtype="float16", lead=lead
    )
    assert y.shape == (*lead, 17)


def test_empty_leading_dimension(adpq, rng, monkeypatch):
    y = run_case(
        adpq, rng, monkeypatch, k=64, n=5, bits=4, group_size=32, dtype="float16", lead=(0,)
    )
    assert y.shape == (0, 5)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_weights_fed_at_run_time(adpq, rng, monkeypatch, dtype, kernel):
    # Non-constant outlier tables are checked on a host copy at every run.
    run_case(
        adpq,
        rng,
        monkeypatch,
        k=192,
        n=16,
        bits=2,
        group_size=64,
        dtype=dtype,
        lead=(33,),
        kernel=kernel,
        bias=True,
        as_initializers=False,
    )


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_dequantized_weight_is_bit_exact_in_float32(adpq, rng, bits):
    # float32 A = I[K]: the GEMV computes 1 * ((code - z) * s) + outlier exactly as numpy's B.
    k, n = 200, 11
    pw = adpq.quantized(rng, k, n, bits, 64, outlier_ratio=0.05, outlier_dtype="int8")
    model, _ = build_model(pw, "float32", None)
    y = cuda_session(model).run(None, {"A": np.eye(k, dtype=np.float32)})[0]
    np.testing.assert_array_equal(y, reference.dequantize_b(pw))


def test_kernels_agree_with_each_other_in_float16(adpq, rng, monkeypatch):
    # The same fp16 problem through both kernels: within the fp16 budget of each other.
    pw = adpq.quantized(rng, 4096, 256, 4, 128, 0.01, "int8")
    model, _ = build_model(pw, "float16", None)
    a = rng.standard_normal((12, 4096)).astype(np.float16)
    session = cuda_session(model)
    out = {}
    for kernel in ("gemv", "mma"):
        monkeypatch.setenv("ADPQ_CUDA_KERNEL", kernel)
        out[kernel] = session.run(None, {"A": a})[0].astype(np.float32)
    assert_close(out["mma"], out["gemv"], "float16")


def test_bad_outlier_index_is_an_error(adpq, rng):
    # The CSR table lives on the GPU; the host copy is checked like the CPU op's.
    pw = adpq.quantized(rng, 64, 6, 3, 32, outlier_ratio=0.05)
    model, feeds = build_model(pw, "float16", None, as_initializers=False)
    bad = feeds["outlier_idx"].copy()
    bad[0] = 64
    a = rng.standard_normal((2, 64)).astype(np.float16)
    with pytest.raises(ort_errors.InvalidArgument, match=r"outlier_idx\[0\]=64 .* for K=64"):
        cuda_session(model).run(None, {"A": a, **feeds, "outlier_idx": bad})
