"""bilevel_lib.linalg and the estimators built on it, against independent answers.

Known answers: ``numpy.linalg.solve`` / ``pinv`` in float64 of matrices built as
``Q diag(lambda) Q^T`` (so their eigenvalues are known exactly), dense Neumann sums, the closed
form of ``1 - (1 - a)^K``, and residuals recomputed here in float64.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_linear_quadratic
from jax.experimental import checkify

from bilevel_lib import hypergrad as hg
from bilevel_lib import linalg, spectral


def _orthogonal(seed, n):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))[0]


def _sym(q, lam):
    return (q * np.asarray(lam, float)) @ q.T


def _quadratic_problem(hess, t, dtype):
    """``f = 1/2 y^T H y - x.y``, ``F = 1/2 |y - t|^2``: B = -I, hypergradient ``H^+ (y - t)``."""
    h, t = jnp.asarray(hess, dtype), jnp.asarray(t, dtype)
    inner = lambda x, y: 0.5 * y @ (h @ y) - x @ y
    outer = lambda x, y: 0.5 * jnp.sum((y - t) ** 2)
    return inner, outer


def _np(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


# ---------------------------------------------------------------------------------------------
# The zero threshold and exact in float32
# ---------------------------------------------------------------------------------------------

_N = 1000


@functools.lru_cache(maxsize=1)
def _q1000():
    return _orthogonal(0, _N)


def test_exact_float32_matches_float64_at_condition_1e4():
    q = _q1000()
    lam = np.geomspace(1.0, 1e-4, _N)
    rng = np.random.default_rng(1)
    y, t = rng.standard_normal(_N), rng.standard_normal(_N)
    want = q @ ((q.T @ (y - t)) / lam)  # H^{-1} (y - t), closed form in float64
    # H and t as data (args), not closed-over constants: XLA would spend seconds folding them.
    inner = lambda x_, y_, h, t_: 0.5 * y_ @ (h @ y_) - x_ @ y_
    outer = lambda x_, y_, h, t_: 0.5 * jnp.sum((y_ - t_) ** 2)
    got = np.asarray(jax.jit(lambda y_, h, t_: hg.exact(inner, outer, jnp.zeros_like(y_), y_,
                                                        args=(h, t_)))(
        *(jnp.asarray(a, jnp.float32) for a in (y, _sym(q, lam), t))))
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert got.dtype == np.float32
    assert err < 0.01, err  # the old n * eps threshold (1.2e-4) gave 0.59


def test_singular_float32_zero_eigenvalues_still_dropped():
    q = _q1000()
    lam = np.zeros(_N)
    lam[: _N // 2] = np.geomspace(1.0, 1e-3, _N // 2)
    hess = jnp.asarray(_sym(q, lam), jnp.float32)
    computed = np.asarray(jnp.linalg.eigvalsh(hess))
    cutoff = float(linalg.zero_threshold(computed))
    order = np.argsort(np.abs(computed))
    noise, real = np.abs(computed[order[: _N // 2]]), np.abs(computed[order[_N // 2:]])
    # The real eigenvalues (>= 1e-3 |H|) are kept and the null space (float32 eigh returns it at
    # about 1-2.3 eps |H|, by LAPACK kernel) is dropped, both with a margin: the cutoff, 10 eps
    # |H|, is 800x below the smallest real eigenvalue and over 4x above the noise.
    assert real.min() > 100 * cutoff
    assert noise.max() < cutoff
    assert (np.abs(computed) > cutoff).sum() == _N // 2
    b = np.random.default_rng(2).standard_normal(_N)
    v, info = jax.jit(lambda b_: linalg.dense_solve(lambda u: hess @ u, b_))(
        jnp.asarray(b, jnp.float32))
    want = np.linalg.pinv(_sym(q, lam), rcond=1e-8) @ b
    assert np.linalg.norm(np.asarray(v) - want) / np.linalg.norm(want) < 1e-3
    # The least-squares residual is b's part outside range(H), computed in float64.
    null = q[:, _N // 2:]
    np.testing.assert_allclose(float(info["residual"]),
                               np.linalg.norm(null.T @ b) / np.linalg.norm(b), rtol=1e-3)


def test_exact_rtol_drops_eigenvalues_and_warns(x64):
    q = _orthogonal(3, 3)
    lam = np.array([1.0, 0.3, 0.01])
    t = np.array([1.0, -2.0, 0.5])
    inner, outer = _quadratic_problem(_sym(q, lam), t, jnp.float64)
    y = jnp.zeros(3)
    with pytest.warns(UserWarning, match="rtol"):
        got = hg.exact(inner, outer, jnp.zeros(3), y, rtol=0.5)
    keep = np.where(lam > 0.5, 1.0 / lam, 0.0)
    np.testing.assert_allclose(got, q @ (keep * (q.T @ -t)), rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default threshold drops nothing here: no warning
        np.testing.assert_allclose(hg.exact(inner, outer, jnp.zeros(3), y),
                                   q @ ((q.T @ -t) / lam), rtol=1e-10)


def test_pinv_filter_float32_uses_dtype_threshold():
    lam = jnp.asarray([3e-8, 1e-4, 1.0], jnp.float32)
    np.testing.assert_allclose(spectral.pinv_filter(lam), [0.0, 1e4, 1.0], rtol=1e-6)


def test_neumann_filter_float32_small_lambda():
    got = spectral.neumann_filter(jnp.asarray([3e-8], jnp.float32), steps=10, lr=1.0)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got[0]), 10.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_neumann_filter_matches_closed_form_on_a_grid(dtype):
    lr, steps = 0.5, np.array([0, 1, 7, 40])
    lam = np.concatenate([[0.0, 1e-9, 1e-6], np.linspace(0.01, 3.9, 50)])  # lr*lam up to 1.95
    # Closed form in exact rational arithmetic would be best; float64 with the sum is exact
    # enough as the reference (no cancellation in the sum itself).
    want = np.array([[lr * sum((1 - lr * v) ** j for j in range(k)) for v in lam] for k in steps])
    with jax.enable_x64(dtype == np.float64):
        got = np.asarray(spectral.neumann_filter(jnp.asarray(lam, dtype)[None, :],
                                                 steps=jnp.asarray(steps)[:, None], lr=lr))
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-13)


# ---------------------------------------------------------------------------------------------
# CG through negative curvature
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cg_indefinite_nonsingular_matches_solve(dtype):
    q = _orthogonal(4, 8)
    a = _sym(q, [3.0, 2.0, 1.0, 0.5, -0.5, -1.0, -2.0, -3.5])
    b = np.random.default_rng(5).standard_normal(8)
    want = np.linalg.solve(a, b)
    with jax.enable_x64(dtype == np.float64):
        aj = jnp.asarray(a, dtype)
        v, info = _np(jax.jit(lambda b_: linalg.cg_solve(lambda u: aj @ u, b_, steps=8))(
            jnp.asarray(b, dtype)))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(v, want, rtol=tol, atol=tol)
    assert info["negative_curvature"] and info["min_curvature"] < 0
    assert info["steps"] == 8
    np.testing.assert_allclose(info["residual"], np.linalg.norm(a @ v - b) / np.linalg.norm(b),
                               rtol=1e-3, atol=1e-7)


def _tanh_mlp_at_init():
    """A ridge-regularized tanh MLP at its (random) initial weights: indefinite inner Hessian."""
    rng = np.random.default_rng(7)
    u, target = jnp.asarray(rng.standard_normal((10, 2))), jnp.asarray(rng.standard_normal(10))
    u_val, t_val = jnp.asarray(rng.standard_normal((6, 2))), jnp.asarray(rng.standard_normal(6))
    shapes = [(2, 4), (4,), (4,)]
    sizes = [int(np.prod(s)) for s in shapes]

    def net(y, inputs):
        w1, b1, w2 = jnp.split(y, np.cumsum(sizes)[:-1])
        return jnp.tanh(inputs @ w1.reshape(2, 4) + b1) @ w2

    def inner(x, y):
        return 0.5 * jnp.mean((net(y, u) - target) ** 2) + 0.5 * jnp.exp(x[0]) * jnp.sum(y**2)

    def outer(x, y):
        return 0.5 * jnp.mean((net(y, u_val) - t_val) ** 2)

    y = jnp.asarray(1.5 * rng.standard_normal(sum(sizes)))
    return inner, outer, jnp.asarray([-4.0]), y


def test_cg_on_indefinite_mlp_moves_with_steps_and_reaches_dense_solve(x64):
    inner, outer, x, y = _tanh_mlp_at_init()
    hess = np.asarray(jax.hessian(inner, argnums=1)(x, y))
    lam = np.linalg.eigvalsh(hess)
    assert lam.min() < -1e-3 and lam.max() > 1e-3  # really indefinite, and nonsingular:
    assert np.abs(lam).min() > 1e-4
    mixed = np.asarray(jax.jacfwd(jax.grad(inner, argnums=1), argnums=0)(x, y))
    f_x, f_y = (np.asarray(g) for g in jax.grad(outer, argnums=(0, 1))(x, y))
    want = f_x - mixed.T @ np.linalg.solve(hess, f_y)
    n = y.shape[0]
    ks = jnp.array([1, 2, 3, n, 3 * n])
    got = np.asarray(jax.jit(jax.vmap(lambda k: hg.cg(inner, outer, x, y, steps=k,
                                                      max_steps=3 * n)))(ks))
    assert len({round(float(g[0]), 8) for g in got[:3]}) == 3  # the value changes with K
    np.testing.assert_allclose(got[-1], want, rtol=1e-6)
    # The damped estimator refuses this H: H + eps I is indefinite for a tiny eps.
    with pytest.raises(FloatingPointError, match="not positive definite"):
        hg.damped(inner, outer, x, y, eps=1e-6)


# ---------------------------------------------------------------------------------------------
# Damped: definiteness, true residual, tolerances
# ---------------------------------------------------------------------------------------------


def _indefinite_problem():
    q = _orthogonal(8, 5)
    inner, outer = _quadratic_problem(_sym(q, [2.0, 1.0, 0.5, -0.3, -1.0]), np.ones(5),
                                      jnp.float64)
    return inner, outer, jnp.zeros(5), jnp.asarray(np.linspace(-1, 1, 5))


@pytest.mark.parametrize("method", ["cg", "dense"])
def test_damped_indefinite_raises_eagerly_and_reports_under_jit(x64, method):
    inner, outer, x, y = _indefinite_problem()
    with pytest.raises(FloatingPointError, match=r"eps = 0\.1.*curvature"):
        hg.damped(inner, outer, x, y, eps=0.1, method=method)
    # Under jit it raises too, at run time, with the same message (wrapped by JAX) ...
    jitted = jax.jit(lambda y_, throw: hg.damped(inner, outer, x, y_, eps=0.1, method=method,
                                                 return_info=True, throw=throw),
                     static_argnums=1)
    with pytest.raises(Exception, match=r"eps = 0\.1.*curvature"):
        jax.block_until_ready(jitted(y, True))
    # ... and with throw=False it returns the answer and says why it is unusable.
    _, info = jitted(y, False)
    assert linalg.status_name(info.status) == "negative_curvature"
    assert bool(info.negative_curvature) and float(info.min_curvature) < 0
    # With enough damping H + eps I is positive definite: no error, the dense answer.
    q = _orthogonal(8, 5)
    lam = np.array([2.0, 1.0, 0.5, -0.3, -1.0])
    got = hg.damped(inner, outer, x, y, eps=1.5, method=method)
    want = q @ ((q.T @ (np.asarray(y) - 1.0)) / (lam + 1.5))
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_check_solution_raises_under_jit_checkify(x64):
    inner, outer, x, y = _indefinite_problem()

    def hypergradient(eps):
        h, info = hg.damped(inner, outer, x, y, eps=eps, return_info=True, throw=False)
        linalg.check_solution(info)
        return h

    checked = jax.jit(checkify.checkify(hypergradient))
    err, _ = checked(0.1)
    with pytest.raises(checkify.JaxRuntimeError, match="status"):
        err.throw()
    err, _ = checked(1.5)
    err.throw()  # positive definite: no error


def test_damped_float32_true_residual_and_tolerance():
    q = _orthogonal(9, 40)
    lam = np.geomspace(1.0, 1e-3, 40)
    rng = np.random.default_rng(10)
    b = rng.standard_normal(40)
    hess = _sym(q, lam)
    h32 = jnp.asarray(hess, jnp.float32)
    eps = 1e-3

    def solve(b_, tol, maxiter):
        return linalg.damped_solve(lambda u: h32 @ u, b_, eps=eps, tol=tol, max_steps=maxiter)

    run = jax.jit(solve, static_argnums=(1, 2))
    a64 = hess + eps * np.eye(40)
    for tol, maxiter in ((1e-4, 400), (1e-4, 3)):
        v, info = _np(run(jnp.asarray(b, jnp.float32), tol, maxiter))
        true = np.linalg.norm(a64 @ v.astype(np.float64) - b) / np.linalg.norm(b)
        np.testing.assert_allclose(info["residual"], true, rtol=0.5)
        if maxiter == 3:
            assert linalg.status_name(info["status"]) == "max_steps" and info["steps"] == 3
            assert true > tol
        else:
            # The stop is on the float32 residual, which rounds a few percent off the float64
            # one near tol (measured up to 5%): converged means below tol up to that rounding.
            assert linalg.status_name(info["status"]) == "converged"
            assert true <= 1.3 * tol


def test_damped_hypergradient_residual_info(x64):
    p = make_linear_quadratic(8, rank=3)
    _, info = hg.damped(p.inner, p.outer, p.x, p.y, eps=0.1, return_info=True)
    v = np.asarray(info["solution"])
    np.testing.assert_allclose(v, np.linalg.solve(p.H + 0.1 * np.eye(6), p.F_y), rtol=1e-9)
    assert info["residual"] < 1e-11


# ---------------------------------------------------------------------------------------------
# Neumann: the guard counts only the active steps; info
# ---------------------------------------------------------------------------------------------


def _two_eigen_problem():
    q = _orthogonal(11, 4)
    lam = np.array([2.0, 1.0, 0.4, 0.1])
    t = np.array([1.0, 2.0, -1.0, 0.5])
    inner, outer = _quadratic_problem(_sym(q, lam), t, jnp.float64)
    return inner, outer, q, lam, t


def test_neumann_masked_steps_do_not_trigger_divergence(x64):
    inner, outer, q, lam, t = _two_eigen_problem()
    x, y = jnp.zeros(4), jnp.zeros(4)
    # lr * lam_max = 2.04: |1 - 2.04|^3 = 1.12 (fine) but 1.04^200 = 2.6e3 (diverged).
    alone = hg.neumann(inner, outer, x, y, steps=3, lr=1.02)
    masked, info = hg.neumann(inner, outer, x, y, steps=3, lr=1.02, max_steps=200,
                              return_info=True)
    filt = np.array([1.02 * sum((1 - 1.02 * v) ** j for j in range(3)) for v in lam])
    want = q @ (filt * (q.T @ -t))
    np.testing.assert_allclose(alone, want, rtol=1e-12)
    np.testing.assert_allclose(masked, want, rtol=1e-12)
    growth = np.linalg.norm(q @ ((1 - 1.02 * lam) ** 3 * (q.T @ -t))) / np.linalg.norm(t)
    np.testing.assert_allclose(info["residual"], growth, rtol=1e-10)
    assert int(info["steps"]) == 3 and linalg.status_name(info["status"]) == "max_steps"
    with pytest.raises(FloatingPointError, match="diverging"):
        hg.neumann(inner, outer, x, y, steps=200, lr=1.02, max_steps=200)
    _, info = jax.jit(lambda k: hg.neumann(inner, outer, x, y, steps=k, lr=1.02, max_steps=200,
                                           return_info=True, throw=False))(200)
    assert linalg.status_name(info["status"]) == "diverged"


def test_unroll_info_at_stationary_point_is_neumann(x64):
    inner, outer, q, lam, t = _two_eigen_problem()
    x = jnp.asarray([0.3, -0.2, 0.1, 0.4])
    y = jnp.asarray(np.linalg.solve(_sym(q, lam), np.asarray(x)))  # stationary
    out, info = hg.unroll(inner, outer, x, y, steps=5, lr=0.4, return_info=True)
    filt = np.array([0.4 * sum((1 - 0.4 * v) ** j for j in range(5)) for v in lam])
    f_y = np.asarray(y) - t
    np.testing.assert_allclose(info["solution"], q @ (filt * (q.T @ f_y)), rtol=1e-10)
    np.testing.assert_allclose(out, q @ (filt * (q.T @ f_y)), rtol=1e-10)  # B = -I
    growth = np.linalg.norm(q @ ((1 - 0.4 * lam) ** 5 * (q.T @ f_y))) / np.linalg.norm(f_y)
    np.testing.assert_allclose(info["residual"], growth, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# Extra data, warm starts
# ---------------------------------------------------------------------------------------------

_ARGS_ESTIMATORS = {
    "exact": hg.exact,
    "cg": functools.partial(hg.cg, steps=6),
    "lsqr": functools.partial(hg.lsqr, steps=30),
    "damped": functools.partial(hg.damped, eps=1e-12),
    "neumann": functools.partial(hg.neumann, steps=400, lr=0.2),
    "unroll": functools.partial(hg.unroll, steps=400, lr=0.2),
}


@pytest.mark.parametrize("name", sorted(_ARGS_ESTIMATORS))
def test_args_reach_both_objectives(x64, name):
    q = _orthogonal(12, 6)
    lam = np.linspace(0.5, 4.0, 6)
    hess = jnp.asarray(_sym(q, lam))
    inner = lambda x, y, a, t: 0.5 * y @ (a * hess @ y) - x @ y
    outer = lambda x, y, a, t: 0.5 * jnp.sum((y - t) ** 2)
    a, t = 2.0, np.arange(6.0)
    x = jnp.asarray(np.linspace(0, 1, 6))
    y = jnp.asarray(np.linalg.solve(a * _sym(q, lam), np.asarray(x)))  # stationary
    got = jax.jit(lambda x_, y_, a_, t_: _ARGS_ESTIMATORS[name](
        inner, outer, x_, y_, args=(a_, t_)))(x, y, a, jnp.asarray(t))
    want = q @ ((q.T @ (np.asarray(y) - t)) / (a * lam))
    np.testing.assert_allclose(got, want, rtol=1e-8)


@pytest.mark.parametrize("name", ["cg", "damped", "lsqr"])
def test_warm_start_from_the_solution_needs_no_steps(x64, name):
    p = make_linear_quadratic(12, rank=6)
    v_star = np.linalg.solve(p.H, p.F_y)
    want = p.F_x - p.B.T @ v_star
    est = {"cg": functools.partial(hg.cg, steps=0),
           "lsqr": functools.partial(hg.lsqr, steps=0),
           "damped": functools.partial(hg.damped, eps=1e-14, tol=1e-10)}[name]
    got, info = est(p.inner, p.outer, p.x, p.y, init=jnp.asarray(v_star), return_info=True)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert int(info["steps"]) == 0
    cold = est(p.inner, p.outer, p.x, p.y)
    if name != "damped":  # zero steps from zero is just F_x: the warm start made the difference
        np.testing.assert_allclose(cold, p.F_x, rtol=1e-12)


def test_implicit_with_a_custom_solver(x64):
    p = make_linear_quadratic(13, rank=6)

    def solve(matvec, b, *, init=None):
        a = jax.vmap(matvec)(jnp.eye(b.shape[0]))
        return jnp.linalg.solve(a, b), {"residual": 0.0, "steps": 0, "status": 0}

    got = hg.implicit(p.inner, p.outer, p.x, p.y, solve=solve)
    np.testing.assert_allclose(got, p.F_x - p.B.T @ np.linalg.solve(p.H, p.F_y), rtol=1e-10)


def _spd_float32_system(n, cond):
    q = _orthogonal(13, n)
    hess = _sym(q, np.geomspace(1.0, 1.0 / cond, n))
    return hess, np.random.default_rng(14).standard_normal(n)


def test_cg_reports_the_true_residual_in_float32():
    # Run far past convergence: the recursive residual keeps shrinking, the true one stalls.
    hess, b = _spd_float32_system(40, 1e3)
    h32 = jnp.asarray(hess, jnp.float32)
    v, info = _np(jax.jit(lambda b_: linalg.cg_solve(lambda u: h32 @ u, b_, steps=200))(
        jnp.asarray(b, jnp.float32)))
    true = np.linalg.norm(hess @ v.astype(np.float64) - b) / np.linalg.norm(b)
    # The recursive residual is orders of magnitude lower by now; the reported one is the true
    # one up to its own float32 rounding, which at this floor is a few percent (measured 2-6%
    # across LAPACK kernels and instruction sets), so the claim is checked to a factor 1.5.
    np.testing.assert_allclose(info["residual"], true, rtol=0.5)


def test_damped_float32_never_reports_converged_above_tol():
    # At cond 1e3 the recursive residual of float32 CG drifts below the true one: a stop on it
    # alone claims tol = 1e-5 with the true residual at 1.8-2.7 tol (measured across LAPACK
    # kernels and instruction sets). The true-residual floor itself moves with the code
    # generation (below tol natively, about 1.5 tol under SSE4_2), so whether tol is reached is
    # rounding; what is not is the report: "converged" only with the true residual below tol up
    # to its own float32 rounding (measured 0.85-0.88 tol), otherwise "max_steps" and a
    # reported residual above tol.
    hess, b = _spd_float32_system(100, 1e3)
    h32, eps, tol = jnp.asarray(hess, jnp.float32), 1e-4, 1e-5
    v, info = _np(jax.jit(lambda b_: linalg.damped_solve(lambda u: h32 @ u, b_, eps=eps,
                                                         tol=tol, max_steps=2000))(
        jnp.asarray(b, jnp.float32)))
    true = np.linalg.norm((hess + eps * np.eye(100)) @ v.astype(np.float64) - b)
    true /= np.linalg.norm(b)
    status = linalg.status_name(info["status"])
    assert status in ("converged", "max_steps")
    if status == "converged":
        assert true <= tol * 1.3
    else:
        assert float(info["residual"]) > tol and true > tol / 1.3


def test_quadratic_closed_forms_float32_use_the_dtype_threshold():
    from bilevel_lib import quadratic

    q = _orthogonal(15, 30)
    lam = np.zeros(30)
    lam[:20] = np.geomspace(4.0, 4e-4, 20)  # condition number 1e4 on range(H)
    hess = _sym(q, lam)
    rng = np.random.default_rng(16)
    b, y0 = hess @ rng.standard_normal(30), rng.standard_normal(30)
    want = y0 - np.linalg.pinv(hess, rcond=1e-10) @ (hess @ y0 + b)  # Lemma C.1 in float64
    got = np.asarray(quadratic.closest_minimizer(*(jnp.asarray(a, jnp.float32)
                                                   for a in (hess, b, y0))))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * np.abs(want).max())


# ---------------------------------------------------------------------------------------------
# v3: one SolveInfo for every solver and estimator; throw=True under jit
# ---------------------------------------------------------------------------------------------


def test_damped_dense_and_neumann_solvers_match_dense_answers(x64):
    q = _orthogonal(21, 6)
    lam = np.array([3.0, 2.0, 1.0, 0.5, 0.1, 0.0])
    a = _sym(q, lam)
    b = np.random.default_rng(22).standard_normal(6)
    aj = jnp.asarray(a)
    v, info = linalg.damped_dense_solve(lambda u: aj @ u, jnp.asarray(b), eps=0.3)
    np.testing.assert_allclose(v, np.linalg.solve(a + 0.3 * np.eye(6), b), rtol=1e-10)
    assert linalg.status_name(info.status) == "converged" and int(info.steps) == 0
    np.testing.assert_allclose(info.min_curvature, 0.3, atol=1e-12)
    # Neumann: lr sum_{j<K} (I - lr A)^j b, summed densely here.
    lr, k = 0.25, 7
    m = np.eye(6) - lr * a
    want = lr * sum(np.linalg.matrix_power(m, j) for j in range(k)) @ b
    v, info = jax.jit(lambda b_: linalg.neumann_solve(lambda u: aj @ u, b_, steps=k, lr=lr))(
        jnp.asarray(b))
    np.testing.assert_allclose(v, want, rtol=1e-12)
    growth = np.linalg.norm(np.linalg.matrix_power(m, k) @ b) / np.linalg.norm(b)
    np.testing.assert_allclose(info.growth, growth, rtol=1e-12)
    np.testing.assert_allclose(info.residual,
                               np.linalg.norm(a @ want - b) / np.linalg.norm(b), rtol=1e-10)
    assert int(info.steps) == k and linalg.status_name(info.status) == "max_steps"
    # The dense pinv solve against numpy's pinv, its min eigenvalue in min_curvature.
    v, info = linalg.dense_solve(lambda u: aj @ u, jnp.asarray(b))
    np.testing.assert_allclose(v, np.linalg.pinv(a) @ b, rtol=1e-9, atol=1e-12)
    assert abs(float(info.min_curvature)) < 1e-12


def _estimators():
    return {
        "exact": hg.exact,
        "neumann": functools.partial(hg.neumann, steps=5, lr=0.2),
        "cg": functools.partial(hg.cg, steps=5),
        "lsqr": functools.partial(hg.lsqr, steps=5),
        "damped": functools.partial(hg.damped, eps=0.1),
        "damped-dense": functools.partial(hg.damped, eps=0.1, method="dense"),
        "unroll": functools.partial(hg.unroll, steps=5, lr=0.2),
        "implicit": functools.partial(hg.implicit, solve=functools.partial(
            linalg.neumann_solve, steps=5, lr=0.2)),
    }


def test_every_estimator_reports_one_info_structure_eagerly_and_under_jit(x64):
    p = make_linear_quadratic(31, rank=6)
    structures, infos = set(), []
    for name, est in _estimators().items():
        _, eager = est(p.inner, p.outer, p.x, p.y, return_info=True)
        _, jitted = jax.jit(lambda x, y, est=est: est(p.inner, p.outer, x, y,
                                                      return_info=True))(p.x, p.y)
        assert isinstance(eager, linalg.SolveInfo), name
        structures |= {jax.tree_util.tree_structure(eager),
                       jax.tree_util.tree_structure(jitted)}
        infos.append(jitted)
        if name == "unroll":  # its residual is taken at the end of the unroll, not at y
            continue
        # the reported residual is the true one of the returned solution
        v = np.asarray(jitted.solution)
        np.testing.assert_allclose(
            jitted.residual, np.linalg.norm(p.H @ v - p.F_y) / np.linalg.norm(p.F_y)
            if name not in ("damped", "damped-dense") else
            np.linalg.norm((p.H + 0.1 * np.eye(len(v))) @ v - p.F_y) / np.linalg.norm(p.F_y),
            rtol=1e-6, atol=1e-12)
    assert len(structures) == 1
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *infos)
    assert stacked.status.shape == (len(infos),) and stacked["residual"].shape == (len(infos),)
    assert linalg.status_name(stacked.status[0]) == "converged"  # exact


def _diverging_neumann():
    """The 12-dimensional PD quadratic of the issue: lr = 5 is far outside 2 / lambda_max."""
    q = _orthogonal(41, 12)
    inner, outer = _quadratic_problem(_sym(q, np.linspace(0.5, 1.0, 12)), np.ones(12),
                                      jnp.float64)
    return inner, outer, jnp.ones(12), jnp.zeros(12)


def test_diverging_neumann_raises_under_jit_and_reports_with_throw_false(x64):
    inner, outer, x, y = _diverging_neumann()
    with pytest.raises(FloatingPointError, match="diverging"):
        hg.neumann(inner, outer, x, y, steps=60, lr=5.0)
    f = jax.jit(lambda x_, y_: hg.neumann(inner, outer, x_, y_, steps=60, lr=5.0))
    with pytest.raises(Exception, match="Neumann series is diverging.*lower `lr`"):
        jax.block_until_ready(f(x, y))
    h, info = jax.jit(lambda x_, y_: hg.neumann(inner, outer, x_, y_, steps=60, lr=5.0,
                                                 throw=False, return_info=True))(x, y)
    assert linalg.status_name(info.status) == "diverged" and float(info.growth) > 1e10
    assert float(jnp.max(jnp.abs(h))) > 1e10  # the wrong answer, returned on request
    # Running out of steps is not an error: a convergent lr with few steps returns.
    _, info = jax.jit(lambda x_, y_: hg.neumann(inner, outer, x_, y_, steps=3, lr=1.0,
                                                 return_info=True))(x, y)
    assert linalg.status_name(info.status) == "max_steps"


def test_throw_under_vmap_raises_if_any_element_failed(x64):
    inner, outer, x, y = _diverging_neumann()

    def at(lr, throw):
        return hg.neumann(inner, outer, x, y, steps=60, lr=lr, throw=throw, return_info=True)

    lrs = jnp.array([1.0, 5.0])
    with pytest.raises(Exception, match=r"Neumann series is diverging.*1 of 2 solves"):
        jax.block_until_ready(jax.jit(jax.vmap(lambda lr: at(lr, True)))(lrs))
    _, info = jax.jit(jax.vmap(lambda lr: at(lr, False)))(lrs)
    assert linalg.status_name(info.status) == ["converged", "diverged"]
    # Every element fine: the vmapped check stays quiet.
    _, info = jax.jit(jax.vmap(lambda lr: at(lr, True)))(jnp.array([1.0, 1.5]))
    assert linalg.status_name(info.status) == ["converged", "converged"]


@pytest.mark.parametrize("method", ["cg", "dense"])
def test_indefinite_damped_raises_inside_vmap(x64, method):
    inner, outer, x, y = _indefinite_problem()

    def at(eps, throw):
        return hg.damped(inner, outer, x, y, eps=eps, method=method, throw=throw,
                         return_info=True)

    epss = jnp.array([2.0, 0.1])
    with pytest.raises(Exception, match="not positive definite"):
        jax.block_until_ready(jax.jit(jax.vmap(lambda e: at(e, True)))(epss))
    _, info = jax.jit(jax.vmap(lambda e: at(e, False)))(epss)
    assert linalg.status_name(info.status) == ["converged", "negative_curvature"]


def test_blo_passes_throw_to_the_estimator(x64):
    import optax

    from bilevel_lib import blo
    inner, outer, x, y = _diverging_neumann()
    run = jax.jit(lambda x0, throw: blo.cold_start(
        inner, outer, x0, y, hypergrad=functools.partial(hg.neumann, steps=60, lr=5.0),
        outer_opt=optax.sgd(1e-3), inner_opt=optax.sgd(0.5), outer_steps=2, inner_steps=5,
        hypergrad_info=True, throw=throw), static_argnums=1)
    with pytest.raises(Exception, match="diverging"):
        jax.block_until_ready(run(x, True))
    _, _, trace = run(x, False)
    assert linalg.status_name(trace["hypergrad_info"].status) == ["diverged", "diverged"]


def test_deprecated_names_warn_and_agree(x64):
    p = make_linear_quadratic(32, rank=6)
    a = jnp.asarray(p.H)
    b = jnp.asarray(p.F_y)
    with pytest.warns(DeprecationWarning, match="lsqr_solve"):
        old = linalg.minres_solve(lambda u: a @ u, b, steps=20)[0]
    np.testing.assert_array_equal(old, linalg.lsqr_solve(lambda u: a @ u, b, steps=20)[0])
    with pytest.warns(DeprecationWarning, match="hypergrad.lsqr"):
        old = hg.minres(p.inner, p.outer, p.x, p.y, steps=20)
    np.testing.assert_array_equal(old, hg.lsqr(p.inner, p.outer, p.x, p.y, steps=20))
    with pytest.warns(DeprecationWarning, match="max_steps"):
        old = hg.damped(p.inner, p.outer, p.x, p.y, eps=0.1, maxiter=3)
    np.testing.assert_array_equal(old, hg.damped(p.inner, p.outer, p.x, p.y, eps=0.1,
                                                 max_steps=3))
    with pytest.warns(DeprecationWarning, match="max_steps"):
        _, info = linalg.damped_solve(lambda u: a @ u, b, eps=0.1, maxiter=2)
    assert int(info.steps) == 2
    with pytest.raises(TypeError, match="both"):
        linalg.damped_solve(lambda u: a @ u, b, eps=0.1, maxiter=2, max_steps=2)


def test_the_jit_check_survives_when_only_the_answer_or_only_the_info_is_used(x64):
    # guard passes the answer through the check (no effect, so the fast dispatch path stays);
    # raise_if_failed is an effect. Neither may be removed when the caller keeps one of the two.
    def solve(b):
        return linalg.damped_solve(lambda u: -u, b, eps=0.5)   # -I + 0.5 I: indefinite

    answer_only = jax.jit(lambda b: linalg.guard(solve(b)[0], solve(b)[1], eps=0.5))
    info_only = jax.jit(lambda b: linalg.raise_if_failed(solve(b)[1], eps=0.5).residual)
    for fn in (answer_only, info_only):
        with pytest.raises(Exception, match="not positive definite"):
            jax.block_until_ready(fn(jnp.ones(3)))
    # On a definite system both return the plain answer, bit for bit.
    good = jax.jit(lambda b: linalg.damped_solve(lambda u: u, b, eps=0.5))
    v, info = good(jnp.ones(3))
    np.testing.assert_array_equal(jax.jit(lambda b: linalg.guard(*good(b)))(jnp.ones(3)), v)
    np.testing.assert_array_equal(
        jax.jit(lambda b: linalg.raise_if_failed(good(b)[1]).residual)(jnp.ones(3)),
        info.residual)


def test_the_jit_check_adds_no_derivative(x64):
    # d/dx of a guarded hypergradient equals that of the unguarded one (finite differences
    # confirm it is the derivative of the answer, not of the check).
    a = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    inner = lambda x, y: 0.5 * y @ a @ y - x @ y        # noqa: E731
    outer = lambda x, y: jnp.sum((y - 1.0) ** 2) + jnp.sum(x ** 3)  # noqa: E731

    def total(x, throw):
        return jnp.sum(hg.cg(inner, outer, x, jnp.linalg.solve(a, x), steps=2, throw=throw))

    x = jnp.array([0.3, -0.2])
    g = jax.jit(jax.grad(total), static_argnums=1)
    np.testing.assert_array_equal(g(x, True), g(x, False))
    h = 1e-6
    fd = [(total(x + h * e, False) - total(x - h * e, False)) / (2 * h) for e in jnp.eye(2)]
    np.testing.assert_allclose(g(x, True), fd, rtol=1e-7, atol=1e-9)


def test_jitted_estimators_carry_no_effect_so_jax_keeps_its_fast_dispatch(x64):
    # An effect in a jitted program costs every call JAX's Python dispatch path (about 0.2 ms,
    # benchmarks/README.md, v3); the default throw=True check must not add one, with or
    # without return_info, under vmap and under differentiation.
    p = make_linear_quadratic(31, rank=6)
    for name, est in _estimators().items():
        for return_info in (False, True):
            fn = functools.partial(est, p.inner, p.outer, return_info=return_info)
            assert not jax.make_jaxpr(fn)(p.x, p.y).effects, (name, return_info)
        batched = jax.vmap(lambda x, est=est: est(p.inner, p.outer, x, p.y))
        assert not jax.make_jaxpr(batched)(jnp.stack([p.x, p.x])).effects, name
        jvp = lambda x, est=est: jax.jvp(lambda x_: est(p.inner, p.outer, x_, p.y),  # noqa: E731
                                         (x,), (x,))
        assert not jax.make_jaxpr(jvp)(p.x).effects, name
    # while raise_if_failed, kept for a caller who uses only the diagnostics, is one
    info_only = lambda b: linalg.raise_if_failed(linalg.cg_solve(lambda u: u, b, steps=2)[1])  # noqa: E731
    assert jax.make_jaxpr(info_only)(jnp.ones(3)).effects


@pytest.mark.parametrize("est", ["cg", "exact", "neumann"])
def test_a_solve_that_succeeds_with_a_nonfinite_answer_is_diverged(x64, est):
    # H = I and dF/dy are finite, so the linear solve itself succeeds; only the cross term
    # d/dx grad_y f = -1 / (2 sqrt(x)) is NaN at x < 0, so only the answer tells.
    inner = lambda x, y: 0.5 * jnp.sum(y ** 2) - jnp.sqrt(x[0]) * jnp.sum(y)  # noqa: E731
    outer = lambda x, y: jnp.sum(y)                                           # noqa: E731
    fn = {"cg": functools.partial(hg.cg, steps=3), "exact": hg.exact,
          "neumann": functools.partial(hg.neumann, steps=3, lr=0.5)}[est]
    x, y = jnp.array([-1.0]), jnp.ones(2)
    _, info = fn(inner, outer, x, y, return_info=True, throw=False)
    assert linalg.status_name(info.status) == "diverged"
    for return_info in (False, True):
        with pytest.raises(Exception, match="not finite"):
            jax.block_until_ready(jax.jit(lambda x_, y_, r=return_info: fn(
                inner, outer, x_, y_, return_info=r))(x, y))


def test_hvp_operator_is_the_dense_hessian_times_v(x64):
    f = lambda y: jnp.sum(jnp.sin(y) * y[::-1]) + 0.25 * jnp.sum(y ** 4)  # noqa: E731
    y = jnp.array([0.3, -1.2, 0.7, 2.0])
    dense = jax.hessian(f)(y)
    op = linalg.hvp_operator(jax.grad(f), y)
    for v in jnp.eye(4) + 0.1:
        np.testing.assert_allclose(op(v), dense @ v, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(op(v), linalg.hvp(jax.grad(f), y, v), rtol=1e-13,
                                   atol=1e-13)


@pytest.mark.parametrize("return_info", [False, True])
def test_nonfinite_cg_hypergradient_raises_under_jit(x64, return_info):
    # Without return_info, cg checks only finiteness (its one failure) so the compiler can
    # drop the unread diagnostics; the check itself must stay.
    inner = lambda x, y: 0.5 * jnp.sum(y ** 2) * jnp.sqrt(x[0])   # noqa: E731 (NaN at x < 0)
    outer = lambda x, y: jnp.sum(y)                              # noqa: E731
    f = jax.jit(lambda x, y: hg.cg(inner, outer, x, y, steps=3, return_info=return_info))
    with pytest.raises(Exception, match="CG hypergradient is not finite"):
        jax.block_until_ready(f(jnp.array([-1.0]), jnp.ones(2)))
    h = jax.jit(lambda x, y: hg.cg(inner, outer, x, y, steps=3, throw=False))(
        jnp.array([-1.0]), jnp.ones(2))
    assert not np.isfinite(np.asarray(h)).any()
