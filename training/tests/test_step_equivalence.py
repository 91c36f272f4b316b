"""The trainer's step (rows planned on the CPU, vocabulary-wide logits only on counted rows, one
shared table of target probabilities) computes the same losses, statistics and gradients as the
reference formulation it replaced: every drafter's full logits, then losses.block_loss /
losses.chain_loss selecting rows themselves (those are checked against loops in test_losses)."""
import random

import torch

from dspark_train import target
from dspark_train.data import collate
from dspark_train.losses import block_loss, chain_loss
from dspark_train.masks import block_attention_mask, block_eval_mask, block_labels, sample_anchors
from dspark_train.step_plan import StepPlan, target_rows
from dspark_train.target import features_for, target_forward
from dspark_train.trainer import Trainer, TrainArgs

KINDS = ("dspark", "dflash", "eagle3", "mtp1")


def ragged_examples(n, seed=0):
    """Prompts of 3..12 tokens, responses of 2..30 (some too short for a full block), so the
    batch has padding, prompt rows and truncated blocks."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = [rng.randrange(5, 256) for _ in range(rng.randrange(3, 13))]
        r = [rng.randrange(5, 256) for _ in range(rng.randrange(2, 31))]
        out.append((p + r, len(p)))
    return out


def reference_loss(tr, kind, run, ids, lm, layer_out, last_h, anchor_seed):
    """The per-drafter formulation of the trainer before the step plan (full logits)."""
    cfg, m, head = run["cfg"], run["model"], tr.head
    feats = features_for(layer_out, cfg.target_layers)
    if cfg.is_block:
        anchors, valid = sample_anchors(lm.cpu(), tr.a.anchors, torch.Generator().manual_seed(anchor_seed))
        L = ids.shape[1]
        mask = block_attention_mask(anchors, valid, L, cfg.block_size)
        _, logits, conf = m.forward_train(feats, ids, anchors, mask, head)
        ev = block_eval_mask(lm, anchors, valid, cfg.block_size)
        pos = (anchors.unsqueeze(-1) + torch.arange(cfg.block_size)).clamp(max=L - 1)
        rows = last_h.gather(1, pos.flatten(1).unsqueeze(-1).expand(-1, -1, last_h.shape[-1]))
        tgt = head.logits(rows).view(*pos.shape, -1)
        return block_loss(kind, logits, conf, block_labels(ids, anchors, cfg.block_size), tgt, ev)
    step_logits = m.forward_train(feats, ids, cfg.block_size, head)
    return chain_loss(step_logits, head.logits(last_h), lm)


def test_step_matches_reference_formulation():
    m = target.tiny_target(seed=3)
    ex = ragged_examples(12)
    a = TrainArgs(kinds=list(KINDS), steps=4, batch_size=6, anchors=8, block_size=5,
                  target_layers=[0, 2], markov_rank=16, lr=3e-3, seed=5)
    tr = Trainer(m, target.target_head(m), target.target_info(m, "tiny"), ex, ex[:6], a,
                 torch.device("cpu"), log=lambda *_: None)
    batch = ex[:6]
    seed = 1234
    ids, attn, lm = collate(batch)
    layer_out, last_h = target_forward(m, tr.tap, ids, attn)
    ids2, plan, layer_out2, p_t = tr._batch(batch, seed)
    for kind, run in tr.runs.items():
        params = [p for p in run["model"].parameters()]
        ref, ref_st = reference_loss(tr, kind, run, ids, lm, layer_out, last_h, seed)
        g_ref = torch.autograd.grad(ref, params, allow_unused=True)
        new, new_st = tr._drafter_loss(kind, run, ids2, plan, layer_out2, p_t)
        g_new = torch.autograd.grad(new, params, allow_unused=True)
        new_v, ref_v = float(new.detach()), float(ref.detach())
        assert ref_v > 0.1, (kind, ref_v)                         # a real loss, not an empty batch
        assert abs(new_v - ref_v) <= 1e-5 * max(1.0, abs(ref_v)), (kind, new_v, ref_v)
        assert torch.allclose(new_st["accept"], ref_st["accept"], atol=1e-5), kind
        for key in ("ce", "l1", "conf", "soft_ce"):
            if key in ref_st:
                assert torch.allclose(new_st[key], ref_st[key], rtol=1e-5, atol=1e-6), (kind, key)
        assert sum(int(g is not None and bool(g.abs().any())) for g in g_ref) >= 3, kind
        for (name, _), gr, gn in zip(run["model"].named_parameters(), g_ref, g_new):
            if gr is None:
                assert gn is None or not gn.abs().any(), (kind, name)
                continue
            assert torch.allclose(gn, gr, rtol=1e-4, atol=1e-6), (kind, name, (gn - gr).abs().max())


def test_plan_rows_agree_with_masks():
    ex = ragged_examples(8, seed=1)
    ids, _, lm = collate(ex)
    plan = StepPlan(ids, lm, 6, 99, [4], [3])
    anchors, valid = sample_anchors(lm, 6, torch.Generator().manual_seed(99))
    assert torch.equal(plan.anchors, anchors) and torch.equal(plan.valid, valid)
    ev = block_eval_mask(lm, anchors, valid, 4)
    blk = plan.blocks[4]
    assert torch.equal(blk["rows"], torch.nonzero(ev.flatten()).flatten())
    need, tindex = target_rows(lm)
    # every counted block row and TTT row reads a target row whose next token is a response token
    B, L = lm.shape
    rows_b, rows_t = torch.nonzero(need, as_tuple=True)
    pos = (anchors.unsqueeze(-1) + torch.arange(4)).flatten()[blk["rows"]]
    b = torch.arange(B).view(B, 1, 1).expand(B, 6, 4).flatten()[blk["rows"]]
    assert torch.equal(rows_b[blk["target"]], b) and torch.equal(rows_t[blk["target"]], pos)
    assert bool(lm[b, pos + 1].bool().all())
    for s in range(3):
        r = plan.chain[s]["rows"]
        rb, rt = r // L, r % L
        assert bool(lm[rb, rt + 2 + s].bool().all())
        assert torch.equal(rows_t[plan.chain[s]["target"]], rt + 1 + s)
        assert len(r) == int(lm[:, 2 + s:].sum())
