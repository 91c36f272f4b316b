"""Trains several drafters side by side on the same batches (equal data, equal optimizer steps):
one target forward per batch feeds every drafter. Seeded and resumable: batch i and its anchors
are functions of (seed, i), and the checkpoint holds models, optimizers and schedulers."""
import dataclasses
import json
import os
import time

import torch

from .calibration import calibrate
from .config import DrafterConfig, TargetInfo
from .data import batch_indices, collate
from .export import build_drafter, load_tensors
from .layers import init_weights
from .losses import block_loss_rows, chain_step_loss_rows, compile_row_kernels, target_probs, tau_probabilistic
from .masks import block_attention_mask
from .optim import make_optimizer
from .step_plan import StepPlan
from .target import FeatureTap, features_for, target_forward


@dataclasses.dataclass
class TrainArgs:
    kinds: list
    steps: int
    batch_size: int = 8
    anchors: int = 64
    block_size: int = 7
    n_layer: int = 2
    markov_rank: int = 64
    markov_type: str = "vanilla"     # dspark's sequential head: vanilla (Markov) or rnn
    target_layers: list = dataclasses.field(default_factory=lambda: [1, 8, 15, 22, 28])
    mask_token_id: int = 4
    lr: float = 6e-4
    warmup_frac: float = 0.04
    grad_clip: float = 1.0
    seed: int = 42
    log_every: int = 10
    ckpt_every: int = 100
    time_limit_s: float = 1e9


def drafter_config(kind, target_cfg, info, a):
    """The recipe's config of each kind for a Hugging Face target config."""
    last = info["n_layer"] - 1
    return DrafterConfig(
        kind=kind, target=TargetInfo(**info),
        target_layers=[last] if kind == "mtp1" else list(a.target_layers),
        block_size=1 if kind == "mtp1" else a.block_size, mask_token_id=a.mask_token_id,
        n_layer=a.n_layer if kind in ("dspark", "dflash") else 1,
        n_embd=target_cfg.hidden_size, n_head=target_cfg.num_attention_heads,
        n_head_kv=target_cfg.num_key_value_heads,
        head_dim=getattr(target_cfg, "head_dim", None) or target_cfg.hidden_size // target_cfg.num_attention_heads,
        n_ff=target_cfg.intermediate_size, rms_eps=target_cfg.rms_norm_eps,
        rope_theta=float(getattr(target_cfg, "rope_theta", None)
                         or target_cfg.rope_parameters["rope_theta"]),
        rope_scaling=None, qk_norm=False,
        markov_type=a.markov_type if kind == "dspark" else "none",
        markov_rank=a.markov_rank if kind == "dspark" else 0, confidence=kind == "dspark",
        training={"recipe": "training/train.py", "seed": a.seed, "steps": a.steps,
                  "batch_size": a.batch_size, "anchors": a.anchors, "lr": a.lr})


