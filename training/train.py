#!/usr/bin/env python3
"""One command: target responses -> training of several drafters side by side -> held-out
evaluation -> STS calibration of the dspark confidence head -> export to drafter folders.

GPU (the default model, see docs/training.md and scripts/device/train_suite.sh):
    python3 training/train.py --target /tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf \
        --prompts .stage/data/train_prompts.jsonl --examples /tmp/dspark-train/examples.jsonl \
        --out /tmp/dspark-train/export --ckpt /tmp/dspark-train/ckpt.pt --log-json train_log.json
CPU smoke (tiny random Llama target, random prompts, a few steps):
    python3 training/train.py --target tiny --steps 20 --out /tmp/smoke --log-json /tmp/smoke/log.json
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dspark_train import data, regenerate, target  # noqa: E402
from dspark_train.export import export_drafter  # noqa: E402
from dspark_train.trainer import Trainer, TrainArgs  # noqa: E402


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="GGUF path, or 'tiny' (random 4-layer Llama)")
    ap.add_argument("--kinds", default="dspark,dflash,eagle3,mtp1")
    ap.add_argument("--prompts", help="JSONL {'turns': [...]} to regenerate responses from")
    ap.add_argument("--examples", help="JSONL training examples: read if present, else written")
    ap.add_argument("--n-prompts", type=int, default=4096)
    ap.add_argument("--max-new", type=int, default=256)
    ap.add_argument("--regen-batch", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--extra-temperatures", default="",
                    help="comma list: one more response per prompt sampled at each temperature (top_p 1), "
                         "e.g. 1.0 to add contexts like those sampled at T = 1; the held-out split keeps "
                         "whole prompts")
    ap.add_argument("--base-examples",
                    help="an earlier run's examples (.jsonl or .jsonl.gz: its passes, the recipe's first one "
                         "first): reused, so only the --extra-temperatures passes are regenerated (numbered "
                         "after the earlier ones, so their seeds differ)")
    ap.add_argument("--regen-time-limit", type=float, default=None, help="seconds")
    ap.add_argument("--holdout", type=int, default=256, help="examples kept for eval + calibration")
    ap.add_argument("--max-len", type=int, default=640)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--anchors", type=int, default=64)
    ap.add_argument("--block-size", type=int, default=7)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--markov-rank", type=int, default=64)
    ap.add_argument("--markov-type", default="vanilla", choices=["vanilla", "rnn"],
                    help="dspark's sequential head (method doc 1.3)")
    ap.add_argument("--target-layers", default="1,8,15,22,28")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--time-limit", type=float, default=1e9, help="training seconds before checkpoint+stop")
    ap.add_argument("--deadline", type=float, default=None,
                    help="unix time by which training must stop (checkpoint + export still follow)")
    ap.add_argument("--ckpt", help="trainer checkpoint (resumed from when present)")
    ap.add_argument("--init-from", help="export folder of an earlier run (<dir>/<kind>/): warm start, fresh optimizer")
    ap.add_argument("--out", required=True, help="export folder: <out>/<kind>/")
    ap.add_argument("--export-dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--log-json", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default="bf16", choices=["bf16", "off"],
                    help="bf16 autocast with f32 master weights on CUDA (no-op on the CPU)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the drafters' training forwards and the loss kernels")
    ap.add_argument("--cpu-threads", type=int, default=1, help="torch threads on the CPU (shared boxes)")
    return ap.parse_args()


def extra_passes(args):
    return [(float(t), 1.0) for t in args.extra_temperatures.split(",") if t.strip()]


def tiny_examples(model, n, seed, max_new, extra):
    """Random prompts of 6..20 tokens answered by the tiny target (sampled at T = 1)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(5, model.config.vocab_size, (int(torch.randint(6, 21, (1,), generator=g)),),
                             generator=g).tolist() for _ in range(n)]
    return regenerate.generate_passes(model, prompts, [2], max_new, 64, [(1.0, 1.0)] + extra, seed,
                                      log=lambda *_: None)


def get_examples(args, model, tok, log):
    if args.examples and os.path.exists(args.examples):
        log(f"train: reusing {args.examples}")
        return data.load_examples(args.examples, args.max_len)
    t0 = time.time()
    if args.target == "tiny":
        ex = tiny_examples(model, args.n_prompts, args.seed, args.max_new, extra_passes(args))
    else:
        if not args.prompts:
            raise SystemExit("train: --prompts is needed to regenerate responses")
        texts = regenerate.read_prompts(args.prompts, args.n_prompts)
        ids = [regenerate.chat_prompt_ids(tok, t) for t in texts]
        eos = sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} - {None})
        if args.base_examples:
            base = data.load_examples(args.base_examples, max_len=None, min_loss_tokens=0)
            done = regenerate.base_passes(base)
            log(f"train: {done} pass(es) from {args.base_examples} ({len(base)} responses)")
            extra = regenerate.generate_passes(model, ids, eos, args.max_new, args.regen_batch, extra_passes(args),
                                               args.seed, log=log, time_limit=args.regen_time_limit, first_pass=done)
            ex = regenerate.merge_passes(ids, base, extra)
        else:
            passes = [(args.temperature, args.top_p)] + extra_passes(args)
            ex = regenerate.generate_passes(model, ids, eos, args.max_new, args.regen_batch, passes, args.seed,
                                            log=log, time_limit=args.regen_time_limit)
    log(f"train: {len(ex)} responses regenerated in {time.time() - t0:.0f} s")
    if args.examples:
        os.makedirs(os.path.dirname(os.path.abspath(args.examples)), exist_ok=True)
        data.save_examples(args.examples, ex)
    return [(ids[:args.max_len], k) for ids, k in ex if len(ids[:args.max_len]) - k >= 8]


