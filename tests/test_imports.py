"""The package's structure: no import cycles, and one gin registration that knows every shipped config.

Import cycles are found statically, from the module-level imports of every file under tfseg/ (an
import inside a function runs later, when every module is loaded, and is the documented way to break
a genuine need). Importing `a.b.c` also runs `a/__init__.py` and `a/b/__init__.py`, so those count
as imported too, except a module's own parent packages (they are always loaded before it).
"""
import ast
import glob
import os
import subprocess
import sys

from tfseg import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "tfseg")
GIN_FILES = sorted(glob.glob(os.path.join(REPO, "gin_configs", "*.gin")))


def _module_name(path):
    rel = os.path.relpath(path, REPO)[:-len(".py")].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def _modules():
    """`{module name: path}` of every Python file in the package."""
    return {_module_name(p): p for p in glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True)}


def _module_level_imports(tree):
    """Import statements executed when the module is imported (not those inside functions)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        pending.extend(ast.iter_child_nodes(node))


def _import_graph():
    """`{module: {imported module: line}}` over the package's own modules."""
    modules = _modules()

    def known(name):  # the module itself, or the package whose attribute it is
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        edges = {}
        for node in _module_level_imports(tree):
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative import
                    parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [known(f"{base}.{alias.name}") if f"{base}.{alias.name}" in modules else known(base)
                           for alias in node.names]
            for target in filter(None, targets):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):  # the packages on the way are imported too
                    step = ".".join(parts[:i])
                    if step in modules and step != name and not name.startswith(step + "."):
                        edges.setdefault(step, node.lineno)
        graph[name] = edges
    return graph


def _strongly_connected_components(graph):
    """Tarjan's algorithm; returns the components as lists of module names."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _a_cycle(graph, component):
    """One import cycle through `component`, as `a (line 3) -> b (line 7) -> a`."""
    members, start = set(component), component[0]
    paths, frontier = {start: [start]}, [start]
    while frontier:
        node = frontier.pop(0)
        for succ in sorted(graph[node]):
            if succ == start:
                path = paths[node] + [start]
                return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(path, path[1:])) + f" -> {start}"
            if succ in members and succ not in paths:
                paths[succ] = paths[node] + [succ]
                frontier.append(succ)
    return ", ".join(component)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    cycles = [c for c in _strongly_connected_components(graph) if len(c) > 1]
    assert cycles == [["a", "b", "c"]]
    assert _a_cycle(graph, cycles[0]) == "a (line 1) -> b (line 2) -> c (line 3) -> a"


def test_the_package_has_no_import_cycle():
    graph = _import_graph()
    assert "tfseg.training.train_config" in graph and "tfseg.errors" in graph["tfseg.training.train_config"]
    cycles = [c for c in _strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, "import cycles (move the shared part to a leaf module, or import inside the function " \
        "that needs it):\n" + "\n".join(_a_cycle(graph, c) for c in cycles)


def test_the_error_module_is_a_leaf():
    assert not _import_graph()["tfseg.errors"]


def _defines_configurables(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    return any(isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "gin"
               and node.attr in ("configurable", "register", "external_configurable", "register_class")
               for node in ast.walk(tree))


def test_the_registry_lists_every_module_that_defines_a_configurable():
    defining = {name for name, path in _modules().items() if _defines_configurables(path)}
    assert defining, "no gin configurable found: the scan is broken"
    missing = defining - set(registry.CONFIGURABLE_MODULES)
    assert not missing, f"add {sorted(missing)} to tfseg.registry.CONFIGURABLE_MODULES"


def _calls(path, *names):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    return {node.func.attr for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names}


def test_every_program_that_parses_gin_registers_the_configurables_first():
    entry_points = [os.path.join(PACKAGE, f"{name}.py") for name in ("train", "evaluate", "export", "predict")]
    parsers = [p for p in glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True)
               + glob.glob(os.path.join(REPO, "tools", "*.py"))
               if _calls(p, "parse", "load_run_config") & {"parse", "load_run_config"}
               and not p.endswith(os.path.join("tfseg", "config.py"))]
    assert os.path.join(PACKAGE, "train.py") in parsers
    unregistered = [os.path.relpath(p, REPO) for p in sorted(set(entry_points + parsers))
                    if "import_configurables" not in _calls(p, "import_configurables")]
    assert not unregistered, f"these parse gin without tfseg.registry.import_configurables(): {unregistered}"


def test_the_registration_makes_every_shipped_gin_file_parse():
    # A fresh process, so that nothing but the registration has imported the configurables.
    script = (
        "import sys\n"
        "from tfseg import config, registry\n"
        "registry.import_configurables()\n"
        "for path in sys.argv[1:]:\n"
        "    config.parse([path])\n"
        "print('parsed', len(sys.argv) - 1)\n")
    result = subprocess.run([sys.executable, "-c", script, *GIN_FILES], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"parsed {len(GIN_FILES)}" in result.stdout


def test_parsing_without_the_registration_says_what_to_call():
    script = (
        "from tfseg import config, errors\n"
        "try:\n"
        "    config.parse([], ['tfseg.data.lsun_source.limit = 3'])\n"
        "except errors.ConfigError as err:\n"
        "    print(err)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert "tfseg.registry.import_configurables()" in result.stdout, result.stdout + result.stderr[-2000:]
