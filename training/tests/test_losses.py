"""Each loss against a direct loop over rows."""
import math

import torch
import torch.nn.functional as F

from dspark_train.losses import block_loss, chain_loss, tau_probabilistic


def rand_block(seed, B=2, N=3, g=4, V=11):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, N, g, V, generator=gen) * 2
    tgt = torch.randn(B, N, g, V, generator=gen) * 2
    conf = torch.randn(B, N, g, generator=gen)
    labels = torch.randint(0, V, (B, N, g), generator=gen)
    ev = torch.cumprod((torch.rand(B, N, g, generator=gen) > 0.2).float(), -1)
    return logits, conf, labels, tgt, ev


def loop_block_loss(kind, logits, conf, labels, tgt, ev):
    ce = l1 = bce = den = 0.0
    B, N, g, _ = logits.shape
    for b in range(B):
        for n in range(N):
            for k in range(g):
                w = math.exp(-k / 4.0) * float(ev[b, n, k])
                if w == 0:
                    continue
                pd = torch.softmax(logits[b, n, k].double(), 0)
                pt = torch.softmax(tgt[b, n, k].double(), 0)
                ce += w * -math.log(pd[labels[b, n, k]])
                dist = float((pd - pt).abs().sum())
                l1 += w * dist
                c = min(max(1 - 0.5 * dist, 0.0), 1.0)
                s = 1 / (1 + math.exp(-float(conf[b, n, k])))
                bce += w * -(c * math.log(s) + (1 - c) * math.log(1 - s))
                den += w
    if kind == "dflash":
        return ce / den
    return 0.1 * ce / den + 0.9 * l1 / den + 1.0 * bce / den


def test_dspark_and_dflash_loss_match_loop():
    for seed in range(3):
        args = rand_block(seed)
        for kind in ("dspark", "dflash"):
            loss, st = block_loss(kind, *args)
            assert abs(float(loss) - loop_block_loss(kind, *args)) < 1e-5


def test_dspark_conf_target_is_detached():
    logits, conf, labels, tgt, ev = rand_block(5)
    logits.requires_grad_(True)
    conf.requires_grad_(True)
    loss, st = block_loss("dspark", logits, conf, labels, tgt, ev, alphas=(0.0, 0.0, 1.0))
    loss.backward()
    assert logits.grad.abs().max() == 0          # only the BCE term: c* carries no gradient
    assert conf.grad.abs().max() > 0


def test_chain_loss_matches_loop():
    gen = torch.Generator().manual_seed(3)
    B, L, V, S = 2, 9, 7, 3
    steps = [torch.randn(B, L, V, generator=gen) for _ in range(S)]
    tgt = torch.randn(B, L, V, generator=gen)
    lm = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1, 0]])
    loss, st = chain_loss(steps, tgt, lm)
    ref = 0.0
    for s in range(S):
        tot, n = 0.0, 0
        for b in range(B):
            for t in range(L):
                if t + 2 + s < L and lm[b, t + 2 + s]:
                    pt = torch.softmax(tgt[b, t + 1 + s].double(), 0)
                    tot += float(-(pt * F.log_softmax(steps[s][b, t].double(), 0)).sum())
                    n += 1
        ref += 0.8 ** s * tot / n
    assert abs(float(loss) - ref) < 1e-5


def test_tau_probabilistic():
    assert abs(tau_probabilistic([0.5, 0.5, 1.0]) - (1 + 0.5 + 0.25 + 0.25)) < 1e-12
