"""The frozen target: loading (the GGUF through transformers, or a tiny random Llama for tests),
and the online features of docs/drafter-format.md: raw decoder-layer outputs taken with
forward hooks (before any final norm), plus the target's own next-token logits."""
import os

import torch

from .layers import TargetHead

SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def load_gguf_target(path, device, dtype):
    """transformers dequantizes the GGUF to float (needs the `gguf` package)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, f = os.path.split(os.path.abspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"target model {path} not found")
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval().requires_grad_(False), tok


def tiny_target(seed=0, vocab=256, d=64, n_layer=4, device="cpu"):
    """A random 4-layer Llama (d 64, 4 heads / 2 kv heads) for CPU tests and smoke runs."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=n_layer,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=d // 4, rms_norm_eps=1e-5,
                      rope_theta=100000.0, max_position_embeddings=1024, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():          # a peaked distribution, so there is something to learn
        model.model.embed_tokens.weight.mul_(8.0)
    return model.to(device).eval().requires_grad_(False)


def target_head(model):
    return TargetHead(model.get_input_embeddings().weight.detach(),
                      model.get_output_embeddings().weight.detach())


def target_info(model, name):
    c = model.config
    return {"n_vocab": c.vocab_size, "n_embd": c.hidden_size, "n_layer": c.num_hidden_layers, "name": name}


class FeatureTap:
    """Captures raw outputs of the listed decoder layers during one forward."""

    def __init__(self, model, layers):
        self.layers = sorted(set(layers))
        self.out = {}
        blocks = model.model.layers
        self.handles = [blocks[l].register_forward_hook(self._hook(l)) for l in self.layers]

    def _hook(self, l):
        def fn(_module, _inp, output):
            self.out[l] = output[0] if isinstance(output, tuple) else output
        return fn

    def close(self):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def target_forward(model, tap, input_ids, attention_mask):
    """One target forward: returns ({layer: [B, L, d] raw output}, final-normed hidden [B, L, d]).
    The LM head is applied later, on the gathered rows only."""
    tap.out = {}
    out = model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return dict(tap.out), out.last_hidden_state


def features_for(layer_out, layers):
    """Concatenation over `layers` in the listed order: [B, L, m·d]."""
    return torch.cat([layer_out[l] for l in layers], dim=-1)
