"""Anchors, eval mask and the training attention mask against hand-computed small cases."""
import torch

from dspark_train.masks import (block_attention_mask, block_eval_mask, block_labels, sample_anchors,
                                valid_anchor_positions)


def test_valid_anchors_need_two_response_tokens():
    lm = torch.tensor([0, 0, 1, 1, 1, 0, 1, 1])
    assert valid_anchor_positions(lm).tolist() == [2, 3, 6]


def test_sample_anchors_sorted_without_replacement_and_capped():
    lm = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 1, 1, 0]])
    anchors, valid = sample_anchors(lm, 4, torch.Generator().manual_seed(0))
    a0 = anchors[0][valid[0]].tolist()
    assert len(a0) == 4 and a0 == sorted(a0) and len(set(a0)) == 4
    assert set(a0) <= set(range(1, 9))
    assert anchors[1][valid[1]].tolist() == [7] and valid[1].tolist() == [True, False, False, False]
    again, _ = sample_anchors(lm, 4, torch.Generator().manual_seed(0))
    assert torch.equal(anchors, again)
    # every valid anchor is drawn eventually (uniform, not a fixed subset)
    seen = set()
    for s in range(50):
        a, v = sample_anchors(lm, 4, torch.Generator().manual_seed(s))
        seen |= set(a[0][v[0]].tolist())
    assert seen == set(range(1, 9))


def test_sample_anchors_width_is_the_most_any_sequence_got():
    # n above every sequence's valid count (the paper's 512 on short responses): the width is the
    # longest sequence's 8 anchors, not n, and the draws are those of a narrower request
    lm = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 1, 1, 0]])
    anchors, valid = sample_anchors(lm, 512, torch.Generator().manual_seed(0))
    assert anchors.shape == (2, 8) and valid.sum(1).tolist() == [8, 1]
    assert anchors[0].tolist() == list(range(1, 9)) and anchors[1][valid[1]].tolist() == [7]
    # no valid anchor anywhere: one all-invalid column
    none, v = sample_anchors(torch.zeros(2, 5, dtype=torch.long), 4, torch.Generator().manual_seed(0))
    assert none.shape == (2, 1) and not v.any()


def test_eval_mask_worked_example():
    # module docstring: γ = 2, loss_mask [0 0 1 1 1 0], anchors 2 and 3
    lm = torch.tensor([[0, 0, 1, 1, 1, 0]])
    anchors = torch.tensor([[2, 3, 0]])
    valid = torch.tensor([[True, True, False]])
    ev = block_eval_mask(lm, anchors, valid, 2)
    assert ev.tolist() == [[[1, 1], [1, 0], [0, 0]]]


def test_eval_mask_cumprod_and_sequence_end():
    lm = torch.tensor([[0, 1, 1, 0, 1, 1, 1]])
    ev = block_eval_mask(lm, torch.tensor([[1, 4]]), torch.tensor([[True, True]]), 4)
    # anchor 1: labels 2 (1), 3 (0) -> stop; anchor 4: labels 5, 6, then past the end
    assert ev.tolist() == [[[1, 0, 0, 0], [1, 1, 0, 0]]]


def test_block_labels():
    ids = torch.tensor([[10, 11, 12, 13, 14]])
    assert block_labels(ids, torch.tensor([[1, 3]]), 2).tolist() == [[[12, 13], [14, 14]]]


def test_attention_mask_by_hand():
    # L = 4 context keys, anchors 1 and 3, γ = 2: keys [c0 c1 c2 c3 | b0s0 b0s1 b1s0 b1s1]
    m = block_attention_mask(torch.tensor([[1, 3]]), torch.tensor([[True, True]]), 4, 2)[0].int()
    expect = [[1, 0, 0, 0, 1, 1, 0, 0],
              [1, 0, 0, 0, 1, 1, 0, 0],
              [1, 1, 1, 0, 0, 0, 1, 1],
              [1, 1, 1, 0, 0, 0, 1, 1]]
    assert m.tolist() == expect


def test_attention_mask_invalid_block_sees_only_itself():
    m = block_attention_mask(torch.tensor([[2, 0]]), torch.tensor([[True, False]]), 3, 1)[0].int()
    assert m.tolist() == [[1, 1, 0, 1, 0], [0, 0, 0, 0, 1]]
