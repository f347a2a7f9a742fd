"""linalg.lsqr_solve and hypergrad.lsqr against pseudoinverses computed in float64 NumPy.

The systems are built as ``Q diag(lambda) Q^T`` with known eigenvalues, so "singular",
"inconsistent" (``b`` with a part in ``null(A)``) and "indefinite" are facts of the
construction, not of the code under test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_least_squares
from jax.flatten_util import ravel_pytree

from bilevel_lib import hypergrad as hg
from bilevel_lib import linalg


def _system(seed, kind, n=12):
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    lam = np.zeros(n)
    rank = n if kind == "indefinite" else n // 2
    lam[:rank] = rng.uniform(0.5, 3.0, rank)
    if kind in ("indefinite", "singular_indefinite"):
        lam[:rank] *= np.where(np.arange(rank) % 2, -1.0, 1.0)
    a = (q * lam) @ q.T
    b = rng.standard_normal(n)
    if kind == "singular_consistent":
        b = a @ b
    return a, b, q[:, rank:]


_KINDS = ["singular_consistent", "singular_inconsistent", "singular_indefinite", "indefinite"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", _KINDS)
def test_lsqr_solve_is_pinv(kind, dtype):
    a, b, null = _system(_KINDS.index(kind), kind)
    want = np.linalg.pinv(a) @ b
    if kind != "singular_consistent" and kind != "indefinite":
        assert np.linalg.norm(null.T @ b) > 0.1  # really inconsistent
    with jax.enable_x64(dtype == np.float64):
        aj = jnp.asarray(a, dtype)
        v, info = jax.jit(lambda b_: linalg.lsqr_solve(lambda u: aj @ u, b_, steps=60))(
            jnp.asarray(b, dtype))
        v = np.asarray(v)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(v, want, rtol=tol, atol=tol * np.abs(want).max())
    assert v.dtype == dtype
    assert linalg.status_name(info["status"]) == "converged"
    assert 0 < int(info["steps"]) <= 60
    # The reported residual is the true one (recomputed here in float64).
    np.testing.assert_allclose(float(info["residual"]),
                               np.linalg.norm(a @ v.astype(float) - b) / np.linalg.norm(b),
                               rtol=1e-2, atol=1e-6 if dtype == np.float32 else 1e-13)


def test_cg_differs_from_pinv_where_lsqr_does_not(x64):
    a, b, null = _system(3, "singular_inconsistent")
    aj, bj = jnp.asarray(a), jnp.asarray(b)
    v_cg, info = linalg.cg_solve(lambda u: aj @ u, bj, steps=40)
    v_mr, _ = linalg.lsqr_solve(lambda u: aj @ u, bj, steps=40)
    want = np.linalg.pinv(a) @ b
    assert np.linalg.norm(np.asarray(v_cg) - want) > 0.1 * np.linalg.norm(want)
    assert linalg.status_name(info["status"]) == "breakdown"
    np.testing.assert_allclose(v_mr, want, rtol=1e-10, atol=1e-12)
    assert np.abs(null.T @ np.asarray(v_mr)).max() < 1e-12  # no null-space part


def test_lsqr_traced_steps_and_warm_start(x64):
    a, b, _ = _system(4, "singular_inconsistent")
    aj, bj = jnp.asarray(a), jnp.asarray(b)
    want = np.linalg.pinv(a) @ b
    sweep = jax.jit(jax.vmap(lambda k: linalg.lsqr_solve(lambda u: aj @ u, bj, steps=k,
                                                           max_steps=60)[0]))
    vs = np.asarray(sweep(jnp.array([0, 1, 60])))
    np.testing.assert_allclose(vs[0], 0.0)
    assert np.linalg.norm(vs[1] - want) > 1e-2
    np.testing.assert_allclose(vs[2], want, rtol=1e-10, atol=1e-12)
    # Warm start at the answer: nothing left to do, the answer stays.
    v, info = linalg.lsqr_solve(lambda u: aj @ u, bj, steps=5, init=jnp.asarray(want))
    np.testing.assert_allclose(v, want, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lsqr_hypergradient_is_exact_on_overparameterized_least_squares(dtype):
    with jax.enable_x64(dtype == np.float64):
        p = make_least_squares(5, m=3, n=9, p=2, dtype=dtype)
        y = np.random.default_rng(6).standard_normal(9)  # F_y has a null(H) part
        closed = np.linalg.pinv(p.phi).T @ p.psi.T @ (p.psi @ y - p.t)  # App. B.1
        got = np.asarray(jax.jit(lambda x_, y_: hg.lsqr(p.inner, p.outer, x_, y_, steps=30))(
            p.x, jnp.asarray(y, dtype)))
        cg = np.asarray(jax.jit(lambda x_, y_: hg.cg(p.inner, p.outer, x_, y_, steps=30))(
            p.x, jnp.asarray(y, dtype)))
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, closed, rtol=tol, atol=tol)
    assert np.linalg.norm(cg - closed) > 1e-2  # CG picks up F_y's null-space part


def test_lsqr_pytree_matches_dense_pinv(x64):
    rng = np.random.default_rng(7)
    phi = jnp.asarray(rng.standard_normal((3, 7)))  # 7 inner parameters, rank-3 Hessian

    def inner(x, y):
        w = jnp.concatenate([y["a"].ravel(), y["b"]])
        return 0.5 * jnp.sum((phi @ w - x["t"]) ** 2)

    def outer(x, y):
        return jnp.sum(jnp.sin(y["a"])) + jnp.sum(y["b"] ** 2) + x["s"] * jnp.sum(y["b"])

    x = {"t": jnp.asarray(rng.standard_normal(3)), "s": jnp.asarray(0.3)}
    y = {"a": jnp.asarray(rng.standard_normal((2, 2))), "b": jnp.asarray(rng.standard_normal(3))}
    got, info = hg.lsqr(inner, outer, x, y, steps=30, return_info=True)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(x)
    x_flat, unravel_x = ravel_pytree(x)
    y_flat, unravel_y = ravel_pytree(y)
    fi = lambda xf, yf: inner(unravel_x(xf), unravel_y(yf))
    fo = lambda xf, yf: outer(unravel_x(xf), unravel_y(yf))
    hess = np.asarray(jax.hessian(fi, argnums=1)(x_flat, y_flat))
    mixed = np.asarray(jax.jacfwd(jax.grad(fi, argnums=1), argnums=0)(x_flat, y_flat))
    f_x, f_y = (np.asarray(g) for g in jax.grad(fo, argnums=(0, 1))(x_flat, y_flat))
    want = f_x - mixed.T @ np.linalg.pinv(hess) @ f_y
    np.testing.assert_allclose(ravel_pytree(got)[0], want, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ravel_pytree(info["solution"])[0], np.linalg.pinv(hess) @ f_y,
                               rtol=1e-9, atol=1e-11)
