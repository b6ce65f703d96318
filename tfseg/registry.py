"""The one place that imports every module defining a gin configurable; the entry points call it.

gin knows a configurable only once the module defining it has been imported, and a config names
configurables from all over the package (`@tfseg.data.lsun_source`, `tfseg.methods.redo`,
`tfseg.training.TrainConfig`, ...). So, as compare_gan's main.py imports every module its configs may
name, each program that parses gin calls `import_configurables()` first: `tfseg.train`,
`tfseg.training.loading` (behind evaluate, export and predict) and the tools that parse gin.
`tfseg.config` parses but does not register, and `tfseg.data` imports no source as a side effect,
so neither imports the whole package (which is how import cycles started).

This module imports nothing at module level; `import_configurables` imports by name.
"""
import importlib

#: The modules that define gin configurables (tests/test_imports.py checks that none is missing).
CONFIGURABLE_MODULES = (
    "tfseg.data.pipeline",
    "tfseg.data.procedural",
    "tfseg.data.folder",
    "tfseg.data.lsun",
    "tfseg.data.tfds_sources",
    "tfseg.data.tfrecord",
    "tfseg.methods.labels4free",
    "tfseg.methods.perturbgan",
    "tfseg.methods.redo",
    "tfseg.modeling.refinement",
    "tfseg.training.strategy",
    "tfseg.training.train_config",
)

_imported = False


def import_configurables():
    """Imports every module in `CONFIGURABLE_MODULES`, so that any shipped or saved config parses."""
    global _imported  # pylint: disable=global-statement
    for name in CONFIGURABLE_MODULES:
        importlib.import_module(name)
    _imported = True


def configurables_imported():
    """Whether `import_configurables` has run in this process."""
    return _imported
