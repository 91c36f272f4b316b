#!/usr/bin/env python3
"""Plots load-benchmark JSON lines (bench/bench_load --jsonl, or `dspark bench-load --json`).

Usage: plot_load.py LOAD.jsonl OUT_PREFIX [TITLE] [--baseline LABEL]

Writes
  OUT_PREFIX_throughput.png  aggregate tokens/s against concurrency, one line per run
  OUT_PREFIX_per_user.png    per-user tokens/s against concurrency, one line per run
  OUT_PREFIX_tradeoff.png    per-user tokens/s against aggregate tokens/s (points labelled with
                             the concurrency): the "matched throughput" view
and prints a markdown table: for every run and every aggregate throughput the baseline run
(default "mtp1", the MTP-1-like run, also when a label prefix precedes it) reached, the run's per-user speed at that same aggregate
throughput (linear interpolation in log throughput along the run's curve; "-" outside its
range) and the gain over the baseline's per-user speed there.

A run is a `label` (bench_load) or draft + policy (dspark bench-load). Rows whose
`replayed_acceptance` is true come from replayed acceptance (bench/traces): titles say so.
"""
import argparse
import collections
import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def run_label(r):
    if "label" in r:
        return r["label"]
    return "plain" if r["policy"] == "none" else f'{r["draft"]} {r["policy"]}'


def load(path):
    series = collections.defaultdict(list)
    replayed = False
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        series[run_label(r)].append(r)
        replayed = replayed or bool(r.get("replayed_acceptance"))
    for s in series.values():
        s.sort(key=lambda r: r["concurrency"])
    return series, replayed


def per_user_at(curve, x):
    """Per-user speed of a run at aggregate throughput x (interpolated in log x), or None."""
    pts = sorted((r["aggregate_tokens_per_s"], r["per_user_tokens_per_s"]) for r in curve
                 if r["aggregate_tokens_per_s"] > 0)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            if x1 == x0:
                return max(y0, y1)
            t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    if pts and pts[0][0] == x:
        return pts[0][1]
    return None


def find_baseline(series, name):
    """The run called `name`, or the one run whose label ends with it: bench_load puts its
    --label-prefix before every run ("skip gate mtp1"). None when there is no such single run."""
    if name in series:
        return name
    ends = [label for label in series if label.split()[-1:] == [name]]
    return ends[0] if len(ends) == 1 else None


def matched_table(series, name):
    baseline = find_baseline(series, name)
    if baseline is None:
        return f"(no run labelled '{name}': no matched-throughput table)"
    base = series[baseline]
    lines = ["| run | at C of " + baseline + " | aggregate tok/s | " + baseline +
             " per-user tok/s | run per-user tok/s | gain |", "|---|---|---|---|---|---|"]
    for label, s in sorted(series.items()):
        if label == baseline:
            continue
        for b in base:
            x, yb = b["aggregate_tokens_per_s"], b["per_user_tokens_per_s"]
            y = per_user_at(s, x)
            gain = "-" if y is None or yb <= 0 else f"{(y / yb - 1) * 100:+.0f}%"
            lines.append(f'| {label} | {b["concurrency"]} | {x:.0f} | {yb:.1f} | '
                         f'{"-" if y is None else f"{y:.1f}"} | {gain} |')
    return "\n".join(lines)


def plot_vs_concurrency(series, key, ylabel, title, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, s in sorted(series.items()):
        ax.plot([r["concurrency"] for r in s], [r[key] for r in s], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tradeoff(series, baseline, title, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, s in sorted(series.items()):
        style = dict(marker="s", linewidth=2.5, color="black") if label == baseline else dict(marker="o")
        ax.plot([r["aggregate_tokens_per_s"] for r in s], [r["per_user_tokens_per_s"] for r in s], label=label, **style)
        for r in s:
            ax.annotate(str(r["concurrency"]), (r["aggregate_tokens_per_s"], r["per_user_tokens_per_s"]), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("aggregate tokens/s")
    ax.set_ylabel("per-user tokens/s")
    ax.set_title(title + " (point labels: concurrency)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("jsonl")
    ap.add_argument("prefix")
    ap.add_argument("title", nargs="?", default="load benchmark")
    ap.add_argument("--baseline", default="mtp1", help="run label of the matched-throughput baseline")
    a = ap.parse_args()
    series, replayed = load(a.jsonl)
    if not series:
        raise SystemExit(f"plot_load: no JSON lines in {a.jsonl}")
    title = a.title + (" - replayed acceptance" if replayed else "")
    plot_vs_concurrency(series, "aggregate_tokens_per_s", "aggregate tokens/s", title, f"{a.prefix}_throughput.png")
    plot_vs_concurrency(series, "per_user_tokens_per_s", "per-user tokens/s (decode)", title, f"{a.prefix}_per_user.png")
    plot_tradeoff(series, find_baseline(series, a.baseline), title, f"{a.prefix}_tradeoff.png")
    print(matched_table(series, a.baseline))


if __name__ == "__main__":
    main()
