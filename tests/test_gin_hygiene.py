"""Shipped configs bind what they change: no binding restates the code's default or an include's value.

A binding equal to the default says nothing, and goes stale when the default moves (the code's
default is the one home of a value). Such a line is allowed only when its own comment says why
(`x = 64  # the paper's value, pinned against later default changes`). A file that includes another
does not bind a parameter to the value the included file already gives it.
"""
import ast
import glob
import inspect
import os
import re

import pytest

from tfseg import config, registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_FILES = sorted(glob.glob(os.path.join(REPO, "gin_configs", "*.gin")))
registry.import_configurables()

_BINDING = re.compile(r"^(?P<selector>[\w.]+)\.(?P<param>\w+)\s*=\s*(?P<value>[^#]*?)\s*(?:#(?P<why>.*))?$")
_INCLUDE = re.compile(r"^include\s+'(?P<name>[^']+)'")


def bindings_of(path):
    """`[(line number, selector, param, value text, comment)]` of one file's own single-line bindings."""
    found = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            match = _BINDING.match(line.rstrip("\n"))
            if match:
                found.append((number, match["selector"], match["param"], match["value"], (match["why"] or "").strip()))
    return found


def includes_of(path):
    with open(path, encoding="utf-8") as f:
        return [os.path.join(os.path.dirname(path), m["name"]) for m in map(_INCLUDE.match, f) if m]


def _literal(text):
    """A gin value as Python, or a sentinel for what is not a plain literal (references, macros)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return _NOT_LITERAL


_NOT_LITERAL = object()
_NO_DEFAULT = object()


def code_default(selector, param):
    """The default of `param` of the configurable `selector`, or `_NO_DEFAULT`."""
    try:
        fn = config._registry().get_match(selector).wrapped  # pylint: disable=protected-access
    except (KeyError, ValueError, AttributeError):
        return _NO_DEFAULT
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        parameter = inspect.signature(target).parameters.get(param)
    except (TypeError, ValueError):
        return _NO_DEFAULT
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return _NO_DEFAULT
    return parameter.default


def _same(a, b):
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def restated_defaults(path):
    """`["file:line: binding"]` of bindings equal to the code's default without a comment saying why
    (a binding that puts back the default over an include's other value is not a restatement)."""
    found = []
    inherited = _inherited(path)
    for number, selector, param, text, why in bindings_of(path):
        value, default = _literal(text), code_default(selector, param)
        if value is _NOT_LITERAL or default is _NO_DEFAULT or why or (selector, param) in inherited:
            continue
        if _same(value, default):
            found.append(f"{os.path.basename(path)}:{number}: {selector}.{param} = {text} (the code's default)")
    return found


def _inherited(path, seen=()):
    """`{(selector, param): value text}` that `path`'s includes bind, nearest include last."""
    values = {}
    for included in includes_of(path):
        if included in seen:
            continue
        values.update(_inherited(included, seen + (path,)))
        values.update({(s, p): v for _, s, p, v, _ in bindings_of(included)})
    return values


def restated_includes(path):
    """`["file:line: binding"]` of bindings equal to what the file's includes already bind."""
    inherited = _inherited(path)
    return [f"{os.path.basename(path)}:{number}: {selector}.{param} = {text} (as an include binds it)"
            for number, selector, param, text, _ in bindings_of(path)
            if inherited.get((selector, param)) == text]


@pytest.mark.parametrize("path", GIN_FILES, ids=os.path.basename)
def test_no_shipped_config_restates_a_default_or_an_include(path):
    problems = restated_defaults(path) + restated_includes(path)
    assert not problems, "drop these lines (or say on the line why it stays):\n" + "\n".join(problems)


def test_the_checks_see_a_restated_default_and_a_restated_include(tmp_path):
    base = tmp_path / "base.gin"
    base.write_text("tfseg.methods.redo.z_dim = 16\n")
    child = tmp_path / "child.gin"
    child.write_text("include 'base.gin'\n"
                     "tfseg.methods.redo.z_dim = 16\n"
                     "tfseg.methods.redo.mask_width = 64\n"
                     "tfseg.methods.redo.generator_width = 32  # the paper's width, pinned\n"
                     "tfseg.methods.redo.discriminator_width = 48\n")
    assert restated_includes(str(child)) == ["child.gin:2: tfseg.methods.redo.z_dim = 16 (as an include binds it)"]
    assert restated_defaults(str(child)) == ["child.gin:3: tfseg.methods.redo.mask_width = 64 (the code's default)"]
