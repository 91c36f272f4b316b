"""eagle3 / mtp1: one autoregressive layer over fused target features
(docs/drafter-format.md "eagle3 and mtp1"; method doc section 6.1).

A row at position t pairs a feature (fused target feature f_t = fc·F_t, or during chain
drafting the previous step's pre-norm output h) with the next token y = token(t+1):
  u = [RMSNorm(embed(y); input_norm) ; RMSNorm(feature; hidden_norm)]
  h = feature + attn_output(causal attention of q(u) over rows' k(u), v(u))
  h += MLP(RMSNorm(h; ffn_norm));  logits = lm_head(RMSNorm(h; norm))  -> token t+2.

  forward_train  training-time test (TTT) over `steps` unrolled steps
  ChainCache + draft_chain   the runtime's inference (rows from features, then the chain)
"""
import torch
import torch.nn as nn

from .layers import MLP, Attention, RMSNorm, rope_inv_freq


class ChainLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn = Attention(cfg, 2 * cfg.n_embd)
        self.ffn_norm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.mlp = MLP(cfg)


class ChainDrafter(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.kind in ("eagle3", "mtp1")
        if cfg.n_layer != 1:
            raise ValueError(f"{cfg.kind} has exactly one layer, not {cfg.n_layer}")
        self.cfg = cfg
        d, m = cfg.n_embd, len(cfg.target_layers)
        self.fc = nn.Linear(m * d, d, bias=False)
        self.hidden_norm = RMSNorm(d, cfg.rms_eps)
        self.input_norm = RMSNorm(d, cfg.rms_eps)
        self.layers = nn.ModuleList([ChainLayer(cfg)])
        self.norm = RMSNorm(d, cfg.rms_eps)
        self.register_buffer("inv_freq", rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling),
                             persistent=False)

    def export_state_dict(self):
        return {k.replace(".attn.", ".").replace(".mlp.", "."): v for k, v in self.state_dict().items()}

    def load_export_state_dict(self, sd):
        own = {k.replace(".attn.", ".").replace(".mlp.", "."): k for k in self.state_dict()}
        if set(own) != set(sd):
            raise ValueError(f"tensor names differ: missing {sorted(set(own) - set(sd))}, "
                             f"extra {sorted(set(sd) - set(own))}")
        self.load_state_dict({own[k]: v for k, v in sd.items()})

    def fuse(self, features):
        return self.fc(features.to(self.fc.weight.dtype))

    def rows_qkv(self, feat, next_tokens, pos, head):
        """q, k, v of rows (feat [B, T, d], next_tokens [B, T], positions [B, T])."""
        layer = self.layers[0]
        e = head.embed(next_tokens).to(feat.dtype)
        u = torch.cat([self.input_norm(e), self.hidden_norm(feat)], dim=-1)
        q = layer.attn.query(u, pos, self.inv_freq)
        k, v = layer.attn.key_value(u, pos, self.inv_freq)
        return q, k, v

    def finish(self, feat, attn_out, head):
        """h = feat + attn; h += MLP; returns (h before the final norm, logits)."""
        h, normed = self.finish_hidden(feat, attn_out)
        return h, head.logits(normed)

    def finish_hidden(self, feat, attn_out):
        """finish() without the LM head: (h before the final norm, RMSNorm(h; norm))."""
        layer = self.layers[0]
        h = feat + attn_out
        h = h + layer.mlp(layer.ffn_norm(h))
        return h, self.norm(h)

    def forward_train(self, features, input_ids, steps, head):
        """TTT: step 0 rows are (f_t, token t+1) at position t; step s rows are
        (h_t^{s-1}, token t+1+s) at position t+s. A step-s query at t sees step-0 keys at
        positions <= t and the keys of steps 1..s at the same t (the chain it would have built
        at inference). Returns logits per step: list of [B, L, V]; row t of step s predicts
        token t+2+s. Tokens past the end are filled with 0 (their loss is masked)."""
        return [head.logits(h) for h in self.forward_train_hidden(features, input_ids, steps, head)]

    def forward_train_hidden(self, features, input_ids, steps, head):
        """forward_train up to the LM head: final-normed rows per step (list of [B, L, d]); the
        trainer applies the head to the rows its loss counts."""
        B, L = input_ids.shape
        dev = input_ids.device
        padded = torch.cat([input_ids, torch.zeros(B, steps + 1, dtype=input_ids.dtype, device=dev)], 1)
        t = torch.arange(L, device=dev)
        causal = t.unsqueeze(1) >= t.unsqueeze(0)                     # [L, L]
        diag = torch.eye(L, dtype=torch.bool, device=dev)
        feat = self.fuse(features)
        keys, values, out = [], [], []
        for s in range(steps):
            pos = (t + s).expand(B, L)
            q, k, v = self.rows_qkv(feat, padded[:, 1 + s:1 + s + L], pos, head)
            keys.append(k)
            values.append(v)
            mask = torch.cat([causal] + [diag] * s, dim=1).expand(B, L, L * (s + 1))
            a = self.layers[0].attn.attend(q, torch.cat(keys, -2), torch.cat(values, -2), mask)
            feat, normed = self.finish_hidden(feat, a)
            out.append(normed)
        return out


class ChainCache:
    """Draft rows of one request: K/V [1, n_head_kv, T, hd] for positions 0..T-1."""

    def __init__(self):
        self.k = self.v = None

    @property
    def length(self):
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k], -2)
        self.v = v if self.v is None else torch.cat([self.v, v], -2)


def feed_rows(drafter, cache, feat, next_tokens, head):
    """Appends rows at positions cache.length.. (feat [n, d], next_tokens [n]); causal among
    themselves and over the cache. Returns (h [n, d] before the final norm, logits [n, V])."""
    n = feat.shape[0]
    p0 = cache.length
    pos = torch.arange(p0, p0 + n, device=feat.device).unsqueeze(0)
    q, k, v = drafter.rows_qkv(feat.unsqueeze(0), next_tokens.view(1, n), pos, head)
    cache.append(k, v)
    T = cache.length
    mask = (torch.arange(T, device=feat.device).unsqueeze(0) <= pos.view(n, 1)).unsqueeze(0)
    a = drafter.layers[0].attn.attend(q, cache.k, cache.v, mask)
    h, logits = drafter.finish(feat.unsqueeze(0), a, head)
    return h[0], logits[0]


def draft_chain(drafter, features, tokens, chain, head):
    """Inference with forced drafts: features [P, m·d] rows 0..P-1, tokens [P+1] = token(0..P)
    (tokens[t+1] pairs with feature row t; tokens[P] is the anchor), chain [γ-1] forced
    x_1..x_{γ-1}. Returns logits [γ, V] predicting x_1..x_γ."""
    cache = ChainCache()
    h, logits = feed_rows(drafter, cache, drafter.fuse(features), tokens[1:], head)
    outs = [logits[-1]]
    prev_h = h[-1:]
    for x in chain:
        prev_h, lg = feed_rows(drafter, cache, prev_h, x.view(1), head)
        outs.append(lg[-1])
    return torch.stack(outs)
