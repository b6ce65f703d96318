"""One run per model_dir: the lock, half-written checkpoint folders, and a config that does not fit.

* The lock (`model_dir/.tfseg.lock`, JSON with pid, host and start time) is taken before anything is
  written. A second run on the same folder is refused, naming the holder; a lock left by a process that
  no longer exists on this host is taken over, and says so.
* `ckpt-*_temp*` folders are what a full disk or a kill leaves of a checkpoint being written; they are
  never restorable and are removed when a run starts.
* A run folder holds the checkpoints of one config. Resuming it with another network, resolution or
  data size would die on a shape mismatch (or silently mix two runs), so a config that differs in
  anything but the run length and the logging cadence is refused, listing the differences.
"""
import datetime
import glob
import json
import os
import shutil
import socket

import gin

# RunDirError lives in the leaf module tfseg.errors; the name stays importable from here.
from tfseg.errors import RunDirError  # noqa: F401

# -- the run folder's file names: every module that reads or writes one takes it from here ----------
#: The run's own bindings (`tfseg.config.save_config` writes it; tools writing a run folder use it).
CONFIG_FILE = "config.gin"
#: Every value the run used, defaults included (informational; nothing reads it back).
OPERATIVE_CONFIG_FILE = "operative_config.gin"
LOCK_FILE = ".tfseg.lock"
#: Folders of the latest checkpoints and of the validation-best one.
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
#: TensorBoard's folders: training scalars and grids, validation scores.
TRAIN_LOGS = "train"
VALIDATION_LOGS = "validation"
#: Which region is the object, by what rule, why (written whenever the region is chosen).
FOREGROUND_FILE = "foreground.json"


def eval_files(split):
    """`(scores .json, image grid .png)` file names of a split's evaluation."""
    return f"eval_{split}.json", f"eval_{split}.png"

#: Bindings that may change between a run and its resumption (length and cadence, not the model).
RESUMABLE_CHANGES = ("num_steps", "stage_steps", "log_every", "eval_every", "checkpoint_every",
                     "eval_examples", "eval_batch_size", "keep_checkpoints", "max_restarts",
                     "collapse_before_step", "image_dir", "mask_dir", "lmdb_dir", "file_pattern", "data_dir")

#: Configurables whose every binding may change on resumption: where the run trains (a cluster's
#: checkpoint resumes on one machine, and the other way round).
RESUMABLE_CONFIGURABLES = ("make_strategy",)

#: The class attribute by which a configurable (a method's settings) names the parameters this check
#: leaves to the checkpoint restore: they change the variables' layout, so a value that does not fit
#: the run is refused there (`checkpointing.CheckpointMismatch`, which says the fix). Checked here, a
#: run made before such a parameter existed could never be resumed: its config.gin lacks it, and
#: binding the value it ran with would count as a change.
CHECKED_AT_RESTORE = "CHECKED_AT_RESTORE"


def _checked_at_restore(selector):
    """The parameters of `selector`'s configurable that the checkpoint restore checks instead."""
    try:
        configurable = gin.get_configurable(selector)
    except ValueError:  # not registered in this process: nothing to leave to the restore
        return ()
    return tuple(getattr(configurable, CHECKED_AT_RESTORE, ()))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class Lock:
    """Context manager holding `model_dir`'s lock for this process."""

    def __init__(self, model_dir, note=print):
        self.path = os.path.join(model_dir, LOCK_FILE)
        self.note = note
        self.held = False

    def __enter__(self):
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now().isoformat(timespec="seconds")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self.held = True
            return self
        raise RunDirError(f"could not take the lock {self.path}; another run keeps taking it")

    def _handle_existing(self):
        try:
            with open(self.path) as f:
                holder = json.load(f)
        except (OSError, ValueError):
            holder = {}
        pid, host = holder.get("pid"), holder.get("host")
        folder = os.path.dirname(self.path) or "."
        if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
            self.note(f"taking over the lock of {folder}: process {pid} that held it (since "
                      f"{holder.get('started', '?')}) no longer exists")
            os.remove(self.path)
            return
        if not holder:
            raise RunDirError(f"model_dir {folder} is locked by an unreadable {LOCK_FILE}; if no run uses "
                              f"it, delete {self.path}")
        raise RunDirError(f"model_dir {folder} is in use by process {pid} on {host} since "
                          f"{holder.get('started', '?')}: wait for that run to end, or pass another "
                          f"--model_dir. (If that process is gone, delete {self.path}.)")

    def __exit__(self, *exc):
        if self.held:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            self.held = False
        return False


def remove_partial_checkpoints(model_dir):
    """Deletes half-written `ckpt-*_temp*` folders under `model_dir`; returns their paths."""
    removed = []
    for pattern in (f"{CHECKPOINTS_DIR}/*_temp*", f"{BEST_DIR}/*_temp*"):
        for path in glob.glob(os.path.join(model_dir, pattern)):
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
            removed.append(path)
    return removed


def _bindings(config_text):
    """`{selector.parameter: value text}` of a gin config string (one binding per logical line)."""
    out, key = {}, None
    for line in config_text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "import ", "from ", "include ")):
            continue
        if "=" in line and not line[0].isspace():
            key, value = line.split("=", 1)
            key = key.strip()
            out[key] = value.strip()
        elif key is not None:
            out[key] += " " + line.strip()
    return out


def config_differences(saved_text, new_text):
    """Bindings (other than `RESUMABLE_CHANGES` and `RESUMABLE_CONFIGURABLES`) differing: `[(key, saved, new)]`."""
    saved, new = _bindings(saved_text), _bindings(new_text)
    diffs = []
    for key in sorted(set(saved) | set(new)):
        selector, _, parameter = key.rpartition(".")
        if (parameter in RESUMABLE_CHANGES + _checked_at_restore(selector)
                or selector.rpartition(".")[2] in RESUMABLE_CONFIGURABLES):
            continue
        if saved.get(key) != new.get(key):
            diffs.append((key, saved.get(key, "(unset)"), new.get(key, "(unset)")))
    return diffs


def check_config_fits(model_dir, new_text, config_file=CONFIG_FILE):
    """Raises RunDirError if `model_dir` holds checkpoints of a config that differs from `new_text`."""
    path = os.path.join(model_dir, config_file)
    has_checkpoints = bool(glob.glob(os.path.join(model_dir, CHECKPOINTS_DIR, "ckpt-*.index")))
    if not (os.path.exists(path) and has_checkpoints):
        return
    with open(path) as f:
        saved = f.read()
    diffs = config_differences(saved, new_text)
    if not diffs:
        return
    shown = "\n".join(f"    {key}: {old} -> {new}" for key, old, new in diffs[:8])
    more = f"\n    ... and {len(diffs) - 8} more" if len(diffs) > 8 else ""
    raise RunDirError(f"model_dir {model_dir} holds a run of another config ({len(diffs)} binding(s) differ):\n"
                      f"{shown}{more}\nIts checkpoints cannot be resumed with this config. Pass another "
                      "--model_dir (or delete this one to start over).")

