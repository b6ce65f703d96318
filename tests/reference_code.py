"""The authors' code, imported at test time only (docs/fidelity.md).

`shared/reference/<name>`, beside the repository's folder, holds the unmodified implementations
tfseg ports (ReDO, perturbed-seg, stylegan2-pytorch, Labels4Free). Nothing of them is copied
here: a test imports their modules with `authors_modules`, builds their networks and runs their losses beside tfseg's, and compares numbers.
Tests using them carry `@pytest.mark.reference` (so `pytest -m reference` runs exactly them) and
skip, saying why, when the folder or torch is absent.

Their module names collide (`models`, `model`, `stylegan`, `op`), and their CUDA extensions are
built on import: `authors_modules` puts one folder on `sys.path`, stubs
`torch.utils.cpp_extension.load` (the CPU fallbacks never call the extension), imports, and then
removes both the folder and the imported names, so the next test can import another folder's
`model`. Set TFSEG_REFERENCE to use a copy elsewhere.
"""
import contextlib
import importlib
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_ROOT = os.environ.get("TFSEG_REFERENCE",
                                os.path.join(os.path.dirname(REPO), "shared", "reference"))
FOLDERS = ("ReDO", "perturbed-seg", "stylegan2-pytorch", "Labels4Free")


def reference_folder(name):
    """The path of one authors' folder, or skip the calling test saying what is missing."""
    if name not in FOLDERS:
        raise ValueError(f"unknown reference folder {name!r}; one of {FOLDERS}")
    path = os.path.join(REFERENCE_ROOT, name)
    if not os.path.isdir(path):
        pytest.skip(f"the authors' code is not here ({path} is absent; it sits in shared/reference "
                    f"beside the repository's folder, or set TFSEG_REFERENCE)")
    return path


def require_torch():
    """torch, single-threaded and deterministic, or skip saying how to install it."""
    try:
        import torch
    except ImportError:
        pytest.skip("torch is not installed: pip install -e '.[reference]' (the pinned CPU wheel)")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return torch


@contextlib.contextmanager
def authors_modules(folder, *module_names, stub_modules=()):
    """Import `module_names` from one reference folder; yields them as a tuple.

    `stub_modules` names packages their scripts import but the networks never use (torchvision,
    mlflow, tqdm): empty modules stand in for them while importing.
    """
    path = reference_folder(folder)
    torch = require_torch()
    import torch.utils.cpp_extension as cpp_extension
    import types

    before = set(sys.modules)
    saved_load = cpp_extension.load
    cpp_extension.load = lambda *args, **kwargs: None
    stubs = {}
    for name in stub_modules:
        if name not in sys.modules:
            stubs[name] = sys.modules[name] = types.ModuleType(name)
    sys.path.insert(0, path)
    try:
        modules = tuple(importlib.import_module(name) for name in module_names)
        yield modules
    finally:
        sys.path.remove(path)
        cpp_extension.load = saved_load
        for name in set(sys.modules) - before:
            module = sys.modules.get(name)
            origin = getattr(module, "__file__", None) or ""
            if name in stubs or origin.startswith(path):
                del sys.modules[name]
        del torch


def state_dict_numpy(module):
    """A torch module's state dict as {name: float32 numpy array} (what tfseg's converters take)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def relative_error(actual, expected):
    """max |actual - expected| / max |expected|: the figure every equivalence test states."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shapes differ: {actual.shape} vs {expected.shape}")
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    return float(np.max(np.abs(actual - expected))) / scale
