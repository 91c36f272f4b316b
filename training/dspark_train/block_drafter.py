"""dspark / dflash: the parallel block backbone with KV injection of target context features,
the sequential (Markov vanilla / rnn) head and the confidence head
(docs/drafter-format.md "dspark and dflash"; method doc sections 1.2-1.4).

Two entry points share every layer:
  forward_train   many blocks of one batch at once, context keys masked per block
                  (masks.block_attention_mask); teacher-forced previous tokens.
  ContextCache + draft_block
                  the runtime's inference: persistent context K/V rows, one block with no mask.
"""
import torch
import torch.nn as nn

from .layers import MLP, Attention, RMSNorm, rope_inv_freq


class BlockLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.attn = Attention(cfg, cfg.n_embd)
        self.ffn_norm = RMSNorm(cfg.n_embd, cfg.rms_eps)
        self.mlp = MLP(cfg)


class MarkovHead(nn.Module):
    """B_k from the previous token: vanilla w2·w1[prev]; rnn adds a gated state over the block."""

    def __init__(self, cfg):
        super().__init__()
        self.type, r = cfg.markov_type, cfg.markov_rank
        self.w1 = nn.Embedding(cfg.n_vocab, r)
        self.w2 = nn.Linear(r, cfg.n_vocab, bias=False)
        self.rank = r


