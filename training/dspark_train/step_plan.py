"""Everything a training step needs to know about WHICH rows count, worked out once per batch
on the CPU from the collated loss mask, before anything runs on the device: the shared anchors
of the block drafters, their eval weights, the flat indices of the rows that reach the
vocabulary, their labels, the TTT rows of each chain step, and the index of each row's target
distribution in one shared table. Shipping these as index tensors (non-blocking copies) keeps
the device step free of host synchronisation (no boolean indexing, no .cpu()), and lets the
trainer compute vocabulary-wide logits only for rows with a non-zero loss weight.

Same rows and weights as masks.block_eval_mask / losses.chain_valid_mask (tests compare)."""
import torch

from .losses import chain_valid_mask, position_weights
from .masks import block_eval_mask, block_labels, sample_anchors


def target_rows(loss_mask):
    """Positions j whose next token is a response token: the only rows whose target
    distribution any loss reads (a block slot at j predicts j+1, a TTT row compares with target
    row j when token j+1 is its label). -> (need [B, L] bool, table index [B, L], -1 elsewhere)."""
    need = torch.zeros_like(loss_mask, dtype=torch.bool)
    need[:, :-1] = loss_mask[:, 1:].bool()
    index = torch.cumsum(need.flatten().long(), 0).view_as(need) - 1
    return need, torch.where(need, index, torch.full_like(index, -1))


class StepPlan:
    """Built on the CPU (ids, loss_mask: CPU tensors of collate), then .to(device)."""

    def __init__(self, ids, loss_mask, n_anchors, anchor_seed, block_sizes, chain_steps):
        B, L = ids.shape
        need, tindex = target_rows(loss_mask)
        self.target_b, self.target_t = torch.nonzero(need, as_tuple=True)
        self.blocks = {}
        if block_sizes:
            gen = torch.Generator().manual_seed(anchor_seed)
            # one draw shared by every block drafter: each used to draw its own anchors from
            # the same seed, so they were equal anyway
            self.anchors, self.valid = sample_anchors(loss_mask, n_anchors, gen)
            for g in sorted(set(block_sizes)):
                ev = block_eval_mask(loss_mask, self.anchors, self.valid, g)           # [B, N, γ]
                w = position_weights(ev)
                rows = torch.nonzero(w.flatten() > 0).flatten()
                pos = (self.anchors.unsqueeze(-1) + torch.arange(g)).clamp(max=L - 1)  # slot rows
                bidx = torch.arange(B).view(B, 1, 1).expand_as(pos)
                self.blocks[g] = {
                    "eval": ev, "rows": rows, "weight": w.flatten()[rows],
                    "slot": torch.arange(g).expand_as(ev).flatten()[rows],
                    "labels": block_labels(ids, self.anchors, g).flatten()[rows],
                    "target": tindex[bidx, pos].flatten()[rows]}
        self.chain = {}
        if chain_steps:
            valid = chain_valid_mask(loss_mask, max(chain_steps))                     # [S, B, L]
            t = torch.arange(L)
            for s in range(max(chain_steps)):
                rows = torch.nonzero(valid[s].flatten()).flatten()
                src = (t + 1 + s).clamp(max=L - 1).expand(B, L)
                self.chain[s] = {"rows": rows,
                                 "target": tindex.gather(1, src).flatten()[rows]}

    def to(self, device):
        nb = device.type == "cuda"

        def mv(x):
            return (x.pin_memory() if nb else x).to(device, non_blocking=nb)

        for name in ("target_b", "target_t", "anchors", "valid"):
            if hasattr(self, name):
                setattr(self, name, mv(getattr(self, name)))
        for table in (self.blocks, self.chain):
            for d in table.values():
                for k in d:
                    d[k] = mv(d[k])
        return self
