"""bilevel_lib.profiling and bilevel_lib.tasks.ridge against known answers.

Known answers: dense Hessians (``jax.hessian``) and closed-form Hessians for the three HVP modes;
central finite differences and the normal equations for the ridge closed forms; an explicit
gradient-descent loop and the pseudoinverse for :func:`ridge_gd`; the O(K d) tape of reverse
mode through K steps for :func:`temp_bytes`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_lib import hypergrad
from bilevel_lib.profiling import HVP_MODES, hvp, temp_bytes, time_jitted
from bilevel_lib.tasks import ridge


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------------------------
# hvp
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", HVP_MODES)
def test_hvp_of_a_quadratic_is_the_matrix_times_v(mode):
    a = jnp.array([[2.0, 1.0, 0.0], [1.0, 3.0, -1.0], [0.0, -1.0, 4.0]])
    fun = lambda y: 0.5 * y @ a @ y + jnp.sum(y)
    v = jnp.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(hvp(fun, jnp.array([0.3, 0.1, -2.0]), v, mode=mode), a @ v,
                               rtol=1e-12)


@pytest.mark.parametrize("mode", HVP_MODES)
def test_hvp_matches_the_dense_hessian_on_a_pytree_mlp_loss(mode):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {"w1": jax.random.normal(k1, (3, 4)), "b1": jnp.zeros(4),
              "w2": jax.random.normal(k2, (4,))}
    inputs = jax.random.normal(k3, (7, 3))
    targets = jax.random.normal(k4, (7,))

    def loss(p):
        pred = jnp.tanh(inputs @ p["w1"] + p["b1"]) @ p["w2"]
        return 0.5 * jnp.mean((pred - targets) ** 2)

    flat, unravel = jax.flatten_util.ravel_pytree(params)
    dense = jax.jit(jax.hessian(lambda f: loss(unravel(f))))(flat)
    v = jax.random.normal(jax.random.PRNGKey(5), flat.shape)
    got = jax.jit(lambda p, u: hvp(loss, p, u, mode=mode))(params, unravel(v))
    got = jax.flatten_util.ravel_pytree(got)[0]
    np.testing.assert_allclose(got, dense @ v, rtol=1e-10, atol=1e-12)


def test_hvp_rejects_bad_input():
    f = lambda y: jnp.sum(y**2)
    with pytest.raises(ValueError, match="mode"):
        hvp(f, jnp.ones(2), jnp.ones(2), mode="ff")
    with pytest.raises(ValueError, match="`v`"):
        hvp(f, jnp.ones(2), jnp.ones(3))
    with pytest.raises(ValueError, match="`v`"):
        hvp(lambda p: jnp.sum(p["a"]), {"a": jnp.ones(2)}, jnp.ones(2))
    with pytest.raises(TypeError, match="fun"):
        hvp("not a function", jnp.ones(2), jnp.ones(2))


# ---------------------------------------------------------------------------------------------
# temp_bytes, time_jitted
# ---------------------------------------------------------------------------------------------


def _ridge_problem(n=8, d=50, dtype=jnp.float64):
    data = ridge.make_ridge(jax.random.PRNGKey(3), n_train=n, n_val=9, dim=d, dtype=dtype)
    inner, outer = ridge.ridge_objectives(data)
    lam = jnp.array(0.5, dtype)
    return data, inner, outer, lam, ridge.ridge_solution(data, lam)


def test_temp_bytes_grows_like_k_times_d_for_unrolling_and_not_for_neumann():
    _, inner, outer, lam, w = _ridge_problem(d=200)
    d, itemsize = w.shape[0], w.dtype.itemsize

    def mem(est, k):
        return temp_bytes(lambda x, y: est(inner, outer, x, y, steps=k, lr=0.1), lam, w)

    # Reverse mode through K steps must keep K iterates of size d: at least d*itemsize each.
    grow_unroll = mem(hypergrad.unroll, 400) - mem(hypergrad.unroll, 100)
    assert grow_unroll >= 300 * d * itemsize
    # A Neumann series needs O(d) whatever K: far less than a single extra stored iterate each.
    grow_neumann = mem(hypergrad.neumann, 400) - mem(hypergrad.neumann, 100)
    assert grow_neumann < 10 * d * itemsize


def test_temp_bytes_accepts_jitted_functions_and_rejects_non_callables():
    assert temp_bytes(jax.jit(jnp.sin), jnp.ones(3)) >= 0
    with pytest.raises(TypeError, match="fn"):
        temp_bytes(3, jnp.ones(3))


def test_time_jitted_returns_a_positive_median_and_checks_repeats():
    assert time_jitted(lambda a: a * 2, jnp.ones(4), repeats=2) > 0
    with pytest.raises(ValueError, match="repeats"):
        time_jitted(jnp.sin, jnp.ones(2), repeats=0)
    with pytest.raises(TypeError, match="repeats"):
        time_jitted(jnp.sin, jnp.ones(2), repeats=1.5)


# ---------------------------------------------------------------------------------------------
# ridge
# ---------------------------------------------------------------------------------------------


def test_ridge_solution_solves_the_normal_equations():
    data, inner, _, lam, w = _ridge_problem(n=30, d=10)
    n = data.X.shape[0]
    np.testing.assert_allclose((data.X.T @ data.X / n + lam * jnp.eye(10)) @ w,
                               data.X.T @ data.y / n, atol=1e-12)
    assert float(jnp.max(jnp.abs(jax.grad(inner, argnums=1)(lam, w)))) < 1e-12


def test_ridge_solution_at_zero_penalty_is_the_minimum_norm_interpolant():
    data, *_ = _ridge_problem(n=8, d=20)
    w = ridge.ridge_solution(data, 0.0)
    np.testing.assert_allclose(data.X @ w, data.y, atol=1e-10)            # interpolates
    lstsq = np.linalg.lstsq(np.asarray(data.X), np.asarray(data.y), rcond=None)[0]
    np.testing.assert_allclose(w, lstsq, atol=1e-10)                       # minimum norm


@pytest.mark.parametrize("lam", [0.01, 0.3, 5.0])
def test_ridge_hypergrad_matches_central_finite_differences(lam):
    data, _, outer, *_ = _ridge_problem(n=15, d=10)
    val = lambda lam_: outer(lam_, ridge.ridge_solution(data, lam_))
    h = 1e-5 * max(lam, 1.0)
    fd = (val(lam + h) - val(lam - h)) / (2 * h)
    np.testing.assert_allclose(ridge.ridge_hypergrad(data, lam), fd, rtol=1e-6)


def test_ridge_hypergrad_at_zero_penalty_is_the_right_derivative():
    # d > n: singular inner Hessian; the pinv formula is the limit lambda -> 0+.
    data, _, outer, *_ = _ridge_problem(n=8, d=20)
    val = lambda lam_: outer(lam_, ridge.ridge_solution(data, lam_))
    # One-sided, O(h^2). Smaller h loses digits: A + h I amplifies round-off in null(A) by 1/h.
    h = 1e-4
    fd = (-3 * val(0.0) + 4 * val(h) - val(2 * h)) / (2 * h)
    np.testing.assert_allclose(ridge.ridge_hypergrad(data, 0.0), fd, rtol=1e-5)


def test_make_ridge_without_noise_is_one_linear_model_on_both_splits():
    # noise = 0: y = X w_true and y_val = X_val w_true for the same w_true, recovered from the
    # training split by least squares when n_train > dim.
    data = ridge.make_ridge(jax.random.PRNGKey(4), n_train=12, n_val=7, dim=5, noise=0.0,
                            dtype=jnp.float64)
    w = np.linalg.lstsq(np.asarray(data.X), np.asarray(data.y), rcond=None)[0]
    np.testing.assert_allclose(data.X @ w, data.y, atol=1e-10)
    np.testing.assert_allclose(data.X_val @ w, data.y_val, atol=1e-10)
    assert data.X.dtype == jnp.float64 and data.X.shape == (12, 5)


def test_make_ridge_rejects_bad_input():
    with pytest.raises(ValueError, match="n_train"):
        ridge.make_ridge(jax.random.PRNGKey(0), n_train=2.5)
    with pytest.raises(ValueError, match="noise"):
        ridge.make_ridge(jax.random.PRNGKey(0), noise=-1.0)
    with pytest.raises(TypeError, match="dtype"):
        ridge.make_ridge(jax.random.PRNGKey(0), dtype=jnp.int32)


def test_ridge_functions_run_under_jit_with_a_concrete_penalty_closed_over():
    data, *_ = _ridge_problem(n=8, d=20)
    lam = jnp.array(0.2)
    got = jax.jit(lambda k: ridge.ridge_gd(data, lam, jnp.zeros(20), steps=k, lr=0.05))(3)
    np.testing.assert_allclose(got, _gd_loop(data, 0.2, jnp.zeros(20), 3, 0.05), atol=1e-12)
    np.testing.assert_allclose(jax.jit(lambda: ridge.ridge_hypergrad(data, lam))(),
                               ridge.ridge_hypergrad(data, 0.2), rtol=1e-12)


def test_ridge_rejects_bad_penalties():
    data, *_ = _ridge_problem()
    with pytest.raises(ValueError, match="lam"):
        ridge.ridge_solution(data, -0.1)
    with pytest.raises(ValueError, match="lam"):
        ridge.ridge_hypergrad(data, float("nan"))
    with pytest.raises(TypeError, match="lam"):
        ridge.ridge_hypergrad(data, jnp.ones(3))
    with pytest.raises(ValueError, match="dim"):
        ridge.make_ridge(jax.random.PRNGKey(0), dim=0)


def _gd_loop(data, lam, w0, steps, lr):
    inner, _ = ridge.ridge_objectives(data)
    step = lambda _, w: w - lr * jax.grad(inner, argnums=1)(lam, w)
    return jax.jit(lambda w: jax.lax.fori_loop(0, steps, step, w))(w0)


@pytest.mark.parametrize("lam", [0.0, 0.2])
@pytest.mark.parametrize("steps", [0, 1, 7, 60])
def test_ridge_gd_equals_an_explicit_gradient_descent_loop(lam, steps):
    data, *_ = _ridge_problem(n=8, d=20)
    w0 = jax.random.normal(jax.random.PRNGKey(1), (20,))
    np.testing.assert_allclose(ridge.ridge_gd(data, lam, w0, steps=steps, lr=0.05),
                               _gd_loop(data, lam, w0, steps, 0.05), rtol=1e-10, atol=1e-12)


def test_ridge_gd_vmaps_over_steps():
    data, *_ = _ridge_problem(n=8, d=20)
    w0 = jnp.zeros(20)
    ks = jnp.arange(5)
    batch = jax.vmap(lambda k: ridge.ridge_gd(data, 0.2, w0, steps=k, lr=0.05))(ks)
    for k in range(5):
        np.testing.assert_allclose(batch[k], _gd_loop(data, 0.2, w0, k, 0.05), atol=1e-12)


def test_ridge_gd_converges_to_the_closest_solution_when_singular():
    # lambda = 0, d > n: the limit is w0 projected onto {w : X w = y}.
    data, *_ = _ridge_problem(n=8, d=20)
    w0 = jax.random.normal(jax.random.PRNGKey(2), (20,))
    lr = 1.0 / float(jnp.linalg.eigvalsh(data.X.T @ data.X / 8).max())
    got = ridge.ridge_gd(data, 0.0, w0, steps=20_000, lr=lr)
    want = w0 + jnp.linalg.pinv(data.X) @ (data.y - data.X @ w0)
    np.testing.assert_allclose(got, want, atol=1e-8)


def test_ridge_gd_rejects_bad_input():
    data, *_ = _ridge_problem(n=8, d=20)
    with pytest.raises(ValueError, match="w0"):
        ridge.ridge_gd(data, 0.1, jnp.zeros(3), steps=2, lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        ridge.ridge_gd(data, 0.1, jnp.zeros(20), steps=-1, lr=0.1)
    with pytest.raises(TypeError, match="steps"):
        ridge.ridge_gd(data, 0.1, jnp.zeros(20), steps=2.5, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        ridge.ridge_gd(data, 0.1, jnp.zeros(20), steps=2, lr=0.0)
