"""Plot benchmarks/results/adaptation.csv (from bench_adaptation.py) to benchmarks/results/adaptation.png.

One row of panels per task; each method from the latest run at the default size that finished it
(or `--run-id`):
  1. held-out test loss averaged over the styles, mean +- std over seeds, per method, with the
     pretrained model's loss before adaptation written in the title;
  2. per style, the difference to LoRA at equal parameters (below 0: better than LoRA);
  3. head specialisation: I(style; head) of the routers per layer, and for the supervised heads
     the loss with the style's own head forced against another head's.

    python benchmarks/plot_adaptation.py [--csv PATH] [--out PATH] [--size default|quick] [--run-id ID]
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
METHOD_ORDER = ("lora", "hydra_n2", "hydra_n4", "hydra_n8", "hydra_sup", "lora_tag", "hydra_learned", "lora_x2")
COLOURS = {"lora": "#4c72b0", "hydra_n2": "#dd8452", "hydra_n4": "#c44e52", "hydra_n8": "#8c564b",
           "hydra_sup": "#55a868", "hydra_learned": "#937860", "lora_x2": "#8172b3", "lora_tag": "#64b5cd"}


def latest_runs(rows: list[dict], size: str, run_id: str | None) -> dict[str, list[dict]]:
    """task -> rows to plot: per method, those of the latest run (at `size`) that finished it, so a
    method measured in a later run (`--methods NAME`) joins the others; only `run_id` if given."""
    chosen: dict[str, list[dict]] = defaultdict(list)
    by_task_method: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if (r["run_id"] == run_id) if run_id else (r["size"] == size):
            by_task_method[(r["task"], r["method"])][r["run_id"]].append(r)
    for (task, _), runs in by_task_method.items():
        finished = [rid for rid, rs in runs.items() if any(r["phase"] == "final" for r in rs)]
        if finished:
            chosen[task].extend(runs[max(finished)])
    return {task: rows for task, rows in chosen.items() if any(r["method"] != "base" for r in rows)}


def short_layer(label: str) -> str:
    """'layer9:blocks.2.proj' -> 'blocks.2.proj' (rows before the names were recorded: '9')."""
    index, _, name = label.partition(":")
    name = name.replace("transformer_blocks", "tb").replace("single_tb", "stb").replace(".attn.", ".")
    return name or index.replace("layer", "")


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def plot(rows_by_task: dict[str, list[dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(rows_by_task, key=lambda t: (t != "charlm", t))
    fig, axes = plt.subplots(len(tasks), 3, figsize=(16, 4.4 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        rows = rows_by_task[task]
        finals = [r for r in rows if r["phase"] == "final"]
        losses = [r for r in finals if r["metric"] == "loss"]
        methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in losses)]
        styles = list(dict.fromkeys(r["style"] for r in losses if r["style"] != "mean"))
        base = [float(r["value"]) for r in losses if r["method"] == "base" and r["style"] == "mean"]
        info = finals[0]

        # 1. mean over styles
        ax = row[0]
        stats = [mean_std([float(r["value"]) for r in losses if r["method"] == m and r["style"] == "mean"])
                 for m in methods]
        ax.bar(range(len(methods)), [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=4,
               color=[COLOURS[m] for m in methods])
        low = min(s[0] - s[1] for s in stats)
        high = max(s[0] + s[1] for s in stats)
        pad = (high - low) * 0.3 + 1e-6
        ax.set_ylim(low - pad, high + pad)
        labels = []
        for m in methods:
            r = next(x for x in losses if x["method"] == m)
            labels.append(f"{m.replace('_', chr(10))}\nN{r['heads']} r{r['rank']}\n{int(r['trainable_params']) / 1000:.0f}k")
        ax.set_xticks(range(len(methods)), labels, fontsize=7)
        seeds = len({r["seed"] for r in losses if r["method"] == methods[0]})
        ax.set_title(f"{task}: test loss, mean of {len(styles)} styles\n({seeds} seeds, mean ± std; "
                     f"before adaptation {base[0]:.3f})" if base else f"{task}: test loss", fontsize=9)
        ax.set_ylabel("cross-entropy (nats)" if task == "charlm" else "flow-matching MSE")

        # 2. per style, against LoRA
        ax = row[1]
        others = [m for m in methods if m != "lora"]
        width = 0.8 / max(1, len(others))
        lora = {s: statistics.fmean([float(r["value"]) for r in losses if r["method"] == "lora" and r["style"] == s])
                for s in styles}
        for i, m in enumerate(others):
            deltas, errs = [], []
            for s in styles:
                mean, std = mean_std([float(r["value"]) for r in losses if r["method"] == m and r["style"] == s])
                deltas.append(mean - lora[s])
                errs.append(std)
            ax.bar([j + (i - (len(others) - 1) / 2) * width for j in range(len(styles))], deltas, width, yerr=errs,
                   capsize=2, color=COLOURS[m], label=m)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(styles)), styles)
        ax.set_title(f"{task}: loss − LoRA's, per style (below 0: better than LoRA)", fontsize=9)
        ax.legend(fontsize=7, ncol=2)

        # 3. specialisation
        ax = row[2]
        mi = [r for r in finals if r["metric"] == "mi_bits"]
        routers = [m for m in methods if any(r["method"] == m for r in mi)]
        layers = list(dict.fromkeys(r["head"] for r in mi))
        width = 0.8 / max(1, len(routers))
        for i, m in enumerate(routers):
            values = [mean_std([float(r["value"]) for r in mi if r["method"] == m and r["head"] == layer])
                      for layer in layers]
            ax.bar([j + (i - (len(routers) - 1) / 2) * width for j in range(len(layers))], [v[0] for v in values],
                   width, yerr=[v[1] for v in values], capsize=2, color=COLOURS[m], label=f"{m} router")
        ax.set_xticks(range(len(layers)), [short_layer(layer) for layer in layers], fontsize=5, rotation=90)
        ax.set_xlabel("adapted layer (module order)")
        ax.set_ylabel("I(style; head), bits")
        forced = [r for r in finals if r["metric"] == "forced_head_loss"]
        title = f"{task}: router specialisation (max log2 min(K, N) = 1-2 bits)"
        if forced:
            own = statistics.fmean([float(r["value"]) for r in forced if styles.index(r["style"]) == int(r["head"])])
            other = statistics.fmean([float(r["value"]) for r in forced if styles.index(r["style"]) != int(r["head"])])
            title += f"\nhydra_sup: own head forced {own:.4f}, another head {other:.4f}"
        ax.set_title(title, fontsize=9)
        if routers:
            ax.legend(fontsize=7)
        runs = sorted({(r["date"], r["commit"]) for r in finals if r["method"] != "base"})
        row[1].set_xlabel(f"{task}: " + "; ".join(f"{d}, commit {c}" for d, c in runs) + f"; {info['machine']}",
                          fontsize=6, color="gray")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", type=Path, default=RESULTS / "adaptation.csv")
    parser.add_argument("--out", type=Path, default=RESULTS / "adaptation.png")
    parser.add_argument("--size", default="default", choices=("default", "quick"))
    parser.add_argument("--run-id", help="plot this run instead of each task's latest")
    args = parser.parse_args(argv)
    with args.csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen = latest_runs(rows, args.size, args.run_id)
    if not chosen:
        raise SystemExit(f"no {args.size} run with final rows in {args.csv}")
    plot(chosen, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
