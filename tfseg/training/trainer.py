"""The custom training loop shared by every method: steps, stages, resuming, restarts.

What the loop does between steps (progress, validation and the best checkpoint, collapse
detection, checkpoints) are duties, one class each in `tfseg.training.duties`.

Not `model.fit`: fit breaks under MultiWorkerMirroredStrategy (keras-team/keras#20585), and a GAN
step is several optimizer phases anyway. Each phase's losses-and-gradients function runs per
replica, compiled with XLA when asked; the optimizer update runs outside XLA in the replica
context, where Keras all-reduces the gradients (XLA cannot compile that merge).
"""
import functools
import json
import os
import sys
import tempfile
from typing import Optional

import gin
import numpy as np
import tensorflow as tf

from tfseg.data import decode, pipeline
from tfseg.errors import ConfigError, DataError, SplitUnavailableError
from tfseg.evaluation import evaluator, grids, metrics
from tfseg.methods import optimizers
from tfseg.methods.base import phases_due
from tfseg.modeling import refinement
from tfseg import progress
from tfseg.training import checkpointing, nonfinite, precision, run_dir, signals
from tfseg.training import duties as duties_lib
from tfseg.training import strategy as strategy_lib

#: Every value the run used, defaults included (informational; nothing reads it back).
OPERATIVE_CONFIG_FILE = "operative_config.gin"
#: Validation scores that may choose the best checkpoint (`TrainConfig.selection_metric`), all
#: computed by `tfseg.evaluation.evaluator.evaluate`.
SELECTION_METRICS = ("fg_iou", "miou", "accuracy", "best_perm_fg_iou", "redo_iou")


