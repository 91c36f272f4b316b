"""Training examples: token ids of [chat prompt | target's response] with a loss mask on the
response tokens (the assistant content and its closing <|im_end|>), stored as JSONL
{"ids": [...], "n_prompt": k}. Batches are right-padded; the order is a seeded permutation
per epoch, so batch i is a pure function of (seed, i) and a resumed run sees the same data."""
import gzip
import json

import torch


def load_examples(path, max_len, min_loss_tokens=8):
    """(ids, n_prompt) per line of a .jsonl (or .jsonl.gz) file, ids cut to max_len (None: whole),
    keeping examples with at least min_loss_tokens response tokens."""
    out = []
    with (gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            ids, k = rec["ids"][:max_len], int(rec["n_prompt"])
            if len(ids) - k >= min_loss_tokens:
                out.append((ids, k))
    if not out:
        raise ValueError(f"{path}: no example with at least {min_loss_tokens} response tokens")
    return out


def save_examples(path, examples):
    with open(path, "w") as f:
        for ids, k in examples:
            f.write(json.dumps({"ids": [int(x) for x in ids], "n_prompt": int(k)}) + "\n")


def collate(examples, pad_id=0):
    """-> input_ids [B, L], attention_mask [B, L], loss_mask [B, L] (1 on response tokens)."""
    L = max(len(ids) for ids, _ in examples)
    B = len(examples)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros(B, L, dtype=torch.long)
    loss = torch.zeros(B, L, dtype=torch.long)
    for b, (ids, k) in enumerate(examples):
        input_ids[b, :len(ids)] = torch.tensor(ids)
        attn[b, :len(ids)] = 1
        loss[b, k:len(ids)] = 1
    return input_ids, attn, loss


def batch_indices(n_examples, batch_size, step, seed):
    """Indices of batch `step`: epoch e = step*B // n uses permutation seeded by (seed, e)."""
    per_epoch = n_examples // batch_size
    if per_epoch == 0:
        raise ValueError(f"{n_examples} examples are fewer than one batch of {batch_size}")
    epoch, i = divmod(step, per_epoch)
    perm = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    return perm[i * batch_size:(i + 1) * batch_size].tolist()
