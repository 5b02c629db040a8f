"""Draw benchmarks/results/hydra_linear.csv: time against head count, one panel per shape and M.

Rows are taken from one device (default: the device of the newest row that is not a CPU smoke
run), one mode (default fwd+bwd), one sweep's mixing (default router) and, per (provider, shape,
M, N), the newest measurement.
    python benchmarks/plot_hydra_linear.py [--csv PATH] [--out PNG] [--mode fwd+bwd] [--mixing router]
                                           [--device NAME]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"
STYLE = {  # provider: (colour, line style)
    "base": ("black", "--"),
    "peft_lora": ("tab:gray", ":"),
    "naive_hydra": ("tab:red", "-"),
    "torch_hydra": ("tab:orange", "-"),
    "triton_hydra": ("tab:blue", "-"),
    "triton_hydra_cublas": ("tab:cyan", "-."),
}


def latest_rows(rows: list[dict], device: str, mode: str, mixing: str) -> list[dict]:
    """The newest row per (provider, shape, tokens, heads) on `device` in `mode` from `mixing` sweeps."""
    newest = {}
    for row in sorted(rows, key=lambda r: r["date"]):
        if row["device"] == device and row["mode"] == mode and row["mixing"] == mixing:
            key = (row["provider"], row["in_features"], row["out_features"], row["tokens"], row["heads"])
            newest[key] = row
    return list(newest.values())


def plot(csv_path: Path, out_path: Path, mode: str, mixing: str, device: str | None) -> Path:
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    if device is None:
        gpu_rows = [r for r in rows if not r["device"].startswith("cpu")]
        if not gpu_rows:
            raise SystemExit(f"{csv_path} holds no GPU rows; pass --device to plot a CPU smoke run")
        device = max(gpu_rows, key=lambda r: r["date"])["device"]
    selected = latest_rows(rows, device, mode, mixing)
    panels = sorted({(int(r["in_features"]), int(r["out_features"]), int(r["tokens"])) for r in selected})
    if not panels:
        raise SystemExit(f"no rows for device {device!r}, mode {mode!r} and mixing {mixing!r} in {csv_path}")
    shapes = sorted({p[:2] for p in panels})
    token_counts = sorted({p[2] for p in panels})
    figsize = (max(6.0, 4.2 * len(token_counts)), 3.4 * len(shapes) + 0.4)
    fig, axes = plt.subplots(len(shapes), len(token_counts), figsize=figsize, squeeze=False)
    series = defaultdict(list)  # (panel, provider) -> [(heads, ms)]
    for row in selected:
        panel = (int(row["in_features"]), int(row["out_features"]), int(row["tokens"]))
        series[panel, row["provider"]].append((int(row["heads"]), float(row["ms_median"])))
    all_heads = sorted({int(r["heads"]) for r in selected})
    for (panel, provider), points in sorted(series.items()):
        ax = axes[shapes.index(panel[:2])][token_counts.index(panel[2])]
        colour, line = STYLE.get(provider, ("tab:purple", "-"))
        if provider in ("base", "peft_lora"):  # measured once: independent of the head count
            ax.axhline(points[-1][1], color=colour, linestyle=line, label=provider)
        else:
            points.sort()
            ax.plot([h for h, _ in points], [ms for _, ms in points], color=colour, linestyle=line, marker="o",
                    label=provider)
    for i, (k, d) in enumerate(shapes):
        for j, tokens in enumerate(token_counts):
            ax = axes[i][j]
            ax.set_title(f"{k}->{d}, M={tokens}", fontsize=9)
            ax.set_xticks(all_heads)
            ax.set_xlabel("heads N")
            ax.set_ylabel(f"{mode} ms (median)")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"HydraLinear {mode}, {mixing} mixing, on {device}", fontsize=10)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=RESULTS / "hydra_linear.csv")
    parser.add_argument("--out", type=Path, default=RESULTS / "hydra_linear.png")
    parser.add_argument("--mode", default="fwd+bwd", choices=("fwd", "bwd", "fwd+bwd"))
    parser.add_argument("--mixing", default="router", choices=("router", "router_lora", "per_layer"),
                        help="the --mixing of the benchmark sweep to draw")
    parser.add_argument("--device", default=None, help="exact device name as in the CSV")
    args = parser.parse_args(argv)
    out = plot(args.csv, args.out, args.mode, args.mixing, args.device)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
