"""A run's stages laid out on its steps: which stage owns a step, how many batches came before it."""
from tfseg.errors import ConfigError


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


def stage_at(schedule, step):
    """`(stage, first_step, end_step)` of the entry of `schedule` that owns `step` (the last after the end)."""
    for stage, start, end in schedule:
        if start <= step < end:
            return stage, start, end
    return schedule[-1]


def batches_before(schedule, step):
    """Real batches the stream delivered before `step` (stages consume different numbers)."""
    return sum(stage.batches_per_step * max(0, min(step, end) - start) for stage, start, end in schedule)
