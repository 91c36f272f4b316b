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
SmolLM2's regenerated examples are response rows). The timed loop is Trainer.train_step. --profile prints the top operators of torch.profiler over the timed steps."""
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


def synthetic_examples(n, max_len, vocab, seed):
    rng = random.Random(seed)
    k = max_len // 4
    return [([rng.randrange(5, vocab) for _ in range(max_len)], k) for _ in range(n)]


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
    ap.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--amp", default="bf16", choices=["bf16", "off"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--profile", action="store_true")
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
        ex = synthetic_examples(args.batch * 4, args.max_len, model.config.vocab_size, 0)
    ta = TrainArgs(kinds=args.kinds.split(","), steps=10 ** 6, batch_size=args.batch, anchors=args.anchors,
                   block_size=args.block_size, target_layers=layers, log_every=10 ** 9)
    tr = Trainer(model, target.target_head(model), target.target_info(model, "bench"), ex, ex[:args.batch],
                 ta, dev, log=lambda *_: None, amp=args.amp == "bf16", compile=args.compile)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        tr.train_step()
    sync()
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
        key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25))
    mem = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if dev.type == "cuda" else ""
    print(f"bench_step: {args.kinds} batch {args.batch} max_len {args.max_len} anchors {args.anchors} "
          f"block {args.block_size} on {dev.type}: {dt:.3f} s/step, {1 / dt:.2f} steps/s over {args.steps} steps "
          f"(process CPU time {cpu:.3f} s/step){mem}")


if __name__ == "__main__":
    main()
