"""Run directories as `tfseg.train --smoke` leaves them, written without training.

Tests that need a run's files (config.gin, latest and best checkpoints) rather than its training use
this: the weights are the initial ones, and skipping the steps saves their tracing (most of a
minute on a busy 2-core machine).
"""
import os
import signal
import subprocess
import sys

from tfseg import config
from tfseg.training import checkpointing, loading, train_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: One thread and oneDNN off: runs compared for equal weights compute in one order.
REPRODUCIBLE_ENV = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_ENABLE_ONEDNN_OPTS": "0"}


def train_in_subprocess(args, model_dir, interrupt_after=None, timeout=600):
    """`python -m tfseg.train args --model_dir=model_dir` in a subprocess (`REPRODUCIBLE_ENV`), Ctrl-C'd
    (SIGINT) once step `interrupt_after` is logged. Returns (exit code, stdout, stderr)."""
    process = subprocess.Popen([sys.executable, "-m", "tfseg.train", *args, f"--model_dir={model_dir}"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=REPRODUCIBLE_ENV)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if interrupt_after is not None and line.startswith(f"step {interrupt_after}/"):
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=timeout)
    return process.returncode, "".join(lines) + out, err


def write_untrained_run(model_dir, gin_name="demo.gin", steps=(2,), foreground_region=1, bindings=()):
    """Writes config.gin, a latest checkpoint at each of `steps` and a best one at the last.

    Args:
        model_dir: an existing, empty folder.
        gin_name: a shipped config, shrunk by smoke.gin as `--smoke` does.
        steps: the step numbers of the latest checkpoints, in order.
        foreground_region: stored in the checkpoints; 1 (not the default) so a lost region shows.
        bindings: gin bindings after the files, as --gin_bindings.
    """
    config.parse([os.path.join(REPO, "gin_configs", gin_name), config.SMOKE_CONFIG], list(bindings))
    config.save_config(model_dir)
    cfg = train_config.TrainConfig()
    model = loading.build_method(cfg)
    model.build_for_training(cfg.batch_size)
    model.foreground_region.assign(foreground_region)
    state = checkpointing.RunState()
    latest, best = checkpointing.managers(checkpointing.make_checkpoint(model, state), model_dir)
    for step in steps:
        state.step.assign(step)
        latest.save(checkpoint_number=step)
    best.save(checkpoint_number=steps[-1])
