"""Bad input fails loudly with the argument's name: one row per mistake (table-driven).

Every row is ``(id, call, exception type, regex the message must match)``; the regex names the
offending argument as the message writes it (in backticks).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bilevel_lib import blo, profiling, quadratic, spectral
from bilevel_lib import hypergrad as hg

A = jnp.array([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
X, Y = jnp.array([0.5, -1.0, 2.0]), jnp.zeros(4)


def inner(x, y):  # H = A^T A (eigenvalues up to ~10), B = -A^T
    return 0.5 * jnp.sum((A @ y - x) ** 2)


def outer(x, y):
    return 0.5 * jnp.sum((y - 1.0) ** 2)


def vector_inner(x, y):
    return (A @ y - x) ** 2


def int_inner(x, y):
    return jnp.sum(jnp.round(A @ y - x)).astype(jnp.int32)


LAM_MAX = float(jnp.linalg.eigvalsh(A.T @ A).max())

ESTIMATORS = {
    "exact": hg.exact,
    "neumann": functools.partial(hg.neumann, steps=3, lr=0.05),
    "damped": functools.partial(hg.damped, eps=0.1),
    "cg": functools.partial(hg.cg, steps=3),
    "unroll": functools.partial(hg.unroll, steps=3, lr=0.05),
}


def _for_every_estimator(label, make_call, exc, match):
    return [pytest.param(lambda est=est: make_call(est), exc, match, id=f"{name}-{label}")
            for name, est in ESTIMATORS.items()]


def _blo(**overrides):
    kw = dict(hypergrad=hg.exact, outer_opt=optax.sgd(0.1), inner_opt=optax.sgd(0.1),
              outer_steps=2, inner_steps=2)
    kw.update(overrides)
    x0, y0 = kw.pop("x0", X), kw.pop("y0", Y)
    return blo.cold_start(inner, outer, x0, y0, **kw)


CASES = [
    # Step counts: static non-negative Python ints (or traced with a static max_steps).
    *[pytest.param(lambda f=f, kw=kw: f(inner, outer, X, Y, steps=-1, **kw), ValueError,
                   r"`steps`",
                   id=f"{f.__name__}-negative-steps")
      for f, kw in ((hg.neumann, {"lr": 0.05}), (hg.unroll, {"lr": 0.05}), (hg.cg, {}))],
    *[pytest.param(lambda f=f, s=s, kw=kw: f(inner, outer, X, Y, steps=s, **kw), TypeError,
                   r"`steps`", id=f"{f.__name__}-steps-{type(s).__name__}")
      for f, kw in ((hg.neumann, {"lr": 0.05}), (hg.unroll, {"lr": 0.05}), (hg.cg, {}))
      for s in (2.5, True, jnp.array(3), None)],
    pytest.param(lambda: jax.jit(lambda k: hg.neumann(inner, outer, X, Y, steps=k, lr=0.05))(3),
                 TypeError, r"`steps`", id="traced-steps-without-max_steps"),
    pytest.param(lambda: hg.neumann(inner, outer, X, Y, steps=2.5, lr=0.05, max_steps=5),
                 TypeError, r"`steps`", id="float-steps-with-max_steps"),
    pytest.param(lambda: hg.unroll(inner, outer, X, Y, steps=6, lr=0.05, max_steps=5),
                 ValueError, r"`steps`.*`max_steps`", id="steps-above-max_steps"),
    pytest.param(lambda: hg.cg(inner, outer, X, Y, steps=1, max_steps=-2), ValueError,
                 r"`max_steps`", id="negative-max_steps"),
    pytest.param(lambda: hg.conjugate_gradient(lambda v: v, jnp.ones(2), steps=-3), ValueError,
                 r"`steps`", id="conjugate_gradient-negative-steps"),
    # Positive scalars.
    *[pytest.param(lambda f=f, v=v: f(inner, outer, X, Y, steps=3, lr=v), ValueError, r"`lr`",
                   id=f"{f.__name__}-lr-{v}")
      for f in (hg.neumann, hg.unroll) for v in (0.0, -0.1, float("nan"), float("inf"))],
    pytest.param(lambda: hg.neumann(inner, outer, X, Y, steps=3, lr="0.1"), TypeError, r"`lr`",
                 id="neumann-lr-string"),
    *[pytest.param(lambda v=v: hg.damped(inner, outer, X, Y, eps=v), ValueError, r"`eps`",
                   id=f"damped-eps-{v}") for v in (0.0, -1.0, float("nan"))],
    pytest.param(lambda: hg.damped(inner, outer, X, Y, eps=None), TypeError, r"`eps`",
                 id="damped-eps-None"),
    pytest.param(lambda: hg.damped(inner, outer, X, Y, eps=0.1, method="lu"), ValueError,
                 r"`method`", id="damped-unknown-method"),
    pytest.param(lambda: hg.damped(inner, outer, X, Y, eps=0.1, max_steps=-1), ValueError,
                 r"`max_steps`", id="damped-negative-max_steps"),
    # Objectives: callable, scalar, real, and accepting x and y as given.
    *_for_every_estimator("inner-not-callable", lambda est: est(3.0, outer, X, Y), TypeError,
                          r"`inner`"),
    *_for_every_estimator("outer-not-callable", lambda est: est(inner, "F", X, Y), TypeError,
                          r"`outer`"),
    *_for_every_estimator("inner-not-scalar", lambda est: est(vector_inner, outer, X, Y),
                          ValueError, r"`inner\(x, y\)` must return a scalar"),
    *_for_every_estimator("outer-not-scalar", lambda est: est(inner, vector_inner, X, Y),
                          ValueError, r"`outer\(x, y\)` must return a scalar"),
    *_for_every_estimator("inner-integer-output", lambda est: est(int_inner, outer, X, Y),
                          TypeError, r"`inner\(x, y\)` must return a real floating"),
    *_for_every_estimator("y-wrong-shape", lambda est: est(inner, outer, X, jnp.zeros(3)),
                          ValueError, r"`inner\(x, y\)` failed .* `y`"),
    *_for_every_estimator("x-wrong-shape", lambda est: est(inner, outer, jnp.zeros(2), Y),
                          ValueError, r"`inner\(x, y\)` failed .* `x`"),
    # Parameters must be floating point (differentiable).
    *_for_every_estimator("integer-y", lambda est: est(inner, outer, X, jnp.arange(4)),
                          TypeError, r"`y` must hold floating-point"),
    *_for_every_estimator("integer-x", lambda est: est(inner, outer, jnp.arange(3), Y),
                          TypeError, r"`x` must hold floating-point"),
    pytest.param(lambda: hg.exact(inner, outer, X, {}), ValueError, r"`y` has no array leaves",
                 id="empty-y"),
    pytest.param(lambda: hg.hessian_and_mixed(inner, X, jnp.arange(4)), TypeError, r"`y`",
                 id="hessian_and_mixed-integer-y"),
    # Divergence is an error, not a silent NaN or a huge number.
    pytest.param(lambda: hg.neumann(inner, outer, X, Y, steps=30, lr=2.5 / LAM_MAX),
                 FloatingPointError, r"`lr`", id="neumann-diverges-lr-above-2-over-lam_max"),
    pytest.param(lambda: hg.neumann(inner, outer, X, Y, steps=3000, lr=4.0 / LAM_MAX),
                 FloatingPointError, r"`lr`", id="neumann-overflows"),
    # The loops.
    pytest.param(lambda: _blo(outer_opt=0.1), TypeError, r"`outer_opt`", id="blo-outer_opt"),
    pytest.param(lambda: _blo(inner_opt=optax.sgd), TypeError, r"`inner_opt`",
                 id="blo-inner_opt"),
    pytest.param(lambda: _blo(hypergrad="exact"), TypeError, r"`hypergrad`", id="blo-hypergrad"),
    pytest.param(lambda: _blo(outer_steps=-1), ValueError, r"`outer_steps`",
                 id="blo-negative-outer_steps"),
    pytest.param(lambda: _blo(inner_steps=1.5), TypeError, r"`inner_steps`",
                 id="blo-float-inner_steps"),
    pytest.param(lambda: _blo(log_every=0), ValueError, r"`log_every`", id="blo-log_every-0"),
    pytest.param(lambda: _blo(x0=jnp.arange(3)), TypeError, r"`x0`", id="blo-integer-x0"),
    pytest.param(lambda: _blo(y0=jnp.zeros(5)), ValueError, r"`inner\(x, y\)` failed",
                 id="blo-y0-wrong-shape"),
    # Closed forms and filters.
    pytest.param(lambda: quadratic.closest_minimizer(jnp.ones((2, 3)), jnp.ones(2), jnp.ones(2)),
                 ValueError, r"`hess`", id="closest_minimizer-not-square"),
    pytest.param(lambda: quadratic.closest_minimizer(jnp.eye(2), jnp.ones(3), jnp.ones(2)),
                 ValueError, r"`b`", id="closest_minimizer-b-shape"),
    pytest.param(lambda: quadratic.closest_solution(jnp.ones(3), jnp.ones(3), jnp.ones(3)),
                 ValueError, r"`a`", id="closest_solution-a-not-matrix"),
    pytest.param(lambda: quadratic.min_norm_outer_solution(jnp.ones((2, 4)), jnp.ones((3, 5)),
                                                           jnp.ones(3), jnp.ones(2)),
                 ValueError, r"`phi`", id="min_norm_outer_solution-shapes"),
    pytest.param(lambda: quadratic.project_hyperplane(jnp.ones(2), jnp.ones(3), 1.0), ValueError,
                 r"`w`", id="project_hyperplane-shapes"),
    pytest.param(lambda: spectral.neumann_filter(jnp.ones(2), steps=3, lr=0.0), ValueError,
                 r"`lr`", id="neumann_filter-lr"),
    pytest.param(lambda: spectral.neumann_filter(jnp.ones(2), steps=-1, lr=0.1), ValueError,
                 r"`steps`", id="neumann_filter-steps"),
    pytest.param(lambda: spectral.damped_filter(jnp.ones(2), eps=-1.0), ValueError, r"`eps`",
                 id="damped_filter-eps"),
    pytest.param(lambda: spectral.matching_eps(steps=0, lr=0.1), ValueError, r"`steps`",
                 id="matching_eps-steps"),
    pytest.param(lambda: spectral.apply_filter(jnp.ones((2, 3)), jnp.ones(2),
                                               spectral.pinv_filter),
                 ValueError, r"`hess`", id="apply_filter-not-square"),
    pytest.param(lambda: spectral.max_eigenvalue(inner, X, Y, steps=0), ValueError, r"`steps`",
                 id="max_eigenvalue-steps"),
    pytest.param(lambda: profiling.hvp(lambda y: jnp.sum(y**2), jnp.ones(2), jnp.ones(2),
                                       mode="ff"),
                 ValueError, r"`mode`", id="hvp-mode"),
]


@pytest.mark.parametrize("call, exc, match", CASES)
def test_bad_input_raises_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_good_input_passes_the_same_checks():
    """The rows above fail because of the one bad argument: the baseline call succeeds."""
    for name, est in ESTIMATORS.items():  # jitted: the checks run at trace time as well
        out = np.asarray(jax.jit(lambda x, y, est=est: est(inner, outer, x, y))(X, Y))
        assert out.shape == X.shape and np.all(np.isfinite(out)), name
    assert hg.neumann(inner, outer, X, Y, steps=30, lr=1.9 / LAM_MAX).shape == (3,)
    assert hg.neumann(inner, outer, X, Y, steps=3, lr=0.05, max_steps=5).shape == (3,)
    x, _, trace = _blo()
    assert x.shape == (3,) and trace["x"].shape == (2, 3)
