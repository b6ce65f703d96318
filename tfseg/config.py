"""gin parsing with errors that say how to fix them, and the run-directory checks done before training."""
import difflib
import inspect
import os
import re
import tempfile
import typing

import gin
from absl import logging

# ConfigError lives in the leaf module tfseg.errors; the name stays importable from here.
from tfseg import registry
from tfseg.errors import ConfigError  # noqa: F401
from tfseg.training.run_dir import CONFIG_FILE

GIN_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "gin_configs")

SMOKE_CONFIG = os.path.join(GIN_CONFIG_DIR, "smoke.gin")


def _registry():
    """gin's registry of configurables: the one private API tfseg reads (for "did you mean" hints
    and numeric-binding checks). gin-config 0.5.0 has no public way to list configurables;
    tests/test_robustness.py and tests/test_training.py fail if its shape changes."""
    from gin import config as gin_config  # gin keeps its registry there
    return gin_config._REGISTRY  # pylint: disable=protected-access


def _configurable_names():
    names = set()
    for selector, _ in _registry().items():
        names.add(selector)
        names.add(selector.split(".")[-1])
    return sorted(names)


def _suggest(message):
    """Adds a 'did you mean' line to gin's errors for unknown configurables and parameters."""
    match = re.search(r"No configurable matching (?:reference )?'@?([\w.]+)'", message)
    if match:
        close = difflib.get_close_matches(match.group(1), _configurable_names(), n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        if not registry.configurables_imported():
            return (f"unknown gin configurable '{match.group(1)}': tfseg's configurables are not registered "
                    "in this process. Call tfseg.registry.import_configurables() before tfseg.config.parse "
                    "(the entry points do).")
        return (f"unknown gin configurable '{match.group(1)}'.{hint} "
                "List the configurables with `python -m tfseg.train --helpfull` or see README.md.")
    match = re.search(r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'", message)
    if match:
        name, param = match.groups()
        params = []
        try:
            fn = _registry().get_match(name).wrapped
            fn = fn.__init__ if inspect.isclass(fn) else fn
            params = [p for p in inspect.signature(fn).parameters if p not in ("self", "kwargs")]
        except Exception:  # pylint: disable=broad-except
            pass
        close = difflib.get_close_matches(param, params, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        return (f"gin binding '{name}.{param}': '{name}' has no parameter '{param}'.{hint} "
                f"Its parameters are: {', '.join(params)}.")
    return None


def parse(gin_files=(), gin_bindings=()):
    """Parses gin files then bindings (later ones win) and finalizes the config.

    The configurables the files name must be registered first: the entry points call
    `tfseg.registry.import_configurables()` before this.

    Raises:
        ConfigError: a missing file, an unknown configurable or parameter, a syntax error.
    """
    gin.clear_config()
    for path in gin_files:
        if not os.path.exists(path):
            shipped = sorted(f for f in os.listdir(GIN_CONFIG_DIR) if f.endswith(".gin")) \
                if os.path.isdir(GIN_CONFIG_DIR) else []
            raise ConfigError(f"gin file '{path}' does not exist. Shipped configs (in "
                              f"{GIN_CONFIG_DIR}): {', '.join(shipped)}")
        gin.add_config_file_search_path(os.path.dirname(os.path.abspath(path)))
    if os.path.isdir(GIN_CONFIG_DIR):
        gin.add_config_file_search_path(GIN_CONFIG_DIR)
    verbosity = logging.get_verbosity()
    # gin's package-path reader logs a spurious "Path not found" error for every `include` it
    # then finds on the search path.
    logging.set_verbosity(logging.FATAL)
    try:
        gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings),
                                            finalize_config=False)
    except (ValueError, SyntaxError) as err:
        text = str(err)
        raise ConfigError(_suggest(text) or f"could not parse the gin config: {text}") from err
    except Exception as err:  # tokenizer errors of a malformed binding
        raise ConfigError(f"could not parse the gin config ({type(err).__name__}): {err}") from err
    finally:
        logging.set_verbosity(verbosity)
    gin.finalize()


#: Parameter-name parts whose numbers can never be negative (sizes, counts, rates, loss weights).
_NON_NEGATIVE = ("rate", "weight", "steps", "every", "size", "width", "dim", "examples", "layers", "blocks",
                 "channels", "resolution", "restarts", "keep", "buffer", "base", "gain", "penalty", "decay")


def without_gin_context(err):
    """An exception's message without the lines gin appends ("In call to configurable ...")."""
    lines = [line for line in str(err).splitlines()
             if not line.strip().startswith(("In call to configurable", "In file ", "No values supplied"))]
    return "\n".join(lines).strip()


def _optional(annotation):
    """Whether a parameter's annotation admits None (`Optional[int]`, `int | None`)."""
    return type(None) in typing.get_args(annotation)


def check_numeric_bindings():
    """Raises ConfigError naming the binding for a number of the wrong type or sign, before any network.

    A parameter whose default is a number takes a number of that kind: an int default an integer, a
    float default any number; neither takes a bool or a string. A parameter annotated `Optional[...]`
    also takes None (`TrainConfig.eval_examples = None`: the whole validation split). Parameters named like sizes, counts,
    rates and loss weights (`_NON_NEGATIVE`) take no negative value.
    """
    for selector, configurable in _registry().items():
        try:
            bindings = gin.get_bindings(selector)
        except (ValueError, KeyError):
            continue
        if not bindings:
            continue
        fn = configurable.wrapped
        try:
            parameters = inspect.signature(fn.__init__ if inspect.isclass(fn) else fn).parameters
        except (TypeError, ValueError):
            continue
        for name, value in bindings.items():
            if name not in parameters:
                continue
            default = parameters[name].default
            binding = f"{selector}.{name}"
            if value is None and _optional(parameters[name].annotation):
                continue
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if isinstance(default, (int, float)) and not isinstance(default, bool) and default is not None:
                if not is_number:
                    raise ConfigError(f"gin binding {binding} = {value!r}: must be a number "
                                      f"(default {default!r}).")
                if isinstance(default, int) and not float(value).is_integer():
                    raise ConfigError(f"gin binding {binding} = {value!r}: must be a whole number.")
            if is_number and value < 0 and any(part in name for part in _NON_NEGATIVE):
                raise ConfigError(f"gin binding {binding} = {value!r}: must not be negative.")


def prepare_model_dir(model_dir):
    """Creates `model_dir` and checks it is writable, before any training."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        # A probe of this process's own: the workers of a multi-worker run check the same folder at
        # once, and a shared name let one worker delete the probe another was about to delete.
        handle, probe = tempfile.mkstemp(prefix=".tfseg_write_check_", dir=model_dir)
        os.close(handle)
        os.remove(probe)
    except OSError as err:
        raise ConfigError(f"model_dir '{model_dir}' is not writable ({err.strerror or err}). "
                          "Pass --model_dir=<a folder you can write>, e.g. --model_dir=runs/demo") from err


def save_config(model_dir, name=CONFIG_FILE):
    """Writes the full parsed config to `model_dir/name` (what `tfseg.evaluate` re-reads)."""
    path = os.path.join(model_dir, name)
    with open(path, "w") as f:
        f.write(gin.config_str())
    return path


def load_run_config(model_dir, extra_bindings=()):
    """Parses the config a training run saved in `model_dir` (after `registry.import_configurables()`)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise ConfigError(f"'{model_dir}' holds no config.gin: it is not a tfseg training run. "
                          "Train first with python -m tfseg.train --gin_file=... "
                          f"--model_dir={model_dir}")
    check_run_config_is_data(path)
    parse([path], extra_bindings)
    return path


def check_run_config_is_data(path):
    """Refuses a run folder's config.gin that could run code rather than only set tfseg's bindings.

    A gin file may import any module and, with `from __gin__ import dynamic_registration`, call any
    function (`@subprocess.check_call()`). `tfseg.train` writes config.gin with only `import tfseg...`
    lines and bindings of tfseg's own configurables; evaluate, export and predict read a run folder that
    may come from elsewhere, so they accept nothing more.

    Raises:
        ConfigError: naming the offending line.
    """
    with open(path) as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            words = text.split()
            risky = (text.startswith(("from ", "include")) or "__gin__" in text or "dynamic_registration" in text
                     or (words[:1] == ["import"] and not (len(words) > 1 and words[1].startswith("tfseg."))))
            if risky:
                raise ConfigError(f"{path}, line {number}: {text!r} is not allowed in a run folder's config "
                                  "(only `import tfseg...` lines and bindings are; a gin file that imports other "
                                  "modules can run code). Re-create the run with python -m tfseg.train, or read "
                                  "the file and remove the line if you trust it.")
