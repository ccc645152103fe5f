"""Load and save ONNX models with errors that name the file, and writes that never half-finish.

`load_model` checks what users get wrong (a missing path, a file that is not ONNX, a cut-off
download, an external-data file left behind) before building the onnx_ir model, whose external
tensors are then memory-mapped rather than read. `save_model` writes to a temporary name in
the target directory and renames it only once complete, so that an interrupted run never
leaves a broken model under the requested name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from adpq_onnx.errors import UserError

# Protobuf cannot serialize a message over 2 GiB; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Tensors below this stay inside the .onnx even when external data is used.
_EXTERNAL_MIN_BYTES = 1024


def load_model(path: str | os.PathLike[str]) -> ir.Model:
    """Read an ONNX model, leaving its external data memory-mapped.

    Raises:
        UserError: The path is missing or not a file, the file is not an ONNX model or is
            truncated, or an external-data file it names is missing or too short.
    """
    proto = load_proto(path, load_external_data=False)
    check_external_data(proto, path)
    model = ir.serde.deserialize_model(proto)
    ir.external_data.set_base_dir(model.graph, os.path.dirname(os.path.abspath(path)))
    return model


def load_proto(
    path: str | os.PathLike[str], *, load_external_data: bool = False
) -> onnx.ModelProto:
    """Parse the ModelProto of `path` (external data not loaded unless asked)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    if not p.is_file():
        raise UserError(f"{p}: not a file")
    try:
        # Always binary protobuf: onnx.load would otherwise pick a parser by file extension.
        proto = onnx.load(str(p), format="protobuf", load_external_data=False)
    except OSError as exc:
        raise UserError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise UserError(f"{p}: not an ONNX model or truncated (protobuf: {exc})") from None
    # An empty or cut-off file can still parse: the graph and opset imports are what any
    # real model has, and opset_import is serialized after the graph.
    if not proto.HasField("graph") or not proto.opset_import:
        raise UserError(f"{p}: not an ONNX model or truncated (no graph or opset import)")
    if load_external_data:
        check_external_data(proto, p)
        onnx.external_data_helper.load_external_data_for_model(proto, str(p.parent))
    return proto


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of a graph, its nodes' attributes and its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def external_files(proto: onnx.ModelProto) -> set[str]:
    """The external-data locations the model refers to, as written in it."""
    return {
        entry.value
        for t in _tensors(proto.graph)
        if t.data_location == onnx.TensorProto.EXTERNAL
        for entry in t.external_data
        if entry.key == "location"
    }


def check_external_data(proto: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Raise UserError naming the first external-data file that is missing or too short."""
    base = Path(path).parent
    sizes: dict[str, int] = {}
    for tensor in _tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        data = base / location
        if location not in sizes:
            if not data.is_file():
                raise UserError(
                    f"{path}: external data file '{location}' of tensor '{tensor.name}' is "
                    f"missing (looked in {base})"
                )
            sizes[location] = data.stat().st_size
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        if end > sizes[location]:
            raise UserError(
                f"{path}: external data file '{location}' is truncated: tensor '{tensor.name}' "
                f"ends at byte {end}, the file has {sizes[location]}"
            )


def tensor_bytes(model: ir.Model) -> int:
    """Bytes of all initializers of all graphs."""
    return sum(
        int(v.const_value.nbytes)
        for g in model.graphs()
        for v in g.initializers.values()
        if v.const_value is not None
    )


def save_model(
    model: ir.Model, path: str | os.PathLike[str], *, external_data: bool | None = None
) -> list[Path]:
    """Write `model` to `path` atomically; returns the files written.

    Args:
        model: The model; tensors it still maps from another file are copied.
        path: Where to write; its directory must exist.
        external_data: Put tensors in ``<name>.data`` next to it. None: only when the tensors
            exceed `EXTERNAL_DATA_THRESHOLD` bytes (protobuf's 2 GiB limit).

    Raises:
        UserError: The directory does not exist or the model is too large for one file.
    """
    out = Path(path)
    if not out.parent.is_dir():
        raise UserError(f"{out}: directory {out.parent} does not exist")
    if external_data is None:
        external_data = tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD
    if not external_data:
        # Otherwise tensors mapped from the input would stay references into its files.
        ir.external_data.load_to_model(model)
        with _temporary(out) as tmp:
            _save(model, tmp, out)
        return [out]
    data = out.with_name(out.name + ".data")
    if data.resolve() in _mapped_files(model):
        raise UserError(f"{data}: the model being saved still reads its tensors from this file")
    with _temporary(out) as tmp:
        # onnx_ir writes the data file through its own temporary name and renames it when
        # complete; the .onnx that names it is renamed after that, by _temporary.
        _save(model, tmp, out, external=data.name)
    return [out, data]


def _mapped_files(model: ir.Model) -> set[Path]:
    """Resolved paths of the files that the model's external tensors read from."""
    return {
        Path(v.const_value.path).resolve()
        for g in model.graphs()
        for v in g.initializers.values()
        if isinstance(v.const_value, ir.ExternalTensor)
    }


def _save(model: ir.Model, path: Path, final: Path, external: str | None = None) -> None:
    try:
        if external is None:
            ir.save(model, path)
        else:
            ir.save(model, path, external_data=external, size_threshold_bytes=_EXTERNAL_MIN_BYTES)
    except ValueError as exc:
        if "2GB" in str(exc) or "2 GB" in str(exc):
            raise UserError(f"{final}: model too large for one file; use external data") from None
        raise


@contextlib.contextmanager
def _temporary(final: Path) -> Iterator[Path]:
    """A fresh temporary path beside `final`, renamed to it on success, removed on failure."""
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        if tmp.exists():
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file through a temporary name, like `save_model`."""
    out = Path(path)
    if not out.parent.is_dir():
        raise UserError(f"{out}: directory {out.parent} does not exist")
    with _temporary(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
