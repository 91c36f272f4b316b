#!/usr/bin/env python3
"""Host emulation of kernels/cuda/gemv_mma.cu's lane-to-fragment mapping (no GPU needed).

Rebuilds, for every block, warp and k-block, the A (16x16 weights) and B (16x8 activations)
fragments each lane would hand to mma.sync.m16n8k16 under the PTX ISA's register layouts,
multiplies them as the tensor core would, reduces the warps' partial tiles as the kernel does,
and compares with x W^T. It checks the index arithmetic (which physical feature meets which
k slot, tails of n_in and n_out, missing tokens), not the hardware: the CUDA tests do that.

  python3 scripts/emulate_gemv_mma.py     # prints the max abs error per shape; exit 1 if > 1e-9
"""
import sys

import numpy as np


def mma_16816(d, a_regs, b_regs):
    """d[lane] += the lane's share of A(16x16) @ B(16x8), with the PTX m16n8k16 layouts:
    lane = 4 g + q; A regs a0..a3 = (row g, k 2q..2q+1), (row g+8, same), (row g, k 2q+8..9),
    (row g+8, same); B regs b0, b1 = (k 2q..2q+1, column g), (k 2q+8..9, column g);
    D regs = (row g, columns 2q, 2q+1), (row g+8, the same columns)."""
    a = np.zeros((16, 16))
    b = np.zeros((16, 8))
    for lane in range(32):
        g, q = lane >> 2, lane & 3
        a0, a1, a2, a3 = a_regs[lane]
        a[g, 2 * q:2 * q + 2], a[g + 8, 2 * q:2 * q + 2] = a0, a1
        a[g, 2 * q + 8:2 * q + 10], a[g + 8, 2 * q + 8:2 * q + 10] = a2, a3
        b0, b1 = b_regs[lane]
        b[2 * q:2 * q + 2, g], b[2 * q + 8:2 * q + 10, g] = b0, b1
    prod = a @ b
    for lane in range(32):
        g, q = lane >> 2, lane & 3
        d[lane] += [prod[g, 2 * q], prod[g, 2 * q + 1], prod[g + 8, 2 * q], prod[g + 8, 2 * q + 1]]


def gemv_mma(w, x):
    """y[t, o] the way gemv_mma_kernel computes it (8 warps, 32-feature k-blocks, 16-row tiles)."""
    n_out, n_in = w.shape
    n_tok = x.shape[0]
    y = np.zeros((n_tok, n_out))
    n_kb = (n_in + 31) // 32
    for row0 in range(0, n_out, 16):
        part = np.zeros((8, 16, 8))
        for warp in range(8):
            d = np.zeros((32, 4))
            for kb in range(warp, n_kb, 8):
                first, second = [], []
                b_first, b_second = [], []
                for lane in range(32):
                    g, q = lane >> 2, lane & 3
                    f = kb * 32 + q * 8
                    va = vb = vx = np.zeros(8)
                    if f < n_in:
                        va = w[min(row0 + g, n_out - 1), f:f + 8]
                        vb = w[min(row0 + g + 8, n_out - 1), f:f + 8]
                        if g < n_tok:
                            vx = x[g, f:f + 8]
                    first.append((va[0:2], vb[0:2], va[2:4], vb[2:4]))
                    b_first.append((vx[0:2], vx[2:4]))
                    second.append((va[4:6], vb[4:6], va[6:8], vb[6:8]))
                    b_second.append((vx[4:6], vx[6:8]))
                mma_16816(d, first, b_first)
                mma_16816(d, second, b_second)
            for lane in range(32):
                g, q = lane >> 2, lane & 3
                part[warp, g, 2 * q:2 * q + 2] = d[lane, 0:2]
                part[warp, g + 8, 2 * q:2 * q + 2] = d[lane, 2:4]
        for t in range(n_tok):
            rows = min(16, n_out - row0)
            y[t, row0:row0 + rows] = part[:, :rows, t].sum(axis=0)
    return y


def main():
    rng = np.random.default_rng(0)
    worst = 0.0
    # (n_out, n_in, tokens): tails of n_out and n_in, one token, few tokens, SmolLM2's down proj
    for n_out, n_in, n_tok in [(203, 4104, 8), (40, 64, 3), (576, 1536, 1), (17, 40, 5)]:
        w = rng.standard_normal((n_out, n_in))
        x = rng.standard_normal((n_tok, n_in))
        err = float(np.abs(gemv_mma(w, x) - x @ w.T).max())
        worst = max(worst, err)
        print(f"{n_out}x{n_in}, {n_tok} tokens: max abs error {err:.2e}")
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
