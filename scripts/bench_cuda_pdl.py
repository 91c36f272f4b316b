#!/usr/bin/env python3
"""What programmatic dependent launch saves per step, from a `bench_cuda --pdl` JSON.

Usage: bench_cuda_pdl.py BENCH_CUDA.json

For each model and token count: the default runner's step time minus the all-PDL runner's,
in ms and as a share of the default, for the decode shape (B sequences of one token) and the
verify shape (one sequence of B tokens). Figures quoted in docs/benchmarks.md (thirteenth
session) and kernels/cuda/NOTES.md (round 9) come from this.
"""
import json
import sys


def main(path):
    with open(path) as f:
        data = json.load(f)
    for model in data["models"]:
        rows = model.get("pdl_by_step")
        if not rows:
            continue
        print(f"{model['model']}: saved by PDL against the default, ms (% of the default step)")
        for r in rows:
            cells = []
            for shape in ("decode", "verify"):
                default, everywhere = r[f"{shape}_default_ms"], r[f"{shape}_all_ms"]
                cells.append(f"{shape} {default - everywhere:+.3f} ({100 * (default - everywhere) / default:+.1f}%)")
            print(f"  {r['tokens']} tokens: " + ", ".join(cells))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
