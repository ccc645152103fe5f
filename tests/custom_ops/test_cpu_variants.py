"""Every CPU kernel variant (ADPQ_CPU_KERNEL=ref|avx2|avx512) against the scalar reference.

The library reads ADPQ_CPU_KERNEL on every run, so one session serves all variants. The scalar
reference ("ref") is itself checked against numpy by test_cpu_kernel.py; here the SIMD variants
must equal it on random shapes: bits 2/3/4/8, group sizes, ragged K, N not a multiple of the
register tiles, M on both sides of the prefill threshold, float16 A, int8 outliers, bias, and
both activation modes (accuracy_level 0: float32; 4: int8 activations).
"""

from __future__ import annotations

import numpy as np
import pytest

from adpq_onnx.ops import reference

pytestmark = pytest.mark.requires_custom_ops

# max |Y_variant - Y_ref| / max |Y_ref|. Float mode: both accumulate in float32 in different
# orders. Int8 mode: the integer dot products are identical; the per-group scaling and the
# zero-point term are summed in a different order.
MAX_REL_ERR_FLOAT = 1e-5
MAX_REL_ERR_INT8 = 1e-4
# Int8 activations against the float32 result (the accuracy cost of accuracy_level 4), as a
# norm-wise relative error on Gaussian A.
MAX_INT8_VS_FLOAT = 0.03


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_FLAGS = _cpu_flags()
_NEEDS = {
    "avx2": {"avx2", "fma", "f16c"},
    "avx512": {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"},
}
VARIANTS = [
    pytest.param(v, marks=pytest.mark.skipif(not _NEEDS[v] <= _FLAGS, reason=f"this CPU lacks {v}"))
    for v in ("avx2", "avx512")
]


def with_level(model, level: int):
    attr = [a for a in model.graph.node[0].attribute if a.name == "accuracy_level"]
    for a in attr:
        model.graph.node[0].attribute.remove(a)
    from onnx import helper

    model.graph.node[0].attribute.append(helper.make_attribute("accuracy_level", level))
    return model


def run_variant(monkeypatch, session, feeds, variant: str) -> np.ndarray:
    monkeypatch.setenv("ADPQ_CPU_KERNEL", variant)
    return session.run(None, feeds)[0]


def assert_close(y, ref, tol):
    scale = float(np.abs(ref.astype(np.float32)).max(initial=0.0)) or 1.0
    err = np.abs(y.astype(np.float32) - ref.astype(np.float32)).max(initial=0.0)
    if y.dtype == np.float16:  # one float16 rounding apart at most, plus the float32 tolerance
        ulp = float(np.spacing(np.abs(ref)).astype(np.float32).max(initial=0.0))
        assert err <= ulp + tol * scale, (err, scale)
    else:
        assert err <= tol * scale, (err, scale)


def random_case(adpq, gen, *, level, m=None, bits=None):
    group_size = int(gen.choice([32, 64, 96, 128, 256]))
    k = int(gen.integers(1, 1100))
    n = int(gen.integers(1, 70))
    bits = bits or int(gen.choice([2, 3, 4, 8]))
    m = m if m is not None else int(gen.choice([1, 2, 3, 5, 8, 13, 40]))
    a_dtype = gen.choice([np.float32, np.float16])
    outlier_dtype = str(gen.choice(["float16", "int8"]))
    pw = adpq.quantized(
        gen, k, n, bits, group_size, float(gen.choice([0.0, 0.01, 0.05])), outlier_dtype
    )
    bias = gen.standard_normal(n).astype(a_dtype) if gen.integers(2) else None
    model, feeds = adpq.one_node_model(a_dtype, adpq.node_inputs(pw, bias), adpq.attrs_of(pw))
    model = with_level(model, level)
    a = gen.standard_normal((m, k)).astype(a_dtype)
    return pw, bias, model, {"A": a, **feeds}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("level", [0, 4])
def test_variant_equals_reference_on_random_shapes(adpq, monkeypatch, variant, level):
    gen = np.random.default_rng(7 + level)
    for _ in range(25):
        pw, _, model, feeds = random_case(adpq, gen, level=level)
        session = adpq.session(model, threads=int(gen.choice([1, 2, 3])))
        ref = run_variant(monkeypatch, session, feeds, "ref")
        y = run_variant(monkeypatch, session, feeds, variant)
        tol = MAX_REL_ERR_INT8 if level == 4 and pw.bits <= 4 else MAX_REL_ERR_FLOAT
        assert_close(y, ref, tol)


@pytest.mark.parametrize("variant", ["ref", *VARIANTS])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("m", [1, 4, 33])
def test_float_mode_matches_numpy(adpq, rng, monkeypatch, variant, bits, m):
    # Each register-tile shape (M = 1, 4, 33 rows of A; N = 4k + 3 rows of B) against numpy.
    pw = adpq.quantized(rng, 320, 23, bits, 64, 0.02)
    model, feeds = adpq.one_node_model(np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw))
    a = rng.standard_normal((m, 320)).astype(np.float32)
    y = run_variant(monkeypatch, adpq.session(model), {"A": a, **feeds}, variant)
    assert_close(y, reference.adpq_matmul(a, pw), MAX_REL_ERR_FLOAT)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("level", [0, 4])
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize(
    ("k", "group_size"), [(96, 96), (200, 96), (352, 160), (416, 128), (31, 32), (1000, 256)]
)
def test_block_pairs_and_odd_blocks(adpq, rng, monkeypatch, variant, level, bits, k, group_size):
    # The AVX-512 kernels take the blocks of a group two at a time, a last odd block alone (odd
    # blocks per group: 96, 160; a short last group: K = 200, 352, 1000; one block: K = 31).
    pw = adpq.quantized(rng, k, 13, bits, group_size, 0.01)
    model, feeds = adpq.one_node_model(np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw))
    model = with_level(model, level)
    session = adpq.session(model)
    for m in (1, 3, 5, 9):
        a = rng.standard_normal((m, k)).astype(np.float32)
        ref = run_variant(monkeypatch, session, {"A": a, **feeds}, "ref")
        y = run_variant(monkeypatch, session, {"A": a, **feeds}, variant)
        assert_close(y, ref, MAX_REL_ERR_INT8 if level == 4 else MAX_REL_ERR_FLOAT)


