"""Export a Llama-family causal LM (Hugging Face folder or GGUF file) to ONNX.

The graph has the flat KV-cache interface documented in `adpq_onnx.models.runtime`. It is
traced by `torch.onnx.export(dynamo=True)` through `CacheWrapper`, which rebuilds a
transformers `DynamicCache` from the flat tensors so that the model's own attention code
runs unchanged. batch, seq and past are dynamic; the attention mask's length is its own
dynamic dim (torch.export cannot express past + seq for an input), and the model only
needs it to equal past + seq.

What the Linear layers become: the exporter's optimizer folds each `aten.linear` weight
transpose into a pre-transposed [K, N] initializer read by a plain MatMul. `_tidy_names`
then names the node `/model/layers.0/self_attn/q_proj/MatMul` and its weight
`model.layers.0.self_attn.q_proj.MatMul.weight` (the ORT GenAI builder's convention), so that
include / exclude patterns can name layers. A tied lm_head is the exception: its weight is
the embedding table, shared with the Gather, and stays `MatMul(x, Transpose(table))`.

The model's essentials are written to the metadata under `adpq_onnx.model.` and the tokenizer
is saved beside the .onnx, so that evaluation and generation need neither torch nor the source.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adpq_onnx.errors import UserError
from adpq_onnx.models import sources
from adpq_onnx.models.runtime import META_PREFIX, past_name, present_name

logger = logging.getLogger(__name__)

DTYPES = ("float32", "float16")
# Families whose transformers implementation has been exported and checked here; others
# with a plain DynamicCache may work and are attempted with a warning.
TESTED_MODEL_TYPES = ("llama",)
# The attribute holding the causal LM inside the wrapper; stripped from tensor names.
_WRAPPED = "causal_lm"
# Node metadata the exporter adds that we drop once names are tidied: stack traces (with
# local paths), FX internals, and class lists that repeat the scopes. The module scopes stay:
# they name the layer each node came from.
_DROPPED_NODE_METADATA = (
    "pkg.torch.onnx.stack_trace",
    "pkg.torch.onnx.fx_node",
    "pkg.torch.onnx.class_hierarchy",
    "namespace",
)
# Loggers that report every constant folded or deduplicated at INFO during an export.
_CHATTY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx")


@dataclasses.dataclass
class ExportResult:
    """What `export_model` wrote and measured."""

    path: Path
    files: list[Path]
    metadata: dict[str, str]
    load_seconds: float
    export_seconds: float
    parity: dict[str, float] | None = None

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def export_model(
    source: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    opset: int = 18,
    check: bool = True,
) -> ExportResult:
    """Export SOURCE to `out_path` and save its tokenizer in the same folder.

    Args:
        source: A `.gguf` file, a Hugging Face folder, or an alias (see `sources`).
        out_path: The .onnx to write; its folder is created. Tensors go to `<name>.data`
            only when the model exceeds protobuf's 2 GB limit.
        dtype: ``float32`` or ``float16`` weights, activations and cache.
        opset: The default-domain opset of the graph.
        check: Compare ONNX Runtime logits with PyTorch's (empty cache, then with a cache).

    Raises:
        UserError: Bad source or options, or the parity check fails.
    """
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    folder, gguf = sources.resolve_source(str(source))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, tokenizer = load_pretrained(folder, gguf, dtype)
    loaded = time.perf_counter()
    program = _trace(model, opset)
    _tidy_names(program.model)
    metadata = model_metadata(model.config, tokenizer, source=gguf or folder.name, dtype=dtype)
    program.model.metadata_props.update(metadata)
    from adpq_onnx import io

    files = io.save_model(program.model, out)
    tokenizer.save_pretrained(str(out.parent))
    result = ExportResult(out, files, metadata, loaded - start, time.perf_counter() - loaded)
    if check:
        from adpq_onnx.models.parity import check_parity

        result.parity = check_parity(model, out)
    return result


def load_pretrained(folder: Path, gguf: str | None, dtype: str) -> tuple[Any, Any]:
    """The transformers model (eval mode, in `dtype`) and tokenizer of a source."""
    sources.hf_offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{folder / (gguf or '')}: transformers cannot load it: {exc}") from None
    config = model.config
    if config.model_type not in TESTED_MODEL_TYPES:
        logger.warning("model type %r is not one of %s", config.model_type, TESTED_MODEL_TYPES)
    return model.to(getattr(torch, dtype)).eval(), tokenizer


def model_metadata(config: Any, tokenizer: Any, *, source: Any, dtype: str) -> dict[str, str]:
    """The `adpq_onnx.model.*` metadata entries: what a runtime needs without torch."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else config.bos_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else config.eos_token_id
    values = {
        "source": str(source),
        "model_type": config.model_type,
        "dtype": dtype,
        "num_layers": config.num_hidden_layers,
        "num_attention_heads": heads,
        "num_kv_heads": config.num_key_value_heads,
        "head_dim": head_dim,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "bos_token_id": "" if bos is None else bos,
        "eos_token_id": "" if eos is None or isinstance(eos, list) else eos,
        "positions": "past + arange(seq)",
    }
    return {META_PREFIX + k: str(v) for k, v in values.items()}


