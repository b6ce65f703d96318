"""The custom training loop shared by every method: steps, stages, resuming, restarts.

What the loop does between steps (progress, validation and the best checkpoint, collapse
detection, checkpoints) are duties, one class each in `tfseg.training.duties`; one step is
`tfseg.training.train_step`; the run's knobs are `tfseg.training.train_config.TrainConfig`. The
loop knows no method: all it needs of one is the contract of `tfseg.methods.base.Method`.
"""
import os
import sys
import tempfile

import gin
import tensorflow as tf

from tfseg.data import decode, pipeline
from tfseg.evaluation import metrics
from tfseg.evaluation.split_evaluation import run_split_evaluation
from tfseg.methods.base import phases_due
from tfseg import progress
from tfseg.training import checkpointing, nonfinite, precision, run_dir, signals
from tfseg.training import duties as duties_lib
from tfseg.training import schedule as schedule_lib
from tfseg.training import strategy as strategy_lib
from tfseg.training.loading import build_method, restore_float32
from tfseg.training.train_config import TrainConfig
from tfseg.training.train_step import make_train_step


def _image_only(example):
    return {"image": example["image"]}


def _training_dataset(config, strategy, skip_batches=0):
    """The distributed training stream, seeded by the run's seed, `skip_batches` batches in."""
    dataset = pipeline.make_dataset("train", config.batch_size, resolution=config.resolution, seed=config.seed)
    # Training never sees a label, even where the data set has them.
    dataset = strategy_lib.shard_by_example_unless_set(dataset.map(_image_only))
    if skip_batches:
        dataset = dataset.skip(skip_batches)
    return strategy_lib.distributed_iterator(strategy, dataset)


