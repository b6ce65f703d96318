"""tools/gpu_check.py: its no-GPU path, the commands it plans, and how it reads each check's output.

No GPU reaches these machines, so the checks themselves never ran; what can be tested here is that
the script stops cleanly without one, that every planned command is one the tools accept, and that
its table reads the outputs the real formatters write.
"""
import io
import os
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

from tfseg.evaluation import metrics
from tfseg.progress import TrainingProgress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import benchmark  # noqa: E402  pylint: disable=wrong-import-position
import gpu_check  # noqa: E402  pylint: disable=wrong-import-position

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


def _script(*args):
    """Runs the script as from a user's shell (TensorFlow's log level unset)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "tools/gpu_check.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.mark.slow
@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU: the check would run")
def test_without_a_gpu_it_says_so_and_exits_2_before_running_anything(tmp_path):
    out = tmp_path / "check"
    result = _script(f"--out={out}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout.startswith("no GPU: TensorFlow sees none") and "Traceback" not in result.stderr
    assert not result.stderr.strip(), result.stderr  # TensorFlow's start-up lines are silenced
    assert not out.exists()  # nothing was run, nothing written


@pytest.mark.slow
def test_a_wrong_workload_is_refused_before_any_check_naming_the_workloads(tmp_path):
    result = _script("--workloads=redo_64", f"--out={tmp_path / 'check'}")
    assert result.returncode == 2
    assert "unknown workload(s) redo_64" in result.stderr and "redo_128_reference_work" in result.stderr
    assert not (tmp_path / "check").exists()


def test_the_plan_times_xla_off_and_on_then_16_bit_and_trains_redo_at_128_px(tmp_path):
    checks = gpu_check.plan(str(tmp_path), (7, 5), ["redo_128"], 10, 5)
    names = [name for name, _ in checks]
    assert names == ["tests", "benchmark", "benchmark mixed_float16", "ReDO 128 px, 5 min", "evaluate"]
    argvs = dict(checks)
    assert "--xla=false,true" in argvs["benchmark"]
    assert "--gin_bindings=tfseg.training.TrainConfig.precision='mixed_float16'" in argvs["benchmark mixed_float16"]
    assert gpu_check.mixed_precision_policy((8, 0)) == "mixed_bfloat16"  # Ampere computes bfloat16
    assert gpu_check.mixed_precision_policy(None) == "mixed_float16"
    for test in gpu_check.GPU_TESTS:  # every planned test exists
        path, _, name = test.partition("::")
        with open(os.path.join(REPO, path)) as f:
            assert not name or f"def {name}(" in f.read(), test


def test_the_planned_training_resolves_at_128_px(tmp_path):
    _, argv = gpu_check.plan(str(tmp_path), None, ["redo_128"], 10, 5)[3]
    result = subprocess.run([*argv, "--dry_run"], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TrainConfig.resolution = 128" in result.stdout
    assert "#   train: steps 1-1000000" in result.stdout


@pytest.mark.slow
def test_a_run_past_its_minutes_is_stopped_with_ctrl_c_and_killed_if_it_ignores_it(tmp_path, monkeypatch):
    waits = "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    raise SystemExit(130)"
    code, _, seconds, stopped = gpu_check.run_check([sys.executable, "-c", waits], str(tmp_path / "log"), 1.0)
    assert stopped and code == 128 + signal.SIGINT and seconds < 30
    monkeypatch.setattr(gpu_check, "STOP_GRACE_SECONDS", 1.0)
    deaf = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    code, _, seconds, stopped = gpu_check.run_check([sys.executable, "-c", deaf], str(tmp_path / "log"), 1.0)
    assert stopped and code == -signal.SIGKILL and seconds < 30  # killed, not waited for
    code, output, _, stopped = gpu_check.run_check([sys.executable, "-c", "print('done')"], str(tmp_path / "log"), 30)
    assert not stopped and code == 0 and output == "done\n"


def test_each_row_reads_what_the_real_tools_print():
    table = benchmark.format_paper_table({("redo_128", False): ({"train": (0.25, 100.0)}, 900.0, 3 * 2**30, ""),
                                          ("redo_128", True): ({"train": (0.125, 200.0)}, 950.0, 3 * 2**30, "")})
    passed, detail = gpu_check.summarize("benchmark", 0, "paper shapes: ...\n" + table)
    assert passed and detail == "redo_128 XLA off train 0.25 s (100 img/s); redo_128 XLA on train 0.125 s (200 img/s)"
    assert not gpu_check.summarize("benchmark", 1, "error: workload failed")[0]

    stream = io.StringIO()
    progress = TrainingProgress(1000000, 0, 64, stream=stream)
    progress.first_step_done(1)
    progress.update(250, {"loss/discriminator": 1.0})
    log = stream.getvalue() + "stopped by SIGINT at step 250: checkpoint written\n"
    passed, detail = gpu_check.summarize("ReDO 128 px, 5 min", 130, log, stopped=True)
    assert passed and detail.startswith("250 steps, ") and detail.endswith(" img/s")
    assert not gpu_check.summarize("ReDO 128 px, 5 min", 1, log + "Traceback (most recent call last):", stopped=True)[0]

    scores = {"threshold": 0.5, "num_images": 8}
    for prefix in ("", "dataset_perm_", "best_perm_"):
        scores.update({f"{prefix}fg_iou": 0.61, f"{prefix}miou": 0.7, f"{prefix}accuracy": 0.8})
    passed, detail = gpu_check.summarize("evaluate", 0, metrics.format_table(scores))
    assert passed and detail == "fg IoU 0.6100, mIoU 0.7000"

    passed, detail = gpu_check.summarize("tests", 0, "....\n12 passed, 1 skipped in 95.20s (0:01:35)\n")
    assert passed and detail == "12 passed, 1 skipped in 95.20s (0:01:35)"
    passed, detail = gpu_check.summarize("tests", 1, "F...\n=== 1 failed, 11 passed in 95.20s (0:01:35) ===\n")
    assert not passed and detail == "1 failed, 11 passed in 95.20s (0:01:35)"
    assert gpu_check.format_table([("tests", True, 95.2, detail), ("evaluate", False, 6.0, "exit code 1")]).splitlines()[1:] == [
        f"{'tests':<30}{'ok':<8}{1.6:>8.1f}  {detail}", f"{'evaluate':<30}{'FAILED':<8}{0.1:>8.1f}  exit code 1"]


@pytest.mark.slow
def test_plan_prints_every_command_and_runs_none_on_any_machine(tmp_path):
    result = _script("--plan", "--workloads=redo_128", "--train_minutes=2", f"--out={tmp_path / 'check'}")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    names = [line.split(":")[0] for line in lines]
    assert names[:2] + names[3:] == ["tests", "benchmark", "ReDO 128 px, 2 min", "evaluate"]
    assert names[2] in ("benchmark mixed_float16", "benchmark mixed_bfloat16")
    assert all("--workloads=redo_128 " in line for line in lines[1:3])
    assert not (tmp_path / "check").exists()