def _cache_wrapper(model: Any) -> Any:
    import torch
    from transformers import DynamicCache

    class CacheWrapper(torch.nn.Module):
        """forward(input_ids, attention_mask, *flat_cache) -> (logits, *flat_present)."""

        def __init__(self) -> None:
            super().__init__()
            setattr(self, _WRAPPED, model)

        def forward(self, input_ids: Any, attention_mask: Any, *past: Any) -> tuple:
            lm = getattr(self, _WRAPPED)
            pairs = [(past[i], past[i + 1]) for i in range(0, len(past), 2)]
            cache = DynamicCache(pairs, config=lm.config)
            start = past[0].shape[2]
            positions = torch.arange(start, start + input_ids.shape[1]).unsqueeze(0)
            out = lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
            flat = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (out.logits, *flat)

    return CacheWrapper().eval()


def _trace(model: Any, opset: int) -> Any:
    import torch

    config = model.config
    layers = config.num_hidden_layers
    kv_heads = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dtype = next(model.parameters()).dtype
    # Sizes that differ from each other and from 0 / 1, which torch.export would specialize.
    batch, seq, past = 2, 3, 5
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    cache = [torch.randn(batch, kv_heads, past, head_dim, dtype=dtype) for _ in range(2 * layers)]
    dims = {n: torch.export.Dim(n) for n in ("batch", "seq", "past", "total")}
    dynamic_shapes = {
        "input_ids": {0: dims["batch"], 1: dims["seq"]},
        "attention_mask": {0: dims["batch"], 1: dims["total"]},
        "past": tuple({0: dims["batch"], 2: dims["past"]} for _ in cache),
    }
    kinds = [(i, kind) for i in range(layers) for kind in ("key", "value")]
    try:
        with torch.no_grad(), _quiet():
            return torch.onnx.export(
                _cache_wrapper(model),
                (ids, mask, *cache),
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                input_names=["input_ids", "attention_mask", *(past_name(*k) for k in kinds)],
                output_names=["logits", *(present_name(*k) for k in kinds)],
                opset_version=opset,
                verbose=False,
            )
    except torch.onnx.errors.OnnxExporterError as exc:
        # The exporter's message runs to pages (a full report); its head names the failure.
        head = " / ".join(str(exc).strip().splitlines()[:3])
        raise UserError(f"torch.onnx.export failed for {config.model_type}: {head}") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hold the exporter's per-constant INFO logs and its axis-renaming warnings."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # "The axis name: past will not be used, since it shares the same shape
            # constraints with another axis": the names we chose are kept regardless.
            warnings.filterwarnings("ignore", message=r".*axis name", category=UserWarning)
            # A deprecation inside torch's own pytree code, not something we call.
            warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _tidy_names(model: Any) -> None:
    """Name Linear MatMuls and weights after their module; strip the wrapper's prefix."""
    prefix = _WRAPPED + "."
    graph = model.graph
    for value in list(graph.initializers.values()):
        if value.name.startswith(prefix):
            value.name = value.name[len(prefix) :]
    for node in graph:
        module = _linear_module(node)
        if node.op_type != "MatMul" or module is None:
            continue
        module = module.removeprefix(prefix)
        node.name = "/" + module.replace(".", "/").replace("/layers/", "/layers.") + "/MatMul"
        weight = node.inputs[1]
        # Only a weight read by this node alone is renamed: a tied table keeps its name.
        if weight is not None and weight.is_initializer() and len(weight.uses()) == 1:
            if f"{module}.MatMul.weight" not in graph.initializers:
                weight.name = f"{module}.MatMul.weight"
    for node in graph:
        for key in _DROPPED_NODE_METADATA:
            node.metadata_props.pop(key, None)


def _linear_module(node: Any) -> str | None:
    """The module path of the nn.Linear a node was exported from, if the exporter said."""
    scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes")
    classes = node.metadata_props.get("pkg.torch.onnx.class_hierarchy")
    if not scopes or not classes:
        return None
    try:
        scopes, classes = ast.literal_eval(scopes), ast.literal_eval(classes)
    except (ValueError, SyntaxError):
        return None
    if len(scopes) < 2 or len(classes) < 2 or not classes[-2].endswith("nn.modules.linear.Linear"):
        return None
    return scopes[-2]
