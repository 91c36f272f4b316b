"""scripts/plot_load.py: which run is the matched-throughput baseline, and the table's arithmetic."""
import importlib.util
import os

import pytest

spec = importlib.util.spec_from_file_location(
    "plot_load", os.path.join(os.path.dirname(__file__), "..", "plot_load.py"))
pl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pl)


def row(c, agg, per_user):
    return {"concurrency": c, "aggregate_tokens_per_s": agg, "per_user_tokens_per_s": per_user}


def test_baseline_found_behind_a_label_prefix():
    # bench_load --label-prefix "skip gate" names the MTP-1 run "skip gate mtp1"
    series = {"skip gate none": [], "skip gate mtp1": [], "skip gate scheduled": []}
    assert pl.find_baseline(series, "mtp1") == "skip gate mtp1"
    assert pl.find_baseline({"mtp1": [], "x mtp1": []}, "mtp1") == "mtp1"  # exact name first
    assert pl.find_baseline({"a mtp1": [], "b mtp1": []}, "mtp1") is None  # ambiguous
    assert pl.find_baseline({"plain": []}, "mtp1") is None
    assert pl.find_baseline({"notmtp1": []}, "mtp1") is None               # whole words only


def test_matched_table_interpolates_in_log_throughput():
    series = {
        "p mtp1": [row(1, 100.0, 100.0), row(4, 400.0, 90.0)],
        # at 200 tok/s: halfway in log between 100 and 400, so per-user 150 - 0.5 * 100 = 100
        "p scheduled": [row(1, 100.0, 150.0), row(4, 400.0, 50.0)],
    }
    table = pl.matched_table(series, "mtp1").splitlines()
    assert table[0].startswith("| run | at C of p mtp1 |")
    assert "| p scheduled | 1 | 100 | 100.0 | 150.0 | +50% |" in table
    assert "| p scheduled | 4 | 400 | 90.0 | 50.0 | -44% |" in table
    assert pl.per_user_at(series["p scheduled"], 200.0) == pytest.approx(100.0)
    assert pl.per_user_at(series["p scheduled"], 500.0) is None


def test_no_baseline_says_so():
    assert "no run labelled 'mtp1'" in pl.matched_table({"plain": [row(1, 1.0, 1.0)]}, "mtp1")
