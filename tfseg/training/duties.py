"""What the training loop does besides training: one duty per concern, run between steps.

After every step the loop (`tfseg.training.trainer.Trainer.train`) asks each duty, in order,
whether it is `due` and runs the ones that are. A duty reads the running `Trainer` (its `config`,
`model`, `state`, `stage`, `display`, `writers`, `write_dir`, checkpoint managers and the step's
`values`) and may leave what it found there for the duties after it (`last_metrics`,
`last_validation`). A duty returning `RESTART` makes the loop start the run afresh, reseeded.

Only the chief worker of a cluster writes into `model_dir`: the other workers' `writers` write
nowhere and their `write_dir` is a private temporary folder, so a duty writes through those and
never needs to ask which worker it runs on. Every worker runs every duty: saving a checkpoint
takes part in the same collective steps on all of them.

To add one (e.g. a duty that mails a score): subclass `Duty`, then pass
`Trainer(..., duties=default_duties(config) + [YourDuty()])`.
"""
import json
import os

import numpy as np
import tensorflow as tf

from tfseg.evaluation import evaluator, grids
from tfseg.evaluation.split_evaluation import eval_dataset
from tfseg.training import run_dir
from tfseg.training.step_metrics import StepMetrics

#: What `Duty.run` returns to make the loop start the run afresh (after a collapse).
RESTART = "restart"


class Duty:
    """Something the loop does every so often; subclasses say when (`due`) and what (`run`)."""

    def due(self, trainer, step, stage_end):
        """Whether to run after `step` (`stage_end`: the last step of a stage)."""
        raise NotImplementedError

    def run(self, trainer, step):
        """Does the duty after `step`; returns `RESTART` to start the run afresh, else None."""
        raise NotImplementedError


class Every(Duty):
    """A duty due every `every` steps and at the end of each stage."""

    def __init__(self, every):
        self.every = every

    def due(self, trainer, step, stage_end):
        return step % self.every == 0 or stage_end


class LogProgress(Every):
    """The progress line on the console and the training scalars in TensorBoard."""

    def run(self, trainer, step):
        values = {name: value.numpy() for name, value in trainer.values.items()}
        trainer.last_metrics = step_metrics = StepMetrics.from_step(values)
        rate = trainer.display.update(step, step_metrics.console_losses())
        with trainer.writers["train"].as_default(step=step):
            for name, value in step_metrics.scalars().items():
                tf.summary.scalar(name, value)
            tf.summary.scalar("perf/images_per_second", rate)
            tf.summary.scalar("health/nonfinite_steps", trainer.nonfinite_total)
            for name, optimizer in trainer.model.optimizers_by_name().items():
                tf.summary.scalar(f"learning_rate/{name}", float(optimizer.learning_rate.numpy()))


class Validate(Every):
    """Scores the validation split, keeps the best checkpoint by `metric`, writes image grids.

    Without a labelled validation split (LSUN, a photo folder without masks), or in a stage with no
    segmenter of real photos yet, it writes image grids only, and chooses the object region without
    labels (`choose_foreground_without_labels`). Skipped while steps are non-finite.
    """

    def __init__(self, every, metric="fg_iou"):
        """`metric`: the key of `evaluator.evaluate`'s results that ranks checkpoints (higher is better)."""
        super().__init__(every)
        self.metric = metric

    def due(self, trainer, step, stage_end):
        return super().due(trainer, step, stage_end) and trainer.nonfinite_in_a_row == 0

    def run(self, trainer, step):
        cfg, display = trainer.config, trainer.display
        trainer.last_validation = {}
        if not trainer.labelled.get("validation") or not trainer.stage.evaluates:
            batch = next(iter(eval_dataset(cfg, "train")))
            if trainer.stage.evaluates:
                choose_foreground_without_labels(trainer, step, batch["image"])
            image_summaries(trainer, step, batch["image"].numpy()[:8])
            return None
        choose = cfg.foreground_region is None
        results, sample = evaluator.evaluate(trainer.model, eval_dataset(cfg, "validation"),
                                             max_examples=cfg.eval_examples, choose_region=choose)
        if choose:
            why, overruled = validation_choice(trainer.model, results["foreground_region"])
            record_foreground(trainer, step, "validation", why, quiet=not overruled)
        else:
            record_foreground(trainer, step, "binding", "tfseg.training.TrainConfig.foreground_region")
        with trainer.writers["validation"].as_default(step=step):
            for key in evaluator.SUMMARY_METRICS:
                tf.summary.scalar(f"eval/{key}", results[key])
            tf.summary.image("eval/image_truth_prediction_overlay",
                             evaluator.prediction_grid(sample)[None].astype(np.float32) / 255.0)
        image_summaries(trainer, step, sample["image"][:8])
        score = results[self.metric]
        chosen_by = "" if self.metric in ("fg_iou", "miou", "accuracy") else f"  {self.metric} {score:.3f}"
        display.message(f"step {step}: validation fg IoU {results['fg_iou']:.3f}  mIoU {results['miou']:.3f}  "
                        f"acc {results['accuracy']:.3f}{chosen_by}  (region {results['foreground_region']})")
        if np.isfinite(score) and score > float(trainer.state.best_score.numpy()):
            trainer.state.best_score.assign(score)
            trainer.best.save(checkpoint_number=step)
        trainer.last_validation = results
        return None


