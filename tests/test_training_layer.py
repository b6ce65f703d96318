"""tfseg/training knows no method: its code (docstrings and comments aside) names none, nor a method's
metric, so a new method needs no edit there (docs/adding_a_method.md). Static checks, no TensorFlow run."""
import ast
import glob
import os
import re

import pytest

import methods as methods_under_test  # tests/methods.py: the one list of methods

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING = os.path.join(REPO, "tfseg", "training")


def _forbidden_words():
    """Every method's name and class name, and the metrics and networks only one method has."""
    words = {"redo_iou", "stylegan", "stylegan2"}
    for method in methods_under_test.METHODS:
        words.add(method.name)
        words.add(method.settings_class.__name__.replace("Settings", ""))
    return words


def code_mentions(source, words):
    """`[(line, text)]` of identifiers and string constants (not docstrings) in `source` naming one of
    `words` (case-insensitive, as a whole word or an identifier part)."""
    pattern = re.compile(r"(?<![a-z0-9])(" + "|".join(re.escape(w.lower()) for w in words) + r")(?![a-z0-9])")
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
        elif isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            text = node.name
        else:
            continue
        if pattern.search(text.lower().replace("_", " ")) or pattern.search(text.lower()):
            found.append((node.lineno, text[:80]))
    return found


def test_the_checker_finds_a_method_named_in_code_but_not_in_a_docstring():
    source = ('"""Runs ReDO\'s loop."""\n'
              'METRICS = ("fg_iou", "redo_iou")\n'
              'def f(model):\n'
              '    """PerturbGAN too."""\n'
              '    return model.perturbgan_encoder\n')
    found = code_mentions(source, {"redo_iou", "perturbgan", "redo"})
    assert [line for line, _ in found] == [2, 5]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(TRAINING, "*.py"))), ids=os.path.basename)
def test_no_code_in_the_training_layer_names_a_method_or_its_metrics(path):
    with open(path, encoding="utf-8") as f:
        found = code_mentions(f.read(), _forbidden_words())
    assert not found, (f"{os.path.relpath(path, REPO)} names a method, its stage or its metric in code: {found}. "
                       "Let the method say it (its settings or class: checkpoint_hint, CHECKED_AT_RESTORE, "
                       "stages, PhaseMetrics) or the evaluator (RANKING_METRICS)")


def test_the_trainer_module_stays_short():
    with open(os.path.join(TRAINING, "trainer.py"), encoding="utf-8") as f:
        lines = f.read().count("\n")
    assert lines <= 350, f"tfseg/training/trainer.py has {lines} lines: move a concern into a module of its own"
