#!/usr/bin/env python3
"""Training throughput: seconds per optimizer step of the side-by-side trainer (every drafter
of --kinds on one batch), on a target of the default model's shape, without data preparation.

  CPU (2-core dev box, random SmolLM2-shaped target, short sequences):
    python3 training/bench_step.py --batch 2 --max-len 192 --anchors 16 --steps 3
  GPU (the recipe's shapes; the real GGUF when given, else random weights of its shape):
    python3 training/bench_step.py --target /tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf \
        --batch 8 --max-len 640 --anchors 64 --steps 60

Examples: --examples FILE (the JSONL train.py writes, or its .gz from an export), truncated to
--max-len as train.py does; else synthetic, a prompt of max_len/4 tokens and a response filling
the rest (random ids: more counted rows than real data, where ~44% of a batch-8 grid of
SmolLM2's regenerated examples are response rows; --uniform for the old full-length ones). The timed loop is Trainer.train_step. --profile prints the top operators of torch.profiler over the timed steps."""
import argparse
import gzip
import json
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dspark_train import target  # noqa: E402
from dspark_train.trainer import Trainer, TrainArgs  # noqa: E402


def random_smollm2_shape(seed, device, dtype):
    """Random weights of SmolLM2-135M's shape (30 layers, d 576, 9/3 heads, V 49152)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5,
                      rope_theta=100000.0, max_position_embeddings=2048, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval().requires_grad_(False)


def synthetic_examples(n, max_len, vocab, seed, ragged=True):
    """Random ids. ragged: lengths and prompt shares like the regenerated SmolLM2 examples
    (prompt 30..200 tokens, total uniform up to max_len: ~45% of a batch grid are response
    rows); else every example max_len long with a max_len/4 prompt."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if ragged:
            k = rng.randrange(min(30, max_len // 4), max(min(200, max_len // 2), min(30, max_len // 4) + 1))
            length = rng.randrange(min(k + 16, max_len), max_len + 1)
        else:
            k, length = max_len // 4, max_len
        out.append(([rng.randrange(5, vocab) for _ in range(length)], k))
    return out


def read_examples(path, max_len):
    """train.py's examples (JSONL, optionally gzipped), the first max_len tokens of each."""
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    out = [(r["ids"][:max_len], int(r["n_prompt"])) for r in recs]
    return [(ids, k) for ids, k in out if len(ids) - k >= 8]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="random", help="GGUF path, or 'random' (SmolLM2 shape)")
    ap.add_argument("--examples", help="JSONL(.gz) training examples; default synthetic")
    ap.add_argument("--kinds", default="dspark,dflash,eagle3,mtp1")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=640)
    ap.add_argument("--anchors", type=int, default=64)
    ap.add_argument("--block-size", type=int, default=7)
    ap.add_argument("--n-layer", type=int, default=2, help="layers of the block drafters (dspark, dflash)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--amp", default="bf16", choices=["bf16", "off"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--uniform", action="store_true", help="synthetic examples all max_len long")
    ap.add_argument("--json", help="append one JSON line with the configuration and the result")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cpu-threads", type=int, default=2)
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(args.cpu_threads)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if args.target == "random":
        model = random_smollm2_shape(0, dev, dtype)
    else:
        model, _ = target.load_gguf_target(args.target, dev, dtype)
    n_layer = model.config.num_hidden_layers
    layers = [1, 8, 15, 22, 28] if n_layer == 30 else [0, n_layer // 2]
    if args.examples:
        ex = read_examples(args.examples, args.max_len)
    else:
        # a fresh batch (new shapes) every step, as in training
        ex = synthetic_examples(args.batch * (args.warmup + args.steps), args.max_len, model.config.vocab_size, 0,
                                ragged=not args.uniform)
    ta = TrainArgs(kinds=args.kinds.split(","), steps=10 ** 6, batch_size=args.batch, anchors=args.anchors,
                   block_size=args.block_size, n_layer=args.n_layer, target_layers=layers, log_every=10 ** 9)
    tr = Trainer(model, target.target_head(model), target.target_info(model, "bench"), ex, ex[:args.batch],
                 ta, dev, log=lambda *_: None, amp=args.amp == "bf16", compile=args.compile)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rec = {"kinds": args.kinds, "batch": args.batch, "max_len": args.max_len, "anchors": args.anchors,
           "block": args.block_size, "n_layer": args.n_layer, "compile": args.compile, "device": str(dev),
           "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")}
    try:
        for _ in range(args.warmup):
            tr.train_step()
        sync()
    except torch.cuda.OutOfMemoryError as e:      # a probe of the largest batch that fits
        rec["error"] = "out of memory"
        print(f"bench_step: batch {args.batch} anchors {args.anchors}: out of memory ({str(e)[:120]})")
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(rec) + "\n")
        return 4
    prof = None
    if args.profile:
        acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        prof = torch.profiler.profile(activities=acts)
        prof.__enter__()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        tr.train_step()
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    cpu = (time.process_time() - c0) / args.steps      # less sensitive to a shared box than wall
    if prof is not None:
        prof.__exit__(None, None, None)
        ev = prof.key_averages()
        if dev.type == "cuda":
            # GPU busy time per step against the wall time per step: a step whose kernels
            # take much less than its wall time is bound by the host (launch overhead)
            busy = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
                       for e in ev) / 1e6 / args.steps
            launches = sum(e.count for e in ev if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                            "cudaLaunchKernelExC", "cuLaunchKernelEx"))
            print(f"bench_step profile: GPU kernels busy {busy:.3f} s/step, {launches / args.steps:.0f} "
                  f"kernel launches/step")
            print(ev.table(sort_by="self_device_time_total", row_limit=20))
        print(ev.table(sort_by="self_cpu_time_total", row_limit=20))
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if dev.type == "cuda" else None
    mem = f", peak GPU memory {peak:.1f} GiB" if peak is not None else ""
    if args.json:
        rec.update({"s_per_step": round(dt, 4), "cpu_s_per_step": round(cpu, 4), "steps": args.steps,
                    "seq_per_s": round(args.batch / dt, 2), "peak_gpu_gib": None if peak is None else round(peak, 2)})
        if dev.type == "cuda":
            st = torch.cuda.memory_stats()
            rec.update({k: st.get(k) for k in ("num_alloc_retries", "num_device_alloc", "num_device_free")})
        with open(args.json, "a") as f:
            f.write(json.dumps(rec) + "\n")
    print(f"bench_step: {args.kinds} batch {args.batch} max_len {args.max_len} anchors {args.anchors} "
          f"block {args.block_size} on {dev.type}: {dt:.3f} s/step, {1 / dt:.2f} steps/s over {args.steps} steps "
          f"(process CPU time {cpu:.3f} s/step){mem}")


if __name__ == "__main__":
    sys.exit(main())