@gin.configurable(module="tfseg.training")
class TrainConfig:
    """Every knob of a run that is not a network's or the data's (gin: `tfseg.training.TrainConfig.<arg>`).

    Args:
        method: a method's settings class, e.g. `@tfseg.methods.redo` (`ReDOSettings`); called with
            `resolution` and `seed`, its `build()` makes the method.
        resolution: image side R used by data and networks.
        batch_size: global batch, split across replicas.
        num_steps: length of the run in training steps (of each stage not in `stage_steps`).
        stage_steps: steps per stage for methods trained in stages, e.g. PerturbGAN's
            {"generator": 3000, "encoder": 500, "segmenter": 500}; 0 skips a stage.
        log_every: steps between progress lines and scalar summaries.
        eval_every: steps between validation evaluations, image grids and best-checkpoint updates.
        checkpoint_every: steps between checkpoints (also written at the end and on Ctrl-C).
        eval_examples: validation images scored at each evaluation (None: all).
        eval_batch_size: batch size of evaluation.
        jit_compile: "auto" (XLA on GPU/TPU only), "true" or "false".
        collapse_threshold: restart the run if the smaller region's mean coverage falls below
            this on both the last training batch and validation (0, the default, disables it; a
            method whose runs may collapse binds it in its base config).
        collapse_before_step: ... at an evaluation at or before this step.
        max_restarts: give up restarting after this many.
        keep_checkpoints: how many recent checkpoints to keep.
        seed: seeds weights, codes and data order.
        skip_nonfinite: undo a step whose losses or gradients are not finite (keeps a copy of every
            variable; see `tfseg.training.nonfinite`).
        max_nonfinite_steps: that many non-finite steps in a row restore the last checkpoint.
        max_nonfinite_restores: past that many such restores the run stops with an error.
        exact_resume: on resume, advance the data stream past the batches already trained on, so a
            resumed run ends with the weights of an uninterrupted one (costs one pass of reading).
        foreground_region: which output region is the object; None chooses it: on a labelled
            validation split by fg IoU, else region 0 for methods whose mask layer is the object
            by construction (PerturbGAN, Labels4Free), else (ReDO) the region that touches the
            image border least on a batch of training photos.
        optimize_graphs: let TensorFlow's graph optimiser (Grappler: constant folding, op fusion)
            rewrite the step before its first run. Off in smoke runs (`gin_configs/smoke.gin`): for a
            run of seconds it costs more than it saves (10 of the 50 s a smoke run of the ReDO
            demo takes on a 2-core CPU); the results do not change beyond float rounding.
        precision: "float32", "mixed_bfloat16" or "mixed_float16" (16-bit compute, float32
            variables, masks and losses; float16 with dynamic loss scaling): `tfseg.training.precision`.
            Training only; evaluation and export run in float32.
        selection_metric: the validation score that chooses the best checkpoint (and the test split's
            model): "fg_iou" (fixed polarity, tfseg's default), or "redo_iou" (ReDO's reference
            criterion: each image scored with its better region, then averaged by batches; reproduction
            configs use it), or another of `SELECTION_METRICS`.
    """

    def __init__(self, method=gin.REQUIRED, resolution=gin.REQUIRED, batch_size=gin.REQUIRED,
                 num_steps=None, stage_steps=None, log_every=50, eval_every=500, checkpoint_every=500,
                 eval_examples: Optional[int] = 512, eval_batch_size=64, jit_compile="auto",
                 collapse_threshold=0.0, collapse_before_step=7000, max_restarts=5,
                 keep_checkpoints=3, seed=0, skip_nonfinite=True, max_nonfinite_steps=10,
                 max_nonfinite_restores=2, exact_resume=True, foreground_region=None,
                 optimize_graphs=True, precision="float32", selection_metric="fg_iou"):
        self.method = method
        self.resolution = resolution
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.stage_steps = dict(stage_steps or {})
        self.log_every = log_every
        self.eval_every = eval_every
        self.checkpoint_every = checkpoint_every
        self.eval_examples = eval_examples
        self.eval_batch_size = eval_batch_size
        self.jit_compile = jit_compile
        self.collapse_threshold = collapse_threshold
        self.collapse_before_step = collapse_before_step
        self.max_restarts = max_restarts
        self.keep_checkpoints = keep_checkpoints
        self.seed = seed
        self.skip_nonfinite = skip_nonfinite
        self.max_nonfinite_steps = max_nonfinite_steps
        self.max_nonfinite_restores = max_nonfinite_restores
        self.exact_resume = exact_resume
        self.foreground_region = foreground_region
        self.optimize_graphs = optimize_graphs
        self.precision = precision
        self.selection_metric = selection_metric
        self.validate()

    def validate(self):
        """Raises ConfigError naming the binding for a value that cannot work (before any network)."""
        def check(name, ok, wanted):
            value = getattr(self, name)
            if value is gin.REQUIRED:
                raise ConfigError(f"tfseg.training.TrainConfig.{name} is not set: bind it to {wanted}.")
            try:
                good = ok(value)
            except TypeError:
                good = False
            if not good:
                raise ConfigError(f"tfseg.training.TrainConfig.{name} = {value!r}: must be {wanted}.")

        def whole(low, none_ok=False):
            return lambda v: (v is None and none_ok) or (
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low)

        check("resolution", whole(4), "a whole number of pixels >= 4")
        check("batch_size", whole(1), "a whole number >= 1")
        check("num_steps", whole(0, none_ok=True), "a whole number >= 0, or None with stage_steps")
        for name in ("log_every", "eval_every", "checkpoint_every", "eval_batch_size", "keep_checkpoints",
                     "max_nonfinite_steps"):
            check(name, whole(1), "a whole number >= 1")
        for name in ("max_restarts", "max_nonfinite_restores", "collapse_before_step", "seed"):
            check(name, whole(0), "a whole number >= 0")
        check("eval_examples", whole(1, none_ok=True), "a whole number >= 1, or None for all")
        check("collapse_threshold", lambda v: not isinstance(v, bool) and 0 <= float(v) <= 1,
              "a number in [0, 1]")
        check("stage_steps", lambda v: all(whole(0)(n) for n in v.values()),
              "a dict of stage name -> whole number of steps >= 0")
        check("foreground_region", whole(0, none_ok=True), "None (chosen for you) or a region index >= 0")
        for name in ("skip_nonfinite", "exact_resume", "optimize_graphs"):
            check(name, lambda v: isinstance(v, bool), "True or False")
        check("precision", lambda v: v in precision.POLICIES,
              f"one of {', '.join(repr(p) for p in precision.POLICIES)}")
        check("selection_metric", lambda v: v in SELECTION_METRICS,
              f"one of {', '.join(repr(m) for m in SELECTION_METRICS)}")


def stage_schedule(model, config):
    """`[(stage, first_step, end_step)]` of the stages that run, in order.

    Raises:
        ConfigError: a stage without a step budget, or a budget for a stage the method lacks.
    """
    stages = model.stages()
    names = [stage.name for stage in stages]
    unknown = sorted(set(config.stage_steps) - set(names))
    if unknown:
        raise ConfigError(f"tfseg.training.TrainConfig.stage_steps names {unknown}, but this "
                          f"method's stages are {names}.")
    fixed = sorted(stage.name for stage in stages if stage.images is not None and stage.name in config.stage_steps)
    if fixed:
        raise ConfigError(f"tfseg.training.TrainConfig.stage_steps names {fixed}, whose length the method "
                          "fixes in images (e.g. progressive growing's progressive_phase_images): remove "
                          "them from stage_steps.")
    schedule, start = [], 0
    for stage in stages:
        steps = stage.fixed_steps(config.batch_size)
        if steps is None:
            steps = config.stage_steps.get(stage.name, config.num_steps)
        if steps is None:
            raise ConfigError(
                f"no step budget for stage '{stage.name}': bind tfseg.training.TrainConfig."
                f"num_steps = N, or tfseg.training.TrainConfig.stage_steps = "
                f"{{{', '.join(repr(n) + ': N' for n in names)}}}.")
        if steps > 0:
            schedule.append((stage, start, start + int(steps)))
            start += int(steps)
    if not schedule:
        raise ConfigError("every stage has 0 steps: nothing to train.")
    return schedule


