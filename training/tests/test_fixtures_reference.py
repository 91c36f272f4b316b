"""The parity fixtures against an independent, loop-by-loop reading of docs/drafter-format.md
that uses only the exported tensors (by their file names), not the toolkit's modules; and the
committed fixtures against a fresh regeneration (they must be up to date with the code)."""
import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file

import make_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMITTED = os.path.join(ROOT, "tests", "drafters", "fixtures")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    out = tmp_path_factory.mktemp("fixtures")
    for name in make_fixtures.CASES:
        make_fixtures.make_case(name, str(out))
    return str(out)


def load(folder):
    cfg = json.load(open(os.path.join(folder, "drafter.json")))
    w = {k: v.double() for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
    th = {k: v.double() for k, v in load_file(os.path.join(folder, "target_head.safetensors")).items()}
    case = load_file(os.path.join(folder, "case.safetensors"))
    return cfg, w, th, case


def rms(x, w, eps):
    return x / torch.sqrt((x * x).mean() + eps) * w


def rope(x, pos, cfg):
    hd = x.shape[0]
    out = x.clone()
    for i in range(hd // 2):
        ang = pos / (cfg["rope_theta"] ** (2 * i / hd))
        a, b = x[i], x[i + hd // 2]
        out[i] = a * math.cos(ang) - b * math.sin(ang)
        out[i + hd // 2] = b * math.cos(ang) + a * math.sin(ang)
    return out


def attention(cfg, qs, keys, values):
    """qs: list of [n_head, hd] queries; keys/values: list of [n_head_kv, hd] rows (all visible)."""
    nh, nkv, hd = cfg["n_head"], cfg["n_head_kv"], cfg["head_dim"]
    outs = []
    for q in qs:
        heads = []
        for h in range(nh):
            kh = h // (nh // nkv)
            s = torch.stack([torch.dot(q[h], k[kh]) / math.sqrt(hd) for k in keys])
            p = torch.softmax(s, 0)
            heads.append(sum(p[j] * values[j][kh] for j in range(len(values))))
        outs.append(torch.cat(heads))
    return outs


def mlp(w, i, x):
    g = w[f"layers.{i}.ffn_gate.weight"] @ x
    return w[f"layers.{i}.ffn_down.weight"] @ (torch.nn.functional.silu(g) * (w[f"layers.{i}.ffn_up.weight"] @ x))


def kv_row(cfg, w, i, x, pos):
    nkv, hd = cfg["n_head_kv"], cfg["head_dim"]
    k = (w[f"layers.{i}.attn_k.weight"] @ x).view(nkv, hd)
    v = (w[f"layers.{i}.attn_v.weight"] @ x).view(nkv, hd)
    return torch.stack([rope(k[j], pos, cfg) for j in range(nkv)]), v


def q_row(cfg, w, i, x, pos):
    q = (w[f"layers.{i}.attn_q.weight"] @ x).view(cfg["n_head"], cfg["head_dim"])
    return torch.stack([rope(q[j], pos, cfg) for j in range(cfg["n_head"])])


def reference_block(cfg, w, th, ctx_feats, anchor, prev):
    eps, g = cfg["rms_eps"], cfg["block_size"]
    s = len(ctx_feats)
    ctx = [rms(w["fc.weight"] @ f, w["hidden_norm.weight"], eps) for f in ctx_feats]
    toks = [anchor] + [cfg["mask_token_id"]] * (g - 1)
    h = [th["embed.weight"][t].clone() for t in toks]
    for i in range(cfg["n_layer"]):
        a = [rms(x, w[f"layers.{i}.attn_norm.weight"], eps) for x in h]
        kv = [kv_row(cfg, w, i, c, t) for t, c in enumerate(ctx)] + \
             [kv_row(cfg, w, i, x, s + j) for j, x in enumerate(a)]
        qs = [q_row(cfg, w, i, x, s + j) for j, x in enumerate(a)]
        att = attention(cfg, qs, [k for k, _ in kv], [v for _, v in kv])
        h = [x + w[f"layers.{i}.attn_output.weight"] @ o for x, o in zip(h, att)]
        h = [x + mlp(w, i, rms(x, w[f"layers.{i}.ffn_norm.weight"], eps)) for x in h]
    h = [rms(x, w["norm.weight"], eps) for x in h]
    base = torch.stack([th["lm_head.weight"] @ x for x in h])
    mk = cfg["markov"]
    logits, conf = base.clone(), []
    state = None
    for k in range(g):
        feat = h[k]
        if mk["type"] != "none":
            e = w["markov.w1.weight"][prev[k]]
            if mk["type"] == "vanilla":
                logits[k] += w["markov.w2.weight"] @ e
            else:
                r = mk["rank"]
                state = torch.zeros(r, dtype=torch.float64) if state is None else state
                z = w["rnn.weight"] @ torch.cat([state, e, h[k]]) + w["rnn.bias"]
                gt, c, o = z[:r], z[r:2 * r], z[2 * r:]
                state = torch.sigmoid(gt) * state + (1 - torch.sigmoid(gt)) * torch.tanh(c)
                logits[k] += w["markov.w2.weight"] @ torch.tanh(o)
            feat = torch.cat([h[k], e])
        if cfg["confidence"]["enabled"]:
            conf.append(w["confidence.weight"][0] @ feat + w["confidence.bias"][0])
    return base, logits, (torch.stack(conf) if conf else None)


def reference_chain(cfg, w, th, feats, tokens, chain):
    eps = cfg["rms_eps"]
    rows_k, rows_v = [], []

    def step(feat, y, pos):
        u = torch.cat([rms(th["embed.weight"][y], w["input_norm.weight"], eps),
                       rms(feat, w["hidden_norm.weight"], eps)])
        k, v = kv_row(cfg, w, 0, u, pos)
        rows_k.append(k)
        rows_v.append(v)
        o = attention(cfg, [q_row(cfg, w, 0, u, pos)], rows_k, rows_v)[0]
        h = feat + w["layers.0.attn_output.weight"] @ o
        h = h + mlp(w, 0, rms(h, w["layers.0.ffn_norm.weight"], eps))
        return h, th["lm_head.weight"] @ rms(h, w["norm.weight"], eps)

    for t in range(len(feats)):
        h, lg = step(w["fc.weight"] @ feats[t], int(tokens[t + 1]), t)
    out = [lg]
    for j, x in enumerate(chain):
        h, lg = step(h, int(x), len(feats) + j)
        out.append(lg)
    return torch.stack(out)


@pytest.mark.parametrize("name", list(make_fixtures.CASES))
def test_fixture_matches_reference(fixtures, name):
    cfg, w, th, case = load(os.path.join(fixtures, name))
    if cfg["kind"] in ("dspark", "dflash"):
        feats = []
        for r in ("r1", "r2"):
            feats += list(case[f"{r}.features"].double())
            prev = [int(x) for x in case[f"{r}.prev"]]
            base, logits, conf = reference_block(cfg, w, th, feats, int(case[f"{r}.anchor"][0]), prev)
            assert torch.allclose(base.float(), case[f"{r}.base_logits"], atol=1e-5)
            assert torch.allclose(logits.float(), case[f"{r}.logits"], atol=1e-5)
            if conf is not None:
                assert torch.allclose(conf.float(), case[f"{r}.conf_logits"], atol=1e-5)
            else:
                assert f"{r}.conf_logits" not in case
            if cfg["markov"]["type"] != "none":   # the Markov term is really exercised
                assert (case[f"{r}.logits"] - case[f"{r}.base_logits"]).abs().max() > 0.1
    else:
        logits = reference_chain(cfg, w, th, case["features"].double(), case["tokens"], case["chain"])
        assert logits.shape == case["logits"].shape
        assert torch.allclose(logits.float(), case["logits"], atol=1e-5)


@pytest.mark.parametrize("name", list(make_fixtures.CASES))
def test_committed_fixtures_are_current(fixtures, name):
    committed = os.path.join(COMMITTED, name)
    if not os.path.isdir(committed):
        pytest.fail(f"{committed} missing: run python3 training/make_fixtures.py")
    for f in sorted(os.listdir(os.path.join(fixtures, name))):
        fresh = open(os.path.join(fixtures, name, f), "rb").read()
        assert fresh == open(os.path.join(committed, f), "rb").read(), f"{name}/{f} is stale"
