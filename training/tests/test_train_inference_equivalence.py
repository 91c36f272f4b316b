"""The training forward (many masked blocks / TTT steps at once) equals the inference forward
(persistent context rows + one unmasked block / a chain) on the same weights: the property
that makes training consistent with what the runtime executes."""
import pytest
import torch

import make_fixtures
from dspark_train.block_drafter import ContextCache, draft_block
from dspark_train.chain_drafter import draft_chain
from dspark_train.export import build_drafter
from dspark_train.layers import TargetHead, init_weights
from dspark_train.masks import block_attention_mask

L = 12


def setup(name, seed=0):
    kind, markov, conf, _ = make_fixtures.CASES[name]
    cfg = make_fixtures.tiny_config(kind, markov, conf)
    d = build_drafter(cfg).double()
    init_weights(d, seed)
    g = torch.Generator().manual_seed(seed)
    head = TargetHead(torch.randn(cfg.n_vocab, cfg.n_embd, generator=g, dtype=torch.float64),
                      torch.randn(cfg.n_vocab, cfg.n_embd, generator=g, dtype=torch.float64) * 0.5)
    feats = torch.randn(1, L, len(cfg.target_layers) * cfg.n_embd, generator=g, dtype=torch.float64)
    ids = torch.randint(0, cfg.n_vocab, (1, L), generator=g)
    return cfg, d, head, feats, ids


@pytest.mark.parametrize("name", ["dspark", "dspark_rnn", "dflash"])
def test_block_training_equals_inference(name):
    cfg, d, head, feats, ids = setup(name)
    g = cfg.block_size
    anchors = torch.tensor([[1, 3, 4, 7]])          # overlapping blocks, all inside L
    valid = torch.ones_like(anchors, dtype=torch.bool)
    mask = block_attention_mask(anchors, valid, L, g)
    with torch.no_grad():
        base, logits, conf = d.forward_train(feats, ids, anchors, mask, head)
        for n, p in enumerate(anchors[0].tolist()):
            cache = ContextCache(d)
            cache.append(feats[0, :p])
            b, lg, c = draft_block(d, cache, ids[0, p], ids[0, p:p + g], head)
            assert torch.allclose(base[0, n], b, atol=1e-10)
            assert torch.allclose(logits[0, n], lg, atol=1e-10)
            if cfg.confidence:
                assert torch.allclose(conf[0, n], c, atol=1e-10)


def test_block_context_cache_appends_like_one_shot():
    cfg, d, head, feats, ids = setup("dspark")
    with torch.no_grad():
        one, two = ContextCache(d), ContextCache(d)
        one.append(feats[0, :7])
        two.append(feats[0, :4])
        two.append(feats[0, 4:7])
        prev = ids[0, 7:7 + cfg.block_size]
        a = draft_block(d, one, ids[0, 7], prev, head)
        b = draft_block(d, two, ids[0, 7], prev, head)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-10)


@pytest.mark.parametrize("name", ["eagle3", "mtp1"])
def test_ttt_equals_chain(name):
    cfg, d, head, feats, ids = setup(name)
    S = cfg.block_size
    with torch.no_grad():
        steps = d.forward_train(feats, ids, S, head)
        for t in range(0, L - S - 1):
            chain = draft_chain(d, feats[0, :t + 1], ids[0, :t + 2], ids[0, t + 2:t + 1 + S], head)
            for s in range(S):
                assert torch.allclose(steps[s][0, t], chain[s], atol=1e-10), (t, s)