def make_train_step(model, strategy, jit_compile, phases=None, batches_per_step=None):
    """A `tf.function(iterator, step) -> metrics` running every phase of `model` (or `phases`) once.

    Each phase's gradient function is compiled per replica (with XLA if `jit_compile`); the
    optimizer update runs outside XLA, in the replica context, where Keras all-reduces the
    gradients. Metrics are every phase's `PhaseMetrics.flat()`, per-example values gathered from
    all replicas, plus `nonfinite.FINITE_METRIC` (a scalar bool: every loss and gradient of every
    replica was finite), with which the caller keeps or undoes the step (`nonfinite.Guard`).
    """
    phases = tuple(model.phases if phases is None else phases)
    batches_per_step = model.batches_per_step if batches_per_step is None else batches_per_step
    # Without AutoGraph: the step's Python loops run over static phases and batches, and a method's
    # tensor-dependent branch must be an explicit tf.cond (a tensor used as a Python bool fails at
    # trace time, loudly). Tracing is then cheaper.
    gradient_fns = {
        phase: tf.function(lambda batches, step, phase=phase:
                           model.phase_gradients(phase, batches, step),
                           jit_compile=jit_compile, autograph=False)
        for phase in phases}

    @functools.partial(tf.function, autograph=False)
    def train_step(iterator, step):
        batches = tuple(next(iterator) for _ in range(batches_per_step))
        model.begin_step(phases)
        out, finite = {}, []
        for phase in phases:
            def replica_fn(batches, step, phase=phase):
                phase_metrics, grads = gradient_fns[phase](batches, step)
                phase_metrics = phase_metrics.flat()
                model.apply_phase(phase, grads)
                # A loss-scaled optimizer skips overflowed gradients itself and lowers its scale:
                # those steps are expected (float16), not a reason to undo the step.
                ok = nonfinite.all_finite(phase_metrics, () if model.loss_scaled else grads)
                return {**phase_metrics, nonfinite.FINITE_METRIC: nonfinite.finite_metric(phase_metrics, ok)}
            per_replica = strategy.run(replica_fn, args=(batches, step))
            for name, value in per_replica.items():
                gathered = strategy.gather(value, axis=0)
                if name == nonfinite.FINITE_METRIC:
                    finite.append(tf.reduce_all(gathered > 0.5))
                else:
                    out[name] = gathered
        out[nonfinite.FINITE_METRIC] = tf.reduce_all(tf.stack(finite))
        return out

    return train_step


def method_settings(config, restarts=0):
    """The method's settings dataclass for `config` (its bindings checked; no network built)."""
    return config.method(resolution=config.resolution, seed=config.seed + 1000 * restarts)


def build_method(config, restarts=0):
    """The method of `config`, seeded anew for every automatic restart, with gin's mask refinement."""
    method = method_settings(config, restarts).build()
    method.mask_refinement = refinement.mask_refinement()
    return method