class Trainer:
    """amp: bf16 autocast on CUDA (no-op on the CPU); compile: torch.compile the drafters'
    training forwards and the vocabulary-wide loss kernels (off by default: first steps
    recompile per new shape)."""

    def __init__(self, model, head, info, examples, holdout, args, device, log=print, amp=True, compile=False):
        self.model, self.head, self.a, self.dev, self.log = model, head, args, device, log
        self.examples, self.holdout = examples, holdout
        self.autocast = amp and device.type == "cuda"
        if device.type == "cuda":
            # cuDNN's fused attention builds an execution plan for every new sequence length
            # (~17 ms of host time per call, measured on the H100): every batch of ragged
            # examples has a new one. The memory-efficient kernel takes the same boolean masks
            # without a per-shape plan.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self.runs = {}
        for i, kind in enumerate(args.kinds):
            cfg = drafter_config(kind, model.config, info, args)
            m = build_drafter(cfg)
            init_weights(m, args.seed + i)
            m.to(device)
            opt, sched = make_optimizer(m, args.lr, args.steps, args.warmup_frac)
            fwd = m.forward_train_hidden
            self.runs[kind] = {"cfg": cfg, "model": m, "opt": opt, "sched": sched,
                               "forward": torch.compile(fwd, dynamic=True) if compile else fwd}
        if compile:
            compile_row_kernels()
        layers = sorted({l for r in self.runs.values() for l in r["cfg"].target_layers})
        self.tap = FeatureTap(model, layers)
        self.step = 0
        self.history = []

    # ---- one batch -------------------------------------------------------------------------
    def _batch(self, examples, anchor_seed):
        """Collate on the CPU, plan the counted rows there (no host sync later), one target
        forward, and the target distribution of every counted row once for all drafters."""
        ids, attn, lm = collate(examples)
        cfgs = [r["cfg"] for r in self.runs.values()]
        plan = StepPlan(ids, lm, self.a.anchors, anchor_seed, [c.block_size for c in cfgs if c.is_block],
                        [c.block_size for c in cfgs if not c.is_block]).to(self.dev)
        nb = self.dev.type == "cuda"
        ids, attn = (t.to(self.dev, non_blocking=nb) for t in (ids, attn))
        layer_out, last_h = target_forward(self.model, self.tap, ids, attn)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            p_t = target_probs(self.head, last_h, plan.target_b, plan.target_t)
        return ids, plan, layer_out, p_t

    def _drafter_loss(self, kind, run, ids, plan, layer_out, p_t, keep_rows=False):
        cfg, m = run["cfg"], run["model"]
        feats = features_for(layer_out, cfg.target_layers)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            if cfg.is_block:
                blk = plan.blocks[cfg.block_size]
                mask = block_attention_mask(plan.anchors, plan.valid, ids.shape[1], cfg.block_size)
                h, prev = run["forward"](feats, ids, plan.anchors, mask, self.head)
                _, logits, conf = m.heads_rows(h, prev, self.head, blk["rows"])
                loss, st, c_star = block_loss_rows(kind, logits, conf, blk["labels"], p_t[blk["target"]],
                                                   blk["weight"], blk["slot"], cfg.block_size)
                if keep_rows:
                    st["_conf_rows"] = (conf, c_star, blk)
            else:
                hidden = run["forward"](feats, ids, cfg.block_size, self.head)
                loss, accept = 0.0, []
                for s, hs in enumerate(hidden):
                    rows = plan.chain[s]
                    lg = self.head.logits(hs.reshape(-1, hs.shape[-1])[rows["rows"]])
                    ce, acc = chain_step_loss_rows(lg, p_t[rows["target"]])
                    loss = loss + (0.8 ** s) * ce
                    accept.append(acc)
                st = {"soft_ce": loss.detach(), "accept": torch.stack(accept)}
        return loss, st

    def train_step(self):
        """One optimizer step of every drafter on batch self.step. Returns the record with
        device tensors (no host sync); summarize() turns it into numbers when it is logged."""
        a = self.a
        idx = batch_indices(len(self.examples), a.batch_size, self.step, a.seed)
        ids, plan, layer_out, p_t = self._batch([self.examples[i] for i in idx], a.seed * 7919 + self.step)
        rec = {"step": self.step + 1}
        for kind, run in self.runs.items():
            run["model"].train()
            loss, st = self._drafter_loss(kind, run, ids, plan, layer_out, p_t)
            run["opt"].zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(run["model"].parameters(), a.grad_clip)
            run["opt"].step()
            run["sched"].step()
            rec[kind] = (loss.detach(), {k: v for k, v in st.items() if not k.startswith("_")}, gn,
                         run["sched"].get_last_lr()[0])
        self.step += 1
        return rec

    # ---- held-out evaluation ---------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, collect_conf=False):
        out, conf_rows = {}, []
        sums = {k: [] for k in self.runs}
        bs = self.a.batch_size
        for start in range(0, len(self.holdout) - bs + 1, bs):
            ids, plan, layer_out, p_t = self._batch(self.holdout[start:start + bs], 10 ** 9 + start)
            for kind, run in self.runs.items():
                run["model"].eval()
                keep = collect_conf and kind == "dspark"
                loss, st = self._drafter_loss(kind, run, ids, plan, layer_out, p_t, keep_rows=keep)
                sums[kind].append((loss.detach(), st["accept"].float()))
                if keep:
                    conf, c_star, blk = st["_conf_rows"]
                    ev = blk["eval"]
                    z = torch.zeros(ev.numel(), device=conf.device).index_copy_(0, blk["rows"], conf.float())
                    c = torch.zeros(ev.numel(), device=conf.device).index_copy_(0, blk["rows"], c_star.float())
                    # rows outside the eval mask stay 0: calibration reads a slot only where it is valid
                    conf_rows.append((z.view_as(ev).flatten(0, 1).cpu(), c.view_as(ev).flatten(0, 1).cpu(),
                                      ev.bool().flatten(0, 1).cpu()))
        for kind, vals in sums.items():
            if not vals:
                continue
            acc = torch.stack([v[1] for v in vals]).mean(0).cpu()
            out[kind] = {"loss": float(torch.stack([v[0].float() for v in vals]).mean()), "accept": acc.tolist(),
                         "tau_probabilistic": tau_probabilistic(acc)}
        if collect_conf and conf_rows:
            z, c, v = (torch.cat([r[i] for r in conf_rows]) for i in range(3))
            keep = v[:, 0]
            out["calibration"] = calibrate(z[keep], c[keep], v[keep], seed=self.a.seed)
        return out

    # ---- checkpoints -----------------------------------------------------------------------
    def save(self, path):
        state = {"step": self.step, "history": self.history,
                 "runs": {k: {"model": r["model"].state_dict(), "opt": r["opt"].state_dict(),
                              "sched": r["sched"].state_dict()} for k, r in self.runs.items()},
                 "args": dataclasses.asdict(self.a)}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)

    def init_from_exports(self, folder):
        """Warm start: every drafter takes the weights of <folder>/<kind>/ (an earlier export,
        usually bf16) and a fresh optimizer. What a lease-limited run uses to continue training:
        the 180 MB trainer checkpoint does not survive between GPU leases, the exports do.
        Returns {kind: optimizer steps the export had already taken}."""
        prior = {}
        for kind, r in self.runs.items():
            sub = os.path.join(folder, kind)
            old = DrafterConfig.load(os.path.join(sub, "drafter.json"))
            for key in ("kind", "n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "target_layers",
                        "block_size", "markov_type", "markov_rank", "confidence"):
                if getattr(old, key) != getattr(r["cfg"], key):
                    raise ValueError(f"{sub}: {key} {getattr(old, key)!r} != this run's {getattr(r['cfg'], key)!r}")
            tensors = load_tensors(sub)
            r["model"].load_export_state_dict({k: v.to(torch.float32).to(self.dev) for k, v in tensors.items()})
            prior[kind] = int(old.training.get("steps_done", 0)) + int(old.training.get("prior_steps", 0))
        return prior

    def load(self, path):
        state = torch.load(path, map_location=self.dev, weights_only=False)
        saved = state["args"]
        for key in ("kinds", "steps", "batch_size", "seed", "anchors", "lr"):
            if saved[key] != getattr(self.a, key):
                raise ValueError(f"checkpoint {path} was made with {key}={saved[key]!r}, "
                                 f"not {getattr(self.a, key)!r}")
        for k, r in self.runs.items():
            r["model"].load_state_dict(state["runs"][k]["model"])
            r["opt"].load_state_dict(state["runs"][k]["opt"])
            r["sched"].load_state_dict(state["runs"][k]["sched"])
        self.step, self.history = state["step"], state["history"]

    def fit(self, ckpt_path=None):
        """Runs to args.steps (or until the time limit: then checkpoints and returns False)."""
        t0 = time.time()
        while self.step < self.a.steps:
            rec = self.train_step()
            if self.step % self.a.log_every == 0 or self.step == self.a.steps:
                rec = {k: (summarize(*v) if isinstance(v, tuple) else v) for k, v in rec.items()}
                rec["wall_s"] = round(time.time() - t0, 1)
                if self.dev.type == "cuda":
                    rec["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(self.dev) / 2 ** 30, 2)
                self.history.append(rec)
                self.log(json.dumps(short(rec)))
            if ckpt_path and (self.step % self.a.ckpt_every == 0):
                self.save(ckpt_path)
            if time.time() - t0 > self.a.time_limit_s and self.step < self.a.steps:
                if ckpt_path:
                    self.save(ckpt_path)
                self.log(f"trainer: time limit {self.a.time_limit_s:.0f} s reached at step {self.step}")
                return False
        if ckpt_path:
            self.save(ckpt_path)
        return True


def summarize(loss, st, grad_norm, lr):
    rec = {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "lr": lr}
    for k, v in st.items():
        if k.startswith("_"):
            continue
        if k == "accept":
            rec["accept"] = [round(float(x), 4) for x in v]
            rec["tau_probabilistic"] = round(tau_probabilistic(v), 4)
        else:
            rec[k] = float(v.detach()) if torch.is_tensor(v) else float(v)
    return rec


def short(rec):
    return {k: ({"loss": round(v["loss"], 4), "tau_p": v.get("tau_probabilistic")} if isinstance(v, dict) else v)
            for k, v in rec.items()}

