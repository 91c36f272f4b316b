"""Training losses (method doc section 2.3 and 6.1) and the logged acceptance metrics.

  DSpark: L = 0.1 CE + 0.9 L1(p_d, p_t) + 1.0 BCE(σ(z), 1 - ½L1), weights exp(-k/4)·eval_mask
  DFlash: L = CE with the same weights
  EAGLE-3 / MTP-1: Σ_s 0.8^s · soft-CE(p_t, p_d) at TTT step s, each step a mean over its
                   valid rows
Only rows with a non-zero weight are materialised at vocabulary width (memory: V = 49152).

block_loss / chain_loss take full logit tensors and select rows themselves (the reference
formulation, tested against loops); the trainer uses block_loss_rows / chain_step_loss_rows,
the same losses on rows already selected by a step_plan.StepPlan and on a shared table of
target probabilities (one softmax per batch instead of one per drafter and TTT step, one
log-softmax per draft row instead of a softmax and a cross-entropy).
"""
import torch
import torch.nn.functional as F


def position_weights(eval_mask, decay_gamma=4.0):
    """eval_mask [..., γ] -> w_k = exp(-k/decay_gamma) · eval_mask (k 0-based)."""
    g = eval_mask.shape[-1]
    w = torch.exp(-torch.arange(g, dtype=torch.float32, device=eval_mask.device) / decay_gamma)
    return eval_mask.float() * w


def accept_rate(draft_logits, target_logits):
    """c* = clamp(1 - ½‖softmax(draft) - softmax(target)‖₁, 0, 1) per row (f32, T = 1)."""
    l1 = (F.softmax(draft_logits.float(), -1) - F.softmax(target_logits.float(), -1)).abs().sum(-1)
    return (1 - 0.5 * l1).clamp(0, 1), l1


def block_loss(kind, logits, conf, labels, target_logits, eval_mask, alphas=(0.1, 0.9, 1.0),
               decay_gamma=4.0):
    """logits/target_logits [B, N, γ, V]-shaped selections given as rows: this function takes
    the full tensors and gathers the rows with weight > 0 itself. Returns (loss, stats)."""
    w = position_weights(eval_mask, decay_gamma)
    sel = w > 0
    wsel = w[sel]
    denom = wsel.sum().clamp(min=1e-6)
    lg = logits[sel].float()                                   # [n, V]
    tg = target_logits[sel].float()
    ce = F.cross_entropy(lg, labels[sel], reduction="none")
    c_star, l1 = accept_rate(lg, tg)
    stats = {"ce": (wsel * ce).sum() / denom, "l1": (wsel * l1).sum() / denom}
    if kind == "dspark":
        a_ce, a_l1, a_conf = alphas
        bce = F.binary_cross_entropy_with_logits(conf[sel].float(), c_star.detach(), reduction="none")
        stats["conf"] = (wsel * bce).sum() / denom
        loss = a_ce * stats["ce"] + a_l1 * stats["l1"] + a_conf * stats["conf"]
    elif kind == "dflash":
        loss = stats["ce"]
    else:
        raise ValueError(f"block_loss: kind {kind!r}")
    stats["accept"] = slot_means(c_star.detach(), sel)
    return loss, stats


def slot_means(values, sel):
    """Mean of per-row values by slot (sel [..., γ] bool says which rows `values` holds)."""
    g = sel.shape[-1]
    return slot_means_by_index(values, torch.arange(g, device=sel.device).expand_as(sel)[sel], g)


def chain_valid_mask(loss_mask, steps):
    """[steps, B, L]: row t of TTT step s predicts token t+2+s; it counts iff that token
    exists and is a response token (loss_mask)."""
    B, L = loss_mask.shape
    out = torch.zeros(steps, B, L, dtype=torch.bool, device=loss_mask.device)
    for s in range(steps):
        n = L - (2 + s)
        if n > 0:
            out[s, :, :n] = loss_mask[:, 2 + s:].bool()
    return out


