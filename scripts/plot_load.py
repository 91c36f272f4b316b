#!/usr/bin/env python3
"""Plots `dspark bench-load --json` lines: aggregate throughput and per-user speed against
concurrency, one line per (draft, policy), and per-user speed against aggregate throughput (the
"matched throughput" view). Usage: plot_load.py LOAD.jsonl OUT_PREFIX [TITLE]
Writes OUT_PREFIX_throughput.png, OUT_PREFIX_per_user.png, OUT_PREFIX_tradeoff.png."""
import collections
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
    prefix = sys.argv[2]
    title = sys.argv[3] if len(sys.argv) > 3 else "dspark bench-load"
    series = collections.defaultdict(list)
    for r in rows:
        label = "plain" if r["policy"] == "none" else f'{r["draft"]} {r["policy"]}'
        series[label].append(r)
    for s in series.values():
        s.sort(key=lambda r: r["concurrency"])
    for key, ylabel, name in (("aggregate_tokens_per_s", "aggregate tokens/s", "throughput"),
                              ("per_user_tokens_per_s", "per-user tokens/s (decode)", "per_user")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, s in sorted(series.items()):
            ax.plot([r["concurrency"] for r in s], [r[key] for r in s], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(f"{prefix}_{name}.png", dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, s in sorted(series.items()):
        ax.plot([r["aggregate_tokens_per_s"] for r in s], [r["per_user_tokens_per_s"] for r in s], marker="o",
                label=label)
        for r in s:
            ax.annotate(str(r["concurrency"]), (r["aggregate_tokens_per_s"], r["per_user_tokens_per_s"]), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("aggregate tokens/s")
    ax.set_ylabel("per-user tokens/s")
    ax.set_title(title + " (labels: concurrency)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{prefix}_tradeoff.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
