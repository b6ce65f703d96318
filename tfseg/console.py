"""A quiet console: TensorFlow's C++ and AutoGraph logs only when `--verbosity` asks for them.

TensorFlow prints start-up notices, grappler's "remapper failed" (an optimisation pass that gives up
on our discriminator's graph and falls back; the step is still correct), tf.data notes and checkpoint
timings on every run. They bury the progress lines a person needs, so the entry points call
`quiet_tensorflow` before TensorFlow is imported. `--verbosity=1` (absl's flag) shows them again.
Python-level errors are never hidden: they raise.
"""
import contextlib
import logging
import os
import sys
import tempfile


def quiet_tensorflow(verbosity=0):
    """Silences TensorFlow's C++ logs, Python warnings and AutoGraph notes unless `verbosity` >= 1."""
    if verbosity >= 1:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("AUTOGRAPH_VERBOSITY", "0")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
    absl_logging.set_verbosity(absl_logging.WARNING)  # TF's Python INFO lines (checkpoint timings)
    with _stderr_only_on_failure():
        # TF's native start-up lines are written before its log level is read: hide them at the file
        # descriptor; if the import fails, they are shown with the error.
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.get_logger().setLevel(logging.ERROR)
    tf.autograph.set_verbosity(0)


@contextlib.contextmanager
def _stderr_only_on_failure():
    """Sends file descriptor 2 to a temporary file; replays it only if the block raises."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest's capture, notebooks: nothing to redirect
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def run_entry_point(main, module_name):
    """`absl.app.run(main)` whose `--help` shows the module's description and flags also when started
    as an installed console script (`tfseg-train`), where `__main__` is pip's wrapper, not the module.
    """
    from absl import app, flags  # pylint: disable=import-outside-toplevel
    module = sys.modules[module_name]
    main_module = sys.modules.get("__main__")
    if main_module is not None and main_module is not module:
        main_module.__doc__ = module.__doc__
        for flag in flags.FLAGS.get_key_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(lambda argv: sys.exit(main(argv)))
