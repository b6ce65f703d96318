"""The methods tfseg ships, as the tests see them: the one list every per-method test is parametrised by.

A new method adds one `MethodUnderTest` here (docs/adding_a_method.md); `registered_method_names`
reads the methods gin knows, and tests/test_method_settings.py fails when the two lists differ, so a
method cannot be left out of the tests silently.
"""
import dataclasses
from typing import Callable, Tuple


@dataclasses.dataclass(frozen=True)
class MethodUnderTest:
    """What the tests need of one method.

    Attributes:
        name: its gin name (`tfseg.methods.<name>`).
        settings_class: the frozen settings dataclass gin configures.
        demo_config: the shipped config that trains it on the embedded data.
        folder_config: the shipped config that trains it on a folder of photos.
        tiny: builds the method at 16 px with tiny widths (seed 3), for tests that train a few steps.
        precision_stages: the stages whose 16-bit losses tests/test_precision.py compares.
    """
    name: str
    settings_class: type
    demo_config: str
    folder_config: str
    tiny: Callable
    precision_stages: Tuple[str, ...]

    def __str__(self):  # the test ids
        return self.name


_STYLEGAN_TINY = dict(z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, max_channels=8,
                      segmenter_width=8, segmenter_residual_blocks=1)


def _redo_tiny():
    from tfseg.methods import redo  # pylint: disable=import-outside-toplevel
    return redo.ReDOSettings(16, seed=3, z_dim=4, mask_width=4, mask_residual_blocks=1, generator_width=4,
                             discriminator_width=4, generator_self_attention=False).build()


def _perturbgan_tiny():
    from tfseg.methods import perturbgan  # pylint: disable=import-outside-toplevel
    return perturbgan.PerturbGANSettings(16, seed=3, min_mask_coverage=0.2, **_STYLEGAN_TINY).build()


def _labels4free_tiny():
    from tfseg.methods import labels4free  # pylint: disable=import-outside-toplevel
    return labels4free.Labels4FreeSettings(16, seed=3, **_STYLEGAN_TINY).build()


def _methods():
    from tfseg.methods import labels4free, perturbgan, redo  # pylint: disable=import-outside-toplevel
    return (
        MethodUnderTest("redo", redo.ReDOSettings, "demo.gin", "redo_folder.gin", _redo_tiny, ("train",)),
        MethodUnderTest("perturbgan", perturbgan.PerturbGANSettings, "demo_perturbgan.gin",
                        "perturbgan_folder.gin", _perturbgan_tiny, ("generator", "segmenter")),
        # Labels4Free's "alpha" stage runs its StyleGAN2 generator, the alpha network and a
        # discriminator with R1; its other stages add no other 16-bit code, only minutes.
        MethodUnderTest("labels4free", labels4free.Labels4FreeSettings, "demo_labels4free.gin",
                        "labels4free_folder.gin", _labels4free_tiny, ("alpha",)),
    )


METHODS = _methods()
BY_NAME = {m.name: m for m in METHODS}


def registered_method_names():
    """The methods gin knows: configurables named `tfseg.methods.<name>` whose class builds a method."""
    from tfseg import config, registry  # pylint: disable=import-outside-toplevel
    registry.import_configurables()
    return sorted(selector.split(".")[-1] for selector, configurable in config._registry().items()  # pylint: disable=protected-access
                  if selector.startswith("tfseg.methods.") and hasattr(configurable.wrapped, "build"))


#: Methods whose demo config another test already trains for real (two smoke steps per stage, scored on
#: test), so that tests/test_training.py does not train it a second time: {name: the test that does}.
DEMO_TRAINED_ELSEWHERE = {
    "redo": "test_training.py::test_a_finished_run_reruns_without_training_and_evaluate_rescores_it",
    "perturbgan": "test_perturbgan.py::test_a_run_stopped_in_the_generator_stage_resumes_into_the_later_stages",
}


def demo_configs_trained_by_test_training():
    """The demo configs tests/test_training.py trains for real: every method's but those trained elsewhere."""
    return [m.demo_config for m in METHODS if m.name not in DEMO_TRAINED_ELSEWHERE]
