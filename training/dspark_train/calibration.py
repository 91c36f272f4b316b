"""Confidence calibration: sequential temperature scaling (STS, method doc 1.4) and ECE.

Labels: on held-out blocks the acceptance of slot k under rejection sampling at T = 1 is a
Bernoulli event of probability c*_k = 1 - ½‖p_d,k - p_t,k‖₁ (teacher-forced prefix); a seeded
uniform draw per slot turns c* into binary accept events, and the prefix label of slot k is
the product of the events of slots 1..k (the block survives up to k).

STS: for k = 1..γ in order, a 1-D grid search of T_k (c_k = σ(z_k / T_k)) minimising the ECE
of the cumulative product Π_{i≤k} c_i against the prefix labels; earlier T stay fixed.
Temperatures are fitted on one half of the held-out rows and ECE is reported on the other."""
import math

import torch

GRID = [math.exp(x) for x in torch.linspace(math.log(0.05), math.log(20.0), 121).tolist()]


def ece(pred, label, bins=20):
    """Expected calibration error over `bins` equal-width bins of pred in [0, 1]."""
    pred, label = pred.double().flatten(), label.double().flatten()
    if pred.numel() == 0:
        return float("nan")
    idx = (pred * bins).long().clamp(0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum().item() * abs(pred[m].mean().item() - label[m].mean().item())
    return total / pred.numel()


def prefix_labels(c_star, seed):
    """Binary prefix-survival labels [n, γ] from acceptance probabilities c* [n, γ]."""
    u = torch.rand(c_star.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.cumprod((u < c_star.double()).double(), dim=-1)


def cumulative_conf(z, temps):
    return torch.cumprod(torch.sigmoid(z.double() / torch.tensor(temps, dtype=torch.float64)), dim=-1)


def per_position_ece(z, temps, labels, valid, bins=20):
    cp = cumulative_conf(z, temps)
    return [ece(cp[valid[:, k], k], labels[valid[:, k], k], bins) for k in range(z.shape[1])]


def fit_sts(z, labels, valid, bins=20, grid=GRID):
    """Per-position temperatures, left to right (z, labels [n, γ]; valid [n, γ] bool)."""
    g = z.shape[1]
    temps = [1.0] * g
    for k in range(g):
        best, best_t = float("inf"), 1.0
        for t in grid:
            temps[k] = t
            cp = cumulative_conf(z[:, :k + 1], temps[:k + 1])[:, k]
            e = ece(cp[valid[:, k]], labels[valid[:, k], k], bins)
            if e < best:
                best, best_t = e, t
        temps[k] = best_t
    return temps


def calibrate(z, c_star, valid, seed=0, bins=20):
    """Fits STS on even rows, reports per-position ECE before/after on odd rows."""
    labels = prefix_labels(c_star, seed)
    fit, test = slice(0, None, 2), slice(1, None, 2)
    temps = fit_sts(z[fit], labels[fit], valid[fit], bins)
    g = z.shape[1]
    before = per_position_ece(z[test], [1.0] * g, labels[test], valid[test], bins)
    after = per_position_ece(z[test], temps, labels[test], valid[test], bins)
    return {"temperatures": temps, "ece_before": before, "ece_after": after,
            "ece_before_mean": sum(before) / g, "ece_after_mean": sum(after) / g,
            "rows_fit": int(z[fit].shape[0]), "rows_test": int(z[test].shape[0]), "bins": bins,
            "mean_prefix_label": [float(labels[test][valid[test][:, k], k].mean()) for k in range(g)],
            "mean_cumulative_conf_after": [float(cumulative_conf(z[test], temps)[valid[test][:, k], k].mean())
                                           for k in range(g)]}
