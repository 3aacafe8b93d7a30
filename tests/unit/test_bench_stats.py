"""The benchmark's one statistic (bench/stats.py): the median of the per-round ratios, and the
report's ratios, the Lambda model's speedup included, taken with it (never the best round, never
a ratio between two medians)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest

import bench.__main__ as bench_main
from bench.cores import CoreSplit
from bench.stats import median_of_ratios

# Three rounds where the three candidate statistics differ: per-round ratios 2.0, 1.6, 1.5.
W1 = [10.0, 8.0, 9.0]
W2 = [5.0, 5.0, 6.0]
MEDIAN_OF_RATIOS, RATIO_OF_MEDIANS, BEST_ROUND = 1.6, 9.0 / 5.0, 2.0


def test_median_of_per_round_ratios():
    r = median_of_ratios(W1, W2)
    assert r.rounds == (2.0, 1.6, 1.5)
    assert r.value == pytest.approx(MEDIAN_OF_RATIOS)
    assert r.value != pytest.approx(RATIO_OF_MEDIANS) and r.value != pytest.approx(BEST_ROUND)
    assert not r.single
    assert r.listed() == "1.50, 1.60, 2.00"
    assert median_of_ratios([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]).value == pytest.approx(2.5)  # even count


def test_one_measurement_and_a_row_run_once():
    once = median_of_ratios([3.0], [2.0])
    assert once.single and once.value == pytest.approx(1.5)
    against_rounds = median_of_ratios([4.0], [1.0, 2.0, 4.0])  # a row run once against every round of another
    assert not against_rounds.single and against_rounds.value == pytest.approx(2.0)
    with pytest.raises(ValueError):
        median_of_ratios([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        median_of_ratios([], [])


def _record(seconds: float) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "all_seconds": [seconds],
        "files": 4,
        "bytes_in": 1e8,
        "bytes_out": 1e6,
        "pixel_ratio": 100.0,
        "pixel_bytes_in": 1e8,
        "pixel_bytes_out": 1e6,
        "peak_pss_mb": 100.0,
        "peak_rss_mb": 200.0,
        "peak_main_mb": 50.0,
        "peak_encoders_mb": 50.0,
        "peak_at_s": 1.0,
        "worker_cpu_s": 1.5 * seconds,
        "server_cpu_s": 0.1 * seconds,
        "bench_cpu_s": 0.01,
        "client_cpu_s": 0.1,
        "floor_interventions": 0,
        "min_range_psnr": 40.0,
        "one_process_s": 2.0 * seconds,
        "two_processes_s": seconds,
    }


def fake_results(*, every_round: bool = False) -> dict[str, Any]:
    """Results as ``python -m bench`` saves them (each row's median-time round plus every round's
    seconds; ``every_round``: every round's record too, as runs from now on keep), with 3 rounds of
    every paired row and the 1- and 2-worker rate-100 rows above."""
    rounds = {
        key: [7.0, 7.5, 8.0]
        for key in (
            "dcmjs-rate100",
            "dcmjs-lossless",
            "codec-rate100",
            "codec-lossless",
            "htj2k-codec-rate100",
            "htj2k-codec-lossless",
            "pipe-lossless-w1",
            "pipe-lossless-w2",
            "pipe-htj2k-rate100",
            "pipe-htj2k-lossless",
            "pipe-rate100-floor-w2",
            "scaling",
            "io-floor",
        )
    }
    rounds |= {"pipe-rate100-w1": W1, "pipe-rate100-w2": W2, "pipe-nested": [12.0]}
    res: dict[str, Any] = {
        key: {**_record(sorted(v)[(len(v) - 1) // 2]), "all_seconds": v} for key, v in rounds.items()
    }
    res["rounds"] = rounds
    if every_round:
        res["runs"] = {key: [_record(x) for x in v] for key, v in rounds.items()}
    res["import_seconds"], res["import_seconds_traced"] = 0.2, 0.3
    return res


def test_lambda_model_speedup_is_the_median_of_per_round_ratios():
    res = fake_results()
    t1, speedup = bench_main.lambda_inputs(res, 2, 399)
    assert t1 == pytest.approx(9.0)  # the 1-worker median round, 399 of 399 files
    assert speedup.value == pytest.approx(MEDIAN_OF_RATIOS)
    assert speedup.value != pytest.approx(BEST_ROUND) and speedup.value != pytest.approx(RATIO_OF_MEDIANS)
    # The same statistic as the targets table's 2 workers / 1 worker.
    assert speedup == bench_main.paired(res, "pipe-rate100-w1", "pipe-rate100-w2")


def _render(res: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(bench_main, "machine", lambda: "test machine")
    study = tmp_path / "ct-4"
    study.mkdir(parents=True)
    for i in range(4):
        (study / f"DCT{i:04d}.dcm").write_bytes(b"\0" * 1000)
    split = CoreSplit(frozenset({0, 1}), frozenset())
    return bench_main.render(res, study, tmp_path / "nested", None, split, argparse.Namespace(quick=False, rounds=3))


def test_rendered_lambda_model_uses_the_median_of_per_round_ratios(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The report itself: its model's speedup and its 2-worker row are the median's, not the best round's."""
    report = _render(fake_results(), tmp_path, monkeypatch)
    t1 = 9.0 * 399 / 4
    assert f"2-encoder speedup ({MEDIAN_OF_RATIOS:.2f}x, median of the per-round ratios: 1.50, 1.60, 2.00)" in report
    assert f"| 3,538 | 2.0 | 2 | {t1 / MEDIAN_OF_RATIOS:.1f} |" in report
    assert f"{t1 / BEST_ROUND:.1f} |" not in report and f"{t1 / RATIO_OF_MEDIANS:.1f} |" not in report
    assert "| pipeline 2 encoders / 1 encoder, rate 100 | 1.600 | >= 1.60 | met | 1.50, 1.60, 2.00 |" in report
    assert "Every ratio in this report is the median of the per-round ratios" in " ".join(
        report.split("\n\n")[1].split()
    )
    assert not re.search(r"ratios are between medians", report)


def test_rendered_ratios_of_other_quantities_per_round_when_the_results_keep_every_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Kept for the median round only, a CPU-based ceiling is marked as such; with every round's
    record, it is the median of the per-round ratios like the rest."""
    median_only = _render(fake_results(), tmp_path / "a", monkeypatch)
    assert "the CPU of the run's median round (the results keep no other round's CPU)" in median_only
    assert "ZIP size with / without: 1.00 (one measurement" in median_only
    every = _render(fake_results(every_round=True), tmp_path / "b", monkeypatch)
    assert "each round's reference time against that round's run's CPU." in every
    assert "ZIP size with / without: 1.00 (median of the per-round ratios: 1.00, 1.00, 1.00)" in every
    # 2 workers / 1 worker at the run's CPU: per round W1[r] / ((1.5 + 0.1) x W2[r] + 0.01) / 2 cores
    ceilings = sorted(w1 / ((1.6 * w2 + 0.01) / 2) for w1, w2 in zip(W1, W2, strict=True))
    assert f"| pipeline 2 encoders / 1 encoder, rate 100 | 1.60 | >= 1.60 | {ceilings[1]:.2f} |" in every
