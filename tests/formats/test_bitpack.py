"""Bit-plane packing: exact round trips, sizes, and golden bytes derived from the docstring."""

from __future__ import annotations

import numpy as np
import pytest

from adpq_onnx.formats import FORMATS, bitpack

KS = [32, 576, 100, 1]

# One block of 32 codes → the bytes that adpq_onnx/formats/bitpack.py's table prescribes.
GOLDEN = {
    # p=2 plane: byte j = c[j] | c[j+8]<<2 | c[j+16]<<4 | c[j+24]<<6 with c[i] = i // 8
    2: (np.arange(32) // 8, bytes([0b11_10_01_00] * 8)),
    # one block = a row's last (lone) 3-bit unit, c[i] = i % 8: the 2-bit plane (i % 4) gives
    # byte j = (j % 4)·0b01010101; the 1-bit plane in natural bit order, bit c = c[c] >= 4,
    # is 0b11110000 per byte
    3: (np.arange(32) % 8, bytes([0x00, 0x55, 0xAA, 0xFF] * 2 + [0xF0] * 4)),
    # p=4 plane: byte j = c[j] | c[j+16]<<4 with c[i] = i % 16 → 0x00, 0x11, .., 0xFF
    4: (np.arange(32) % 16, bytes(0x11 * j for j in range(16))),
    # p=8: byte j = c[j]
    8: (np.arange(32), bytes(range(32))),
}


@pytest.mark.parametrize("spec", FORMATS.values(), ids=list(FORMATS))
@pytest.mark.parametrize("k", KS)
def test_round_trip_is_exact(spec, k: int) -> None:
    rng = np.random.default_rng(k * spec.bits)
    codes = rng.integers(0, 1 << spec.bits, size=(5, k), dtype=np.uint8)
    packed = bitpack.pack_codes(codes, spec.bits)
    assert packed.dtype == np.uint8
    assert packed.shape == (5, bitpack.packed_row_bytes(k, spec.bits))
    np.testing.assert_array_equal(bitpack.unpack_codes(packed, k, spec.bits), codes)


@pytest.mark.parametrize("spec", FORMATS.values(), ids=list(FORMATS))
def test_block_sizes(spec) -> None:
    assert sum(spec.planes) == spec.bits
    assert spec.block_bytes == 4 * spec.bits == bitpack.block_bytes(spec.bits)
    assert bitpack.packed_row_bytes(1, spec.bits) == spec.block_bytes
    assert bitpack.packed_row_bytes(33, spec.bits) == 2 * spec.block_bytes


@pytest.mark.parametrize("bits", sorted(GOLDEN))
def test_golden_block(bits: int) -> None:
    codes, expect = GOLDEN[bits]
    packed = bitpack.pack_codes(codes.astype(np.uint8)[None, :], bits)
    assert packed.tobytes() == expect
    np.testing.assert_array_equal(bitpack.unpack_codes(packed, 32, bits)[0], codes)


def test_golden_3bit_units() -> None:
    # 96 codes c[i] = i % 8 = 3 blocks: a unit of two blocks (16 bytes of 2-bit plane, byte j
    # holding codes j, j+16, j+32, j+48, so again (j % 4)·0x55; 8 bytes of bits in natural
    # order), then the last block alone (as in GOLDEN[3]).
    codes = (np.arange(96) % 8).astype(np.uint8)[None, :]
    unit = bytes([0x00, 0x55, 0xAA, 0xFF] * 4 + [0xF0] * 8)
    packed = bitpack.pack_codes(codes, 3)
    assert packed.tobytes() == unit + GOLDEN[3][1]
    # code 33 (block 1, code 1) alone set to 4: bit 33 of the unit's 1-bit word
    one = np.zeros((1, 64), np.uint8)
    one[0, 33] = 4
    assert bitpack.pack_codes(one, 3).tobytes() == bytes(16) + bytes([0, 0, 0, 0, 0x02, 0, 0, 0])
    np.testing.assert_array_equal(bitpack.unpack_codes(packed, 96, 3), codes)


def test_padding_is_zero_codes() -> None:
    packed = bitpack.pack_codes(np.array([[5]], dtype=np.uint8), 4)
    assert packed.tobytes() == bytes([5] + [0] * 15)


def test_all_ones_fill_every_bit() -> None:
    for spec in FORMATS.values():
        codes = np.full((1, 32), (1 << spec.bits) - 1, dtype=np.uint8)
        assert bitpack.pack_codes(codes, spec.bits).tobytes() == b"\xff" * spec.block_bytes


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="fit in 2 bits"):
        bitpack.pack_codes(np.array([[4]], dtype=np.uint8), 2)
    with pytest.raises(ValueError, match="no packed layout"):
        bitpack.pack_codes(np.zeros((1, 32), np.uint8), 5)
    with pytest.raises(ValueError, match="do not hold"):
        bitpack.unpack_codes(np.zeros((1, 8), np.uint8), 64, 2)
