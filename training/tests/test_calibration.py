"""ECE against a hand computation; STS lowers the ECE of deliberately miscalibrated logits."""
import torch

from dspark_train.calibration import calibrate, ece, prefix_labels


def test_ece_by_hand():
    pred = torch.tensor([0.02, 0.12, 0.91, 0.97], dtype=torch.float64)
    label = torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    # bins of width 0.05: {0.02}, {0.12}, {0.91}, {0.97}, one prediction each
    expect = (0.02 + 0.88 + 0.09 + 0.03) / 4
    assert abs(ece(pred, label, bins=20) - expect) < 1e-12
    assert abs(ece(torch.tensor([0.1, 0.12], dtype=torch.float64), torch.tensor([0.0, 1.0]), bins=2) - abs(0.11 - 0.5)) < 1e-12


def test_prefix_labels_are_cumulative():
    lab = prefix_labels(torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]), seed=0)
    assert lab.tolist() == [[1, 0, 0], [1, 1, 1]]


def test_sts_reduces_ece_on_overconfident_logits():
    g = torch.Generator().manual_seed(0)
    n, gamma = 4000, 5
    true_logit = torch.randn(n, gamma, generator=g) * 1.5 + 0.5
    c_star = torch.sigmoid(true_logit)
    z = true_logit * torch.tensor([3.0, 0.4, 2.0, 1.0, 5.0])     # wrong temperature per position
    valid = torch.ones(n, gamma, dtype=torch.bool)
    rep = calibrate(z, c_star, valid, seed=1)
    assert rep["ece_after_mean"] < 0.5 * rep["ece_before_mean"]
    assert all(a <= b + 0.01 for a, b in zip(rep["ece_after"], rep["ece_before"]))
    t = rep["temperatures"]
    assert 2.0 < t[0] < 4.5 and t[1] < 0.8      # undoes the scaling where it is identifiable
