"""The package layout: importing the core does not import the layers around it."""

import subprocess
import sys

import pytest

_HEAVY = ("matplotlib", "bilevel_lib.plotting", "bilevel_lib.tasks",
          "bilevel_lib.tasks.datasets", "bilevel_lib.models", "bilevel_lib.profiling")


@pytest.mark.parametrize("module", ["bilevel_lib", "bilevel_lib.hypergrad", "bilevel_lib.blo",
                                    "bilevel_lib.linalg"])
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
