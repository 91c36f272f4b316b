"""scripts/emulate_gemv_mma.py: the mma GEMV's lane-to-fragment mapping reproduces x W^T."""
import importlib.util
import os

import numpy as np

spec = importlib.util.spec_from_file_location(
    "emulate_gemv_mma", os.path.join(os.path.dirname(__file__), "..", "emulate_gemv_mma.py"))
em = importlib.util.module_from_spec(spec)
spec.loader.exec_module(em)


def test_mapping_reproduces_the_product_with_tails_and_missing_tokens():
    rng = np.random.default_rng(1)
    for n_out, n_in, n_tok in [(33, 104, 8), (16, 32, 1), (5, 8, 2)]:
        w = rng.standard_normal((n_out, n_in))
        x = rng.standard_normal((n_tok, n_in))
        np.testing.assert_allclose(em.gemv_mma(w, x), x @ w.T, rtol=0, atol=1e-10)


def test_a_token_column_does_not_see_the_other_tokens():
    # the emulated tiles give token 0 the same value alone as with 7 others (exact in float64
    # only up to summation order, which the emulation keeps fixed per column)
    rng = np.random.default_rng(2)
    w = rng.standard_normal((24, 96))
    x = rng.standard_normal((8, 96))
    np.testing.assert_array_equal(em.gemv_mma(w, x)[0], em.gemv_mma(w, x[:1])[0])
