"""No module of bilevel_lib uses another module's private (``_name``) attributes.

CONTRIBUTING.md: private helpers start with ``_`` and are used only in their own module. A
private *module* with public names (``bilevel_lib._checks.is_concrete``) is fine.
"""

import ast
import pathlib

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[1] / "bilevel_lib"
_MODULES = sorted(_ROOT.rglob("*.py"))


# The public API of NamedTuples (SolveInfo) starts with an underscore too.
_NAMEDTUPLE_API = {"_fields", "_replace", "_asdict", "_make", "_field_defaults"}


def _private(name):
    return (name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
            and name not in _NAMEDTUPLE_API)


def _cross_module_private_uses(source):
    """``(line, text)`` for each ``mod._name`` with ``mod`` an imported module (or a
    ``from mod import _name``) in ``source``."""
    tree = ast.parse(source)
    modules = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            ours = node.level > 0 or (node.module or "").startswith("bilevel_lib")
            for alias in node.names:
                # `from . import _checks` imports a (private) module, which is fine
                if ours and node.module is not None and _private(alias.name):
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
                # `from . import linalg`: the bound name is a module of the package
                if ours:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("bilevel_lib"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.append((node.lineno, f"{ast.unparse(node)}"))
    return found


def test_the_checker_finds_what_it_must():
    src = ("from . import linalg, _checks\nfrom .linalg import _info\n"
           "a = linalg._true_residual(1)\nb = _checks.is_concrete(2)\nc = self._x\n")
    got = sorted(text for _, text in _cross_module_private_uses(src))
    assert got == ["from linalg import _info", "linalg._true_residual"]


@pytest.mark.parametrize("path", _MODULES, ids=lambda p: str(p.relative_to(_ROOT)))
def test_no_module_uses_another_modules_private_names(path):
    uses = _cross_module_private_uses(path.read_text())
    assert not uses, f"{path.name} uses private names of other modules: {uses}"
