"""A few CPU steps of the trainer on a tiny random target: the loss of every drafter goes
down, a resumed run continues bit for bit, and the export loads back."""
import random

import torch

from dspark_train import target
from dspark_train.trainer import Trainer, TrainArgs


def examples(n, seed=0):
    rng = random.Random(seed)
    # response tokens follow a simple rule of the previous token, so there is signal to learn
    out = []
    for _ in range(n):
        p = [rng.randrange(5, 256) for _ in range(6)]
        r = [rng.randrange(5, 256)]
        for _ in range(25):
            r.append((r[-1] * 7 + 3) % 251 + 5)
        out.append((p + r, len(p)))
    return out


def trainer(steps, kinds=("dspark", "dflash", "eagle3", "mtp1")):
    m = target.tiny_target(seed=3)
    ex = examples(48)
    a = TrainArgs(kinds=list(kinds), steps=steps, batch_size=4, anchors=8, block_size=4,
                  target_layers=[0, 2], markov_rank=16, lr=3e-3, seed=5, log_every=1)
    return Trainer(m, target.target_head(m), target.target_info(m, "tiny"), ex[:40], ex[40:], a,
                   torch.device("cpu"), log=lambda *_: None)


def test_smoke_loss_decreases():
    tr = trainer(30)
    before = tr.evaluate()
    tr.fit()
    after = tr.evaluate()
    for kind in ("dspark", "dflash", "eagle3", "mtp1"):
        assert after[kind]["loss"] < 0.9 * before[kind]["loss"], (kind, before[kind], after[kind])


def test_resume_is_exact(tmp_path):
    full = trainer(6, kinds=("dspark", "eagle3"))
    full.fit()
    part = trainer(6, kinds=("dspark", "eagle3"))
    part.a.time_limit_s = 0.0                      # stops (and checkpoints) after one step
    ckpt = str(tmp_path / "ckpt.pt")
    assert part.fit(ckpt) is False and part.step == 1
    resumed = trainer(6, kinds=("dspark", "eagle3"))
    resumed.load(ckpt)
    resumed.fit(ckpt)
    for kind in ("dspark", "eagle3"):
        a = full.runs[kind]["model"].state_dict()
        b = resumed.runs[kind]["model"].state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), (kind, k)


def test_warm_start_from_an_export_takes_its_weights_and_step_count(tmp_path):
    from dspark_train.export import export_drafter
    first = trainer(4, kinds=("dspark", "mtp1"))
    first.fit()
    for kind, run in first.runs.items():
        run["cfg"].training.update({"steps_done": first.step})
        export_drafter(run["model"], str(tmp_path / kind), dtype=torch.float32)
    second = trainer(4, kinds=("dspark", "mtp1"))
    prior = second.init_from_exports(str(tmp_path))
    assert prior == {"dspark": 4, "mtp1": 4}
    for kind in ("dspark", "mtp1"):
        a = first.runs[kind]["model"].export_state_dict()
        b = second.runs[kind]["model"].export_state_dict()
        for k in a:
            assert torch.equal(a[k].float(), b[k].float()), (kind, k)
    # a mismatched architecture is refused, not silently half-loaded
    other = Trainer(target.tiny_target(seed=3), target.target_head(target.tiny_target(seed=3)),
                    target.target_info(target.tiny_target(seed=3), "tiny"), examples(48)[:40], examples(48)[40:],
                    TrainArgs(kinds=["dspark"], steps=1, batch_size=4, anchors=8, block_size=5,
                              target_layers=[0, 2], markov_rank=16, lr=3e-3, seed=5),
                    torch.device("cpu"), log=lambda *_: None)
    import pytest
    with pytest.raises(ValueError, match="block_size"):
        other.init_from_exports(str(tmp_path))
