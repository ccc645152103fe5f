"""Table and plot of the optional passes (range search, paired rounding, learned transforms)
against AdpQ alone, from accuracy.py's JSON lines.

python benchmarks/report_passes.py .bench/results/cafeq_smollm2.jsonl --png docs/img/passes.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from report_accuracy import load


def passes_of(row: dict) -> str:
    """The optional passes a method used, in words ("AdpQ alone" when none)."""
    p = row.get("params", {})
    used = []
    if p.get("range_search"):
        used.append(f"range search ({p['range_search']})")
    rounding = p.get("rounding", {})
    if rounding.get("method", "nearest") != "nearest":
        extra = [f"damp {rounding.get('damp', 0.01):g}"]
        if rounding.get("gain_aware"):
            extra.append("γ-aware")
        used.append(f"paired rounding ({', '.join(extra)})")
    tf = p.get("transforms", {})
    if tf.get("kinds"):
        objective = tf.get("objective", "product")
        pairs = {"attn", "mlp"} & set(tf["kinds"])  # norm has no objective choice
        used.append("transforms " + "+".join(tf["kinds"]) + (f" ({objective})" if pairs else ""))
    return " + ".join(used) if used else "AdpQ alone"


def _baseline(rows: list[dict], r: dict) -> dict | None:
    return next(
        (
            b
            for b in rows
            if passes_of(b) == "AdpQ alone"
            and (b["bits"], b["group_size"]) == (r["bits"], r["group_size"])
            and b["params"]["outlier_ratio"] == r["params"]["outlier_ratio"]
        ),
        None,
    )


def table(base: dict, rows: list[dict]) -> str:
    lines = [
        f"Float: perplexity {base['perplexity']:.3f} over {base['windows']} windows of "
        f"{base['ctx']} tokens.",
        "",
        "| bits | group | α | passes | bits/weight | perplexity | Δ ppl | KL | vs AdpQ alone "
        "| quant. time (s) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    ok = [r for r in rows if "error" not in r and r.get("family") == "adpq"]
    ok.sort(
        key=lambda r: (-r["bits"], r["group_size"], passes_of(r) != "AdpQ alone", r["perplexity"])
    )
    for r in ok:
        b = _baseline(ok, r)
        vs = "" if b is None or b is r else f"{100 * (r['perplexity'] / b['perplexity'] - 1):+.1f}%"
        lines.append(
            f"| {r['bits']} | {r['group_size']} | {r['params']['outlier_ratio']:g} | "
            f"{passes_of(r)} | {r['bpw']:.3f} | {r['perplexity']:.3f} | "
            f"{100 * r['ppl_change']:+.1f}% | {r['kl']:.4f} | {vs} | {r['quant_seconds']:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], png: Path) -> None:
    """Perplexity change over float per pass combination, one panel per bit width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r and r.get("family") == "adpq"]
    widths = sorted({r["bits"] for r in ok}, reverse=True)
    fig, axes = plt.subplots(1, len(widths), figsize=(6 * len(widths), 4), squeeze=False)
    for ax, bits in zip(axes[0], widths, strict=True):
        sel = sorted((r for r in ok if r["bits"] == bits), key=lambda r: -r["perplexity"])
        labels = [passes_of(r) for r in sel]
        values = [100 * r["ppl_change"] for r in sel]
        base = next((v for lab, v in zip(labels, values, strict=True) if lab == "AdpQ alone"), None)
        colours = [
            "tab:gray"
            if lab == "AdpQ alone"
            else ("tab:green" if base is not None and v < base else "tab:red")
            for lab, v in zip(labels, values, strict=True)
        ]
        ax.barh(labels, values, color=colours)
        ax.set_xlabel("perplexity rise over float (%); green: lower than AdpQ alone")
        ax.set_title(f"{bits}-bit, equal bits per weight")
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path)
    p.add_argument("--png", type=Path)
    args = p.parse_args(argv)
    base, rows = load(args.results)
    print(table(base, rows))
    if args.png:
        plot(rows, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