@pytest.mark.parametrize("variant", ["ref", *VARIANTS])
@pytest.mark.parametrize("m", [1, 16])
def test_int8_activations_accuracy(adpq, rng, monkeypatch, variant, m):
    # accuracy_level 4 is lossy by design; its error against float32 stays small.
    pw = adpq.quantized(rng, 1024, 64, 3, 128, 0.005)
    model, feeds = adpq.one_node_model(np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw))
    a = rng.standard_normal((m, 1024)).astype(np.float32)
    y = run_variant(monkeypatch, adpq.session(with_level(model, 4)), {"A": a, **feeds}, variant)
    ref = reference.adpq_matmul(a, pw)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < MAX_INT8_VS_FLOAT
    assert not np.array_equal(y, ref)  # the int8 path really ran


@pytest.mark.parametrize("variant", VARIANTS)
def test_threads_do_not_change_the_result(adpq, rng, monkeypatch, variant):
    pw = adpq.quantized(rng, 544, 301, 3, 32, 0.01)
    model, feeds = adpq.one_node_model(np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw))
    a = rng.standard_normal((20, 544)).astype(np.float32)
    for level in (0, 4):
        model = with_level(model, level)
        y1 = run_variant(monkeypatch, adpq.session(model, 1), {"A": a, **feeds}, variant)
        y3 = run_variant(monkeypatch, adpq.session(model, 3), {"A": a, **feeds}, variant)
        np.testing.assert_array_equal(y1, y3)


