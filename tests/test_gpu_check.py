"""benchmarks/gpu_check runs on the CPU with tiny sizes, so it is known to work before a GPU appears."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_with_small_sizes():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check"), "--small", "--device", "cpu"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)
    assert res["small"] and res["device"] == "cpu" and res["name"].startswith("cpu")
    for part in ("beam_search", "image_path", "train_geoclip"):
        assert "error" not in res[part], res[part]
    assert res["beam_search"]["batched_qps"] > 0 and res["beam_search"]["single_query_ms"] > 0
    for dtype in ("float32", "bfloat16"):
        for b in (1, 8, 64):
            assert res["image_path"][f"{dtype}_batch{b}_photos_per_s"] > 0
    assert res["train_geoclip"]["steps_per_s"] > 0 and res["train_geoclip"]["steps"] == 4