class DetectCollapse(Every):
    """Automatic restart of collapsed runs (ReDO's reference code has it), for any method: if the
    smaller region's share fell below `threshold` on the last logged training batch and on validation
    (at or before `before_step`), the run's checkpoints are deleted and it starts afresh, reseeded (at
    most `max_restarts` times)."""

    def __init__(self, every, threshold, before_step, max_restarts):
        super().__init__(every)
        self.threshold, self.before_step, self.max_restarts = threshold, before_step, max_restarts

    def due(self, trainer, step, stage_end):
        return (bool(self.threshold) and step <= self.before_step and trainer.nonfinite_in_a_row == 0
                and super().due(trainer, step, stage_end))

    def run(self, trainer, step):
        logged = trainer.last_metrics
        train_smaller = logged.smaller_region if logged is not None else None
        if train_smaller is None or not np.isfinite(train_smaller):
            return None
        coverage = (trainer.last_validation or {}).get("prediction_coverage")  # needs labelled validation
        val_smaller = min(coverage, 1 - coverage) if coverage is not None else train_smaller
        if train_smaller >= self.threshold or val_smaller >= self.threshold:
            return None
        restarts = int(trainer.state.restarts.numpy())
        if restarts >= self.max_restarts:
            trainer.display.message(f"masks collapsed at step {step} but {restarts} restarts were "
                                    "already made (tfseg.training.TrainConfig.max_restarts); going on")
            return None
        trainer.display.message(f"masks collapsed at step {step} (smaller region {train_smaller:.3f} < "
                                f"{self.threshold}): restarting from scratch, restart {restarts + 1}")
        for folder in (run_dir.CHECKPOINTS_DIR, run_dir.BEST_DIR):
            path = os.path.join(trainer.write_dir, folder)
            if tf.io.gfile.exists(path):
                tf.io.gfile.rmtree(path)
        return RESTART


class WriteCheckpoint(Every):
    """Saves the latest checkpoint every `every` steps and at each stage's end (the loop also saves
    one when asked to stop, and at the end)."""

    def run(self, trainer, step):
        trainer.latest.save(checkpoint_number=step)


def default_duties(config):
    """The duties of a `TrainConfig`, in the order they run after a step."""
    return [LogProgress(config.log_every),
            Validate(config.eval_every, config.selection_metric),
            DetectCollapse(config.eval_every, config.collapse_threshold, config.collapse_before_step,
                           config.max_restarts),
            WriteCheckpoint(config.checkpoint_every)]


def choose_foreground_without_labels(trainer, step, images):
    """Picks the object region with no labels: the binding, the method's construction, or the border rule."""
    model = trainer.model
    if trainer.config.foreground_region is not None:
        record_foreground(trainer, step, "binding", "tfseg.training.TrainConfig.foreground_region")
    elif model.foreground_by_construction:
        model.foreground_region.assign(0)
        record_foreground(trainer, step, "construction", model.foreground_reason)
    else:
        region, coverage = evaluator.border_region(model, images)
        model.foreground_region.assign(region)
        shares = ", ".join(f"region {k} {c:.2f}" for k, c in enumerate(coverage))
        record_foreground(trainer, step, "border", f"it covers the image border least ({shares}; "
                          f"{len(images)} training photos, no labelled validation split)")


def validation_choice(model, region):
    """`(why, overruled)` for the region labelled validation chose: `overruled` when the method makes
    region 0 the object by construction and the labels took another (its layers swapped roles: the
    console says so, as the training samples will show the object outside the mask layer)."""
    why = "best fg IoU on the labelled validation split"
    if not (model.foreground_by_construction and region != 0):
        return why, False
    return (f"{why}, overruling region 0, the object by construction ({model.foreground_reason}): "
            "this run's masks score better inverted, the object is outside its mask layer"), True


def record_foreground(trainer, step, rule, why, quiet=False):
    """Writes foreground.json; says so on the console when the choice changes (unless `quiet`)."""
    region = int(trainer.model.foreground_region.numpy())
    previous = read_foreground(trainer.write_dir) or {}
    with open(os.path.join(trainer.write_dir, run_dir.FOREGROUND_FILE), "w") as f:
        json.dump({"region": region, "rule": rule, "why": why, "step": step}, f, indent=2)
    if not quiet and (previous.get("region"), previous.get("rule")) != (region, rule):
        trainer.display.message(f"foreground: region {region}, chosen by the {rule} rule: {why}")


def read_foreground(model_dir):
    """The run's foreground.json (region, rule, why, step) as a dict, or None before any choice."""
    path = os.path.join(model_dir, run_dir.FOREGROUND_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def image_summaries(trainer, step, images):
    """The method's named image columns (samples, masks, composites) as one TensorBoard grid."""
    named = trainer.model.summary_images(tf.constant(images), step)
    columns = []
    for batch in named.values():
        batch = np.asarray(batch)
        columns.append(grids.masks_to_uint8(batch) if batch.shape[-1] == 1 else grids.images_to_uint8(batch))
    with trainer.writers["train"].as_default(step=step):
        tf.summary.image("samples/" + "|".join(named), grids.tensorboard_grid(columns))
