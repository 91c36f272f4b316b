#!/usr/bin/env python3
"""Parity fixtures for the C++ drafters (docs/drafter-format.md "Parity fixtures").

For a tiny random target (d 64, V 256, 4 heads / 2 kv heads of 16, n_ff 128, 4 layers) and
random drafter weights, writes tests/drafters/fixtures/<kind>/ with drafter.json,
model.safetensors (F32), target_head.safetensors and case.safetensors holding inputs and the
outputs of this toolkit's own inference path (block_drafter.draft_block with a persistent
ContextCache; chain_drafter.draft_chain). Expected values are computed in float64 from the
stored f32 weights and inputs, then stored as f32. Seeded: rerunning gives identical bytes.

    python3 training/make_fixtures.py [--out tests/drafters/fixtures]

Besides the four kinds, `dspark_rnn/` covers the rnn Markov head.
"""
import argparse
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dspark_train.block_drafter import ContextCache, draft_block  # noqa: E402
from dspark_train.chain_drafter import draft_chain  # noqa: E402
from dspark_train.config import DrafterConfig, TargetInfo  # noqa: E402
from dspark_train.export import build_drafter, export_drafter  # noqa: E402
from dspark_train.layers import TargetHead, init_weights  # noqa: E402

V, D, HD, NH, NKV, NFF, R, GAMMA, TL = 256, 64, 16, 4, 2, 128, 16, 4, 4
P, N2 = 7, 3                      # round 1 context rows, round 2 new rows
CASES = {  # name: (kind, markov type, confidence, seed)
    "dspark": ("dspark", "vanilla", True, 11),
    "dspark_rnn": ("dspark", "rnn", True, 12),
    "dflash": ("dflash", "none", False, 13),
    "eagle3": ("eagle3", "none", False, 14),
    "mtp1": ("mtp1", "none", False, 15),
}


def tiny_config(kind, markov, confidence):
    chain = kind in ("eagle3", "mtp1")
    return DrafterConfig(
        kind=kind, target=TargetInfo(V, D, TL, "tiny-random"),
        target_layers=[TL - 1] if kind == "mtp1" else [0, 2],
        block_size=1 if kind == "mtp1" else GAMMA, mask_token_id=4,
        n_layer=1 if chain else 2, n_embd=D, n_head=NH, n_head_kv=NKV, head_dim=HD, n_ff=NFF,
        rms_eps=1e-5, rope_theta=100000.0, rope_scaling=None, qk_norm=False,
        markov_type=markov, markov_rank=R if markov != "none" else 0, confidence=confidence,
        training={"recipe": "training/make_fixtures.py (random weights, not trained)"})


def f32_round(t):
    return t.to(torch.float32).to(torch.float64)


def make_case(name, out_root):
    kind, markov, confidence, seed = CASES[name]
    cfg = tiny_config(kind, markov, confidence)
    drafter = build_drafter(cfg).to(torch.float64)
    init_weights(drafter, seed)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for pname, p in sorted(drafter.named_parameters()):
            if pname.endswith("norm.weight"):        # non-trivial norms and biases
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            elif pname.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            p.copy_(f32_round(p))
    head = TargetHead(f32_round(torch.randn(V, D, generator=g, dtype=torch.float64)),
                      f32_round(torch.randn(V, D, generator=g, dtype=torch.float64) * 0.5))
    m = len(cfg.target_layers)
    out = os.path.join(out_root, name)
    export_drafter(drafter, out, dtype=torch.float32)
    save_file({"embed.weight": head.embed_weight.float().contiguous(),
               "lm_head.weight": head.lm_head_weight.float().contiguous()},
              os.path.join(out, "target_head.safetensors"))
    case = {}
    with torch.no_grad():
        if cfg.is_block:
            cache = ContextCache(drafter)
            for r, n in (("r1", P), ("r2", N2)):
                feats = f32_round(torch.randn(n, m * D, generator=g, dtype=torch.float64))
                toks = torch.randint(0, V, (GAMMA,), generator=g)
                cache.append(feats)
                base, logits, conf = draft_block(drafter, cache, toks[0], toks, head)
                case[f"{r}.features"] = feats.float()
                case[f"{r}.anchor"] = toks[:1].to(torch.int32)
                case[f"{r}.prev"] = toks.to(torch.int32)
                case[f"{r}.base_logits"] = base.float()
                case[f"{r}.logits"] = logits.float()
                if conf is not None:
                    case[f"{r}.conf_logits"] = conf.float()
        else:
            feats = f32_round(torch.randn(P, m * D, generator=g, dtype=torch.float64))
            tokens = torch.randint(0, V, (P + 1,), generator=g)
            chain = torch.randint(0, V, (cfg.block_size - 1,), generator=g)
            case["features"] = feats.float()
            case["tokens"] = tokens.to(torch.int32)
            case["chain"] = chain.to(torch.int32)
            case["logits"] = draft_chain(drafter, feats, tokens, chain, head).float()
    save_file({k: v.contiguous() for k, v in case.items()}, os.path.join(out, "case.safetensors"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "tests", "drafters", "fixtures"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    for name in CASES:
        print(make_case(name, args.out))


if __name__ == "__main__":
    main()
