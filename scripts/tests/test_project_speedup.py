"""scripts/project_speedup.py against hand-computed cases."""
import importlib.util
import os

import pytest

spec = importlib.util.spec_from_file_location(
    "project_speedup", os.path.join(os.path.dirname(__file__), "..", "project_speedup.py"))
ps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ps)

BENCH = {"models": [{"model": "m", "verify": [
    {"context": 512, "seqs": 1, "new_tokens": 1, "step_ms": 10.0},
    {"context": 512, "seqs": 1, "new_tokens": 2, "step_ms": 12.0},
    {"context": 512, "seqs": 1, "new_tokens": 4, "step_ms": 14.0},
    {"context": 512, "seqs": 2, "new_tokens": 4, "step_ms": 99.0},      # not one sequence: ignored
    {"context": 2048, "seqs": 1, "new_tokens": 2, "step_ms": 99.0}]}]}  # other context: ignored


def test_verify_curve_interpolates_between_measured_lengths():
    t = ps.verify_curve(BENCH, "m", 512)
    assert t(1) == 10.0 and t(2) == 12.0 and t(4) == 14.0
    assert t(3) == pytest.approx(13.0)
    with pytest.raises(SystemExit):
        t(5)


def test_best_length_block_and_chain():
    t = ps.verify_curve(BENCH, "m", 512)
    u = [0.5, 0.25]
    # block: l=1 1.5 tokens in 12+1 ms = 115.38/s; l=2 1.75 in 13+1 = 125/s
    l, tokens, round_ms, rate = ps.best_length(u, True, 1.0, t)
    assert (l, tokens, round_ms) == (2, 1.75, 14.0) and rate == pytest.approx(125.0)
    # chain with a 3 ms pass: l=1 1.5/(12+3) = 100/s; l=2 1.75/(13+6) = 92.1/s
    l, tokens, round_ms, rate = ps.best_length(u, False, 3.0, t)
    assert (l, round_ms) == (1, 15.0) and rate == pytest.approx(100.0)


def test_pooled_acceptance_weights_datasets_by_rounds():
    run = {"datasets": {"a": {"acceptance_unconditional": [0.6, 0.2], "verify_steps": 30},
                        "b": {"acceptance_unconditional": [0.2, 0.0], "verify_steps": 10}}}
    assert ps.pooled_unconditional(run) == pytest.approx([0.5, 0.15])


def test_draft_pass_bytes_by_hand():
    t = dict(d=4, ff=8, heads=2, kv=1, hd=2, layers=3, vocab=10)
    layer = (4 * 2 * 2 + 2 * 4 * 1 * 2 + 2 * 2 * 4) + 3 * 4 * 8       # 32 + 96
    assert ps.layer_params(t, 4) == layer
    head = 10 * 4
    assert ps.draft_pass_bytes("dflash", t, 2, 3, 0) == 2 * (3 * 16 + 2 * layer + head)
    assert ps.draft_pass_bytes("dspark", t, 2, 3, 5) == 2 * (3 * 16 + 2 * layer + head + 2 * 5 * 10 + 4 + 5)
    chain_layer = (8 * 2 * 2 + 2 * 8 * 1 * 2 + 2 * 2 * 4) + 3 * 4 * 8
    assert ps.draft_pass_bytes("mtp1", t, 2, 1, 0) == 2 * (16 + chain_layer + head)
