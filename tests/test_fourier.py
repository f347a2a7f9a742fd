"""Tests of bilevel_lib.tasks.fourier (the anti-distillation task) against known answers.

Known answers used here: trigonometric values at u = 0, pi/2, pi; the stated amplitude
schedules; Lemma C.1 (gradient descent from w0 reaches w0 + Phi^+ (x - Phi w0)); Theorem 3.1
(exact cold-start BLO reaches the outer solution closest to x0, written with NumPy pinv); the
spectral form of the Neumann hypergradient on a quadratic; and the paper's App. E identity
(K unrolled steps from a stationary point == K Neumann terms).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bilevel_lib import blo, hypergrad, linalg, spectral
from bilevel_lib.tasks import fourier


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _fourier_problem(n_freq=10, schedule="exponential", m=13, v=0.0):
    amps = fourier.amplitudes(n_freq, schedule)
    feats = functools.partial(fourier.fourier_features, amps=amps)
    u = jnp.linspace(-3.0, 3.0, m)
    return fourier.anti_distillation(u, jnp.array([v]), jnp.array([1.0]), feats)


def _small_problem():
    """4 learned points, 2 original points, 5 features (linear amplitudes): p = 2 > 1."""
    feats = functools.partial(fourier.fourier_features, amps=fourier.amplitudes(2, "linear"))
    return fourier.anti_distillation(jnp.array([-2.0, -0.5, 0.7, 2.1]), jnp.array([0.2, 1.3]),
                                     jnp.array([1.0, -0.5]), feats)


# --- features ------------------------------------------------------------------------------


def test_amplitude_schedules():
    np.testing.assert_allclose(fourier.amplitudes(3, "exponential", decay=0.5),
                               [1.0, 0.5, 0.25, 0.125])
    np.testing.assert_allclose(fourier.amplitudes(4, "linear"), [1.0, 0.8, 0.6, 0.4, 0.2])
    amps = fourier.amplitudes(10)
    assert amps.shape == (11,)
    np.testing.assert_allclose(amps[10], 0.6**10)
    assert bool(jnp.all(jnp.diff(amps) < 0)), "amplitudes must decrease with frequency"


def test_fourier_features_at_known_inputs():
    amps = jnp.array([1.0, 2.0, 3.0])
    phi = fourier.fourier_features(jnp.array([0.0, np.pi / 2, np.pi]), amps)
    expected = np.array([
        [1.0, 0.0, 2.0, 0.0, 3.0],    # u = 0: sines vanish, cosines = amplitudes
        [1.0, 2.0, 0.0, 0.0, -3.0],   # u = pi/2: sin = 1, cos(pi/2) = 0, cos(pi) = -1
        [1.0, 0.0, -2.0, 0.0, 3.0],   # u = pi: cos(pi) = -1, cos(2 pi) = 1
    ])
    np.testing.assert_allclose(phi, expected, atol=1e-12)
    single = fourier.fourier_features(0.3, amps)
    assert single.shape == (5,)
    np.testing.assert_allclose(single, [1.0, 2 * np.sin(0.3), 2 * np.cos(0.3),
                                        3 * np.sin(0.6), 3 * np.cos(0.6)], atol=1e-12)


def test_fourier_features_energy_is_the_squared_amplitudes():
    # sin^2 + cos^2 = 1 per frequency: |phi(u)|^2 = sum_k a_k^2 at every u.
    amps = fourier.amplitudes(10)
    phi = fourier.fourier_features(jnp.linspace(-3, 3, 7), amps)
    np.testing.assert_allclose(jnp.sum(phi**2, axis=1), jnp.sum(amps**2) * jnp.ones(7))


def test_linear_features():
    np.testing.assert_allclose(fourier.linear_features(jnp.array([0.0, 2.0])),
                               [[0.0, 1.0], [2.0, 1.0]])


# --- the quadratic problem -----------------------------------------------------------------


def test_problem_objectives_and_step_sizes():
    prob = _small_problem()
    x = jnp.array([0.3, -1.0, 2.0, 0.5])
    w = jnp.linspace(-1, 1, 5)
    np.testing.assert_allclose(prob.inner(x, w), 0.5 * np.sum((prob.phi @ w - x) ** 2))
    np.testing.assert_allclose(prob.outer(x, w), 0.5 * np.sum((prob.psi @ w - prob.t) ** 2))
    phi = np.asarray(prob.phi)
    np.testing.assert_allclose(prob.inner_lr(), 1.0 / np.linalg.eigvalsh(phi.T @ phi).max())
    m = np.asarray(prob.psi) @ np.linalg.pinv(phi)
    np.testing.assert_allclose(prob.outer_lr(), 1.0 / np.linalg.eigvalsh(m @ m.T).max())


def test_inner_solution_is_the_limit_of_gradient_descent():
    # Lemma C.1, checked against plain gradient descent from a nonzero w0.
    prob = _small_problem()
    x = jnp.array([0.3, -1.0, 2.0, 0.5])
    w0 = jnp.array([1.0, -2.0, 0.5, 0.0, 3.0])
    lr = prob.inner_lr()
    grad = jax.grad(prob.inner, argnums=1)
    w = jax.lax.fori_loop(0, 5000, lambda _, w: w - lr * grad(x, w), w0)
    np.testing.assert_allclose(prob.inner_solution(x, w0), w, atol=1e-9)
    phi = np.asarray(prob.phi)
    np.testing.assert_allclose(
        prob.inner_solution(x, w0), w0 + np.linalg.pinv(phi) @ (x - phi @ w0), atol=1e-12)


def test_exact_inner_solver_lands_on_the_closest_minimizer_in_one_step():
    prob = _small_problem()
    x, w0 = jnp.array([0.3, -1.0, 2.0, 0.5]), jnp.array([1.0, -2.0, 0.5, 0.0, 3.0])
    opt = fourier.exact_inner_solver(prob.hessian())
    updates, _ = opt.update(jax.grad(prob.inner, argnums=1)(x, w0), opt.init(w0))
    np.testing.assert_allclose(optax.apply_updates(w0, updates), prob.inner_solution(x, w0),
                               atol=1e-10)


def test_pseudo_inverses_use_the_core_zero_threshold():
    # Known answer: NumPy's SVD pinv with the same relative cut-off as linalg.zero_threshold
    # (NumPy keeps s > rcond * max(s), the same rule).
    rcond = float(linalg.zero_threshold(jnp.array([1.0])))
    prob = _fourier_problem()
    phi, psi = np.asarray(prob.phi), np.asarray(prob.psi)
    np.testing.assert_allclose(prob.response(), psi @ np.linalg.pinv(phi, rcond=rcond),
                               rtol=1e-10, atol=1e-12)
    # The inner solver's cut-off is zero_threshold's: the default keeps a small real
    # eigenvalue (1e-4), ``rtol=1e-3`` drops it; the exact zero is dropped by both.
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))
    hess = q @ np.diag([2.0, 1.0, 1e-4, 0.0]) @ q.T
    g = np.array([1.0, -2.0, 0.5, 3.0])
    for rtol, cut in ((None, rcond), (1e-3, 1e-3)):
        opt = fourier.exact_inner_solver(jnp.asarray(hess), rtol=rtol)
        update, _ = opt.update(jnp.asarray(g), opt.init(jnp.zeros(4)))
        want = -np.linalg.pinv(hess, rcond=cut, hermitian=True) @ g
        np.testing.assert_allclose(np.asarray(update), want, rtol=1e-8, atol=1e-10)
    kept = -q @ np.diag([0.5, 1.0, 1e4, 0.0]) @ q.T @ g      # the default: 1 / 1e-4 kept
    dropped = -q @ np.diag([0.5, 1.0, 0.0, 0.0]) @ q.T @ g   # rtol = 1e-3: dropped
    default, _ = fourier.exact_inner_solver(jnp.asarray(hess)).update(jnp.asarray(g), None)
    coarse, _ = fourier.exact_inner_solver(jnp.asarray(hess), rtol=1e-3).update(
        jnp.asarray(g), None)
    np.testing.assert_allclose(np.asarray(default), kept, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(coarse), dropped, rtol=1e-8, atol=1e-10)


def test_exact_cold_start_reaches_the_min_norm_outer_solution():
    # Theorem 3.1 with plain gradient descent in the inner loop (a long run, p = 2 original
    # points), against x* = x0 + M^+ (t - M x0) written with NumPy.
    prob = _small_problem()
    x0 = jnp.array([0.5, 0.2, -0.4, 1.0])
    w0 = jnp.zeros(5)
    x, _, trace = blo.cold_start(
        prob.inner, prob.outer, x0, w0, hypergrad=hypergrad.exact,
        outer_opt=optax.sgd(0.9 * prob.outer_lr()), inner_opt=optax.sgd(prob.inner_lr()),
        outer_steps=300, inner_steps=3000)
    phi, psi, t = (np.asarray(a) for a in prob)
    m = psi @ np.linalg.pinv(phi)
    x_star = np.asarray(x0) + np.linalg.pinv(m) @ (t - m @ np.asarray(x0))
    np.testing.assert_allclose(x, x_star, atol=1e-7)
    np.testing.assert_allclose(prob.min_norm_outer_solution(x0)[0], x_star, atol=1e-10)
    assert float(trace["outer_loss"][-1]) < 1e-12


def test_approximate_limits_are_valid_but_farther_from_x0():
    # Every Neumann / damped limit solves the outer problem (M x = t) and, by Theorem 3.1,
    # is at least as far from x0 as the exact limit; the trade-off makes it strictly farther.
    prob = _fourier_problem()
    x0 = jnp.zeros(13)
    x_star, w_star = prob.min_norm_outer_solution(x0)
    alpha, h = prob.inner_lr(), prob.hessian()
    m = prob.response()
    dist = []
    for k in (1, 10, 100):
        filt = functools.partial(spectral.neumann_filter, steps=k, lr=alpha)
        x, w = prob.filtered_outer_solution(x0, filt)
        np.testing.assert_allclose(m @ x, prob.t, atol=1e-9)
        np.testing.assert_allclose(w, jnp.linalg.pinv(prob.phi) @ x, atol=1e-9)
        dist.append(float(jnp.linalg.norm(x - x0)))
        # The hypergradient direction is Phi g(H) psi: the limit lies on that ray from x0.
        d = prob.phi @ spectral.apply_filter(h, prob.psi[0], filt)
        np.testing.assert_allclose(x / jnp.linalg.norm(x), d / jnp.linalg.norm(d), atol=1e-9)
    exact = float(jnp.linalg.norm(x_star - x0))
    assert dist[0] > dist[1] > dist[2] > exact


# --- hypergradients ------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 4, 25])
def test_neumann_equals_unroll_and_the_spectral_formula(k):
    prob = _fourier_problem()
    x = jnp.sin(jnp.arange(13.0))
    w = prob.inner_solution(x)                     # stationary: the cold-start solution
    alpha = prob.inner_lr()
    neu = hypergrad.neumann(prob.inner, prob.outer, x, w, steps=k, lr=alpha)
    unr = hypergrad.unroll(prob.inner, prob.outer, x, w, steps=k, lr=alpha)
    np.testing.assert_allclose(neu, unr, atol=1e-12)
    # Known answer: Phi g_K(H) Psi^T (Psi w - t) with the Neumann filter.
    r = prob.psi @ w - prob.t
    filt = functools.partial(spectral.neumann_filter, steps=k, lr=alpha)
    expected = prob.phi @ spectral.apply_filter(prob.hessian(), prob.psi.T @ r, filt)
    np.testing.assert_allclose(neu, expected, atol=1e-10)


def test_unroll_differs_from_neumann_away_from_stationarity():
    # The identity needs a stationary start: from a non-stationary w it fails.
    prob = _fourier_problem()
    x, w = jnp.sin(jnp.arange(13.0)), jnp.ones(21)
    alpha = prob.inner_lr()
    neu = hypergrad.neumann(prob.inner, prob.outer, x, w, steps=5, lr=alpha)
    unr = hypergrad.unroll(prob.inner, prob.outer, x, w, steps=5, lr=alpha)
    assert float(jnp.max(jnp.abs(neu - unr))) > 1e-3


def test_cold_start_sweep_matches_separate_runs():
    prob = _small_problem()
    x0, w0 = jnp.array([0.5, 0.2, -0.4, 1.0]), jnp.zeros(5)
    kw = dict(outer_opt=optax.sgd(0.5 * prob.outer_lr()),
              inner_opt=fourier.exact_inner_solver(prob.hessian()), outer_steps=40,
              inner_steps=1)
    alpha = prob.inner_lr()
    ks = [1, 7]
    xs, ws, trace = blo.cold_start_sweep(prob.inner, prob.outer, x0, w0,
                                             estimator=hypergrad.neumann, param="steps",
                                             values=ks, options={"lr": alpha}, **kw)
    assert xs.shape == (2, 4) and trace["outer_loss"].shape == (2, 40)
    for i, k in enumerate(ks):
        hg = functools.partial(hypergrad.neumann, steps=k, lr=alpha)
        x, _, _ = blo.cold_start(prob.inner, prob.outer, x0, w0, hypergrad=hg, **kw)
        np.testing.assert_allclose(xs[i], x, atol=1e-12)
    eps = [0.1, 1.0]
    xe, _, _ = blo.cold_start_sweep(prob.inner, prob.outer, x0, w0,
                                        estimator=hypergrad.damped, param="eps", values=eps,
                                        **kw)
    for i, e in enumerate(eps):
        hg = functools.partial(hypergrad.damped, eps=e)
        x, _, _ = blo.cold_start(prob.inner, prob.outer, x0, w0, hypergrad=hg, **kw)
        np.testing.assert_allclose(xe[i], x, atol=1e-10)


def test_damped_sweep_converges_to_the_filtered_closed_form():
    prob = _fourier_problem()
    x0, w0 = jnp.zeros(13), jnp.zeros(21)
    eps = [0.05, 1.0]
    xs, _, _ = blo.cold_start_sweep(
        prob.inner, prob.outer, x0, w0, estimator=hypergrad.damped, param="eps", values=eps,
        outer_opt=optax.sgd(prob.outer_lr()), inner_opt=fourier.exact_inner_solver(prob.hessian()),
        outer_steps=300, inner_steps=1)
    for i, e in enumerate(eps):
        x, _ = prob.filtered_outer_solution(x0, functools.partial(spectral.damped_filter, eps=e))
        np.testing.assert_allclose(xs[i], x, atol=1e-9)


# --- MLP -----------------------------------------------------------------------------------


def test_mlp_problem_on_hand_set_weights():
    params = {"w0": jnp.array([[1.0, -1.0]]), "b0": jnp.array([0.0, 1.0]),
              "w1": jnp.array([[2.0], [3.0]]), "b1": jnp.array([0.5])}
    u = jnp.array([-2.0, 0.0, 1.5])
    # hidden = relu(u, 1 - u); out = 2 relu(u) + 3 relu(1 - u) + 0.5
    prob = fourier.mlp_problem(u, jnp.array([0.0]), jnp.array([1.0]))
    np.testing.assert_allclose(prob.predict(params, u), [9.5, 3.5, 3.5])
    x = jnp.array([9.0, 3.0, 4.0])
    np.testing.assert_allclose(prob.inner(x, params), 0.5 * (0.25 + 0.25 + 0.25))
    np.testing.assert_allclose(prob.outer(x, params), 0.5 * 2.5**2)


def test_mlp_init_is_lecun_normal():
    params = fourier.mlp_init(jax.random.PRNGKey(0), (1, 10, 10, 1))
    assert [params[f"w{i}"].shape for i in range(3)] == [(1, 10), (10, 10), (10, 1)]
    assert all(bool(jnp.all(params[f"b{i}"] == 0)) for i in range(3))
    big = fourier.mlp_init(jax.random.PRNGKey(1), (100, 100))["w0"]
    np.testing.assert_allclose(jnp.std(big), 1.0 / 10.0, rtol=0.05)    # N(0, 1/fan_in)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: fourier.amplitudes(0), "n_freq"),
    (lambda: fourier.amplitudes(3, "cubic"), "schedule"),
    (lambda: fourier.amplitudes(3, decay=1.5), "decay"),
    (lambda: fourier.amplitudes(3, decay=0.0), "decay"),
    (lambda: fourier.fourier_features(jnp.zeros((2, 2)), jnp.ones(3)), "`u`"),
    (lambda: fourier.fourier_features(jnp.zeros(2), jnp.ones((3, 1))), "amps"),
    (lambda: fourier.linear_features(jnp.zeros((2, 2))), "`u`"),
    (lambda: fourier.anti_distillation(jnp.zeros(3), jnp.zeros(2), jnp.zeros(1),
                                       fourier.linear_features), "t_original"),
    (lambda: fourier.anti_distillation(jnp.array([0.0, jnp.nan]), jnp.zeros(1),
                                       jnp.zeros(1), fourier.linear_features), "u_learned"),
    (lambda: fourier.anti_distillation(jnp.zeros(3), jnp.zeros(1), jnp.zeros(1),
                                       lambda u: u), "features"),
    (lambda: fourier.exact_inner_solver(jnp.ones((2, 3))), "hess"),
    (lambda: fourier.exact_inner_solver(jnp.full((2, 2), jnp.inf)), "hess"),
    (lambda: fourier.mlp_init(jax.random.PRNGKey(0), (1,)), "sizes"),
    (lambda: fourier.mlp_init(jax.random.PRNGKey(0), (1, 0, 1)), "sizes"),
    (lambda: fourier.mlp_problem(jnp.zeros(2), jnp.zeros(1), jnp.zeros(2)), "t_original"),
])
def test_bad_inputs_raise_value_errors_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_types_raise_type_errors():
    with pytest.raises(TypeError, match="n_freq"):
        fourier.amplitudes(2.5)
    with pytest.raises(TypeError, match="features"):
        fourier.anti_distillation(jnp.zeros(2), jnp.zeros(1), jnp.zeros(1), "fourier")
    with pytest.raises(TypeError, match="u_learned"):
        fourier.mlp_problem(jnp.arange(3), jnp.zeros(1), jnp.zeros(1))


def test_bad_sweeps_raise():
    prob = _small_problem()
    kw = dict(outer_opt=optax.sgd(0.1), inner_opt=optax.sgd(0.1), outer_steps=2,
              inner_steps=1)
    args = (prob.inner, prob.outer, jnp.zeros(4), jnp.zeros(5))
    with pytest.raises(ValueError, match="steps"):
        blo.cold_start_sweep(*args, estimator=hypergrad.neumann, param="steps",
                                 values=[1.5, 2.0], options={"lr": 0.1}, **kw)
    with pytest.raises(ValueError, match="steps"):
        blo.cold_start_sweep(*args, estimator=hypergrad.neumann, param="steps",
                                 values=[1, 2], options={"lr": 0.1, "steps": 3}, **kw)
    with pytest.raises(ValueError, match="values"):
        blo.cold_start_sweep(*args, estimator=hypergrad.damped, param="eps", values=[],
                                 **kw)
    with pytest.raises(ValueError, match="values"):
        blo.cold_start_sweep(*args, estimator=hypergrad.damped, param="eps",
                                 values=[0.1, np.nan], **kw)
    with pytest.raises(TypeError, match="estimator"):
        blo.cold_start_sweep(*args, estimator="neumann", param="steps", values=[1], **kw)