def test_bad_accuracy_level_is_an_error(adpq, rng):
    pw = adpq.quantized(rng, 64, 4, 4, 32)
    model, _ = adpq.one_node_model(np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw))
    with pytest.raises(Exception, match="accuracy_level=7"):
        adpq.session(with_level(model, 7))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize(
    ("k", "group_size"), [(576, 64), (576, 128), (1000, 256), (200, 96), (96, 32), (4096, 128)]
)
def test_int8_decode_tiles(adpq, rng, monkeypatch, variant, bits, k, group_size):
    # The int8 decode kernel (M < 8): unrolled groups of 64, 128, 256 codes with a short last
    # group (K = 576 at 128, 1000 at 256), other group sizes, tiles of 4 rows of B and single
    # rows (the last row of B is read without reading past it), rows without outliers, and the
    # outliers added inside the tile (float16 and int8 values).
    for n, outlier_dtype in ((1, "float16"), (5, "int8"), (8, "float16"), (19, "int8")):
        pw = adpq.quantized(rng, k, n, bits, group_size, 0.02, outlier_dtype)
        pw = adpq.drop_outliers(pw, rng.choice(n, size=n // 3, replace=False))
        model, feeds = adpq.one_node_model(
            np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw)
        )
        session = adpq.session(with_level(model, 4), threads=2)
        for m in (1, 2, 3, 7):
            a = rng.standard_normal((m, k)).astype(np.float32)
            ref = run_variant(monkeypatch, session, {"A": a, **feeds}, "ref")
            y = run_variant(monkeypatch, session, {"A": a, **feeds}, variant)
            assert_close(y, ref, MAX_REL_ERR_INT8)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("level", [0, 4])
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize(("k", "group_size"), [(576, 64), (352, 160), (1000, 256), (64, 32)])
def test_prefill_panels(adpq, rng, monkeypatch, variant, level, bits, k, group_size):
    # The prefill kernels (int8 from M = 8, float from M = 16): panels of 16 rows of B, two per
    # register tile, a last panel partly empty (N = 1, 15, 17, 33, 50), register tiles of up to
    # 6 (int8) or 12 (float) rows of A (M = 8, 13, 16, 40), ragged groups.
    for n in (1, 15, 16, 17, 33, 50):
        pw = adpq.quantized(rng, k, n, bits, group_size, 0.01, str(rng.choice(["float16", "int8"])))
        model, feeds = adpq.one_node_model(
            np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw)
        )
        session = adpq.session(with_level(model, level), threads=2)
        for m in (8, 13, 16, 40):
            a = rng.standard_normal((m, k)).astype(np.float32)
            ref = run_variant(monkeypatch, session, {"A": a, **feeds}, "ref")
            y = run_variant(monkeypatch, session, {"A": a, **feeds}, variant)
            assert_close(y, ref, MAX_REL_ERR_INT8 if level == 4 else MAX_REL_ERR_FLOAT)


@pytest.mark.parametrize("level", [0, 4])
def test_later_runs_with_cached_constant_inputs(adpq, rng, level):
    # The kernel keeps the checked constant inputs of its first run: later runs with other A
    # (shapes, dtypes) must still be exact, and a bad A must still be refused.
    pw = adpq.quantized(rng, 320, 37, 3, 64, 0.02, "int8")
    bias = rng.standard_normal(37).astype(np.float32)
    model, feeds = adpq.one_node_model(np.float32, adpq.node_inputs(pw, bias), adpq.attrs_of(pw))
    assert feeds == {}  # every input but A is an initializer
    session = adpq.session(with_level(model, level))
    tol = MAX_INT8_VS_FLOAT if level == 4 else MAX_REL_ERR_FLOAT
    for shape in ((1, 320), (2, 3, 320), (40, 320), (320,)):
        a = rng.standard_normal(shape).astype(np.float32)
        y = session.run(None, {"A": a})[0]
        ref = reference.adpq_matmul(a, pw, bias)
        assert y.shape == ref.shape
        if level == 4:
            assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < tol
        else:
            assert_close(y, ref, tol)
    with pytest.raises(Exception, match="K=321"):
        session.run(None, {"A": rng.standard_normal((1, 321)).astype(np.float32)})
