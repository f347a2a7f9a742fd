"""bilevel_lib.hypergrad against known answers.

Known answers used here: the tutorial's closed-form ridge hypergradient, central finite
differences, pseudoinverses (``J* = Phi^+``, App. B.1), the dense Neumann and damped formulas
written with NumPy, the App. E identity unroll == Neumann at a stationary point, and the filter
error bound computed from eigenvalues.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_least_squares, make_linear_quadratic
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

from bilevel_lib import hypergrad as hg
from bilevel_lib import profiling as hvp_mod
from bilevel_lib.tasks import ridge


def _jit(estimator, inner, outer, **options):
    """``estimator`` compiled as one program, returning NumPy arrays.

    One XLA compile per call instead of one per eager op keeps the suite fast on 2 cores; the
    eager path (with its value checks) is exercised by the tests that call estimators directly.
    NumPy outputs matter too: indexing a JAX array eagerly compiles a program per index.
    """
    fn = jax.jit(lambda x, y: estimator(inner, outer, x, y, **options))
    return lambda x, y: jax.tree_util.tree_map(np.asarray, fn(x, y))


def _np_jit(fn):
    """``jax.jit(fn)`` with NumPy outputs."""
    jitted = jax.jit(fn)
    return lambda *args: jax.tree_util.tree_map(np.asarray, jitted(*args))


# ---------------------------------------------------------------------------------------------
# Ridge regression: the tutorial's closed form and finite differences
# ---------------------------------------------------------------------------------------------


def _ridge_numpy(seed, n, d, n_val=30):
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal(d)
    X, X_val = rng.standard_normal((n, d)), rng.standard_normal((n_val, d))
    y = X @ w_true + 0.5 * rng.standard_normal(n)
    y_val = X_val @ w_true + 0.5 * rng.standard_normal(n_val)
    return X, y, X_val, y_val


def _ridge_closed_form(X, y, X_val, y_val, lam):
    """Tutorial: w = (X^T X/n + lam I)^-1 X^T y / n, grad = -w^T A^-1 X'^T (X' w - y') / n'."""
    n, d = X.shape
    a = X.T @ X / n + lam * np.eye(d)
    w = np.linalg.solve(a, X.T @ y / n)
    grad = -w @ np.linalg.solve(a, X_val.T @ (X_val @ w - y_val) / X_val.shape[0])
    return w, grad


def _ridge_val_loss(X, y, X_val, y_val, lam):
    w, _ = _ridge_closed_form(X, y, X_val, y_val, lam)
    return 0.5 / X_val.shape[0] * np.sum((X_val @ w - y_val) ** 2)


_RIDGE_ESTIMATORS = {
    "exact": lambda lr, d: hg.exact,
    "neumann": lambda lr, d: functools.partial(hg.neumann, steps=3000, lr=lr),
    "damped": lambda lr, d: functools.partial(hg.damped, eps=1e-12),
    "cg": lambda lr, d: functools.partial(hg.cg, steps=d),
    "unroll": lambda lr, d: functools.partial(hg.unroll, steps=3000, lr=lr),
}

# (n_train, dim, lambda): well-posed, and overparameterized (dim > n_train, H = X^T X/n + lam I
# with a small lam, so the closed form still exists but H is ill-conditioned).
_RIDGE_CASES = [(20, 5, 0.3), (20, 30, 0.05)]


@pytest.mark.parametrize("n, d, lam", _RIDGE_CASES)
@pytest.mark.parametrize("name", sorted(_RIDGE_ESTIMATORS))
def test_ridge_hypergradient_matches_closed_form_and_finite_differences(x64, name, n, d, lam):
    X, y, X_val, y_val = _ridge_numpy(0, n, d)
    w, closed = _ridge_closed_form(X, y, X_val, y_val, lam)
    h = 1e-5
    fd = (_ridge_val_loss(X, y, X_val, y_val, lam + h)
          - _ridge_val_loss(X, y, X_val, y_val, lam - h)) / (2 * h)
    np.testing.assert_allclose(closed, fd, rtol=1e-6)

    data = ridge.RidgeData(*(jnp.asarray(a) for a in (X, y, X_val, y_val)))
    inner, outer = ridge.ridge_objectives(data)
    lam_max = np.linalg.eigvalsh(X.T @ X / n + lam * np.eye(d)).max()
    estimator = _RIDGE_ESTIMATORS[name](1.0 / lam_max, d)
    got = _jit(estimator, inner, outer)(jnp.asarray(lam), jnp.asarray(w))
    assert got.shape == () and got.dtype == jnp.float64
    np.testing.assert_allclose(got, closed, rtol=1e-7)
    np.testing.assert_allclose(got, fd, rtol=1e-6)


@pytest.mark.parametrize("n, d, lam", _RIDGE_CASES + [(20, 30, 0.0)])
def test_ridge_library_closed_form(x64, n, d, lam):
    X, y, X_val, y_val = _ridge_numpy(1, n, d)
    data = ridge.RidgeData(*(jnp.asarray(a) for a in (X, y, X_val, y_val)))
    if lam > 0:
        w, closed = _ridge_closed_form(X, y, X_val, y_val, lam)
    else:  # lam = 0 with d > n: the min-norm inner solution and pinv (H is singular)
        a_pinv = np.linalg.pinv(X.T @ X / n)
        w = a_pinv @ X.T @ y / n
        closed = -w @ a_pinv @ X_val.T @ (X_val @ w - y_val) / X_val.shape[0]
        np.testing.assert_allclose(w, np.linalg.pinv(X) @ y, rtol=1e-8)
        inner, outer = ridge.ridge_objectives(data)
        np.testing.assert_allclose(_jit(hg.exact, inner, outer)(jnp.asarray(lam), jnp.asarray(w)),
                                   closed, rtol=1e-7)
    np.testing.assert_allclose(ridge.ridge_solution(data, lam), w, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ridge.ridge_hypergrad(data, lam), closed, rtol=1e-7)


def test_ridge_float32():
    n, d, lam = 20, 5, 0.3
    X, y, X_val, y_val = _ridge_numpy(2, n, d)
    w, closed = _ridge_closed_form(X, y, X_val, y_val, lam)
    data = ridge.RidgeData(*(jnp.asarray(a, jnp.float32) for a in (X, y, X_val, y_val)))
    inner, outer = ridge.ridge_objectives(data)
    lam_max = np.linalg.eigvalsh(X.T @ X / n + lam * np.eye(d)).max()
    estimators = {name: make(1.0 / lam_max, d) for name, make in _RIDGE_ESTIMATORS.items()}
    # Every estimator in one compiled program (one compile instead of five).
    got = _np_jit(lambda lam_, w_: {name: est(inner, outer, lam_, w_)
                                    for name, est in estimators.items()})(
        jnp.asarray(lam, jnp.float32), jnp.asarray(w, jnp.float32))
    for name, value in got.items():
        assert value.dtype == np.float32, name
        np.testing.assert_allclose(value, closed, rtol=2e-4, err_msg=name)


# ---------------------------------------------------------------------------------------------
# App. B.1: J* = Phi^+, the minimum-Frobenius-norm response Jacobian
# ---------------------------------------------------------------------------------------------


def test_exact_is_pinv_closed_form(x64):
    p = make_least_squares(0, m=3, n=7, p=2)
    phi_pinv = np.linalg.pinv(p.phi)
    y = phi_pinv @ p.x_np  # the min-norm inner solution
    closed = phi_pinv.T @ p.psi.T @ (p.psi @ y - p.t)
    exact = _jit(hg.exact, p.inner, p.outer)
    np.testing.assert_allclose(exact(p.x, jnp.asarray(y)), closed, rtol=1e-10, atol=1e-12)
    # The formula holds at any y, stationary or not.
    y_other = y + p.null_basis @ np.ones(p.null_basis.shape[1])
    closed_other = phi_pinv.T @ p.psi.T @ (p.psi @ y_other - p.t)
    np.testing.assert_allclose(exact(p.x, jnp.asarray(y_other)), closed_other, rtol=1e-10,
                               atol=1e-12)


def test_response_jacobian_is_min_norm(x64):
    p = make_least_squares(1, m=3, n=7, p=2)
    y = jnp.zeros(7)
    H, B = p.phi.T @ p.phi, -p.phi.T  # closed forms for f = 1/2 |Phi y - x|^2
    H_lib, B_lib, J = _np_jit(lambda x_, y_: (*hg.hessian_and_mixed(p.inner, x_, y_),
                                              hg.response_jacobian(p.inner, x_, y_)))(p.x, y)
    np.testing.assert_allclose(H_lib, H, atol=1e-12)
    np.testing.assert_allclose(B_lib, B, atol=1e-12)

    np.testing.assert_allclose(J, np.linalg.pinv(p.phi), atol=1e-10)
    np.testing.assert_allclose(J, -np.linalg.pinv(H) @ B, atol=1e-10)
    np.testing.assert_allclose(H @ J, -B, atol=1e-10)

    rng = np.random.default_rng(0)
    for _ in range(5):  # any J + N with columns of N in null(H) also solves H J = -B ...
        N = p.null_basis @ rng.standard_normal((p.null_basis.shape[1], 3))
        np.testing.assert_allclose(H @ (J + N), -B, atol=1e-10)
        # ... and has a strictly larger Frobenius norm (J* is orthogonal to null(H)).
        assert np.linalg.norm(J + N) > np.linalg.norm(J) + 1e-6


# ---------------------------------------------------------------------------------------------
# Neumann: the dense formula, vmap over lr, traced steps
# ---------------------------------------------------------------------------------------------


def _dense_neumann(p, steps, lr):
    n = p.H.shape[0]
    step = np.eye(n) - lr * p.H
    series = sum(np.linalg.matrix_power(step, j) for j in range(steps)) if steps else 0 * step
    return p.F_x - p.B.T @ (lr * series @ p.F_y)


@pytest.mark.parametrize("steps", [0, 1, 2, 5, 25])
def test_neumann_dense_formula_vmapped_over_lr(x64, steps):
    p = make_linear_quadratic(0)
    lrs = np.array([0.3, 1.0, 1.9]) / p.lam_max  # 0 < lr * lambda_max < 2
    got = _np_jit(jax.vmap(
        lambda lr: hg.neumann(p.inner, p.outer, p.x, p.y, steps=steps, lr=lr)))(jnp.asarray(lrs))
    for lr, row in zip(lrs, got, strict=True):
        np.testing.assert_allclose(row, _dense_neumann(p, steps, lr), rtol=1e-10, atol=1e-12)


def test_neumann_loop_over_lr_equals_vmap_and_dense(x64):
    p = make_linear_quadratic(1)
    lrs = np.array([0.1, 1.0, 1.8]) / p.lam_max
    vmapped = np.asarray(jax.vmap(
        lambda lr: hg.neumann(p.inner, p.outer, p.x, p.y, steps=7, lr=lr))(jnp.asarray(lrs)))
    jitted = jax.jit(lambda lr: hg.neumann(p.inner, p.outer, p.x, p.y, steps=7, lr=lr))
    for i, (lr, row) in enumerate(zip(lrs, vmapped, strict=True)):
        # One eager call (the path with value checks and the divergence guard), then jitted.
        looped = (hg.neumann(p.inner, p.outer, p.x, p.y, steps=7, lr=float(lr)) if i == 0
                  else jitted(float(lr)))
        np.testing.assert_allclose(looped, _dense_neumann(p, 7, lr), rtol=1e-10)
        np.testing.assert_allclose(row, looped, rtol=1e-12)


def test_neumann_zero_steps_is_direct_gradient(x64):
    p = make_linear_quadratic(3)
    got = hg.neumann(p.inner, p.outer, p.x, p.y, steps=0, lr=0.1)
    np.testing.assert_allclose(got, p.F_x, rtol=1e-12)
    assert np.linalg.norm(p.B.T @ p.F_y) > 1e-3  # so the test would notice a wrong sum


def _dense_unroll(p, steps, lr):
    """Unrolled GD on the quadratic, by hand: y_K = M^K y + lr sum_j M^j C x with M = I - lr H,
    dy_K/dx = -lr sum_j M^j B, and the outer gradients are taken at y_K (not at y)."""
    n = p.H.shape[0]
    step = np.eye(n) - lr * p.H
    series = sum((np.linalg.matrix_power(step, j) for j in range(steps)), np.zeros((n, n)))
    y_k = np.linalg.matrix_power(step, steps) @ p.y_np - lr * series @ p.B @ p.x_np
    f_x = p.E @ y_k + p.c * p.x_np
    f_y = p.psi.T @ (p.psi @ y_k - p.t) + p.E.T @ p.x_np
    return f_x - (lr * series @ p.B).T @ f_y


def test_unroll_dense_formula_vmapped_over_lr(x64):
    p = make_linear_quadratic(2)
    lrs = np.array([0.2, 1.0, 1.5]) / p.lam_max
    for steps in (0, 1, 6):
        got = _np_jit(jax.vmap(lambda lr, k=steps: hg.unroll(p.inner, p.outer, p.x, p.y, steps=k,
                                                             lr=lr)))(jnp.asarray(lrs))
        for lr, row in zip(lrs, got, strict=True):
            np.testing.assert_allclose(row, _dense_unroll(p, steps, lr), rtol=1e-10, atol=1e-12)
    looped = hg.unroll(p.inner, p.outer, p.x, p.y, steps=6, lr=float(lrs[1]))
    np.testing.assert_allclose(looped, _dense_unroll(p, 6, lrs[1]), rtol=1e-10, atol=1e-12)


_TRACED_STEPS = {
    "neumann": lambda p: functools.partial(hg.neumann, lr=1.0 / p.lam_max),
    "unroll": lambda p: functools.partial(hg.unroll, lr=1.0 / p.lam_max),
    "cg": lambda p: hg.cg,
}


@pytest.mark.parametrize("name", sorted(_TRACED_STEPS))
def test_traced_steps_equal_static_steps(x64, name):
    p = make_linear_quadratic(4, rank=6)  # positive definite: CG is exact after n = 6 steps
    est = _TRACED_STEPS[name](p)
    k_max = 6
    swept = _np_jit(jax.vmap(
        lambda k: est(p.inner, p.outer, p.x, p.y, steps=k, max_steps=k_max)))(
        jnp.arange(k_max + 1))
    static = _jit(est, p.inner, p.outer, steps=3)(p.x, p.y)
    np.testing.assert_allclose(swept[3], static, rtol=1e-10, atol=1e-12)
    lr = 1.0 / p.lam_max
    for k in range(k_max + 1):  # every masked length against its closed form
        if name == "neumann":
            np.testing.assert_allclose(swept[k], _dense_neumann(p, k, lr), rtol=1e-10)
        elif name == "unroll":
            np.testing.assert_allclose(swept[k], _dense_unroll(p, k, lr), rtol=1e-10)
    if name == "cg":
        np.testing.assert_allclose(
            swept[k_max], p.F_x - p.B.T @ np.linalg.pinv(p.H) @ p.F_y, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# App. E: unrolling from a stationary point is the Neumann series
# ---------------------------------------------------------------------------------------------


def _quadratic_at_stationary_point():
    p = make_linear_quadratic(5, consistent=True)
    return p.inner, p.outer, p.x, p.y, p.lam_max


def _tanh_at_interpolation():
    """Overparameterized, non-quadratic: f = 1/2 |tanh(Phi y) - x|^2 with 3 points, 6 params.

    Its minimizers interpolate: tanh(Phi y) = x, i.e. y = Phi^+ arctanh(x) + any null vector.
    """
    rng = np.random.default_rng(6)
    phi = jnp.asarray(rng.standard_normal((3, 6)))
    psi = jnp.asarray(rng.standard_normal((2, 6)))
    t = jnp.asarray(rng.standard_normal(2))
    x = jnp.asarray(rng.uniform(-0.6, 0.6, 3))
    null = np.linalg.svd(np.asarray(phi))[2][3:].T
    y = np.linalg.pinv(phi) @ np.arctanh(np.asarray(x)) + null @ rng.standard_normal(3)

    def inner(x_, y_):
        return 0.5 * jnp.sum((jnp.tanh(phi @ y_) - x_) ** 2)

    def outer(x_, y_):
        return 0.5 * jnp.sum((jnp.tanh(psi @ y_) - t) ** 2) + 0.1 * jnp.sum(jnp.sin(x_))

    hess = _np_jit(jax.hessian(inner, argnums=1))(x, jnp.asarray(y))
    return inner, outer, x, jnp.asarray(y), float(np.linalg.eigvalsh(hess).max())


def _softplus_at_newton_minimum():
    """Strongly convex, non-quadratic: logistic loss with soft labels sigmoid(x) + ridge.

    Minimized by Newton's method in NumPy with the analytic gradient and Hessian
    ``Phi^T (sigmoid(z) - s) + 0.1 y`` and ``Phi^T diag(sigmoid'(z)) Phi + 0.1 I``.
    """
    rng = np.random.default_rng(7)
    phi_np, x_np = rng.standard_normal((8, 5)), rng.standard_normal(8)
    phi, x = jnp.asarray(phi_np), jnp.asarray(x_np)

    def inner(x_, y_):
        z = phi @ y_
        return jnp.sum(jax.nn.softplus(z) - jax.nn.sigmoid(x_) * z) + 0.05 * jnp.sum(y_**2)

    def outer(x_, y_):
        return 0.5 * jnp.sum((phi[:3] @ y_ - 1.0) ** 2) + 0.2 * jnp.sum(x_**2)

    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))
    y = np.zeros(5)
    for _ in range(12):  # quadratic convergence to machine precision
        s = sigmoid(phi_np @ y)
        hess = phi_np.T @ np.diag(s * (1 - s)) @ phi_np + 0.1 * np.eye(5)
        y = y - np.linalg.solve(hess, phi_np.T @ (s - sigmoid(x_np)) + 0.1 * y)
    return inner, outer, x, jnp.asarray(y), float(np.linalg.eigvalsh(hess).max())


_STATIONARY = {
    "quadratic": _quadratic_at_stationary_point,
    "tanh_interpolation": _tanh_at_interpolation,
    "softplus_newton": _softplus_at_newton_minimum,
}


@pytest.mark.parametrize("problem", sorted(_STATIONARY))
def test_unroll_equals_neumann_at_stationary_point(x64, problem):
    inner, outer, x, y, lam_max = _STATIONARY[problem]()
    hess = _np_jit(jax.hessian(inner, argnums=1))
    assert np.linalg.norm(_np_jit(jax.grad(inner, argnums=1))(x, y)) < 1e-12
    lr, k_max = 1.0 / lam_max, 40
    steps = jnp.array([1, 2, 7, k_max])  # traced step counts: one vmapped call per estimator

    def both(y_, lr_):
        un = jax.vmap(lambda k: hg.unroll(inner, outer, x, y_, steps=k, lr=lr_,
                                          max_steps=k_max))(steps)
        ne = jax.vmap(lambda k: hg.neumann(inner, outer, x, y_, steps=k, lr=lr_,
                                           max_steps=k_max))(steps)
        return un, ne

    both = _np_jit(both)
    un, ne = both(y, lr)
    scale = max(1.0, float(np.max(np.abs(ne))))
    assert float(np.max(np.abs(un - ne))) < 1e-12 * scale

    # Away from a stationary point the unroll also carries the K steps' drift: they differ.
    y_off = y + 0.1 * jnp.ones_like(y)
    un_off, ne_off = both(y_off, 1.0 / np.abs(np.linalg.eigvalsh(hess(x, y_off))).max())
    assert float(np.max(np.abs(un_off - ne_off)[1:])) > 1e-4


# ---------------------------------------------------------------------------------------------
# Damped inverse
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cg", "dense"])
def test_damped_dense_formula_and_vmap(x64, method):
    p = make_linear_quadratic(8, rank=3)  # singular H: only the damping makes it invertible
    n = p.H.shape[0]

    def dense(eps):
        return p.F_x - p.B.T @ np.linalg.solve(p.H + eps * np.eye(n), p.F_y)

    epss = [1e-3, 0.1, 1.0, 10.0]
    got = _jit(hg.damped, p.inner, p.outer, eps=epss[0], method=method)(p.x, p.y)
    np.testing.assert_allclose(got, dense(epss[0]), rtol=1e-9, atol=1e-11)
    vmapped = _np_jit(jax.vmap(
        lambda e: hg.damped(p.inner, p.outer, p.x, p.y, eps=e, method=method)))(jnp.array(epss))
    for eps, row in zip(epss, vmapped, strict=True):
        np.testing.assert_allclose(row, dense(eps), rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------------------------------------
# Conjugate gradient
# ---------------------------------------------------------------------------------------------


def test_cg_consistent_singular_system_gives_pinv(x64):
    p = make_linear_quadratic(9, rank=3, consistent=True)
    n = p.H.shape[0]
    v = hg.conjugate_gradient(lambda u: jnp.asarray(p.H) @ u, jnp.asarray(p.F_y), steps=n)
    np.testing.assert_allclose(v, np.linalg.pinv(p.H) @ p.F_y, rtol=1e-9, atol=1e-11)
    pinv_answer = p.F_x - p.B.T @ np.linalg.pinv(p.H) @ p.F_y
    # Exact after rank(H) steps; further steps change nothing.
    got = _np_jit(jax.vmap(lambda k: hg.cg(p.inner, p.outer, p.x, p.y, steps=k,
                                           max_steps=10 * n)))(jnp.array([p.rank, n, 10 * n]))
    np.testing.assert_allclose(got, np.tile(pinv_answer, (3, 1)), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cg_inconsistent_singular_system_stays_finite(dtype):
    with jax.enable_x64(dtype == np.float64):
        p = make_linear_quadratic(10, rank=2, dtype=dtype)
        n = p.H.shape[0]
        h = jnp.asarray(p.H, dtype)
        null = p.eigenvectors[:, p.rank:]
        assert np.linalg.norm(null.T @ p.F_y) > 0.1  # the rhs has a null-space part
        steps = jnp.array([1, 2, 3, n, 5 * n, 50 * n])
        # A rhs entirely in the null space has no curvature at all: CG must not move.
        null_rhs = jnp.asarray(np.stack([null[:, 0], null[:, 1] - 2 * null[:, 3]]), dtype)

        def run(f_y):
            sweep = functools.partial(jax.vmap, in_axes=(0, None))
            v = sweep(lambda k, b: hg.conjugate_gradient(lambda u: h @ u, b, steps=k,
                                                         max_steps=50 * n))(steps, f_y)
            got = jax.vmap(lambda k: hg.cg(p.inner, p.outer, p.x, p.y, steps=k,
                                           max_steps=50 * n))(steps)
            zero = jax.vmap(lambda b: hg.conjugate_gradient(lambda u: h @ u, b,
                                                            steps=3 * n))(null_rhs)
            return v, got, zero

        v, got, zero = _np_jit(run)(jnp.asarray(p.F_y, dtype))
        assert v.dtype == got.dtype == dtype
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(got))
        # Krylov space of dimension <= rank + 1: nothing changes after that many steps.
        np.testing.assert_allclose(v[-1], v[3], rtol=1e-5 if dtype == np.float32 else 1e-12)
        np.testing.assert_allclose(zero, 0.0, atol=1e-6)


def test_cg_random_inconsistent_systems_finite(x64):
    rng = np.random.default_rng(11)
    solve = _np_jit(lambda h, b: hg.conjugate_gradient(lambda u: h @ u, b, steps=60))
    for _ in range(30):
        k = int(rng.integers(1, 6))
        q = rng.standard_normal((6, k)) * rng.uniform(0.01, 100.0, k)
        b = rng.standard_normal(6) * np.where(rng.random(6) < 0.3, 1e-6, 1.0)
        v = solve(jnp.asarray(q @ q.T), jnp.asarray(b))
        assert np.all(np.isfinite(v))


def test_cg_positive_definite_matches_solve(x64):
    p = make_linear_quadratic(12, rank=6)
    n = p.H.shape[0]
    got = hg.cg(p.inner, p.outer, p.x, p.y, steps=n)
    want = p.F_x - p.B.T @ np.linalg.solve(p.H, p.F_y)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(_jit(hg.exact, p.inner, p.outer)(p.x, p.y), want, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Pytrees
# ---------------------------------------------------------------------------------------------


def _mlp_problem():
    """A small MLP inner problem with dict parameters and per-layer log ridge penalties x."""
    rng = np.random.default_rng(13)
    u, u_val = jnp.asarray(rng.standard_normal((12, 2))), jnp.asarray(rng.standard_normal((9, 2)))
    v, v_val = jnp.sin(u[:, 0]), jnp.sin(u_val[:, 0])

    def net(y, inputs):
        return jnp.tanh(inputs @ y["w1"] + y["b1"]) @ y["w2"] + y["b2"]

    def inner(x, y):
        fit = 0.5 * jnp.mean((net(y, u) - v) ** 2)
        return (fit + 0.5 * jnp.exp(x["log_l2"][0]) * jnp.sum(y["w1"] ** 2)
                + 0.5 * jnp.exp(x["log_l2"][1]) * jnp.sum(y["w2"] ** 2)
                + x["shift"] * jnp.sum(y["b1"]))

    def outer(x, y):
        return 0.5 * jnp.mean((net(y, u_val) - v_val) ** 2) + 0.01 * x["shift"] ** 2

    y = {"w1": jnp.asarray(rng.standard_normal((2, 4))), "b1": jnp.asarray(rng.normal(size=4)),
         "w2": jnp.asarray(rng.standard_normal(4)), "b2": jnp.asarray(0.1)}
    x = {"log_l2": jnp.asarray([-1.0, -2.0]), "shift": jnp.asarray(0.2)}
    return inner, outer, x, y


_PYTREE_ESTIMATORS = {
    "exact": hg.exact,
    "neumann": functools.partial(hg.neumann, steps=6, lr=0.05),
    "cg": functools.partial(hg.cg, steps=4),  # (damped shares cg's matrix-free path)
    "unroll": functools.partial(hg.unroll, steps=6, lr=0.05),
}


@pytest.mark.parametrize("name", sorted(_PYTREE_ESTIMATORS))
def test_pytree_matches_flattened(x64, name):
    inner, outer, x, y = _mlp_problem()
    x_flat, unravel_x = ravel_pytree(x)
    y_flat, unravel_y = ravel_pytree(y)

    def inner_flat(xf, yf):
        return inner(unravel_x(xf), unravel_y(yf))

    def outer_flat(xf, yf):
        return outer(unravel_x(xf), unravel_y(yf))

    est = _PYTREE_ESTIMATORS[name]
    tree, flat = _np_jit(lambda a, b, af, bf: (est(inner, outer, a, b),
                                              est(inner_flat, outer_flat, af, bf)))(
        x, y, x_flat, y_flat)
    assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(x)
    np.testing.assert_allclose(ravel_pytree(tree)[0], flat, rtol=1e-10, atol=1e-13)
    if name == "exact":  # and the flat one against the dense formula from jax.hessian
        H = _np_jit(jax.hessian(inner_flat, argnums=1))(x_flat, y_flat)
        B = _np_jit(jax.jacfwd(jax.grad(inner_flat, argnums=1), argnums=0))(x_flat, y_flat)
        fx, fy = _np_jit(jax.grad(outer_flat, argnums=(0, 1)))(x_flat, y_flat)
        want = fx - B.T @ np.linalg.pinv(H) @ fy
        np.testing.assert_allclose(flat, want, rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Hessian-vector products
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", hvp_mod.HVP_MODES)
def test_hvp_modes_match_dense_hessian(x64, mode):
    rng = np.random.default_rng(14)
    a = jnp.asarray(rng.standard_normal((5, 5)))

    def fun(y):
        return jnp.sum(jnp.log1p(jnp.exp(a @ y))) + 0.25 * jnp.sum(y**4)

    y, v = jnp.asarray(rng.standard_normal(5)), jnp.asarray(rng.standard_normal(5))
    z = np.asarray(a @ y)
    s = 1.0 / (1.0 + np.exp(-z))
    dense = np.asarray(a).T @ np.diag(s * (1 - s)) @ np.asarray(a) + np.diag(3 * np.asarray(y)**2)
    got = _np_jit(lambda y_, v_: hvp_mod.hvp(fun, y_, v_, mode=mode))(y, v)
    np.testing.assert_allclose(got, dense @ np.asarray(v), rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Property tests on random overparameterized quadratics
# ---------------------------------------------------------------------------------------------

_sizes = st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 3), st.integers(0, 10**6))


def _overparam(sizes):
    m, extra, p, seed = sizes
    return make_least_squares(seed, m=m, n=m + extra, p=p)


@settings(max_examples=4, deadline=None)
@given(_sizes)
def test_property_exact_is_pinv_closed_form(sizes):
    with jax.enable_x64(True):
        p = _overparam(sizes)
        y = np.random.default_rng(sizes[3]).standard_normal(p.phi.shape[1])
        closed = np.linalg.pinv(p.phi).T @ p.psi.T @ (p.psi @ y - p.t)
        got = _jit(hg.exact, p.inner, p.outer)(p.x, jnp.asarray(y))
        np.testing.assert_allclose(got, closed, rtol=1e-8, atol=1e-10)


@settings(max_examples=4, deadline=None)
@given(_sizes, st.integers(1, 30))
def test_property_unroll_equals_neumann_at_min_norm_solution(sizes, steps):
    with jax.enable_x64(True):
        p = _overparam(sizes)
        y = jnp.asarray(np.linalg.pinv(p.phi) @ p.x_np)
        lr = 1.5 / p.lam_max
        un = _jit(hg.unroll, p.inner, p.outer, steps=steps, lr=lr)(p.x, y)
        ne = _jit(hg.neumann, p.inner, p.outer, steps=steps, lr=lr)(p.x, y)
        scale = max(1.0, float(np.max(np.abs(ne))))
        assert float(np.max(np.abs(un - ne))) < 1e-11 * scale


@settings(max_examples=4, deadline=None)
@given(_sizes, st.floats(0.2, 1.9))
def test_property_neumann_converges_within_filter_bound(sizes, lr_times_lam_max):
    with jax.enable_x64(True):
        p = _overparam(sizes)
        y = np.linalg.pinv(p.phi) @ p.x_np
        f_y = p.psi.T @ (p.psi @ y - p.t)
        exact = np.linalg.pinv(p.phi).T @ f_y
        lam_plus = np.linalg.svd(p.phi, compute_uv=False) ** 2  # nonzero eigenvalues of H
        lr = lr_times_lam_max / lam_plus.max()
        all_steps = (1, 4, 16, 64, 256)
        swept = _np_jit(jax.vmap(lambda k: hg.neumann(
            p.inner, p.outer, p.x, jnp.asarray(y), steps=k, lr=lr, max_steps=256)))(
            jnp.array(all_steps))
        previous = np.inf
        for steps, got in zip(all_steps, swept, strict=True):
            err = float(np.linalg.norm(got - exact))
            # B^T = -Phi kills null(H), so the error is Phi U (g_K - 1/lam) U^T F_y on range(H):
            # |err| <= max_lam |(1 - lr lam)^K| / sqrt(lam) * |F_y|.
            bound = np.max(np.abs(1 - lr * lam_plus) ** steps / np.sqrt(lam_plus))
            assert err <= bound * np.linalg.norm(f_y) * (1 + 1e-9) + 1e-11
            assert err <= previous + 1e-11
            previous = err