class BlockDrafter(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.is_block
        self.cfg = cfg
        d, m = cfg.n_embd, len(cfg.target_layers)
        self.fc = nn.Linear(m * d, d, bias=False)
        self.hidden_norm = RMSNorm(d, cfg.rms_eps)
        self.layers = nn.ModuleList(BlockLayer(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(d, cfg.rms_eps)
        if cfg.markov_type != "none":
            self.markov = MarkovHead(cfg)
        if cfg.markov_type == "rnn":
            r = cfg.markov_rank
            self.rnn = nn.Linear(2 * r + d, 3 * r)
        if cfg.confidence:
            extra = cfg.markov_rank if cfg.markov_type != "none" else 0
            self.confidence = nn.Linear(d + extra, 1)
        self.register_buffer("inv_freq", rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling),
                             persistent=False)

    # ---- exported tensor names: BlockLayer nests attn/mlp, the format is flat ----------------
    def export_state_dict(self):
        out = {}
        for k, v in self.state_dict().items():
            out[k.replace(".attn.", ".").replace(".mlp.", ".")] = v
        return out

    def load_export_state_dict(self, sd):
        own = {k.replace(".attn.", ".").replace(".mlp.", "."): k for k in self.state_dict()}
        if set(own) != set(sd):
            raise ValueError(f"tensor names differ: missing {sorted(set(own) - set(sd))}, "
                             f"extra {sorted(set(sd) - set(own))}")
        self.load_state_dict({own[k]: v for k, v in sd.items()})

    # ---- shared pieces ------------------------------------------------------------------------
    def context_rows(self, features):
        """c_t = RMSNorm(fc · F_t; hidden_norm), features [B, T, m·d] -> [B, T, d]."""
        return self.hidden_norm(self.fc(features.to(self.fc.weight.dtype)))

    def run_layers(self, h, pos, ctx_kv, mask):
        """Block hidden h [B, Q, d] at positions pos [B, Q]; ctx_kv[i] = (k, v) context rows
        [B, n_head_kv, K, hd] of layer i; mask [B, Q, K + Q] or None (inference: no mask)."""
        for i, layer in enumerate(self.layers):
            a = layer.attn_norm(h)
            q = layer.attn.query(a, pos, self.inv_freq)
            kb, vb = layer.attn.key_value(a, pos, self.inv_freq)
            kc, vc = ctx_kv[i]
            k = torch.cat([kc, kb], dim=-2)
            v = torch.cat([vc, vb], dim=-2)
            h = h + layer.attn.attend(q, k, v, mask)
            h = h + layer.mlp(layer.ffn_norm(h))
        return self.norm(h)

    def context_kv(self, c, pos):
        """Per-layer context K/V of rows c [B, T, d] at positions pos [B, T]."""
        return [layer.attn.key_value(c, pos, self.inv_freq) for layer in self.layers]

    def heads(self, h, prev, head):
        """h [B, N, γ, d] final-normed; prev [B, N, γ] previous tokens (slot 0: the anchor).
        Returns base logits U, draft logits U + B, confidence logits z [B, N, γ] (or None)."""
        return self.heads_rows(h, prev, head, None)

    def markov_inputs(self, h, prev):
        """The rank-r pieces of the sequential head over whole blocks (h [..., γ, d], prev
        [..., γ]): (input of w2 or None, w1[prev] or None). Cheap (r wide), so computed for
        every row even when only some rows reach the vocabulary."""
        mtype = self.cfg.markov_type
        if mtype == "none":
            return None, None
        e = self.markov.w1(prev)                                     # [..., γ, r]
        if mtype == "vanilla":
            return e, e
        r = self.markov.rank
        s = torch.zeros_like(e[..., 0, :])
        outs = []
        for k in range(h.shape[-2]):
            z = self.rnn(torch.cat([s, e[..., k, :], h[..., k, :].to(e.dtype)], dim=-1))
            g, c, o = z[..., :r], z[..., r:2 * r], z[..., 2 * r:]
            s = torch.sigmoid(g) * s + (1 - torch.sigmoid(g)) * torch.tanh(c)
            outs.append(torch.tanh(o))
        return torch.stack(outs, dim=-2), e

    def heads_rows(self, h, prev, head, rows):
        """heads() on the rows `rows` (LongTensor into the flattened [..., γ] grid; None = all,
        keeping the shape): the vocabulary-wide logits are only computed where a loss needs
        them. Returns base [n, V], logits [n, V], conf [n] (or the full shapes when rows is None)."""
        m_in, e = self.markov_inputs(h, prev)
        feat = h if e is None else torch.cat([h, e.to(h.dtype)], dim=-1)
        if rows is not None:
            h = h.reshape(-1, h.shape[-1])[rows]
            feat = feat.reshape(-1, feat.shape[-1])[rows]
            m_in = None if m_in is None else m_in.reshape(-1, m_in.shape[-1])[rows]
        base = head.logits(h)
        logits = base if m_in is None else base + self.markov.w2(m_in).to(base.dtype)
        conf = self.confidence(feat).squeeze(-1) if self.cfg.confidence else None
        return base, logits, conf

    # ---- training: many blocks, masked -------------------------------------------------------
    def forward_train(self, features, input_ids, anchors, mask, head):
        """features [B, L, m·d]; input_ids [B, L]; anchors [B, N] (positions; invalid ones are
        masked out by `mask`); mask [B, N·γ, L + N·γ] from masks.block_attention_mask.
        Teacher forcing: slot k's input is the anchor (k = 0) or the mask token, its previous
        token is input_ids[anchor + k]. Returns (base, logits, conf) shaped [B, N, γ, ...]."""
        h, prev = self.forward_train_hidden(features, input_ids, anchors, mask, head)
        return self.heads(h, prev, head)

    def forward_train_hidden(self, features, input_ids, anchors, mask, head):
        """forward_train up to the heads: (final-normed h [B, N, γ, d], prev [B, N, γ]); the
        trainer applies heads_rows() to the rows its loss counts."""
        cfg = self.cfg
        B, L = input_ids.shape
        N, g = anchors.shape[1], cfg.block_size
        dev = input_ids.device
        c = self.context_rows(features)
        pos_ctx = torch.arange(L, device=dev).expand(B, L)
        ctx_kv = self.context_kv(c, pos_ctx)
        slot = torch.arange(g, device=dev)
        pos = anchors.unsqueeze(-1) + slot                           # [B, N, γ]
        tok = torch.full((B, N, g), cfg.mask_token_id, dtype=torch.long, device=dev)
        tok[..., 0] = input_ids.gather(1, anchors)
        h = head.embed(tok).to(self.fc.weight.dtype).view(B, N * g, -1)
        h = self.run_layers(h, pos.view(B, N * g), ctx_kv, mask).view(B, N, g, -1)
        prev = input_ids.gather(1, pos.clamp(max=L - 1).view(B, N * g)).view(B, N, g)
        return h, prev


class ContextCache:
    """The runtime's persistent per-request context rows: per layer K/V [1, n_head_kv, T, hd]."""

    def __init__(self, drafter):
        self.drafter = drafter
        self.kv = None
        self.length = 0

    def append(self, features):
        """Appends rows for the next features.shape[0] positions (features [n, m·d])."""
        d = self.drafter
        n = features.shape[0]
        pos = torch.arange(self.length, self.length + n, device=features.device).unsqueeze(0)
        new = d.context_kv(d.context_rows(features.unsqueeze(0)), pos)
        if self.kv is None:
            self.kv = new
        else:
            self.kv = [(torch.cat([k0, k1], -2), torch.cat([v0, v1], -2))
                       for (k0, v0), (k1, v1) in zip(self.kv, new)]
        self.length += n


def draft_block(drafter, cache, anchor, prev, head):
    """One inference round: anchor token at position cache.length, block [x0, mask...] with no
    attention mask over all context rows + the block; prev [γ] forced previous tokens
    (prev[0] = anchor). Returns base logits [γ, V], logits [γ, V], conf logits [γ] or None."""
    cfg = drafter.cfg
    g = cfg.block_size
    dev = prev.device
    tok = torch.full((1, g), cfg.mask_token_id, dtype=torch.long, device=dev)
    tok[0, 0] = int(anchor)
    pos = torch.arange(cache.length, cache.length + g, device=dev).unsqueeze(0)
    h = drafter.run_layers(head.embed(tok).to(drafter.fc.weight.dtype), pos, cache.kv, None)
    base, logits, conf = drafter.heads(h.unsqueeze(1), prev.view(1, 1, g), head)
    return base[0, 0], logits[0, 0], None if conf is None else conf[0, 0]
