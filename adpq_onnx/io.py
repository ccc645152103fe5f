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

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from adpq_onnx.errors import UserError

# Protobuf cannot serialize a message over 2 GiB; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Tensors below this stay inside the .onnx even when external data is used.
_EXTERNAL_MIN_BYTES = 1024
# Offsets of tensors in a data file we write are multiples of this (memory-mapping friendly).
_ALIGN = 64


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


def uses_external(model: ir.Model) -> bool:
    """Whether any initializer keeps its data in an external file."""
    return any(
        isinstance(v.const_value, ir.ExternalTensor)
        for g in model.graphs()
        for v in g.initializers.values()
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


class ExternalDataWriter:
    """Appends tensors to one external-data file as they are made, so none waits in memory.

    The file is written under a temporary name beside the final one; `add` returns an
    `ir.ExternalTensor` that already names the final file (it is renamed by `ModelWriter`).
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        self.tmp = Path(name)
        os.chmod(self.tmp, 0o666 & ~_umask())
        self._file = os.fdopen(fd, "wb")
        self.offset = 0
        self.written: set[int] = set()  # ids of the references handed out

    def add(self, name: str, data: np.ndarray | ir.TensorProtocol) -> ir.ExternalTensor:
        """Write `data` (an array, or a tensor read a chunk at a time); returns its reference."""
        start = self.offset
        if isinstance(data, np.ndarray):
            dtype, shape = ir.DataType.from_numpy(data.dtype), ir.Shape(data.shape)
            self._file.write(np.ascontiguousarray(data).tobytes())
        else:
            dtype, shape = data.dtype, ir.Shape(data.shape.numpy())
            for chunk in _chunks(data):
                self._file.write(chunk)
        length = self._file.tell() - start
        pad = -self._file.tell() % _ALIGN
        self._file.write(b"\0" * pad)
        self.offset = self._file.tell()
        ref = ir.ExternalTensor(
            self.final.name,
            start,
            length,
            dtype,
            shape=shape,
            name=name,
            base_dir=str(self.final.parent),
        )
        self.written.add(id(ref))
        return ref

    def store(self, name: str, array: np.ndarray) -> ir.TensorProtocol:
        """A `QuantizeWeightsPass` sink: large arrays go to the file, small ones stay inline."""
        if array.nbytes < _EXTERNAL_MIN_BYTES:
            return ir.tensor(array, name=name)
        return self.add(name, array)

    def close(self) -> None:
        self._file.close()

    def discard(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


def _chunks(tensor: ir.TensorProtocol, size: int = 64 << 20) -> Iterator[bytes]:
    """The bytes of a tensor in pieces; an external tensor is read from its file, not mapped."""
    if isinstance(tensor, ir.ExternalTensor):
        left = tensor.length if tensor.length is not None else tensor.nbytes
        with open(tensor.path, "rb") as f:
            f.seek(tensor.offset or 0)
            while left > 0:
                piece = f.read(min(size, left))
                if not piece:
                    raise UserError(f"{tensor.path}: ends inside tensor '{tensor.name}'")
                left -= len(piece)
                yield piece
        return
    yield tensor.tobytes()


def read_array(tensor: ir.TensorProtocol) -> np.ndarray:
    """A tensor's data as a private numpy array; external data is read, never memory-mapped.

    Reading rather than mapping keeps a large model's pages out of the resident set once the
    array is freed.
    """
    if isinstance(tensor, ir.ExternalTensor) and tensor.dtype.itemsize >= 1:
        raw = bytearray(b"".join(_chunks(tensor)))
        dt = np.dtype(tensor.dtype.numpy()).newbyteorder("<")
        return np.frombuffer(raw, dtype=dt).reshape(tensor.shape.numpy())
    return np.asarray(tensor.numpy())


class ModelWriter:
    """The files of one output model, made under temporary names and renamed when complete.

    Use as a context manager: `writer` is the external-data writer (None for a single file);
    `commit(model)` moves every remaining large tensor into the data file, writes the .onnx and
    renames both (data first). Leaving the block without `commit` removes what was written.
    """

    def __init__(self, path: Path, external_data: bool) -> None:
        if not path.parent.is_dir():
            raise UserError(f"{path}: directory {path.parent} does not exist")
        self.path = path
        self.data = path.with_name(path.name + ".data")
        self.writer: ExternalDataWriter | None = None
        if external_data:
            self.writer = ExternalDataWriter(self.data)

    def __enter__(self) -> ModelWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.discard()

    def commit(self, model: ir.Model) -> list[Path]:
        """Write the model; returns the files written."""
        if self.writer is None:
            return save_model(model, self.path, external_data=False)
        writer = self.writer
        # Everything not yet in the new data file is copied (or loaded) before the rename,
        # so even an input whose data file has the output's data name survives until then.
        for graph in model.graphs():
            for value in graph.initializers.values():
                t = value.const_value
                if t is None or id(t) in writer.written:
                    continue
                if t.nbytes >= _EXTERNAL_MIN_BYTES:
                    value.const_value = writer.add(value.name or t.name or "", t)
                elif isinstance(t, ir.ExternalTensor):
                    value.const_value = ir.tensor(read_array(t), dtype=t.dtype, name=t.name)
        writer.close()
        with _temporary(self.path) as tmp:
            _save(model, tmp, self.path)
            os.replace(writer.tmp, self.data)
        return [self.path, self.data]


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
