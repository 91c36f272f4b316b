"""Export round trip: the folder reads back to the same tensors, drafter.json follows the
contract, shards stay under the limit, bad folders are rejected with a clear error."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

import make_fixtures
from dspark_train.config import DrafterConfig
from dspark_train.export import build_drafter, export_drafter, load_drafter, load_tensors
from dspark_train.layers import init_weights

DOC_TENSORS = {  # docs/drafter-format.md "Tensors" for the tiny sizes (2 layers, m = 2)
    "dspark": ["fc.weight", "hidden_norm.weight", "norm.weight", "markov.w1.weight", "markov.w2.weight",
               "confidence.weight", "confidence.bias"],
    "dflash": ["fc.weight", "hidden_norm.weight", "norm.weight"],
    "eagle3": ["fc.weight", "hidden_norm.weight", "input_norm.weight", "norm.weight"],
}
LAYER = ["attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight", "ffn_norm.weight",
         "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"]


def make(name, seed=1):
    kind, markov, conf, _ = make_fixtures.CASES[name]
    d = build_drafter(make_fixtures.tiny_config(kind, markov, conf))
    init_weights(d, seed)
    return d


@pytest.mark.parametrize("name", ["dspark", "dflash", "eagle3"])
def test_tensor_names_are_the_documented_ones(name, tmp_path):
    d = make(name)
    export_drafter(d, str(tmp_path), dtype=torch.float32)
    names = set(load_tensors(str(tmp_path)))
    expect = set(DOC_TENSORS[name])
    for i in range(d.cfg.n_layer):
        expect |= {f"layers.{i}.{t}" for t in LAYER + (["attn_norm.weight"] if d.cfg.is_block else [])}
    assert names == expect
    t = load_tensors(str(tmp_path))
    assert tuple(t["fc.weight"].shape) == (64, 128)
    if name == "eagle3":
        assert tuple(t["layers.0.attn_q.weight"].shape) == (64, 128)
    if name == "dspark":
        assert tuple(t["confidence.weight"].shape) == (1, 64 + 16)
        assert tuple(t["markov.w2.weight"].shape) == (256, 16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_sharded(tmp_path, dtype):
    d = make("dspark_rnn")
    files = export_drafter(d, str(tmp_path), dtype=dtype, max_shard_bytes=40_000)
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) > 1 and "model.safetensors.index.json" in files
    assert all(os.path.getsize(tmp_path / f) <= 40_000 + 4096 for f in shards)
    back = load_drafter(str(tmp_path), dtype=torch.float32)
    for k, v in d.export_state_dict().items():
        assert torch.equal(back.export_state_dict()[k], v.to(dtype).float()), k
    cfg = json.load(open(tmp_path / "drafter.json"))
    assert cfg["format"] == "dspark-drafter" and cfg["format_version"] == 1 and cfg["kind"] == "dspark"
    assert cfg["markov"] == {"type": "rnn", "rank": 16}
    assert cfg["confidence"]["enabled"] and len(cfg["confidence"]["temperatures"]) == cfg["block_size"]
    assert DrafterConfig.from_json(cfg).to_json() == cfg


def test_a_tensor_over_the_shard_limit_gets_a_shard_of_its_own(tmp_path):
    # the rank-256 Markov tables of a SmolLM2 drafter are 24 MiB each in bf16, over the 15 MiB
    # limit: each goes alone into one shard instead of failing the export after training
    d = make("dspark")
    sizes = {k: v.numel() * 4 for k, v in d.export_state_dict().items()}
    big = max(sizes, key=sizes.get)
    limit = sizes[big] - 1
    files = export_drafter(d, str(tmp_path), dtype=torch.float32, max_shard_bytes=limit)
    index = json.load(open(tmp_path / "model.safetensors.index.json"))["weight_map"]
    alone = [k for k, f in index.items() if f == index[big]]
    assert alone == [big]
    assert all(os.path.getsize(tmp_path / f) <= limit + 4096 for f in set(index.values()) if f != index[big])
    back = load_drafter(str(tmp_path), dtype=torch.float32)
    for k, v in d.export_state_dict().items():
        assert torch.equal(back.export_state_dict()[k], v), k
    assert "model.safetensors.index.json" in files


def test_rejects_bad_folders(tmp_path):
    d = make("dflash")
    export_drafter(d, str(tmp_path), dtype=torch.float32)
    cfg = json.load(open(tmp_path / "drafter.json"))
    bad = dict(cfg, format_version=2)
    json.dump(bad, open(tmp_path / "drafter.json", "w"))
    with pytest.raises(ValueError, match="unknown format"):
        load_drafter(str(tmp_path))
    json.dump({k: v for k, v in cfg.items() if k != "n_ff"}, open(tmp_path / "drafter.json", "w"))
    with pytest.raises(ValueError, match="missing fields"):
        load_drafter(str(tmp_path))
    json.dump(cfg, open(tmp_path / "drafter.json", "w"))
    t = load_file(str(tmp_path / "model.safetensors"))
    t["extra.weight"] = torch.zeros(2)
    save_file(t, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="extra"):
        load_drafter(str(tmp_path))
    del t["extra.weight"]
    t["fc.weight"] = torch.zeros(64, 64)
    save_file(t, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="fc.weight: shape"):
        load_drafter(str(tmp_path))


def test_config_validation():
    cfg = make_fixtures.tiny_config("dspark", "vanilla", True).to_json()
    for change, msg in [({"kind": "medusa"}, "kind"), ({"target_layers": [3]}, "only mtp1"),
                        ({"n_embd": 32}, "n_embd")]:
        with pytest.raises(ValueError, match=msg):
            DrafterConfig.from_json(dict(cfg, **change))
