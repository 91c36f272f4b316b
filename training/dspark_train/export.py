"""The drafter folder of docs/drafter-format.md: drafter.json + model.safetensors, or shards
model-0000i-of-0000N.safetensors of at most 15 MiB each + model.safetensors.index.json."""
import json
import os

import torch
from safetensors.torch import load_file, save_file

from .block_drafter import BlockDrafter
from .chain_drafter import ChainDrafter
from .config import DrafterConfig

MAX_SHARD_BYTES = 15 * 1024 * 1024
INDEX = "model.safetensors.index.json"


def build_drafter(cfg):
    return BlockDrafter(cfg) if cfg.is_block else ChainDrafter(cfg)


def _shard(tensors, max_bytes):
    shards, cur, size = [], {}, 0
    for name in sorted(tensors):
        t = tensors[name]
        n = t.numel() * t.element_size()
        # a tensor larger than the limit (the rank-256 Markov tables: 24 MiB in bf16) gets a
        # shard of its own; the parts brought back from the GPU machine are cut from a tar anyway
        if cur and size + n > max_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = t
        size += n
    if cur:
        shards.append(cur)
    return shards


def export_drafter(drafter, out_dir, dtype=torch.bfloat16, max_shard_bytes=MAX_SHARD_BYTES):
    """Writes the folder; returns the list of files written."""
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"weights are F32 or BF16, not {dtype}")
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):          # stale shards of an earlier export would confuse readers
        if f.startswith("model") and (f.endswith(".safetensors") or f == INDEX):
            os.remove(os.path.join(out_dir, f))
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in drafter.export_state_dict().items()}
    drafter.cfg.save(os.path.join(out_dir, "drafter.json"))
    shards = _shard(tensors, max_shard_bytes)
    files = ["drafter.json"]
    if len(shards) == 1:
        save_file(shards[0], os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return files + ["model.safetensors"]
    weight_map, n = {}, len(shards)
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file(shard, os.path.join(out_dir, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
        files.append(name)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(os.path.join(out_dir, INDEX), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return files + [INDEX]


def load_tensors(folder):
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return load_file(single)
    with open(os.path.join(folder, INDEX)) as f:
        weight_map = json.load(f)["weight_map"]
    out = {}
    for name in sorted(set(weight_map.values())):
        part = load_file(os.path.join(folder, name))
        for k, v in part.items():
            if weight_map.get(k) != name:
                raise ValueError(f"{name}: tensor {k} is not listed for this shard in the index")
            out[k] = v
    if set(out) != set(weight_map):
        raise ValueError(f"index lists tensors absent from the shards: {sorted(set(weight_map) - set(out))}")
    return out


def load_drafter(folder, dtype=torch.float32):
    """Reads a drafter folder back into a module (shape or name mismatches raise)."""
    cfg = DrafterConfig.load(os.path.join(folder, "drafter.json"))
    drafter = build_drafter(cfg).to(dtype)
    tensors = load_tensors(folder)
    own = drafter.export_state_dict()
    for k, v in tensors.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise ValueError(f"{k}: shape {tuple(v.shape)} != expected {tuple(own[k].shape)}")
    drafter.load_export_state_dict({k: v.to(dtype) for k, v in tensors.items()})
    return drafter
