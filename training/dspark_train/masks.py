"""Anchors, blocks and masks for block-drafter training (method doc section 2.2).

Worked example (γ = 2, one sequence of length 6, loss_mask = [0 0 1 1 1 0]):
  valid anchors p need loss_mask[p] and loss_mask[p+1]: p in {2, 3}.
  anchor 2: slot 0 label ids[3] (loss_mask 1), slot 1 label ids[4] (1)  -> eval [1, 1]
  anchor 3: slot 0 label ids[4] (1),           slot 1 label ids[5] (0)  -> eval [1, 0]
  training attention: block of anchor 3 sees context keys 0, 1, 2 and its own 2 block keys.
"""
import torch


def valid_anchor_positions(loss_mask):
    """loss_mask [L] (0/1) -> positions p with loss_mask[p] = loss_mask[p+1] = 1 (LongTensor)."""
    lm = loss_mask.bool()
    ok = lm[:-1] & lm[1:]
    return torch.nonzero(ok).flatten()


def sample_anchors(loss_mask, n, generator):
    """Up to n valid anchors per sequence, uniformly without replacement, sorted.
    loss_mask [B, L] -> anchors [B, N] (unused entries 0), valid [B, N] bool, where N = the most
    anchors any sequence of the batch got (at most n, at least 1): with the paper's n = 512 and
    responses of at most 256 tokens no sequence has n valid anchors, and blocks that are all
    padding would only cost backbone rows. `generator` is a CPU torch.Generator (drawn in
    sequence order: deterministic; the width does not change the draws)."""
    B = loss_mask.shape[0]
    picked = []
    for b in range(B):
        cand = valid_anchor_positions(loss_mask[b].cpu())
        if len(cand) > n:
            cand = cand[torch.randperm(len(cand), generator=generator)[:n]]
        cand, _ = torch.sort(cand)
        picked.append(cand)
    width = max([1] + [len(c) for c in picked])
    anchors = torch.zeros(B, width, dtype=torch.long)
    valid = torch.zeros(B, width, dtype=torch.bool)
    for b, cand in enumerate(picked):
        anchors[b, :len(cand)] = cand
        valid[b, :len(cand)] = True
    return anchors.to(loss_mask.device), valid.to(loss_mask.device)


def block_eval_mask(loss_mask, anchors, valid, block_size):
    """[B, N, γ] float: slot k of anchor p counts iff p+k+1 < L, loss_mask[p+k+1] and the block
    is valid; then a cumulative product along the block (nothing after the first invalid slot)."""
    L = loss_mask.shape[1]
    lab = anchors.unsqueeze(-1) + 1 + torch.arange(block_size, device=anchors.device)   # [B, N, γ]
    inside = lab < L
    lm = loss_mask.gather(1, lab.clamp(max=L - 1).flatten(1)).view_as(lab).bool()
    ok = inside & lm & valid.unsqueeze(-1)
    return torch.cumprod(ok.float(), dim=-1)


def block_labels(input_ids, anchors, block_size):
    """Label of slot k of anchor p: input_ids[p+k+1] (clamped at the end; masked by eval)."""
    L = input_ids.shape[1]
    lab = anchors.unsqueeze(-1) + 1 + torch.arange(block_size, device=anchors.device)
    return input_ids.gather(1, lab.clamp(max=L - 1).flatten(1)).view_as(lab)


def block_attention_mask(anchors, valid, seq_len, block_size):
    """Bool [B, N·γ, L + N·γ] (True = may attend). Keys are [context 0..L-1 | all blocks].
    A query of block b sees context key j iff j < anchor(b), and every key of its own block
    (bidirectionally). Invalid blocks see only their own block (no NaN rows; their loss is 0)."""
    B, N = anchors.shape
    g = block_size
    dev = anchors.device
    j = torch.arange(seq_len, device=dev)
    ctx = (j.view(1, 1, seq_len) < anchors.unsqueeze(-1)) & valid.unsqueeze(-1)     # [B, N, L]
    ctx = ctx.unsqueeze(2).expand(B, N, g, seq_len).reshape(B, N * g, seq_len)
    blk = torch.arange(N * g, device=dev) // g
    own = (blk.view(-1, 1) == blk.view(1, -1)).expand(B, N * g, N * g)
    return torch.cat([ctx, own], dim=-1)
