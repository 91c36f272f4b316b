#!/usr/bin/env python3
"""Per-level figures of a load sweep against plain decoding, and the gate's windows re-priced.

Usage: load_gate_check.py LOAD.jsonl [--profile LOAD.md]

Prints, for every concurrency level of a bench_load sweep (scripts/device/load_suite.sh):
  - each run's aggregate throughput against the mean of the plain runs (policy "none") of the
    same level, and the spread of those plain runs;
  - with --profile (the suite's load.md, which holds the step profile the run used): each gate
    window the run recorded (`gate_recent_windows`), decided again with plain decoding priced
    from whole plain steps (docs/scheduler.md): T_plain = r * SPS_window, where SPS_window is
    the profile's time for the window's steps (recovered from the window's own plain_s,
    prefill_s and the run's gate_plain_scale) and r = the plain runs' step_ms over the
    profile's step at that concurrency. "o" keeps speculating, "C" closes; the letter after
    it is what the gate then in force decided.

This is the offline check of docs/benchmarks.md (twelfth session): it prices windows that the
old rule chose, so it says how the new price reads them, not what the new rule would do.
"""
import argparse
import collections
import json
import re


def read_profile(path):
    """{rows: ms} from the first 'ms, ctx' row of a load.md step-profile table."""
    text = open(path).read()
    m = re.search(r"\| B \|(.*)\n\|[-|]*\n\| ms, ctx \d+ \|(.*)\n", text)
    if not m:
        raise SystemExit(f"{path}: no step profile table")
    rows = [int(x) for x in m.group(1).split("|") if x.strip()]
    ms = [float(x) for x in m.group(2).split("|") if x.strip()]
    return dict(zip(rows, ms))


def profile_ms(profile, b):
    """The profile's time at the smallest measured row count >= b (the step runs padded to it)."""
    for rows in sorted(profile):
        if rows >= b:
            return profile[rows]
    return profile[max(profile)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl")
    ap.add_argument("--profile", help="load.md with the step profile the sweep used")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.jsonl) if line.strip()]
    levels = collections.defaultdict(list)
    for r in rows:
        levels[r["concurrency"]].append(r)
    profile = read_profile(args.profile) if args.profile else None
    for c in sorted(levels):
        plain = [r for r in levels[c] if r["policy"] == "none"]
        if not plain:
            print(f"C={c}: no plain run")
            continue
        tok = [r["aggregate_tokens_per_s"] for r in plain]
        mean = sum(tok) / len(tok)
        step_ms = sum(r["step_ms"] for r in plain) / len(plain)
        print(f"C={c}: plain {mean:.1f} tok/s (spread {100 * (max(tok) - min(tok)) / mean:.1f}%)")
        for r in levels[c]:
            if r["policy"] == "none":
                continue
            line = (f"  {r['label']}: {100 * (r['aggregate_tokens_per_s'] / mean - 1):+.1f}%, "
                    f"verify length {r['mean_verify_length']:.2f}")
            windows = r.get("gate_recent_windows") or []
            if profile and windows:
                whole = step_ms / profile_ms(profile, c)
                scale = r.get("gate_plain_scale") or 1.0
                marks = []
                for w in windows:
                    sps_s = (w["plain_s"] - w["prefill_s"]) / scale
                    cost = w["step_s"] / (whole * sps_s) - 1.0
                    marks.append(("C" if w["gain"] <= cost else "o") + ("C" if w["closed"] else "o"))
                line += f"; whole-step ratio {whole:.2f}; windows (new, then old): {' '.join(marks)}"
            print(line)


if __name__ == "__main__":
    main()
