"""docs/adding_a_method.md, followed to the letter: a toy fourth method added through its diffs alone is
covered by every test parametrised by the methods.

The shared working tree is never touched: the package, the tests, the configs and the docs are copied
into a temporary folder, the toy's module is written there as `tfseg/methods/toy.py`, and the doc's
```diff blocks (with `<name>` / `<Name>` replaced) are applied to the copy: nothing else. A pytest in a
subprocess (the copy first on PYTHONPATH) then collects the whole copied suite; every test function
that has an id for one of today's methods must have one for the toy, and the toy's cheap cases are run.
A step the doc leaves out (the registry line, the entry in tests/methods.py, a config, smoke.gin's sizes)
fails here.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

import methods as methods_under_test  # tests/methods.py: the one list of methods

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "adding_a_method.md")
#: What the copy needs to import the package and run its tests (no data, no runs, no .git).
COPIED = ("tfseg", "tests", "gin_configs", "docs", "tools", "pytest.ini", "setup.py", "README.md")
NAME, CLASS_NAME = "toy", "Toy"

#: Test functions that name some of today's methods by hand, on purpose, and need not name a new one:
#: {function: why}. Any other function that names a method must name the toy too.
METHOD_SPECIFIC = {
    "tests/test_training.py::test_photos_are_resized_as_each_reference_resizes_them":
        "compares each config's resize with its reference's (ReDO's, PerturbGAN's): not per method",
    "tests/test_distributed.py::test_two_local_workers_train_one_run_to_the_same_weights_and_only_the_chief_writes":
        "two workers train a one-stage (ReDO) and a staged (PerturbGAN) demo, a sample kept by hand for its "
        "minutes: Labels4Free is not in it either",
}

#: The toy method's module: a learned two-colour model (a network proposes a soft mask; each image is
#: rebuilt from the mean colour under it and outside it), with what the tests of tests/methods.py ask
#: of a method: documented settings with a `z_dim`, float32 outputs, optimizers from `gan_adam`.
TOY_MODULE = '''"""A toy method written by tests/test_adding_a_method_recipe.py: a learned two-colour model."""
import dataclasses

import gin
import keras
import tensorflow as tf

from tfseg.methods import base, optimizers
from tfseg.modeling import layers


@gin.configurable("toy", module="tfseg.methods")
@dataclasses.dataclass(frozen=True)
class ToySettings:
    """The toy's hyper-parameters.

    Attributes:
        resolution: image side (set by the trainer).
        z_dim: channels of the mask network's hidden layer.
        learning_rate: Adam lr of the mask network.
        seed: seeds the initial weights (set by the trainer).
    """
    resolution: int
    z_dim: int = 8
    learning_rate: float = 1e-2
    seed: int = 0

    def build(self):
        return Toy(self)


class Toy(base.Method):
    """One phase, one network, one optimizer."""

    phases = ("train",)

    def __init__(self, settings):
        super().__init__(settings, name="toy")
        self.z_dim = settings.z_dim
        self.mask_network = keras.Sequential([
            keras.layers.Conv2D(settings.z_dim, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(1, 3, padding="same")], name="mask_network")
        self.optimizer = optimizers.gan_adam(settings.learning_rate)

    def build_for_training(self, global_batch_size):
        self.mask_network(tf.zeros([1, self.resolution, self.resolution, 3]))
        self.build_optimizers()

    def phase_optimizers(self):
        return {"train": (self.optimizer, self.mask_network.trainable_variables)}

    def region_masks(self, images, training=False):
        mask = tf.sigmoid(layers.float32(self.mask_network(images, training=training)))
        return tf.concat([mask, 1.0 - mask], axis=-1)

    def phase_gradients(self, phase, batches, step):
        images = tf.cast(batches[0]["image"], tf.float32)
        variables = self.mask_network.trainable_variables
        with tf.GradientTape() as tape:
            mask = self.region_masks(images, training=True)[..., :1]

            def mean_colour(weights):
                return (tf.reduce_sum(weights * images, axis=(1, 2), keepdims=True)
                        / (tf.reduce_sum(weights, axis=(1, 2), keepdims=True) + 1e-6))

            rebuilt = mask * mean_colour(mask) + (1.0 - mask) * mean_colour(1.0 - mask)
            per_example = tf.reduce_mean(tf.square(rebuilt - images), axis=(1, 2, 3))
            total = tf.nn.compute_average_loss(per_example)
        grads = optimizers.gradients(tape, total, variables, self.optimizer)
        return base.PhaseMetrics(losses={"rebuild": per_example},
                                 mask_coverage=tf.reduce_mean(mask, axis=(1, 2, 3))), grads

    def summary_images(self, images, step):
        return {"image": images, "mask": self.region_masks(images)[..., :1]}
'''


def doc_diffs(text):
    """The ```diff blocks of `text`: `[(path or None for a new file, new path, hunks)]`, a hunk being
    `(old lines, new lines)`; a hunk of added lines only is appended to its file."""
    diffs = []
    for block in re.findall(r"^```diff\n(.*?)^```", text, re.M | re.S):
        lines = block.splitlines()
        assert lines[0].startswith("--- ") and lines[1].startswith("+++ "), block
        old_path = None if lines[0][4:].strip() == "/dev/null" else lines[0][4:].strip()
        hunks, old, new = [], [], []
        for line in lines[2:]:
            if line.startswith("@@"):
                if old or new:
                    hunks.append((old, new))
                old, new = [], []
                continue
            kind, body = (line[:1], line[1:]) if line else (" ", "")
            assert kind in " +-", f"not a diff line in the doc: {line!r}"
            if kind in " -":
                old.append(body)
            if kind in " +":
                new.append(body)
        if old or new:
            hunks.append((old, new))
        diffs.append((old_path, lines[1][4:].strip(), hunks))
    return diffs


def apply_diffs(root, diffs):
    """Applies `doc_diffs` under `root`; each hunk's old lines must occur exactly once in its file."""
    for old_path, new_path, hunks in diffs:
        path = os.path.join(root, new_path)
        if old_path is None:
            assert not os.path.exists(path), f"the doc creates {new_path}, which exists"
            text = ""
        else:
            with open(path) as f:
                text = f.read()
        for old, new in hunks:
            if not old:  # added lines only: appended
                text = text + ("" if not text or text.endswith("\n") else "\n") + "\n".join(new) + "\n"
                continue
            old_text, new_text = "\n".join(old) + "\n", "\n".join(new) + "\n"
            found = text.count(old_text)
            assert found == 1, f"the doc's diff of {new_path} expects {old_text!r} once, found it {found} times"
            text = text.replace(old_text, new_text)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def method_tokens(name, settings_class_name, demo_config, folder_config):
    """The test-id parts that name a method: its name, settings class and configs."""
    return {name, settings_class_name, demo_config, folder_config}


def methods_named(node_ids, tokens_by_method):
    """`{test function: {methods its parametrised ids name}}`: a method is named when one of the
    `-`-separated parts of an id is one of its tokens."""
    named = {}
    for node_id in node_ids:
        match = re.fullmatch(r"(.+?)\[(.*)\]", node_id)
        if not match:
            continue
        parts = set(match.group(2).split("-"))
        for method, tokens in tokens_by_method.items():
            if parts & tokens:
                named.setdefault(match.group(1), set()).add(method)
    return named


def uncovered(named, existing, new):
    """The functions that name one of the `existing` methods but not the `new` one."""
    return sorted(function for function, methods in named.items()
                  if methods & existing and new not in methods and function not in METHOD_SPECIFIC)


def test_a_function_naming_today_s_methods_but_not_the_new_one_is_found():
    tokens = {"redo": method_tokens("redo", "ReDOSettings", "demo.gin", "redo_folder.gin"),
              "toy": method_tokens("toy", "ToySettings", "demo_toy.gin", "toy_folder.gin")}
    ids = ["t.py::test_a[redo-mixed_float16]", "t.py::test_a[toy-mixed_float16]",
           "t.py::test_b[demo.gin]", "t.py::test_b[lsun_horse.gin]",
           "t.py::test_c[redo_folder.gin]", "t.py::test_c[toy_folder.gin]",
           "t.py::test_d[tfseg.methods.redo.z_dim=2.5]", "t.py::test_e"]
    named = methods_named(ids, tokens)
    assert named == {"t.py::test_a": {"redo", "toy"}, "t.py::test_b": {"redo"}, "t.py::test_c": {"redo", "toy"}}
    assert uncovered(named, {"redo"}, "toy") == ["t.py::test_b"]


def test_the_doc_s_diffs_apply_and_a_missing_anchor_fails(tmp_path):
    diffs = doc_diffs(open(DOC).read())
    touched = {new_path for _, new_path, _ in diffs}
    assert {"tfseg/registry.py", "tests/methods.py", "gin_configs/smoke.gin",
            "gin_configs/demo_<name>.gin", "gin_configs/<name>_folder.gin"} <= touched
    (tmp_path / "a.py").write_text("x = 1\n")
    with pytest.raises(AssertionError, match="expects"):
        apply_diffs(str(tmp_path), [("a.py", "a.py", [(["y = 1"], ["y = 2"])])])


def _copy_with_the_toy(root):
    for name in COPIED:
        source = os.path.join(REPO, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(root, name), ignore=shutil.ignore_patterns("__pycache__"))
        elif os.path.exists(source):
            shutil.copy(source, os.path.join(root, name))
    with open(os.path.join(root, "tfseg", "methods", f"{NAME}.py"), "w") as f:
        f.write(TOY_MODULE)
    with open(DOC) as f:
        doc = f.read().replace("<name>", NAME).replace("<Name>", CLASS_NAME)
    apply_diffs(root, doc_diffs(doc))


def _pytest(root, *args):
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider", "-n0",
                           "-q", *args], cwd=root, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # copies the repository, collects the whole suite and runs the toy's cheap cases (~1 min)
def test_a_toy_method_added_by_the_doc_alone_is_covered_by_every_per_method_test(tmp_path):
    root = str(tmp_path / "repo")
    _copy_with_the_toy(root)

    collected = _pytest(root, "--collect-only", "tests")
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    node_ids = [line for line in collected.stdout.splitlines() if "::" in line]
    tokens = {m.name: method_tokens(m.name, m.settings_class.__name__, m.demo_config, m.folder_config)
              for m in methods_under_test.METHODS}
    tokens[NAME] = method_tokens(NAME, f"{CLASS_NAME}Settings", f"demo_{NAME}.gin", f"{NAME}_folder.gin")
    named = methods_named(node_ids, tokens)
    # The match is not blind: each module parametrised by tests/methods.py has functions naming the methods.
    for module in ("test_method_settings", "test_precision", "test_robustness", "test_serving", "test_training"):
        assert any(f.startswith(f"tests/{module}.py::") and len(m) > 1 for f, m in named.items()), module
    missing = uncovered(named, set(tokens) - {NAME}, NAME)
    assert not missing, f"with the doc's edits these tests name today's methods but not the toy: {missing}"
    # Both configs tests/methods.py names exist: the shipped-config test (over gin_configs/) has them.
    shipped = "tests/test_training.py::test_every_shipped_config_resolves_and_builds_its_networks"
    for gin_name in (f"demo_{NAME}.gin", f"{NAME}_folder.gin"):
        assert f"{shipped}[{gin_name}]" in node_ids, f"gin_configs/{gin_name} was not written"
    # Smoke runs shrink the toy's networks: smoke.gin binds its settings.
    with open(os.path.join(root, "gin_configs", "smoke.gin")) as f:
        assert re.search(rf"^tfseg\.methods\.{NAME}\.\w+ = ", f.read(), re.M), "smoke.gin has no tiny sizes for it"

    # The demo's header command resolves in a fresh process, where only the registry makes gin know the
    # toy (in pytest, tests/methods.py has imported it already).
    with open(os.path.join(root, "gin_configs", f"demo_{NAME}.gin")) as f:
        command = re.search(r"^# Command: python -m tfseg\.train (.*)$", f.read(), re.M).group(1).split()
    dry_run = subprocess.run([sys.executable, "-m", "tfseg.train", *command, "--dry_run"], cwd=root,
                             env={**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"},
                             capture_output=True, text=True, timeout=600)
    assert dry_run.returncode == 0, dry_run.stdout[-2000:] + dry_run.stderr[-2000:]
    assert "dry run: config resolved, data found" in dry_run.stdout

    # The toy's cheap cases run and pass: gin knows it and the tests list it, its settings reach the built
    # method, its configs are hygienic, their headers agree with docs/results.md and their commands dry-run,
    # they resolve and build its networks, and its demo trains two smoke steps and scores test.
    toy_part = rf"\[(.*-)?({NAME}|{CLASS_NAME}Settings|demo_{NAME}\.gin|{NAME}_folder\.gin)(-.*)?\]"
    toy_ids = [i for i in node_ids if re.search(toy_part, i)
               and i.split("::")[0] in ("tests/test_method_settings.py", "tests/test_gin_hygiene.py",
                                        "tests/test_figures_agree.py", "tests/test_training.py")
               and "folder_configs_train_two_steps_on_real_flowers" not in i]  # needs Flowers-17
    toy_ids.append("tests/test_method_settings.py::test_the_tests_list_every_method_gin_knows")
    assert any("test_one_config_per_method_trains" in i for i in toy_ids)
    ran = _pytest(root, "-rs", *toy_ids)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert re.search(rf"\b{len(toy_ids)} passed", ran.stdout), ran.stdout[-2000:]  # none skipped
