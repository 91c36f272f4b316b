"""Pieces shared by every drafter (docs/drafter-format.md "Shared pieces"): RMSNorm, Hugging
Face rotate-half RoPE (optionally llama3-scaled), grouped-query attention, SwiGLU MLP.
Tensor names of the modules are the exported names, so state_dict() is the checkpoint."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # computed in f32 (or f64 when the module runs in f64), cast back to the input dtype
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(y.dtype)).to(x.dtype)


def rope_inv_freq(head_dim, theta, scaling=None):
    """inv_freq[head_dim/2] in f64, with Hugging Face's llama3 scaling when asked."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling is None:
        return inv
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind != "llama3":
        raise ValueError(f"rope_scaling type {kind!r} is not supported (only llama3)")
    factor = scaling["factor"]
    lo, hi = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old_len / lo, inv / factor, inv)
    smooth = (old_len / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / hi) & ~(wavelen > old_len / lo)
    return torch.where(medium, smoothed, scaled)


def apply_rope(x, pos, inv_freq):
    """x [..., T, hd] rotated at integer positions pos [..., T] (rotate-half pairs (i, i+hd/2))."""
    ang = pos.to(torch.float64).unsqueeze(-1) * inv_freq.to(pos.device)   # [..., T, hd/2]
    ang = torch.cat([ang, ang], dim=-1)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


class Attention(nn.Module):
    """Projections of one drafter layer. d_in is d (dspark/dflash) or 2d (eagle3/mtp1)."""

    def __init__(self, cfg, d_in):
        super().__init__()
        self.n_head, self.n_head_kv, self.hd = cfg.n_head, cfg.n_head_kv, cfg.head_dim
        self.attn_q = nn.Linear(d_in, cfg.n_head * cfg.head_dim, bias=False)
        self.attn_k = nn.Linear(d_in, cfg.n_head_kv * cfg.head_dim, bias=False)
        self.attn_v = nn.Linear(d_in, cfg.n_head_kv * cfg.head_dim, bias=False)
        self.attn_output = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)
        if cfg.qk_norm:
            self.attn_q_norm = RMSNorm(cfg.head_dim, cfg.rms_eps)
            self.attn_k_norm = RMSNorm(cfg.head_dim, cfg.rms_eps)
        self.qk_norm = cfg.qk_norm

    def _heads(self, x, n):                       # [B, T, n*hd] -> [B, n, T, hd]
        return x.view(*x.shape[:-1], n, self.hd).transpose(-3, -2)

    def query(self, x, pos, inv_freq):
        q = self._heads(self.attn_q(x), self.n_head)
        if self.qk_norm:
            q = self.attn_q_norm(q)
        return apply_rope(q, pos.unsqueeze(-2), inv_freq)

    def key_value(self, x, pos, inv_freq):
        """K/V rows [B, n_head_kv, T, hd] of inputs x [B, T, d_in] at positions pos [B, T]."""
        k = self._heads(self.attn_k(x), self.n_head_kv)
        if self.qk_norm:
            k = self.attn_k_norm(k)
        k = apply_rope(k, pos.unsqueeze(-2), inv_freq)
        return k, self._heads(self.attn_v(x), self.n_head_kv)

    def attend(self, q, k, v, mask=None):
        """softmax(q k^T / sqrt(hd)) v over the listed keys; mask [B, Tq, Tk] bool (True = see)."""
        rep = self.n_head // self.n_head_kv
        k = k.repeat_interleave(rep, dim=-3)
        v = v.repeat_interleave(rep, dim=-3)
        m = None if mask is None else mask.unsqueeze(-3)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=1.0 / math.sqrt(self.hd))
        o = o.transpose(-3, -2).reshape(*q.shape[:-3], q.shape[-2], self.n_head * self.hd)
        return self.attn_output(o)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ffn_gate = nn.Linear(cfg.n_embd, cfg.n_ff, bias=False)
        self.ffn_up = nn.Linear(cfg.n_embd, cfg.n_ff, bias=False)
        self.ffn_down = nn.Linear(cfg.n_ff, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.ffn_down(F.silu(self.ffn_gate(x)) * self.ffn_up(x))


class TargetHead:
    """The target's frozen token embedding and LM head (not part of the drafter checkpoint)."""

    def __init__(self, embed, lm_head):
        self.embed_weight = embed          # [V, d]
        self.lm_head_weight = lm_head      # [V, d]

    def embed(self, ids):
        return F.embedding(ids, self.embed_weight)

    def logits(self, h):
        return h @ self.lm_head_weight.to(h.dtype).t()

    def to(self, *args, **kw):
        return TargetHead(self.embed_weight.to(*args, **kw), self.lm_head_weight.to(*args, **kw))


def init_weights(module, seed, std_scale=1.0):
    """Seeded init: linear/embedding N(0, 1/in) * std_scale, norms 1 (deterministic per seed)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters()):
        with torch.no_grad():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
                        * (std_scale / math.sqrt(fan_in)))
