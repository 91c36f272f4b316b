#!/usr/bin/env python3
"""Projected batch-1 decode speed of each trained drafter on an 8B target (issue 5): a
PROJECTION, not a measurement of an 8B drafter. It combines two measured things:

  * the acceptance the drafter reached on SmolLM2-135M (`dspark eval --json` lines: per-position
    unconditional acceptance U_k, the share of rounds whose first k drafts were all accepted,
    pooled over datasets by rounds; gamma 7, so every round verified 7 drafts);
  * the target's measured verify step time for 1..8 new tokens of one sequence at batch 1
    (`bench_cuda` JSON, "verify" rows of the chosen model and context; missing lengths are
    interpolated linearly);

and one modelled thing, the draft pass of a drafter of the same architecture built for the
8B target: the bytes its weights take to read (layers of the target's shape, the fused-feature
projection, the target's LM head for the drafted rows, the Markov factors), over the copy
bandwidth the same JSON measured, at the efficiency the target's own decode step reached
(decode floor / decode time at batch 1). A block drafter (dspark, dflash) reads its weights
once per round whatever the draft length; a chain drafter (eagle3, mtp1) once per drafted
token.

For each drafter and each verify length l (1..gamma) a round yields E(l) = 1 + sum_{k<=l} U_k
tokens in t_verify(l + 1) + t_draft(l); the table takes the best l, as a fixed-length policy
tuned for batch 1 would.

  python3 scripts/project_speedup.py --eval docs/results/drafters_eval_gpu_r3.jsonl \
      --bench docs/results/bench_cuda.json --model qwen3-8b --context 512
"""
import argparse
import json
import sys

# Architecture of the 8B targets (Hugging Face configs): hidden, intermediate, heads, kv heads,
# head dim, layers, vocabulary.
TARGETS = {
    "qwen3-8b": dict(d=4096, ff=12288, heads=32, kv=8, hd=128, layers=36, vocab=151936),
    "llama3.1-8b": dict(d=4096, ff=14336, heads=32, kv=8, hd=128, layers=32, vocab=128256),
}
BYTES = 2  # bf16


def layer_params(t, d_in):
    """One decoder layer whose attention reads d_in-wide inputs (2d for eagle3/mtp1's fused rows)."""
    attn = d_in * t["heads"] * t["hd"] + 2 * d_in * t["kv"] * t["hd"] + t["heads"] * t["hd"] * t["d"]
    return attn + 3 * t["d"] * t["ff"]


def draft_pass_bytes(kind, t, n_layer, n_features, markov_rank):
    """Weight bytes one pass of the drafter reads (its LM head rows come from the target's)."""
    d = t["d"]
    head = t["vocab"] * d
    if kind in ("dspark", "dflash"):
        params = n_features * d * d + n_layer * layer_params(t, d) + head
        if kind == "dspark":
            params += 2 * markov_rank * t["vocab"] + d + markov_rank
    else:
        params = n_features * d * d + layer_params(t, 2 * d) + head
    return params * BYTES


def pooled_unconditional(run):
    """Per-position unconditional acceptance pooled over the run's datasets (weights: rounds)."""
    num, den = None, 0
    for ds in run["datasets"].values():
        u, n = ds["acceptance_unconditional"], ds["verify_steps"]
        num = [x * n for x in u] if num is None else [a + x * n for a, x in zip(num, u)]
        den += n
    return [x / den for x in num]


def best_length(u, block, pass_ms, t_verify):
    """The verify length l in 1..len(u) with the most tokens per second, for per-position
    unconditional acceptance u, a draft pass of pass_ms (once per round for a block drafter,
    once per drafted token for a chain drafter) and the verify time t_verify(new tokens) in ms.
    Returns (l, tokens per round, round ms, tokens per second)."""
    best = None
    for l in range(1, len(u) + 1):
        tokens = 1 + sum(u[:l])
        round_ms = t_verify(l + 1) + (pass_ms if block else pass_ms * l)
        rate = 1000.0 * tokens / round_ms
        if best is None or rate > best[3]:
            best = (l, tokens, round_ms, rate)
    return best


def verify_curve(bench, model, context):
    rows = [r for m in bench["models"] if m["model"] == model for r in m["verify"]
            if r["context"] == context and r["seqs"] == 1]
    if not rows:
        sys.exit(f"project_speedup: no single-sequence verify rows for {model} at context {context}")
    pts = sorted((r["new_tokens"], r["step_ms"]) for r in rows)

    def t(n):
        for (n0, t0), (n1, t1) in zip(pts, pts[1:]):
            if n0 <= n <= n1:
                return t0 + (t1 - t0) * (n - n0) / (n1 - n0)
        if n == pts[0][0]:
            return pts[0][1]
        sys.exit(f"project_speedup: {n} new tokens outside the measured {pts[0][0]}..{pts[-1][0]}")
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", required=True, help="dspark eval --json lines (one per drafter and temperature)")
    ap.add_argument("--bench", required=True, help="bench_cuda JSON with verify and decode rows")
    ap.add_argument("--model", default="qwen3-8b", choices=sorted(TARGETS))
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--block-layers", type=int, default=5, help="layers of dspark/dflash")
    ap.add_argument("--features", type=int, default=5, help="target layers fused (mtp1: 1)")
    ap.add_argument("--markov-rank", type=int, default=64)
    args = ap.parse_args()

    bench = json.load(open(args.bench))
    t_verify = verify_curve(bench, args.model, args.context)
    model = next(m for m in bench["models"] if m["model"] == args.model)
    dec = next(r for r in model["decode"] if r["batch"] == 1)
    efficiency = dec["floor_ms"] / dec["step_ms"]
    bw_bytes_per_ms = bench["ceilings"]["copy_GBps_read_plus_write"] * 1e6 * efficiency
    t = TARGETS[args.model]
    plain = 1000.0 / t_verify(1)

    runs = [json.loads(line) for line in open(args.eval) if line.strip()]
    print(f"PROJECTION for {args.model} (context {args.context}, batch 1): SmolLM2 acceptance x measured "
          f"{args.model} verify times x modelled draft pass ({efficiency:.1%} of "
          f"{bench['ceilings']['copy_GBps_read_plus_write']:.0f} GB/s)\n")
    print(f"plain decoding: {t_verify(1):.3f} ms/token, {plain:.1f} tok/s\n")
    print("| T | drafter | draft pass ms | best l | tokens/round | round ms | tok/s | vs plain | vs MTP-1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for temp in sorted({r["temperature"] for r in runs}):
        rows = {}
        for r in runs:
            if r["temperature"] != temp or "datasets" not in r:
                continue
            kind = r["draft"].split(":")[0]
            u = pooled_unconditional(r)
            n_feat = 1 if kind == "mtp1" else args.features
            pass_ms = draft_pass_bytes(kind, t, args.block_layers, n_feat, args.markov_rank) / bw_bytes_per_ms
            rows[kind] = (pass_ms, *best_length(u, kind in ("dspark", "dflash"), pass_ms, t_verify))
        mtp = rows.get("mtp1", (None, None, None, None, None))[4]
        for kind in ("dspark", "dflash", "eagle3", "mtp1"):
            if kind not in rows:
                continue
            pass_ms, l, tokens, round_ms, rate = rows[kind]
            vs_mtp = f"{rate / mtp:.3f}x" if mtp else "-"
            print(f"| {temp:g} | {kind} | {pass_ms:.3f} | {l} | {tokens:.3f} | {round_ms:.3f} | {rate:.1f} | "
                  f"{rate / plain:.3f}x | {vs_mtp} |")


if __name__ == "__main__":
    main()
