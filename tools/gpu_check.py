"""Checks tfseg on a machine with a GPU, in about ten minutes (estimated), and prints one table.

    python tools/gpu_check.py [--out=gpu_check] [--train_minutes=5] [--workloads=redo_128,...]
    python tools/gpu_check.py --plan        # print the commands it would run, run nothing (any machine)

It runs, one after the other (each in a process of its own, so one failure does not hide the rest):
1. the GPU-relevant tests (`GPU_TESTS`: mixed precision, the distribution strategies, XLA against
   eager, optimizer slots across replicas, `jit_compile=auto`), on one process, GPU memory grown as
   needed;
2. `tools/benchmark.py --paper_shapes` on `--workloads` with XLA off and on, then again with mixed
   precision (bfloat16 on GPUs of compute capability 8.0 and later, else float16 with loss
   scaling), XLA off;
3. a ReDO training at 128 px on the embedded data (`gin_configs/demo.gin`) for `--train_minutes`,
   stopped with Ctrl-C's signal (tfseg writes a checkpoint at a whole step), then scored on the
   embedded test split by `tfseg.evaluate`.

Nothing here has run on a GPU: no GPU with TensorFlow reaches the project's machines. Without a
GPU the script says so and exits with status 2 before anything is run (its tests check that path).
Exit status: 0 when every check passed, 1 when one failed (its row says which, its log is in --out),
2 without a GPU.
"""
import os
import re
import signal
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Tests whose code paths differ on a GPU: device placement, XLA, 16-bit compute, replicas.
GPU_TESTS = ["tests/test_precision.py", "tests/test_distributed.py", "tests/test_optimizers.py",
             "tests/test_stylegan2.py::test_generator_under_xla_matches_eager",
             "tests/test_training.py::test_bad_jit_compile_value_is_rejected"]

#: The paper-shape workloads with a figure of the authors' code beside them (README, "At the papers'
#: shapes"): ReDO's iteration with the reference's work, and PerturbGAN's at 64 px.
DEFAULT_WORKLOADS = ["redo_128_reference_work", "perturbgan_64"]


#: Seconds a stopped training may take to finish its step and checkpoint before it is killed.
STOP_GRACE_SECONDS = 300


def define_flags():
    """Defines the flags (only when run as a script, so tests can import this module)."""
    flags.DEFINE_string("out", "gpu_check", "Folder for the logs and the training run.")
    flags.DEFINE_float("train_minutes", 5.0, "Minutes the ReDO training at 128 px runs before it is stopped.")
    flags.DEFINE_list("workloads", DEFAULT_WORKLOADS, "tools/benchmark.py --paper_shapes workloads to time.")
    flags.DEFINE_integer("steps", 10, "Timed steps per benchmark figure (after 2 untimed).")
    flags.DEFINE_bool("plan", False, "Print the commands the check would run, and run none.")


