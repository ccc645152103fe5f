"""Turn accuracy.py's JSON lines into a Markdown table and a perplexity-vs-bits plot (PNG).

python benchmarks/report_accuracy.py .bench/results/smollm2.jsonl --png docs/smollm2_ppl.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLOURS = {
    "adpq": "tab:red",
    "ort-default": "tab:blue",
    "ort-rtn": "tab:cyan",
    "ort-kquant": "tab:green",
    "ort-hqq": "tab:purple",
    "ort-gptq": "tab:orange",
}


def load(path: Path) -> tuple[dict, list[dict]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    floats = [r for r in rows if r.get("family") == "float"]
    if not floats:
        raise SystemExit(f"{path}: no float row")
    seen: dict[str, dict] = {}
    for r in rows:
        if r.get("family") != "float":
            seen[r["method"]] = r  # the last run of a method wins
    return floats[-1], list(seen.values())


def table(base: dict, rows: list[dict]) -> str:
    lines = [
        f"Float: perplexity {base['perplexity']:.3f} over {base['windows']} windows of "
        f"{base['ctx']} tokens ({base['tokens']} scored tokens).",
        "",
        "| method | bits/weight | perplexity | Δ ppl | KL | quant. time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ok = sorted((r for r in rows if "error" not in r), key=lambda r: (r["bits"], r["bpw"]))
    for r in ok:
        lines.append(
            f"| {r['method']} | {r['bpw']:.3f} | {r['perplexity']:.3f} | "
            f"{100 * r['ppl_change']:+.1f}% | {r['kl']:.4f} | {r['quant_seconds']:.1f} |"
        )
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | – | failed: {r['error'][:80]} | | | |")
    return "\n".join(lines)


def plot(base: dict, rows: list[dict], png: Path, title: str) -> None:
    """All points on a log scale (left) and the 4-bit region on a linear one (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    lo = min((r["bpw"] for r in ok if r["bits"] == 4), default=4.0)
    for ax, zoom in zip(axes, (False, True), strict=True):
        for family, colour in COLOURS.items():
            pts = sorted(
                (r["bpw"], r["perplexity"])
                for r in ok
                if r.get("family") == family and (not zoom or r["bits"] == 4)
            )
            if pts:
                ax.scatter(*zip(*pts, strict=True), label=family, color=colour, s=28)
        ax.axhline(base["perplexity"], color="black", lw=0.8, ls="--", label="float32")
        ax.set_xlabel("true bits per weight (codes, scales, zero points, outliers, indices)")
        ax.grid(alpha=0.3)
        if zoom:
            ax.set_xlim(lo - 0.1, None)
            ax.set_ylabel("perplexity")
            ax.set_title("4-bit methods")
        else:
            ax.set_yscale("log")
            ax.set_ylabel("perplexity (log scale)")
            ax.set_title(title)
            ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path)
    p.add_argument("--png", type=Path)
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    base, rows = load(args.results)
    print(table(base, rows))
    if args.png:
        plot(base, rows, args.png, args.title or args.results.stem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
