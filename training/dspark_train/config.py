"""DrafterConfig: the in-memory form of drafter.json (docs/drafter-format.md)."""
import dataclasses
import json
from typing import Optional

KINDS = ("dspark", "dflash", "eagle3", "mtp1")
MARKOV_TYPES = ("none", "vanilla", "rnn")
FORMAT = "dspark-drafter"
FORMAT_VERSION = 1


@dataclasses.dataclass
class TargetInfo:
    n_vocab: int
    n_embd: int
    n_layer: int
    name: str


@dataclasses.dataclass
class DrafterConfig:
    kind: str
    target: TargetInfo
    target_layers: list
    block_size: int
    mask_token_id: int
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    rms_eps: float = 1e-5
    rope_theta: float = 100000.0
    rope_scaling: Optional[dict] = None
    qk_norm: bool = False
    markov_type: str = "none"
    markov_rank: int = 0
    confidence: bool = False
    temperatures: Optional[list] = None
    training: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    @property
    def n_vocab(self):
        return self.target.n_vocab

    @property
    def is_block(self):
        return self.kind in ("dspark", "dflash")

    def validate(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(f"drafter config: {msg}")
        need(self.kind in KINDS, f"kind {self.kind!r} not one of {KINDS}")
        need(self.markov_type in MARKOV_TYPES, f"markov type {self.markov_type!r} not one of {MARKOV_TYPES}")
        need(self.n_embd == self.target.n_embd, f"n_embd {self.n_embd} != target n_embd {self.target.n_embd}")
        need(self.n_head % self.n_head_kv == 0, f"n_head {self.n_head} not a multiple of n_head_kv {self.n_head_kv}")
        need(self.head_dim % 2 == 0, f"head_dim {self.head_dim} must be even (RoPE pairs)")
        need(len(self.target_layers) >= 1, "target_layers is empty")
        for l in self.target_layers:
            need(0 <= l < self.target.n_layer, f"target layer {l} outside 0..{self.target.n_layer - 1}")
        last = self.target.n_layer - 1
        need(self.kind == "mtp1" or last not in self.target_layers,
             f"only mtp1 may use the last target layer {last}")
        need(self.block_size >= 1, f"block_size {self.block_size} < 1")
        need(self.n_layer >= 1, f"n_layer {self.n_layer} < 1")
        need(0 <= self.mask_token_id < self.target.n_vocab, f"mask_token_id {self.mask_token_id} outside vocab")
        if self.markov_type != "none":
            need(self.markov_rank >= 1, "markov rank must be >= 1 when markov is on")
        if self.kind in ("dflash", "eagle3", "mtp1"):
            need(self.markov_type == "none" and not self.confidence,
                 f"{self.kind} has no markov or confidence head")
        if self.kind == "mtp1":
            need(self.block_size == 1 and self.target_layers == [last],
                 f"mtp1 needs block_size 1 and target_layers [{last}]")
        if self.confidence:
            if self.temperatures is None:
                self.temperatures = [1.0] * self.block_size
            need(len(self.temperatures) == self.block_size, "confidence temperatures must have block_size entries")

    def to_json(self):
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "target": dataclasses.asdict(self.target),
            "target_layers": list(self.target_layers),
            "block_size": self.block_size,
            "mask_token_id": self.mask_token_id,
            "n_layer": self.n_layer, "n_embd": self.n_embd, "n_head": self.n_head,
            "n_head_kv": self.n_head_kv, "head_dim": self.head_dim, "n_ff": self.n_ff,
            "rms_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "qk_norm": self.qk_norm,
            "markov": {"type": self.markov_type, "rank": self.markov_rank if self.markov_type != "none" else 0},
            "confidence": {"enabled": self.confidence,
                           "temperatures": [float(t) for t in (self.temperatures or [])]},
            "training": self.training,
        }

    @staticmethod
    def from_json(obj):
        required = ["format", "format_version", "kind", "target", "target_layers", "block_size",
                    "mask_token_id", "n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_ff",
                    "rms_eps", "rope_theta", "rope_scaling", "qk_norm", "markov", "confidence", "training"]
        missing = [k for k in required if k not in obj]
        if missing:
            raise ValueError(f"drafter.json: missing fields {missing}")
        if obj["format"] != FORMAT or obj["format_version"] != FORMAT_VERSION:
            raise ValueError(f"drafter.json: unknown format {obj['format']!r} version {obj['format_version']!r}")
        t = obj["target"]
        conf = obj["confidence"]
        return DrafterConfig(
            kind=obj["kind"],
            target=TargetInfo(int(t["n_vocab"]), int(t["n_embd"]), int(t["n_layer"]), str(t["name"])),
            target_layers=[int(x) for x in obj["target_layers"]],
            block_size=int(obj["block_size"]), mask_token_id=int(obj["mask_token_id"]),
            n_layer=int(obj["n_layer"]), n_embd=int(obj["n_embd"]), n_head=int(obj["n_head"]),
            n_head_kv=int(obj["n_head_kv"]), head_dim=int(obj["head_dim"]), n_ff=int(obj["n_ff"]),
            rms_eps=float(obj["rms_eps"]), rope_theta=float(obj["rope_theta"]),
            rope_scaling=obj["rope_scaling"], qk_norm=bool(obj["qk_norm"]),
            markov_type=obj["markov"]["type"], markov_rank=int(obj["markov"].get("rank", 0)),
            confidence=bool(conf["enabled"]),
            temperatures=[float(x) for x in conf.get("temperatures", [])] if conf["enabled"] else None,
            training=obj["training"],
        )

    def save(self, path):
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")

    @staticmethod
    def load(path):
        with open(path) as f:
            return DrafterConfig.from_json(json.load(f))