def gpus():
    """`[(name, compute capability (major, minor) or None)]` of the GPUs TensorFlow sees."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        found.append((details.get("device_name", device.name), details.get("compute_capability")))
    return found


def mixed_precision_policy(compute_capability):
    """bfloat16 where the GPU computes it natively (compute capability 8.0 and later), else float16."""
    return "mixed_bfloat16" if compute_capability and tuple(compute_capability) >= (8, 0) else "mixed_float16"


def plan(out, compute_capability, workloads, steps, train_minutes):
    """`[(check name, argv)]`, in the order they run. The training's argv is stopped after
    `train_minutes` (see `run_check`)."""
    py = sys.executable
    bench = [py, os.path.join(REPO, "tools", "benchmark.py"), "--paper_shapes", f"--workloads={','.join(workloads)}",
             f"--steps={steps}", "--warmup=2", "--repeats=1"]
    policy = mixed_precision_policy(compute_capability)
    run_dir = os.path.join(out, "redo_128")
    return [
        ("tests", [py, "-m", "pytest", "-n0", "-q", *GPU_TESTS]),
        ("benchmark", [*bench, "--xla=false,true"]),
        (f"benchmark {policy}", [*bench, "--xla=false", f"--gin_bindings=tfseg.training.TrainConfig.precision='{policy}'"]),
        (f"ReDO 128 px, {train_minutes:g} min", [py, "-m", "tfseg.train", f"--gin_file={REPO}/gin_configs/demo.gin",
                                                 f"--model_dir={run_dir}",
                                                 "--gin_bindings=tfseg.training.TrainConfig.resolution=128",
                                                 "--gin_bindings=tfseg.training.TrainConfig.num_steps=1000000"]),
        ("evaluate", [py, "-m", "tfseg.evaluate", f"--model_dir={run_dir}", "--split=test"]),
    ]


def run_check(argv, log_path, stop_after=None):
    """Runs `argv` from the repository, its output to `log_path`; after `stop_after` seconds sends it
    SIGINT (Ctrl-C: tfseg stops at a whole step with a checkpoint).

    Returns:
        (exit code, output, seconds, whether it was stopped).
    """
    env = {**os.environ, "TF_FORCE_GPU_ALLOW_GROWTH": "true", "PYTHONPATH": REPO}
    start = time.monotonic()
    with open(log_path, "w+") as log:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        stopped = False
        try:
            process.wait(timeout=stop_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            stopped = True
            try:  # tfseg finishes the step it is in and writes a checkpoint: seconds, not minutes
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()  # a run that ignores Ctrl-C fails its row rather than hang the check
                process.wait()
        log.seek(0)
        return process.returncode, log.read(), time.monotonic() - start, stopped


def summarize(name, code, output, stopped=False):
    """(passed, one-line detail) of a check's output."""
    if name == "tests":
        summary = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|errors?)\b.*? in [\d.]+s\b.*?)\s*=*$", output, re.M)
        return code == 0, (summary[-1] if summary else f"exit code {code}")
    if name.startswith("benchmark"):
        rows = re.findall(r"^(\S+)\s+(on|off)\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+$", output, re.M)
        detail = "; ".join(f"{w} XLA {x} {s} {float(sec):.3g} s ({float(rate):.0f} img/s)"
                           for w, x, s, sec, rate in rows)
        return code == 0 and bool(rows), detail or f"exit code {code}, no table"
    if name.startswith("ReDO"):
        steps = re.findall(r"^step (\d+)/\d+ \|.*\| ([\d.]+) img/s", output, re.M)
        ok = code == (128 + signal.SIGINT if stopped else 0) and "Traceback" not in output and bool(steps)
        return ok, (f"{steps[-1][0]} steps, {steps[-1][1]} img/s" if steps else f"exit code {code}, no step")
    if name == "evaluate":
        row = re.search(r"^fixed polarity\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", output, re.M)
        return code == 0 and bool(row), (f"fg IoU {row.group(1)}, mIoU {row.group(2)}" if row else f"exit code {code}")
    raise ValueError(f"unknown check {name!r}")


def format_table(rows):
    """`[(check, passed, seconds, detail)]` -> the table the script prints."""
    lines = [f"{'check':<30}{'result':<8}{'minutes':>8}  detail"]
    lines += [f"{name:<30}{'ok' if passed else 'FAILED':<8}{seconds / 60:>8.1f}  {detail}"
              for name, passed, seconds, detail in rows]
    return "\n".join(lines)


def main(argv):
    del argv
    from tfseg import console  # pylint: disable=import-outside-toplevel
    console.quiet_tensorflow(FLAGS.verbosity)  # before TensorFlow's import: its start-up lines
    import benchmark  # tools/, beside this file  pylint: disable=import-outside-toplevel
    try:
        benchmark.chosen_workloads(FLAGS.workloads)
    except ValueError as err:  # before any check runs, not after the tests' minutes
        print(f"error: {err}", file=sys.stderr)
        return 2
    found = gpus()
    capability = found[0][1] if found else None
    if FLAGS.plan:
        checks = plan(os.path.abspath(FLAGS.out), capability, FLAGS.workloads, FLAGS.steps, FLAGS.train_minutes)
        print("\n".join(f"{check}: {' '.join(argv)}" for check, argv in checks))
        return 0
    if not found:
        print("no GPU: TensorFlow sees none (tf.config.list_physical_devices('GPU') is empty), so nothing "
              "was checked. On a GPU machine install with `pip install -e \".[gpu,test]\"` and check that "
              "`nvidia-smi` lists the GPU.")
        return 2
    print(f"GPU: {', '.join(n for n, _ in found)} (compute capability {capability}); mixed precision: "
          f"{mixed_precision_policy(capability)}", flush=True)
    checks = plan(os.path.abspath(FLAGS.out), capability, FLAGS.workloads, FLAGS.steps, FLAGS.train_minutes)
    os.makedirs(FLAGS.out, exist_ok=True)
    rows = []
    for check, argv in checks:
        print(f"running: {check} ...", flush=True)
        stop_after = FLAGS.train_minutes * 60 if check.startswith("ReDO") else None
        log = os.path.join(FLAGS.out, re.sub(r"\W+", "_", check).strip("_") + ".log")
        code, output, seconds, stopped = run_check(argv, log, stop_after)
        passed, detail = summarize(check, code, output, stopped)
        rows.append((check, passed, seconds, detail + ("" if passed else f" (log: {log})")))
    print(format_table(rows))
    return 0 if all(passed for _, passed, _, _ in rows) else 1


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
