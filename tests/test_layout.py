"""The package layout drawn in CONTRIBUTING.md, kept true.

* Which module may import which, read from the source with ``ast`` (every import, also those
  inside functions): the core imports only the core; models the core and models; tasks the
  core, models and tasks; profiling the core; plotting and interactive the core and plotting,
  and only they import matplotlib, IPython or ipywidgets.
* No module uses another module's private names (``linalg._eps``, ``from .x import _y``).
* The task layer writes no loop of its own (``lax.scan``, ``fori_loop``, ``while_loop``): its
  loops are the core's (``bilevel_lib.loops.descend``, ``bilevel_lib.blo``).
* Importing the core does not import the layers around it (matplotlib, the data loaders).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bilevel_lib"

CORE = {"hypergrad", "linalg", "blo", "quadratic", "spectral", "loops", "runtime", "_checks"}
# layer -> the layers it may import
ALLOWED = {
    "core": {"core"},
    "models": {"core", "models"},
    "tasks": {"core", "models", "tasks"},
    "profiling": {"core"},
    "plotting": {"core"},
    "interactive": {"core", "plotting"},
    "package": {"core"},           # bilevel_lib/__init__: the rest loads lazily (importlib)
}
# Only the figure layers draw: nothing else imports a plotting or notebook package.
DRAWING = {"matplotlib", "IPython", "ipywidgets"}
MAY_DRAW = {"plotting", "interactive"}


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module):
    parts = module.split(".")
    if parts[0] in DRAWING:
        return "drawing"
    if len(parts) == 1:
        return "package"
    if parts[1] in CORE:
        return "core"
    if parts[1] in ("models", "tasks", "profiling", "plotting", "interactive"):
        return parts[1]
    return None


def _imports(module):
    """``(line, imported module, names bound to modules, private names imported)``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), str(path))
    found, bound, private = [], {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in DRAWING:
                    found.append((node.lineno, alias.name))
                if alias.name.split(".")[0] == "bilevel_lib":
                    found.append((node.lineno, alias.name))
                    if alias.asname:
                        bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "bilevel_lib":
                target = node.module
            else:
                if node.module and node.module.split(".")[0] in DRAWING:
                    found.append((node.lineno, node.module))
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:            # `from . import linalg`: a module
                    found.append((node.lineno, sub))
                    bound[alias.asname or alias.name] = sub
                else:                         # `from .linalg import hvp`: a name in it
                    found.append((node.lineno, target))
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append((node.lineno, f"{target}.{alias.name}"))
    return tree, found, bound, private


def test_every_module_has_a_layer():
    assert not [m for m in MODULES if _layer(m) is None], "add the new module to a layer"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layers(module):
    layer = _layer(module)
    _, found, _, _ = _imports(module)
    allowed = ALLOWED[layer] | ({"drawing"} if layer in MAY_DRAW else set())
    bad = [f"line {line}: {target} ({_layer(target)})" for line, target in found
           if _layer(target) not in allowed]
    assert not bad, f"{module} ({layer}) may import only {sorted(ALLOWED[layer])}: {bad}"


# Private names across modules: tests/test_private_names.py.


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) in ("tasks", "models")))
def test_the_task_layer_writes_no_loop_of_its_own(module):
    tree = ast.parse(MODULES[module].read_text())
    loops = [f"line {node.lineno}: {node.attr}" for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr in ("scan", "fori_loop",
                                                                   "while_loop")]
    assert not loops, f"{module} writes its own loop (use bilevel_lib.loops or blo): {loops}"


_HEAVY = ("matplotlib", "bilevel_lib.plotting", "bilevel_lib.interactive", "bilevel_lib.tasks",
          "bilevel_lib.tasks.image_data", "bilevel_lib.tasks.toy_data", "bilevel_lib.models",
          "bilevel_lib.profiling", "urllib.request", "tarfile")


@pytest.mark.parametrize("module", ["bilevel_lib", "bilevel_lib.hypergrad", "bilevel_lib.blo",
                                    "bilevel_lib.linalg", "bilevel_lib.loops",
                                    "bilevel_lib.runtime"])
def test_importing_the_core_loads_no_plotting_or_data(module):
    code = (f"import sys, {module}; "
            f"print(','.join(m for m in {_HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"import {module} also loaded: {out}"


def test_the_layers_load_on_first_use():
    code = ("import sys, bilevel_lib; bilevel_lib.plotting.use_style; "
            "bilevel_lib.tasks.ridge; print('matplotlib' in sys.modules, "
            "'bilevel_lib.tasks.ridge' in sys.modules, 'tasks' in dir(bilevel_lib))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "True", "True"]
    import bilevel_lib
    with pytest.raises(AttributeError, match="no_such_thing"):
        bilevel_lib.no_such_thing  # noqa: B018


def test_the_old_datasets_module_is_a_deprecated_alias_of_the_two_new_ones():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import bilevel_lib.tasks.datasets\n"
            "except DeprecationWarning as w:\n    print('toy_data' in str(w), "
            "'image_data' in str(w))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "True"]
    from bilevel_lib.tasks import image_data, toy_data
    with pytest.warns(DeprecationWarning):
        import importlib

        import bilevel_lib.tasks.datasets as old
        importlib.reload(old)
    assert old.rings is toy_data.rings and old.load is image_data.load
