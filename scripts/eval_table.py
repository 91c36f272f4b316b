#!/usr/bin/env python3
"""Renders `dspark eval --json` lines (scripts/device/eval_suite.sh's eval.jsonl) as the
Table-1-style markdown tables of docs/benchmarks.md: tau per dataset and domain with the
macro average, DSpark's ratio to each baseline, per-position conditional acceptance, and the
confidence ECE of drafters that have a confidence head.

    python3 scripts/eval_table.py docs/results/drafters_eval_gpu.jsonl
"""
import json
import sys

DOMAINS = {"math": ["gsm8k", "math500"], "code": ["humaneval", "mbpp"], "chat": ["chat_eval"]}


def main(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    runs = [r for r in runs if "error" not in r]
    datasets = sorted({d for r in runs for d in r["datasets"]})
    temps = sorted({r["temperature"] for r in runs})
    out = []
    for t in temps:
        rows = [r for r in runs if r["temperature"] == t]
        out.append(f"**Temperature {t:g}**: tau (acceptance length, bonus included), gamma 7, batch 1\n")
        out.append("| drafter | " + " | ".join(datasets) + " | math | code | chat | macro |")
        out.append("|---" * (len(datasets) + 5) + "|")
        macro = {}
        for r in sorted(rows, key=lambda r: r["label"]):
            kind = r["label"].split()[0]
            tau = {d: r["datasets"][d]["acceptance_length"] for d in datasets if d in r["datasets"]}
            dom = {k: sum(tau[d] for d in v if d in tau) / max(1, sum(d in tau for d in v)) for k, v in DOMAINS.items()}
            macro[kind] = sum(tau.values()) / len(tau)
            out.append(f"| {kind} | " + " | ".join(f"{tau.get(d, 0):.3f}" for d in datasets) + " | " +
                       " | ".join(f"{dom[k]:.3f}" for k in DOMAINS) + f" | {macro[kind]:.3f} |")
        if "dspark" in macro:
            ratios = ", ".join(f"{macro['dspark'] / v:.3f}x {k}" for k, v in sorted(macro.items()) if k != "dspark")
            out.append(f"\nDSpark macro tau / baseline: {ratios}\n")
        same = [(r["label"], sum(v.get("identical_outputs", 0) for v in r["datasets"].values()),
                 sum(v["prompts"] for v in r["datasets"].values())) for r in rows
                if any("identical_outputs" in v for v in r["datasets"].values())]
        if same:
            out.append("Identical to plain decoding: " + ", ".join(f"{l.split()[0]} {a}/{b}" for l, a, b in same) + "\n")
        out.append("Conditional acceptance by draft position (all datasets pooled by rounds):\n")
        out.append("| drafter | " + " | ".join(f"k={k}" for k in range(1, 8)) + " |")
        out.append("|---" * 8 + "|")
        for r in sorted(rows, key=lambda r: r["label"]):
            reached = [0] * 7
            accepted = [0] * 7
            for v in r["datasets"].values():
                rounds = v["verify_steps"]
                cond, unc = v["acceptance_conditional"], v["acceptance_unconditional"]
                for k in range(min(7, len(unc))):
                    acc = unc[k] * rounds
                    accepted[k] += acc
                    reached[k] += acc / cond[k] if cond[k] > 0 else 0
            cells = [f"{a / n:.3f}" if n else "-" for a, n in zip(accepted, reached)]
            out.append(f"| {r['label'].split()[0]} | " + " | ".join(cells) + " |")
        ece = [(r["label"].split()[0], r["datasets"]) for r in rows
               if any("confidence_ece" in v for v in r["datasets"].values())]
        for kind, ds in ece:
            out.append(f"\nConfidence ECE of {kind} (cumulative confidence vs accepted prefix, 20 bins), per position:\n")
            out.append("| dataset | " + " | ".join(f"k={k}" for k in range(1, 8)) + " |")
            out.append("|---" * 8 + "|")
            for d, v in sorted(ds.items()):
                if "confidence_ece" in v:
                    out.append(f"| {d} | " + " | ".join(f"{e:.3f}" for e in v["confidence_ece"][:7]) + " |")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