class Trainer:
    """Runs one training job in `model_dir`; re-running the same job resumes it."""

    def __init__(self, model_dir, config=None, strategy=None, stream=None, data_info=None, duties=None):
        self.model_dir = model_dir
        self.data_info = data_info
        self.config = config or TrainConfig()
        #: What the loop does after each step besides training, in order (`tfseg.training.duties`).
        self.duties = list(duties) if duties is not None else duties_lib.default_duties(self.config)
        self.strategy = strategy or strategy_lib.make_strategy()
        self.jit = strategy_lib.resolve_jit_compile(self.config.jit_compile)
        self.stream = stream
        # Only the chief writes into model_dir. Other workers of a cluster resume from its
        # checkpoints but write theirs (saving takes part in the same steps) to a private
        # temporary folder, and their summaries nowhere.
        self.is_chief = strategy_lib.is_chief(self.strategy)
        self.write_dir = model_dir if self.is_chief else tempfile.mkdtemp(prefix="tfseg_worker_")
        self.writers = {name: (tf.summary.create_file_writer(os.path.join(model_dir, folder)) if self.is_chief
                               else tf.summary.create_noop_writer())
                        for name, folder in (("train", run_dir.TRAIN_LOGS), ("validation", run_dir.VALIDATION_LOGS))}

    # -- construction ---------------------------------------------------------------------------
    def _build(self, restarts):
        with self.strategy.scope():
            self.state = checkpointing.RunState()
            self.state.restarts.assign(restarts)
            self.model = build_method(self.config, restarts)
            self.model.build_for_training(self.config.batch_size)
            self.checkpoint = checkpointing.make_checkpoint(self.model, self.state)
            if self.config.foreground_region is not None:
                self.model.foreground_region.assign(self.config.foreground_region)
            self.guard = None
            if self.config.skip_nonfinite:
                optimizer_variables = [v for o in self.model.optimizers_by_name().values() for v in o.variables]
                self.guard = nonfinite.Guard(list(self.model.variables) + optimizer_variables)
        self.latest, self.best = checkpointing.managers(self.checkpoint, self.write_dir,
                                                        self.config.keep_checkpoints)
        # Where a resumed run reads from: the chief's checkpoints, on every worker.
        self.resume_from = (self.latest if self.is_chief else
                            checkpointing.managers(self.checkpoint, self.model_dir, self.config.keep_checkpoints)[0])
        self.schedule = schedule_lib.stage_schedule(self.model, self.config)
        self.total_steps = self.schedule[-1][2]
        self.stage = None
        self._enter_stage(0)

    def _stage_at(self, step):
        return schedule_lib.stage_at(self.schedule, step)

    def _enter_stage(self, step, display=None):
        """Switches to the stage that owns `step`: tells the method, traces that stage's step."""
        stage, start, end = self._stage_at(step)
        if stage is self.stage:
            return
        self.stage = stage
        self.model.begin_stage(stage.name)
        self._compile_step()
        if display is not None:
            display.images_per_step = self.stage.images_per_step(self.config.batch_size)
            self._stage_header(display)

    def write_operative_config(self):
        """Writes `run_dir.OPERATIVE_CONFIG_FILE`: every value the run uses, defaults included.

        config.gin holds only what was bound (what evaluate, export and resume re-read, so that a
        run follows later defaults only where tfseg checks them); this file answers "what did this
        run train with" after a default changed. Called once the networks and the data pipeline are
        built, so their configurables have been called, and again at the end. Chief only.
        """
        if self.is_chief:
            with open(os.path.join(self.model_dir, run_dir.OPERATIVE_CONFIG_FILE), "w", encoding="utf-8") as f:
                f.write(gin.operative_config_str())

    def _stage_header(self, display):
        stage, start, end = self._stage_at(int(self.state.step.numpy()))
        number = [s for s, _, _ in self.schedule].index(stage) + 1
        display.message(f"stage {number}/{len(self.schedule)} '{stage.name}': steps {start + 1}-{end} "
                        f"of {self.total_steps}" + (f" ({stage.note})" if stage.note else ""))

    def _compile_step(self):
        """Forgets the step functions of the last stage; `_train_step_at` traces this stage's."""
        self.step_functions, self.carried_values = {}, {}

    def _train_step_at(self, step):
        """The compiled step that runs the phases due at `step` (one per set of due phases: a stage
        with a `Periodic` phase has two)."""
        due = phases_due(self.stage.phases, step)
        if due not in self.step_functions:
            self.step_functions[due] = make_train_step(self.model, self.strategy, self.jit, due,
                                                       self.stage.batches_per_step)
        return self.step_functions[due]

    def _with_carried(self, values):
        """`values`, plus the last value of what a `Periodic` phase reports on the steps it skips,
        so that the console and TensorBoard show its latest figure rather than nothing."""
        self.carried_values.update(values)
        return self.carried_values

    # -- the loop -------------------------------------------------------------------------------
    def train(self, restarts=None):
        """Trains to `num_steps` (resuming if possible), then scores the best model on test.

        Args:
            restarts: None resumes with the restart count of the last checkpoint; a number starts
                a fresh run seeded for that restart (after a collapse).

        Raises:
            signals.Stopped: SIGTERM or SIGINT arrived; a checkpoint of the last whole step was written.
            nonfinite.Diverged: the losses stayed non-finite after `max_nonfinite_restores` restores.
        """
        with strategy_lib.graph_optimization(self.config.optimize_graphs), \
                precision.policy(self.config.precision):
            return self._train(restarts)

    def _train(self, restarts):
        cfg = self.config
        say = (lambda text: (self.stream or sys.stdout).write(text + "\n"))
        if self.data_info is None:
            self.data_info = pipeline.validate_data_config()
            say(pipeline.format_data_summary(self.data_info))
        self.labelled = {split: info.available and info.has_masks for split, info in self.data_info.items()}
        for path in run_dir.remove_partial_checkpoints(self.model_dir) if self.is_chief else ():
            say(f"removed a half-written checkpoint: {path}")
        say("building the networks and tracing the training step (the first step takes longer) ...")
        self._build(self._saved_restarts() if restarts is None else restarts)
        resumed = self._restore_latest(say)
        if resumed and cfg.foreground_region is not None:  # the binding wins over a stored choice
            self.model.foreground_region.assign(cfg.foreground_region)
        if not resumed and restarts:
            # Persist the restart count at once, so a crash now still resumes with the new seed.
            self.latest.save(checkpoint_number=0)
        if self.guard is not None:
            self.guard.sync()
        step = int(self.state.step.numpy())
        display = progress.TrainingProgress(self.total_steps, step,
                                            self._stage_at(step)[0].images_per_step(cfg.batch_size), self.stream)
        if resumed and step >= self.total_steps:
            display.message(f"already finished: {resumed} is at step {step} of {self.total_steps}; "
                            "scoring it again (raise the step budget to train more)")
            return self.final_evaluation(display)
        if resumed:
            display.message(f"resumed from {resumed} at step {step}")
        self._enter_stage(step)
        self._stage_header(display)
        with self.writers["train"].as_default(step=step):
            # Indented: TensorBoard renders text summaries as Markdown.
            tf.summary.text("config", "\n".join("    " + line for line in gin.config_str().splitlines()))
        skip = schedule_lib.batches_before(self.schedule, step) if (resumed and cfg.exact_resume) else 0
        if skip:
            display.message(f"advancing the data stream past the {skip} batches already trained on "
                            "(exact resume; tfseg.training.TrainConfig.exact_resume = False skips this)")
        self.write_operative_config()
        self.display, self.last_metrics, self.last_validation = display, None, None
        self.nonfinite_total, self.nonfinite_in_a_row = 0, 0
        # The trainer owns its stream and releases it when the loop ends, however it ends: an
        # iterator still prefetching through tf.numpy_function when the interpreter finalizes would
        # hang the exit. Held only here (never in a local a traceback could keep alive).
        self._iterator = _training_dataset(cfg, self.strategy, skip)
        try:
            step = self._run_steps(step, display)
        finally:
            self._iterator = None
        if step == duties_lib.RESTART:
            return self.train(restarts=int(self.state.restarts.numpy()) + 1)
        self._save_latest(step)
        if strategy_lib.num_workers(self.strategy) > 1:
            display.message(f"weights fingerprint {strategy_lib.weights_fingerprint(self.model.variables)} "
                            "(synchronous training: the same on every worker)")
        display.message(f"skipped as unreadable: {decode.skipped_count()} file(s)"
                        + (f", e.g.\n{decode.first_skipped(3)}" if decode.skipped_count() else ""))
        if self.nonfinite_total:
            display.message(f"{self.nonfinite_total} step(s) had non-finite losses and were undone")
        return self.final_evaluation(display)

    def _run_steps(self, step, display):
        """Trains from `step` to the end of the schedule; returns the last step, or `duties.RESTART`.

        Raises:
            signals.Stopped: SIGTERM or SIGINT arrived; a checkpoint of the last whole step was written.
        """
        cfg, restores = self.config, 0
        with signals.StopRequests() as stop:
            while step < self.total_steps:
                self._enter_stage(step, display)
                values = self._train_step_at(step)(self._iterator, self.state.step)
                finite = bool(values.pop(nonfinite.FINITE_METRIC).numpy())
                if self.guard is not None:
                    self.guard.keep_or_revert(finite)
                self.state.step.assign_add(1)
                step += 1
                if display.timed_from is None:
                    display.first_step_done(step)
                if not finite:
                    self.nonfinite_total += 1
                    self.nonfinite_in_a_row += 1
                    if self.nonfinite_in_a_row >= cfg.max_nonfinite_steps:
                        restores += 1
                        self.nonfinite_in_a_row = 0
                        step = self._recover_from_nonfinite(restores, display)
                        continue
                else:
                    self.nonfinite_in_a_row = 0
                self.values = self._with_carried(values)
                stage_end = self._stage_at(step - 1)[2] == step
                for duty in self.duties:
                    if duty.due(self, step, stage_end) and duty.run(self, step) == duties_lib.RESTART:
                        return duties_lib.RESTART
                if stop.signum:  # read after the duties: a signal during one of them counts now
                    self._save_latest(step)
                    message = (f"stopped by {stop.name} at step {step}: checkpoint written; run the same "
                               "command again to resume")
                    display.message(message)
                    raise signals.Stopped(stop.signum, message)
        return step

    def _save_latest(self, step):
        """Saves the latest checkpoint at `step` unless a duty just did."""
        if self.latest.latest_checkpoint is None or not self.latest.latest_checkpoint.endswith(f"-{step}"):
            self.latest.save(checkpoint_number=step)

    def _restore_latest(self, say):
        """Restores the newest readable checkpoint (falling back past corrupt ones); its path or None."""
        candidates = list(reversed(self.resume_from.checkpoints))
        for i, path in enumerate(candidates):
            try:
                checkpointing.restore(self.checkpoint, path, self.model.checkpoint_hint)
            except checkpointing.CheckpointMismatch:
                raise  # another layout, not a damaged file: falling back or starting afresh would lose the run
            except Exception as err:  # pylint: disable=broad-except  # truncated, missing or corrupt files
                following = candidates[i + 1] if i + 1 < len(candidates) else None
                say(f"checkpoint {path} is unreadable ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                    + (f"falling back to {following}" if following else "no older checkpoint: starting afresh"))
                continue
            return path
        if candidates:  # every checkpoint failed: start from the freshly built weights
            self._build(int(self.state.restarts.numpy()))
        return None

    def _recover_from_nonfinite(self, restores, display):
        """Restores the last checkpoint after too many non-finite steps in a row; returns its step."""
        cfg = self.config
        if restores > cfg.max_nonfinite_restores:
            raise nonfinite.Diverged(
                f"the losses stayed non-finite: {cfg.max_nonfinite_steps} steps in a row, even after "
                f"{cfg.max_nonfinite_restores} restore(s) of the last checkpoint. Lower the learning rates "
                "(e.g. tfseg.methods.<method>.learning_rate) and run the same command again; the checkpoints "
                "kept are finite.")
        path = self.latest.latest_checkpoint
        if path:
            checkpointing.restore(self.checkpoint, path)
        if self.guard is not None:
            self.guard.sync()
        step = int(self.state.step.numpy())
        display.message(f"{cfg.max_nonfinite_steps} non-finite steps in a row: restored {path or 'the initial weights'} "
                        f"(step {step}), restore {restores} of at most {cfg.max_nonfinite_restores}")
        with self.writers["train"].as_default(step=step):
            tf.summary.scalar("health/nonfinite_restores", restores)
        return step

    def _saved_restarts(self):
        path = tf.train.latest_checkpoint(os.path.join(self.model_dir, run_dir.CHECKPOINTS_DIR))
        return checkpointing.saved_restarts(path) if path else 0

    def final_evaluation(self, display=None):
        """Restores the validation-best checkpoint and scores it on the test split, in float32 (a
        16-bit run's checkpoint goes into float32 networks, as `tfseg.evaluate` and the export do)."""
        best = self.best.latest_checkpoint
        if best:
            checkpointing.restore(self.checkpoint, best)
        if not self.labelled.get("test"):
            (display.message if display else print)(
                "no labelled test split: nothing to score. Masks of your images: see the "
                "TensorBoard image grids, or export the model and run tfseg.predict.")
            return {}
        path, model = best or self.latest.latest_checkpoint, self.model
        if self.config.precision != "float32" and path:
            model = restore_float32(self.config, path)
        results = run_split_evaluation(model, self.config, self.write_dir, "test")
        text = metrics.format_table(results)
        (display.message if display else print)(
            f"test split, checkpoint {path}:\n{text}")
        return results
