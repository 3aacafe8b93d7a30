"""Memory of the whole process tree on large objects: bounded by the budget, not by the object.

The CLI in a fresh process, sampled with bench.measure's TreeMemorySampler (RSS summed over the
parent and its encoders, as the targets count it). The full-size rows (a 1 GB object, four
210 MB objects, through the local stack) are in ``make bench`` (bench/large.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure import TreeMemorySampler
from bench.objects import build_deflate_bomb, build_multiframe
from tests.helpers.paths import ROOT

LIMIT_MB = 300


def _peak(study: Path, out: Path, *options: str) -> tuple[float, dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "compress", str(study), "-o", str(out), "--workers", "2", *options],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    with TreeMemorySampler(proc.pid, interval=0.02) as mem:
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return mem.peak_rss_kb / 1024, json.loads(out.with_suffix(".result.json").read_text())


@pytest.fixture(scope="module")
def objects(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("large")
    return {
        "vol400": build_multiframe(root / "vol400" / "vol.dcm", corpus, frames=400).parent,  # 210 MB
        "bomb": build_deflate_bomb(root / "bomb" / "bomb.dcm", corpus, frames=2000).parent,  # 1 MB -> 1 GB
    }


def test_a_210_mb_multiframe_object_stays_within_300_mb(objects: dict[str, Path], tmp_path: Path) -> None:
    peak, record = _peak(objects["vol400"], tmp_path / "out.zip")
    (f,) = record["files"]
    assert f["action"] == "compressed" and f["frames"] == 400, f
    assert peak <= LIMIT_MB, f"peak RSS {peak:.0f} MB"
    assert record["timings"]["memoryBudget"]["inFlightBytes"] <= 128 * 1024 * 1024
    print(f"\n400-frame 210 MB object, 2 workers: peak RSS {peak:.0f} MB")


def test_a_deflate_bomb_stays_within_300_mb_with_a_clean_result(objects: dict[str, Path], tmp_path: Path) -> None:
    assert (objects["bomb"] / "bomb.dcm").stat().st_size < 2_000_000
    peak, record = _peak(objects["bomb"], tmp_path / "out.zip")
    (f,) = record["files"]
    assert f["action"] == "compressed" and f["frames"] == 2000 and f["pixelBytesIn"] == 2000 * 512 * 512 * 2, f
    assert peak <= LIMIT_MB, f"peak RSS {peak:.0f} MB"
    print(f"\ndeflate bomb (1 MB -> 1 GB), 2 workers: peak RSS {peak:.0f} MB")


def test_memory_does_not_grow_with_the_object(objects: dict[str, Path], corpus: Path, tmp_path: Path) -> None:
    small = build_multiframe(tmp_path / "vol100" / "vol.dcm", corpus, frames=100).parent
    peak_small, _ = _peak(small, tmp_path / "small.zip", "--lossless")
    peak_big, _ = _peak(objects["vol400"], tmp_path / "big.zip", "--lossless")
    assert peak_big <= peak_small * 1.3 + 20, (peak_small, peak_big)  # 4x the object, not 4x the memory