def chain_loss(step_logits, target_logits, loss_mask, step_decay=0.8):
    """step_logits: list over steps of [B, L, V]; target_logits [B, L, V] (row t: target's
    distribution of token t+1). Step s row t is compared with target row t+1+s."""
    steps = len(step_logits)
    valid = chain_valid_mask(loss_mask, steps)
    B, L, _ = target_logits.shape
    loss = 0.0
    accept = []
    for s, lg in enumerate(step_logits):
        m = valid[s]
        if not m.any():
            accept.append(torch.tensor(0.0, device=lg.device))
            continue
        t_rows = torch.nonzero(m)
        tg = target_logits[t_rows[:, 0], t_rows[:, 1] + 1 + s].float()
        dl = lg[m].float()
        soft_ce = -(F.softmax(tg, -1) * F.log_softmax(dl, -1)).sum(-1).mean()
        loss = loss + (step_decay ** s) * soft_ce
        accept.append(accept_rate(dl.detach(), tg)[0].mean())
    return loss, {"soft_ce": loss.detach() if torch.is_tensor(loss) else torch.tensor(loss),
                  "accept": torch.stack(accept)}


def _l1_to_target(logp, p_t):
    """‖exp(logp) - p_t‖₁ per row (f32)."""
    return (logp.exp() - p_t).abs().sum(-1)


def _soft_ce(logp, p_t):
    return -(p_t * logp).sum(-1)


_kernels = {"l1": _l1_to_target, "soft_ce": _soft_ce}


def compile_row_kernels():
    """torch.compile the vocabulary-wide row reductions (fuses exp/sub/abs/sum and mul/sum
    into single passes; dynamic row counts). Same math; used by train.py --compile."""
    for k, fn in list(_kernels.items()):
        _kernels[k] = torch.compile(fn, dynamic=True)


def target_probs(head, last_h, rows_b, rows_t):
    """The target's next-token distribution (f32 softmax of the LM head) at rows
    (rows_b, rows_t) of the final-normed hidden last_h [B, L, d] -> [n, V]."""
    return F.softmax(head.logits(last_h[rows_b, rows_t]).float(), -1)


def block_loss_rows(kind, logits, conf, labels, p_t, weight, slot, block_size, alphas=(0.1, 0.9, 1.0)):
    """block_loss on the selected rows: logits [n, V], conf [n] (dspark), labels [n], target
    probabilities p_t [n, V], weight [n] = exp(-k/4)·eval (> 0), slot [n] = k."""
    denom = weight.sum().clamp(min=1e-6)
    logp = F.log_softmax(logits.float(), -1)
    ce = -logp.gather(1, labels.unsqueeze(1)).squeeze(1)
    if kind == "dspark":
        l1 = _kernels["l1"](logp, p_t)
    elif kind == "dflash":
        with torch.no_grad():
            l1 = _kernels["l1"](logp.detach(), p_t)
    else:
        raise ValueError(f"block_loss_rows: kind {kind!r}")
    c_star = (1 - 0.5 * l1).clamp(0, 1)
    stats = {"ce": (weight * ce).sum() / denom, "l1": (weight * l1).sum() / denom}
    if kind == "dspark":
        a_ce, a_l1, a_conf = alphas
        bce = F.binary_cross_entropy_with_logits(conf.float(), c_star.detach(), reduction="none")
        stats["conf"] = (weight * bce).sum() / denom
        loss = a_ce * stats["ce"] + a_l1 * stats["l1"] + a_conf * stats["conf"]
    else:
        loss = stats["ce"]
    stats["accept"] = slot_means_by_index(c_star.detach(), slot, block_size)
    return loss, stats, c_star.detach()


def slot_means_by_index(values, slot, n_slots):
    """Mean by slot (rows tagged slot[i]) without host synchronisation; slots with no row 0."""
    sums = torch.zeros(n_slots, device=values.device).index_add_(0, slot, values.float())
    counts = torch.zeros(n_slots, device=values.device).index_add_(0, slot, torch.ones_like(values.float()))
    return sums / counts.clamp(min=1)


def chain_step_loss_rows(logits, p_t):
    """One TTT step on its valid rows (logits [n, V], target probabilities p_t [n, V]):
    (mean soft CE, mean acceptance c*); both 0 when the step has no valid row (n = 0)."""
    logp = F.log_softmax(logits.float(), -1)
    n = logits.shape[0]
    soft_ce = _kernels["soft_ce"](logp, p_t).sum() / max(n, 1)
    with torch.no_grad():
        accept = (1 - 0.5 * _kernels["l1"](logp.detach(), p_t)).clamp(0, 1).sum() / max(n, 1)
    return soft_ce, accept


def tau_probabilistic(accept):
    """1 + Σ_k Π_{i≤k} accept_i from per-slot mean acceptance rates."""
    tau, run = 1.0, 1.0
    for a in accept:
        run *= float(a)
        tau += run
    return tau

