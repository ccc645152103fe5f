"""Running an exported model: its session, its cache signature and its tokenizer.

The interface written by `adpq_onnx.models.export` (names are the contract):

    inputs   input_ids                    int64  [batch, seq]
             attention_mask               int64  [batch, past + seq]   1 = attend, 0 = padding
             past_key_values.{i}.key      T      [batch, kv_heads, past, head_dim]
             past_key_values.{i}.value    T      [batch, kv_heads, past, head_dim]
    outputs  logits                       T      [batch, seq, vocab]
             present.{i}.key / .value     T      [batch, kv_heads, past + seq, head_dim]

Token positions are `past + arange(seq)` (as transformers' own forward does), so a
left-padded batch keeps its padding positions; every caller here uses batch 1. An empty
cache is a tensor with past = 0. Everything is read from the session's inputs and outputs,
so a model whose metadata was dropped by some tool still runs; the `adpq_onnx.model.*`
metadata adds the BOS / EOS ids and where the model came from.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from adpq_onnx.errors import UserError
from adpq_onnx.models.sources import hf_offline

logger = logging.getLogger(__name__)

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
LOGITS = "logits"
META_PREFIX = "adpq_onnx.model."
# Operator domains a stock onnxruntime runs without a custom-op library.
_STOCK_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def past_name(layer: int, kind: str) -> str:
    """Input name of one cache tensor; `kind` is "key" or "value"."""
    return f"past_key_values.{layer}.{kind}"


def present_name(layer: int, kind: str) -> str:
    """Output name of one updated cache tensor."""
    return f"present.{layer}.{kind}"


def _session(path: str | os.PathLike[str]) -> Any:
    """An onnxruntime session for `path`, with the AdpQ op library when it is available.

    `adpq_onnx.make_session` registers the custom-op library; a float model (no custom
    domain) still runs without it, on a plain session.

    Raises:
        UserError: The file is missing or not loadable, or it needs the op library and the
            library is not available.
    """
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    try:
        from adpq_onnx.ops.library import make_session
    except ImportError as exc:
        library_error: Exception = exc
    else:
        try:
            return make_session(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure: try the plain route below
            library_error = exc
    custom = _custom_domains(path)
    if custom:
        raise UserError(
            f"{path}: uses operator domain(s) {', '.join(custom)}, which need the adpq-onnx "
            f"op library, and it could not be loaded: {library_error}"
        )
    logger.debug("plain onnxruntime session (op library: %s)", library_error)
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind types
        raise UserError(f"{path}: onnxruntime cannot load it: {exc}") from None


def _custom_domains(path: str | os.PathLike[str]) -> list[str]:
    from adpq_onnx import io

    proto = io.load_proto(path)
    return sorted({o.domain for o in proto.opset_import if o.domain not in _STOCK_DOMAINS})


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to feed one exported model.

    Attributes:
        num_layers: Decoder layers, i.e. pairs of cache tensors.
        kv_heads: Key/value heads per layer.
        head_dim: Size of one head.
        cache_dtype: numpy dtype of the cache (and logits) tensors.
        vocab_size: Last dimension of the logits, when static.
        metadata: The `adpq_onnx.model.*` entries, prefix removed.
    """

    num_layers: int
    kv_heads: int
    head_dim: int
    cache_dtype: type
    vocab_size: int | None
    metadata: dict[str, str]

    @classmethod
    def from_session(cls, session: Any, path: str | os.PathLike[str] = "model") -> ModelInfo:
        """Read the cache signature off a session's inputs.

        Raises:
            UserError: The model does not have the interface described in this module.
        """
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        needed = (INPUT_IDS, ATTENTION_MASK, past_name(0, "key"))
        missing = [n for n in needed if n not in inputs] + [LOGITS] * (LOGITS not in outputs)
        if missing:
            raise UserError(
                f"{path}: missing {', '.join(missing)}; expected a model made by "
                "`adpq-onnx export` (input_ids, attention_mask, past_key_values.{i}.key/value)"
            )
        layers = 0
        while past_name(layers, "key") in inputs:
            layers += 1
        first = inputs[past_name(0, "key")]
        kv_heads, head_dim = first.shape[1], first.shape[3]
        if not (isinstance(kv_heads, int) and isinstance(head_dim, int)):
            raise UserError(f"{path}: {first.name} needs static kv_heads and head_dim dims")
        if first.type not in _ORT_DTYPES:
            raise UserError(f"{path}: {first.name} has unsupported type {first.type}")
        vocab = outputs[LOGITS].shape[-1]
        meta = session.get_modelmeta().custom_metadata_map
        return cls(
            num_layers=layers,
            kv_heads=kv_heads,
            head_dim=head_dim,
            cache_dtype=_ORT_DTYPES[first.type],
            vocab_size=vocab if isinstance(vocab, int) else None,
            metadata={
                k[len(META_PREFIX) :]: v for k, v in meta.items() if k.startswith(META_PREFIX)
            },
        )

    def feeds(self, input_ids: np.ndarray, past: list[np.ndarray] | None = None) -> dict:
        """Session inputs for `input_ids` [batch, seq] after the cache `past` (None: empty).

        `past` is the list of present.* outputs of the previous call, in output order
        (key, value per layer), as `generate.greedy_tokens` hands them on.
        """
        batch, seq = input_ids.shape
        if past is None:
            empty: np.ndarray = np.zeros((batch, self.kv_heads, 0, self.head_dim), self.cache_dtype)
            past = [empty] * (2 * self.num_layers)
        total = past[0].shape[2] + seq
        feeds = {
            INPUT_IDS: input_ids.astype(np.int64, copy=False),
            ATTENTION_MASK: np.ones((batch, total), np.int64),
        }
        for layer in range(self.num_layers):
            feeds[past_name(layer, "key")] = past[2 * layer]
            feeds[past_name(layer, "value")] = past[2 * layer + 1]
        return feeds

    def present_names(self) -> list[str]:
        """Output names of the updated cache, in the order `feeds` expects them back."""
        return [present_name(i, kind) for i in range(self.num_layers) for kind in ("key", "value")]

    def token_id(self, name: str) -> int | None:
        """`bos_token_id` or `eos_token_id` from the metadata, when recorded."""
        value = self.metadata.get(name, "")
        return int(value) if value.lstrip("-").isdigit() else None


def open_model(path: str | os.PathLike[str]) -> tuple[Any, ModelInfo]:
    """A session for `path` and its `ModelInfo`."""
    session = _session(path)
    return session, ModelInfo.from_session(session, path)


def load_tokenizer(
    model_path: str | os.PathLike[str], tokenizer_dir: str | os.PathLike[str] | None = None
) -> Any:
    """The tokenizer saved by `adpq-onnx export` beside the model (or in `tokenizer_dir`).

    Raises:
        UserError: The folder holds no tokenizer.
    """
    folder = Path(tokenizer_dir) if tokenizer_dir else Path(model_path).resolve().parent
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise UserError(
            f"{folder}: no tokenizer (tokenizer.json); `adpq-onnx export` saves one next to "
            "the model, or pass --tokenizer DIR"
        )
    hf_offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))