def restore_float32(config, checkpoint_path):
    """The method of `config` with float32 networks, whatever precision its run trained in, holding
    `checkpoint_path`'s weights: the run's test score, evaluation, export and prediction compute what
    a user's export computes. Its optimizers are built as the run had them (loss scaling included),
    so the checkpoint's slots find their variables."""
    with precision.policy("float32"), optimizers.loss_scaling(precision.loss_scaled(config.precision)):
        model = build_method(config, restarts=checkpointing.saved_restarts(checkpoint_path))
        model.build_for_training(config.batch_size)
    state = checkpointing.RunState()
    try:
        checkpointing.restore(checkpointing.make_checkpoint(model, state), checkpoint_path)
    except checkpointing.MissingAverages:
        # Everything an optimizer trained is there, the segmenter included: only G's average is not.
        checkpointing.restore(checkpointing.make_checkpoint(model, state, include_unreached=False), checkpoint_path)
        print(f"warning: {checkpoint_path} predates saved moving averages: G's EMA keeps its initial weights "
              "(the distilled segmenter is unaffected; PerturbGAN's encoder route is not usable)", file=sys.stderr)
    return model


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
        self.writers = {name: (tf.summary.create_file_writer(os.path.join(model_dir, name)) if self.is_chief
                               else tf.summary.create_noop_writer())
                        for name in ("train", "validation")}

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
        self.schedule = stage_schedule(self.model, self.config)
        self.total_steps = self.schedule[-1][2]
        self.stage = None
        self._enter_stage(0)

    def _stage_at(self, step):
        for stage, start, end in self.schedule:
            if start <= step < end:
                return stage, start, end
        return self.schedule[-1]

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
        """Writes `OPERATIVE_CONFIG_FILE`: every value the run uses, defaults included.

        config.gin holds only what was bound (what evaluate, export and resume re-read, so that a
        run follows later defaults only where tfseg checks them); this file answers "what did this
        run train with" after a default changed. Called once the networks and the data pipeline are
        built, so their configurables have been called, and again at the end. Chief only.
        """
        if self.is_chief:
            with open(os.path.join(self.model_dir, OPERATIVE_CONFIG_FILE), "w", encoding="utf-8") as f:
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

    def _batches_before(self, step):
        """Real batches the stream delivered before `step` (stages consume different numbers)."""
        return sum(stage.batches_per_step * max(0, min(step, end) - start) for stage, start, end in self.schedule)

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
        skip = self._batches_before(step) if (resumed and cfg.exact_resume) else 0
        if skip:
            display.message(f"advancing the data stream past the {skip} batches already trained on "
                            "(exact resume; tfseg.training.TrainConfig.exact_resume = False skips this)")
        iterator = _training_dataset(cfg, self.strategy, skip)
        self.write_operative_config()
        self.display, self.last_metrics, self.last_validation = display, None, None
        self.nonfinite_total, self.nonfinite_in_a_row, restores = 0, 0, 0
        with signals.StopRequests() as stop:
            while step < self.total_steps:
                self._enter_stage(step, display)
                values = self._train_step_at(step)(iterator, self.state.step)
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
                        return self.train(restarts=int(self.state.restarts.numpy()) + 1)
                if stop.signum:  # read after the duties: a signal during one of them counts now
                    self._save_latest(step)
                    message = (f"stopped by {stop.name} at step {step}: checkpoint written; run the same "
                               "command again to resume")
                    display.message(message)
                    raise signals.Stopped(stop.signum, message)
        self._save_latest(step)
        if strategy_lib.num_workers(self.strategy) > 1:
            display.message(f"weights fingerprint {strategy_lib.weights_fingerprint(self.model.variables)} "
                            "(synchronous training: the same on every worker)")
        display.message(f"skipped as unreadable: {decode.skipped_count()} file(s)"
                        + (f", e.g.\n{decode.first_skipped(3)}" if decode.skipped_count() else ""))
        if self.nonfinite_total:
            display.message(f"{self.nonfinite_total} step(s) had non-finite losses and were undone")
        return self.final_evaluation(display)

    def _save_latest(self, step):
        """Saves the latest checkpoint at `step` unless a duty just did."""
        if self.latest.latest_checkpoint is None or not self.latest.latest_checkpoint.endswith(f"-{step}"):
            self.latest.save(checkpoint_number=step)

    def _restore_latest(self, say):
        """Restores the newest readable checkpoint (falling back past corrupt ones); its path or None."""
        candidates = list(reversed(self.resume_from.checkpoints))
        for i, path in enumerate(candidates):
            try:
                checkpointing.restore(self.checkpoint, path)
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
        path = tf.train.latest_checkpoint(os.path.join(self.model_dir, "checkpoints"))
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


def run_split_evaluation(model, config, model_dir, split):
    """Scores `model` on `split` and writes `eval_<split>.json` and `eval_<split>.png`.

    Raises:
        DataError: the run's data have no masks for `split` (the message says how to get masks of
            the photos instead).
    """
    try:
        labelled = pipeline.dataset_has_masks(split)
    except SplitUnavailableError:
        labelled = False
    if not labelled:
        raise DataError(
            f"this run's data have no masks for the {split!r} split, so there is nothing to score. To see "
            f"the masks of your photos: python -m tfseg.export --model_dir={model_dir} --export_dir=serving/"
            f"{os.path.basename(os.path.normpath(model_dir))}, then python -m tfseg.predict --export_dir=serving/"
            f"{os.path.basename(os.path.normpath(model_dir))}/1 --images=DIR --out=DIR. To score, bind a mask "
            "folder (tfseg.data.image_folder_source.mask_dir) when training.")
    results, sample = evaluator.evaluate(model, duties_lib.eval_dataset(config, split))
    results = {k: (v.item() if hasattr(v, "item") else v) for k, v in results.items()}
    with open(os.path.join(model_dir, f"eval_{split}.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    grids.save_png(evaluator.prediction_grid(sample, cell=256), os.path.join(model_dir, f"eval_{split}.png"))
    return results
