"""PNG plots of a quantization run: each weight's histogram with its outlier cut, and the
weight error per layer. matplotlib is imported only here (``--plots``), with the Agg backend.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from adpq_onnx.errors import UserError
from adpq_onnx.report import Report


def write_plots(report: Report, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``errors.png`` and ``hist_<weight>.png`` per layer into `out_dir`; returns them."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plots needs matplotlib: pip install 'adpq-onnx[bench]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(report.layers)), 4))
    names = [layer.name for layer in report.layers]
    ax.bar(range(len(names)), [layer.weight_rel_error for layer in report.layers], label="stored")
    adpq = [layer.adpq_rel_error for layer in report.layers]
    if all(a is not None for a in adpq):
        ax.plot(range(len(names)), [float(a or 0.0) for a in adpq], "k.", label="AdpQ+outliers")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_ylabel("relative weight error ‖B̂−B‖/‖B‖")
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out / "errors.png"))
    for layer in report.layers:
        if layer.histogram is None:
            continue
        edges, counts = layer.histogram
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.stairs(counts, edges, fill=True)
        ax.set_yscale("log")
        if layer.threshold is not None:
            for x in (-layer.threshold, layer.threshold):
                ax.axvline(x, color="r", linestyle="--")
        ax.set_title(
            f"{layer.name}: {layer.bits}-bit g{layer.group_size}, "
            f"{100 * layer.outlier_fraction:.2f}% outliers",
            fontsize=9,
        )
        ax.set_xlabel("weight value (red: outlier threshold)")
        written.append(_save(fig, out / f"hist_{re.sub(r'[^A-Za-z0-9_.-]', '_', layer.name)}.png"))
    plt.close("all")
    return written


def _save(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    fig.savefig(path, dpi=80)
    return path
