"""tools/benchmark.py prints its table (tiny settings; the figures themselves are not asserted)."""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_prints_training_inference_and_savedmodel_rates():
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--gin_file=gin_configs/demo.gin",
         "--gin_file=gin_configs/smoke.gin", "--steps=1", "--repeats=1", "--warmup=1",
         "--inference_batch=2"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"^off\s+train\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), out
    assert re.search(r"^on\s+train\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), out
    assert "XLA on / off, train: training x" in out
    assert re.search(r"^serving_default bytes\s+[\d.]+\s+[\d.]+$", out, re.M), out
    assert re.search(r"^serve_image_tensor\s+[\d.]+\s+[\d.]+$", out, re.M), out


def test_benchmark_times_every_stage_of_a_staged_method():
    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--gin_file=gin_configs/demo_perturbgan.gin",
         "--gin_file=gin_configs/smoke.gin", "--steps=1", "--repeats=1", "--warmup=1",
         "--inference_batch=2", "--xla=false", "--nosavedmodel"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO})
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("generator", "encoder", "segmenter"):
        assert re.search(rf"^off\s+{stage}\s+[\d.]+\s+[\d.]+\s+[\d.]+$", result.stdout, re.M), result.stdout