def main():
    args = parse()
    t_start = time.time()
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(args.cpu_threads)

    def log(msg):
        print(msg, flush=True)

    if args.target == "tiny":
        model, tok, name = target.tiny_target(seed=args.seed, device=dev), None, "tiny-random"
        layers = [0, 2]
    else:
        model, tok = target.load_gguf_target(args.target, dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)
        name = "SmolLM2-135M-Instruct" if "SmolLM2-135M" in args.target else os.path.basename(args.target)
        layers = [int(x) for x in args.target_layers.split(",")]
    examples = get_examples(args, model, tok, log)
    if len(examples) < args.holdout + args.batch:
        raise SystemExit(f"train: {len(examples)} examples, need more than holdout {args.holdout} + one batch")
    train_ex, holdout = regenerate.split_holdout(examples, args.holdout)
    if len(train_ex) < args.batch:
        raise SystemExit(f"train: {len(train_ex)} training examples after holding out whole prompts, need one batch")
    ta = TrainArgs(kinds=args.kinds.split(","), steps=args.steps, batch_size=args.batch, anchors=args.anchors,
                   block_size=args.block_size, n_layer=args.n_layer, markov_rank=args.markov_rank,
                   markov_type=args.markov_type,
                   target_layers=layers, lr=args.lr, seed=args.seed, log_every=args.log_every,
                   ckpt_every=args.ckpt_every, time_limit_s=args.time_limit)
    info = target.target_info(model, name)
    tr = Trainer(model, target.target_head(model), info, train_ex, holdout, ta, dev, log,
                 amp=args.amp == "bf16", compile=args.compile)
    prior_steps = {}
    if args.ckpt and os.path.exists(args.ckpt):
        tr.load(args.ckpt)
        log(f"train: resumed from {args.ckpt} at step {tr.step}")
    elif args.init_from:
        prior_steps = tr.init_from_exports(args.init_from)
        log(f"train: warm start from {args.init_from} (optimizer steps already taken: {prior_steps})")
    eval_before = tr.evaluate() if tr.step == 0 else None
    if args.deadline is not None:
        tr.a.time_limit_s = min(tr.a.time_limit_s, max(0.0, args.deadline - time.time()))
    t_train = time.time()
    complete = tr.fit(args.ckpt)
    train_s = time.time() - t_train
    final = tr.evaluate(collect_conf="dspark" in tr.runs)
    report = {"complete": complete, "steps_done": tr.step, "steps": ta.steps, "train_wall_s": round(train_s, 1),
              "total_wall_s": None, "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
              "torch": torch.__version__, "n_train_examples": len(train_ex), "n_holdout": len(holdout),
              "args": vars(args), "eval_initial": eval_before, "eval_final": final, "history": tr.history,
              "prior_steps": prior_steps, "exports": {}}
    calib = final.get("calibration")
    for kind, run in tr.runs.items():
        cfg = run["cfg"]
        if kind == "dspark" and calib:
            cfg.temperatures = [float(t) for t in calib["temperatures"]]
        cfg.training.update({"steps_done": tr.step, "complete": complete, "prior_steps": prior_steps.get(kind, 0),
                             "heldout_tau_probabilistic": final.get(kind, {}).get("tau_probabilistic")})
        folder = os.path.join(args.out, kind)
        files = export_drafter(run["model"], folder,
                               dtype=torch.bfloat16 if args.export_dtype == "bf16" else torch.float32)
        report["exports"][kind] = {f: os.path.getsize(os.path.join(folder, f)) for f in files}
    report["total_wall_s"] = round(time.time() - t_start, 1)
    with open(args.log_json, "w") as f:
        json.dump(report, f, indent=1)
    for kind in tr.runs:
        if kind in final:
            log(f"train: {kind}: held-out tau_probabilistic {final[kind]['tau_probabilistic']:.3f} "
                f"accept {[round(x, 3) for x in final[kind]['accept']]}")
    if calib:
        log(f"train: dspark STS temperatures {[round(t, 3) for t in calib['temperatures']]}, "
            f"ECE {calib['ece_before_mean']:.4f} -> {calib['ece_after_mean']:.4f}")
    return 0 if complete else 3


if __name__ == "__main__":
    sys.exit(main())
