"""Several sampled responses per prompt (train.py --extra-temperatures): every pass answers
every prompt, the list is grouped by prompt, the first pass is the single-pass data, and the
held-out split never puts one prompt's responses on both sides."""
import torch

from dspark_train import regenerate, target


def prompts(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(5, 200, (int(torch.randint(4, 9, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def test_passes_group_responses_by_prompt_and_keep_the_first_pass():
    m = target.tiny_target(seed=3)
    ps = prompts(6)
    one = regenerate.generate_responses(m, ps, [2], 8, 4, 1.0, 1.0, seed=7, log=lambda *_: None)
    two = regenerate.generate_passes(m, ps, [2], 8, 4, [(1.0, 1.0), (1.0, 1.0)], seed=7, log=lambda *_: None)
    assert len(two) == 2 * len(ps)
    for i, p in enumerate(ps):
        a, b = two[2 * i], two[2 * i + 1]
        assert a[0][:a[1]] == p and b[0][:b[1]] == p
        assert a == one[i]              # pass 0 is the single-pass regeneration, same seed
    assert any(two[2 * i] != two[2 * i + 1] for i in range(len(ps)))  # pass 1 draws anew


def test_split_holdout_keeps_whole_prompts():
    ex = [([1, 2, 10 + k], 2) for k in range(3)] + [([3, 4, 20 + k], 2) for k in range(2)] + [([5, 30], 1)]
    train, held = regenerate.split_holdout(ex, 2)
    assert held == ex[3:] and train == ex[:3]          # 2 asked, the prompt [3, 4] pulls in 3
    train, held = regenerate.split_holdout(ex, 4)       # the cut falls inside [1, 2]'s three: all held
    assert (train, held) == ([], ex)
    single = [([k, 9], 1) for k in range(10)]
    assert regenerate.split_holdout(single, 3) == (single[:7], single[7:])
    assert regenerate.split_holdout(single, 0) == (single, [])


def test_an_earlier_first_pass_plus_the_extra_passes_equals_a_full_regeneration(tmp_path):
    from dspark_train import data
    m = target.tiny_target(seed=3)
    ps = prompts(6)
    full = regenerate.generate_passes(m, ps, [2], 8, 4, [(1.0, 1.0), (0.7, 1.0)], seed=7, log=lambda *_: None)
    first = regenerate.generate_passes(m, ps, [2], 8, 4, [(1.0, 1.0)], seed=7, log=lambda *_: None)
    path = tmp_path / "examples.jsonl.gz"
    import gzip, json
    with gzip.open(path, "wt") as f:
        for ids, k in reversed(first[1:]):           # any order; one prompt missing
            f.write(json.dumps({"ids": ids, "n_prompt": k}) + "\n")
    base = data.load_examples(str(path), max_len=None, min_loss_tokens=0)
    assert regenerate.base_passes(base) == 1
    extra = regenerate.generate_passes(m, ps, [2], 8, 4, [(0.7, 1.0)], seed=7, log=lambda *_: None, first_pass=1)
    merged = regenerate.merge_passes(ps, base, extra)
    assert merged == full[1:]                         # prompt 0's first response was not in the base
    assert regenerate.merge_passes(ps, first, extra) == full
    # Two earlier passes and a third on top: the list (and the third pass's seed) of a full
    # three-pass regeneration.
    three = regenerate.generate_passes(m, ps, [2], 8, 4, [(1.0, 1.0), (0.7, 1.0), (0.9, 1.0)], seed=7,
                                       log=lambda *_: None)
    assert regenerate.base_passes(full) == 2
    third = regenerate.generate_passes(m, ps, [2], 8, 4, [(0.9, 1.0)], seed=7, log=lambda *_: None, first_pass=2)
    assert regenerate.merge_passes(ps, full, third) == three
