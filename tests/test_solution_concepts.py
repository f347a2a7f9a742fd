"""Solution concepts of the linear least-squares bilevel problem (chapter 02).

Known answers only: the paper's closed forms (Lemma C.1's Eq. 35, Theorem 3.1), hand-solved
examples, NumPy least squares / null spaces computed independently of the library, and long
runs of the library's BLO loops (an iterative computation checked against a closed form).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

from bilevel_lib import blo, hypergrad, quadratic, spectral


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _problem(seed, m, n, p):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((m, n)),
        rng.standard_normal((p, n)),
        rng.standard_normal(p),
        rng.standard_normal(m),
        rng.standard_normal(n),
    )


def _F(psi, t, y):
    r = psi @ y - t
    return 0.5 * float(r @ r)


# ---------------------------------------------------------------------------------------------
# gradient_descent (Lemma C.1)
# ---------------------------------------------------------------------------------------------


def _singular_psd(seed, n=6, rank=3):
    a = np.random.default_rng(seed).standard_normal((rank, n))
    return a.T @ a, a


def test_gradient_descent_matches_eq35_closed_form():
    hess, a = _singular_psd(0)
    rng = np.random.default_rng(1)
    b = -a.T @ rng.standard_normal(a.shape[0])          # b in range(H): bounded below
    y0 = rng.standard_normal(hess.shape[0])
    lr = 1.0 / np.linalg.eigvalsh(hess).max()
    path = np.asarray(quadratic.gradient_descent(hess, b, y0, lr=lr, steps=7, trace=True))
    y_inf = y0 - np.linalg.pinv(hess) @ (hess @ y0 + b)
    step = np.eye(len(y0)) - lr * hess
    for k in range(8):
        expected = y_inf + np.linalg.matrix_power(step, k) @ (y0 - y_inf)
        np.testing.assert_allclose(path[k], expected, atol=1e-12)


def test_gradient_descent_converges_to_closest_least_squares_solution():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 8))
    t, y0 = rng.standard_normal(3), rng.standard_normal(8)
    lr = 1.9 / np.linalg.eigvalsh(a.T @ a).max()
    y = np.asarray(quadratic.gradient_descent(a.T @ a, -a.T @ t, y0, lr=lr, steps=3000))
    np.testing.assert_allclose(a @ y, t, atol=1e-10)                  # a solution ...
    null = scipy.linalg.null_space(a)
    np.testing.assert_allclose(null.T @ (y - y0), 0.0, atol=1e-10)     # ... closest to y0
    np.testing.assert_allclose(y, quadratic.closest_solution(a, t, y0), atol=1e-10)


def test_gradient_descent_past_the_stability_limit_keeps_the_null_space_part():
    hess, a = _singular_psd(3)
    y0 = np.random.default_rng(4).standard_normal(hess.shape[0])
    lr = 2.2 / np.linalg.eigvalsh(hess).max()
    y = np.asarray(quadratic.gradient_descent(hess, np.zeros(len(y0)), y0, lr=lr, steps=60))
    assert np.linalg.norm(y) > 1e3 * np.linalg.norm(y0)              # diverged ...
    null = scipy.linalg.null_space(a)
    np.testing.assert_allclose(null.T @ y, null.T @ y0, rtol=1e-9, atol=1e-9)  # ... not there


def test_gradient_descent_vmaps_over_lr():
    hess, _ = _singular_psd(5)
    y0 = np.ones(hess.shape[0])
    b = np.zeros(hess.shape[0])
    lrs = jnp.array([0.01, 0.05, 0.1])
    run = jax.jit(jax.vmap(lambda lr: quadratic.gradient_descent(hess, b, y0, lr=lr, steps=20)))
    batched = run(lrs)
    for i, lr in enumerate(lrs):
        single = quadratic.gradient_descent(hess, b, y0, lr=float(lr), steps=20)
        np.testing.assert_allclose(batched[i], single, atol=1e-12)


def test_gradient_descent_rejects_bad_input():
    hess = np.eye(2)
    with pytest.raises(ValueError, match="lr"):
        quadratic.gradient_descent(hess, np.zeros(2), np.zeros(2), lr=0.0, steps=3)
    with pytest.raises(TypeError, match="steps"):
        quadratic.gradient_descent(hess, np.zeros(2), np.zeros(2), lr=0.1, steps=3.0)
    with pytest.raises(ValueError, match="y0"):
        quadratic.gradient_descent(hess, np.zeros(2), np.zeros(3), lr=0.1, steps=3)
    with pytest.raises(ValueError, match="hess"):
        quadratic.gradient_descent(np.ones(3), np.zeros(3), np.zeros(3), lr=0.1, steps=3)


# ---------------------------------------------------------------------------------------------
# Optimistic and pessimistic value functions
# ---------------------------------------------------------------------------------------------


def test_optimistic_value_matches_numpy_least_squares_over_the_solution_set():
    # m=3, n=4, p=3: null(Phi) is a line, so the optimistic minimum over S(x) is not zero.
    phi, psi, t, x, _ = _problem(6, 3, 4, 3)
    null = scipy.linalg.null_space(phi)                       # (4, 1)
    y_part = np.linalg.lstsq(phi, x, rcond=None)[0]           # min-norm point of S(x)
    z = np.linalg.lstsq(psi @ null, t - psi @ y_part, rcond=None)[0]
    expected = _F(psi, t, y_part + null @ z)
    assert float(quadratic.optimistic_value(phi, psi, t, x)) == pytest.approx(expected, rel=1e-10)
    assert expected > 1e-3                                    # the check is not vacuous
    rng = np.random.default_rng(7)
    for _ in range(20):                                       # a lower bound on S(x)
        y = y_part + null @ rng.standard_normal(1) * 10
        assert float(quadratic.optimistic_value(phi, psi, t, x)) <= _F(psi, t, y) + 1e-12


def test_optimistic_value_vanishes_when_the_inner_has_room_for_every_target():
    phi, psi, t, _, _ = _problem(8, 2, 6, 2)                  # n >= m + p: G full row rank
    rng = np.random.default_rng(9)
    for _ in range(5):
        x = rng.standard_normal(2) * 5
        assert float(quadratic.optimistic_value(phi, psi, t, x)) < 1e-20


def test_pessimistic_value_unbounded_unless_outer_ignores_inner_null_space():
    phi, psi, t, x, _ = _problem(10, 2, 5, 1)
    assert np.isinf(float(quadratic.pessimistic_value(phi, psi, t, x)))
    # The loss really is unbounded along S(x): it grows like s^2 |Psi n|^2 / 2.
    n_vec = scipy.linalg.null_space(phi)[:, 0]
    y_part = np.linalg.pinv(phi) @ x
    s = 1e3
    growth = _F(psi, t, y_part + s * n_vec) / (0.5 * s**2 * float((psi @ n_vec)[0]) ** 2)
    assert growth == pytest.approx(1.0, rel=1e-2)
    # Outer features in row(Phi): F is constant on S(x), and all value functions coincide.
    psi_in = np.array([[1.0, -2.0]]) @ phi
    m_mat = psi_in @ np.linalg.pinv(phi)
    cold = 0.5 * float(np.sum((m_mat @ x - t) ** 2))
    assert float(quadratic.pessimistic_value(phi, psi_in, t, x)) == pytest.approx(cold, rel=1e-9)
    assert float(quadratic.optimistic_value(phi, psi_in, t, x)) == pytest.approx(cold, rel=1e-9)


def test_optimistic_outer_solution_is_optimal_and_closest_to_x0():
    phi, psi, t, x0, _ = _problem(11, 3, 4, 3)
    x, y = map(np.asarray, quadratic.optimistic_outer_solution(phi, psi, t, x0))
    np.testing.assert_allclose(phi.T @ (phi @ y - x), 0.0, atol=1e-10)      # y in S(x)
    global_min = 0.5 * float(np.sum((t - psi @ np.linalg.lstsq(psi, t, rcond=None)[0]) ** 2))
    assert _F(psi, t, y) == pytest.approx(global_min, rel=1e-9, abs=1e-12)
    assert float(quadratic.optimistic_value(phi, psi, t, x)) == pytest.approx(
        global_min, rel=1e-9, abs=1e-12
    )
    # Closest to x0: x - x0 is orthogonal to the directions along which the optimum is flat.
    g = psi @ scipy.linalg.null_space(phi)
    keep = np.eye(3) - g @ np.linalg.pinv(g)
    flat = scipy.linalg.null_space(keep @ psi @ np.linalg.pinv(phi))
    assert flat.shape[1] >= 1
    np.testing.assert_allclose(flat.T @ (x - x0), 0.0, atol=1e-10)


def test_optimistic_equals_cold_start_when_inner_is_strongly_convex():
    phi, psi, t, x0, _ = _problem(12, 4, 4, 2)                # Phi invertible: S(x) a point
    x_opt, y_opt = quadratic.optimistic_outer_solution(phi, psi, t, x0)
    x_cold, y_cold = quadratic.min_norm_outer_solution(phi, psi, t, x0)
    np.testing.assert_allclose(x_opt, x_cold, atol=1e-10)
    np.testing.assert_allclose(y_opt, y_cold, atol=1e-10)


def test_value_functions_reject_bad_shapes():
    phi, psi, t, x, _ = _problem(13, 2, 5, 1)
    with pytest.raises(ValueError, match="`x`"):
        quadratic.optimistic_value(phi, psi, t, np.zeros(3))
    with pytest.raises(ValueError, match="`t`"):
        quadratic.pessimistic_value(phi, psi, np.zeros(2), x)
    with pytest.raises(ValueError, match="share n"):
        quadratic.optimistic_outer_solution(phi, psi[:, :3], t, x)


# ---------------------------------------------------------------------------------------------
# Theorem 3.1 and its approximate-hypergradient variant
# ---------------------------------------------------------------------------------------------


def _objectives(phi, psi, t):
    inner = lambda x, y: 0.5 * jnp.sum((phi @ y - x) ** 2)
    outer = lambda x, y: 0.5 * jnp.sum((psi @ y - t) ** 2)
    return inner, outer


def _steps(phi, psi):
    lam_in = np.linalg.eigvalsh(phi @ phi.T)
    m_mat = psi @ np.linalg.pinv(phi)
    return 2.0 / (lam_in.max() + lam_in.min()), 1.0 / np.linalg.eigvalsh(m_mat.T @ m_mat).max()


def test_filtered_solution_with_pinv_filter_is_the_min_norm_solution():
    phi, psi, t, x0, y0 = _problem(14, 3, 7, 2)
    x_f, y_f = quadratic.filtered_outer_solution(phi, psi, t, x0, spectral.pinv_filter, y0)
    x_m, y_m = quadratic.min_norm_outer_solution(phi, psi, t, x0, y0)
    np.testing.assert_allclose(x_f, x_m, atol=1e-10)
    np.testing.assert_allclose(y_f, y_m, atol=1e-10)


def test_filtered_solution_hand_example_float64():
    phi, psi = np.diag([1.0, 2.0]), np.array([[1.0, 1.0]])
    damped = functools.partial(spectral.damped_filter, eps=1.0)
    x, _ = quadratic.filtered_outer_solution(phi, psi, np.array([1.0]), np.zeros(2), damped)
    np.testing.assert_allclose(x, [5.0 / 7.0, 4.0 / 7.0], atol=1e-14)


@pytest.mark.parametrize("kind", ["neumann", "damped"])
def test_cold_start_with_approximate_hypergradient_reaches_filtered_solution(kind):
    phi, psi, t, x0, y0 = _problem(15, 2, 5, 1)
    inner, outer = _objectives(phi, psi, t)
    alpha, beta = _steps(phi, psi)
    lr_neu = 0.5 / np.linalg.eigvalsh(phi.T @ phi).max()
    if kind == "neumann":
        hg = functools.partial(hypergrad.neumann, steps=2, lr=lr_neu)
        filt = functools.partial(spectral.neumann_filter, steps=2, lr=lr_neu)
    else:
        hg = functools.partial(hypergrad.damped, eps=3.0, method="dense")
        filt = functools.partial(spectral.damped_filter, eps=3.0)
    # The preconditioned outer curvature is at most that of the exact one times max(s^2 g).
    x, _, _ = jax.jit(lambda: blo.cold_start(
        inner, outer, x0, y0, hypergrad=hg, outer_opt=optax.sgd(beta),
        inner_opt=optax.sgd(alpha), outer_steps=3000, inner_steps=400))()
    x_pred, _ = quadratic.filtered_outer_solution(phi, psi, t, x0, filt, y0)
    x_exact, _ = quadratic.min_norm_outer_solution(phi, psi, t, x0, y0)
    np.testing.assert_allclose(x, x_pred, atol=1e-7)
    assert np.linalg.norm(x_pred - x_exact) > 1e-2          # a different outer solution


def test_filtered_solution_lies_on_the_outer_solution_set():
    phi, psi, t, x0, y0 = _problem(16, 4, 9, 2)
    filt = functools.partial(spectral.neumann_filter, steps=1, lr=0.01)
    x, y = map(np.asarray, quadratic.filtered_outer_solution(phi, psi, t, x0, filt, y0))
    np.testing.assert_allclose(psi @ y, t, atol=1e-9)       # consistent: the loss is zero
    np.testing.assert_allclose(phi @ y, x, atol=1e-9)


def test_filtered_solution_rejects_bad_filters():
    phi, psi, t, x0, _ = _problem(17, 2, 4, 1)
    with pytest.raises(TypeError, match="filt"):
        quadratic.filtered_outer_solution(phi, psi, t, x0, "neumann")
    lam_max = np.linalg.eigvalsh(phi.T @ phi).max()
    unstable = functools.partial(spectral.neumann_filter, steps=2, lr=2.5 / lam_max)
    with pytest.raises(ValueError, match="filt"):
        quadratic.filtered_outer_solution(phi, psi, t, x0, unstable)


def test_exact_hypergradient_of_the_family_is_M_transpose_residual_at_any_y():
    # dF/dx = Phi^+T Psi^T (Psi y - t) for every y, stationary or not: x moves in range(M^T).
    phi, psi, t, x, _ = _problem(18, 3, 7, 2)
    inner, outer = _objectives(phi, psi, t)
    y = np.random.default_rng(19).standard_normal(7)
    expected = np.linalg.pinv(phi).T @ psi.T @ (psi @ y - t)
    np.testing.assert_allclose(hypergrad.exact(inner, outer, x, y), expected, atol=1e-10)


def test_full_warm_start_equals_cold_start_for_fixed_features():
    # Inner overparameterized (n > m) but H = Phi^T Phi does not depend on x: inner gradient
    # descent never leaves y0 + row(Phi), where S(x) has exactly one point.
    phi, psi, t, x0, y0 = _problem(20, 2, 5, 1)
    inner, outer = _objectives(phi, psi, t)
    alpha, beta = _steps(phi, psi)
    kw = dict(hypergrad=hypergrad.exact, outer_opt=optax.sgd(beta),
              inner_opt=optax.sgd(alpha), outer_steps=30, inner_steps=400)
    xc, _, tc = jax.jit(lambda: blo.cold_start(inner, outer, x0, y0, **kw))()
    xw, _, tw = jax.jit(lambda: blo.warm_start(inner, outer, x0, y0, **kw))()
    np.testing.assert_allclose(tw["x"], tc["x"], atol=1e-9)
    x_star, _ = quadratic.min_norm_outer_solution(phi, psi, t, x0, y0)
    np.testing.assert_allclose(xc, x_star, atol=1e-8)
    np.testing.assert_allclose(xw, x_star, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# Problem constructors
# ---------------------------------------------------------------------------------------------


def test_least_squares_objectives_match_their_formulas():
    phi, psi, t, x, y = _problem(21, 3, 6, 2)
    inner, outer = quadratic.least_squares_objectives(phi, psi, t)
    assert float(inner(x, y)) == pytest.approx(0.5 * np.sum((phi @ y - x) ** 2), rel=1e-12)
    assert float(outer(x, y)) == pytest.approx(_F(psi, t, y), rel=1e-12)
    h, b = hypergrad.hessian_and_mixed(inner, x, y)
    np.testing.assert_allclose(h, phi.T @ phi, atol=1e-12)
    np.testing.assert_allclose(b, -phi.T, atol=1e-12)
    with pytest.raises(ValueError, match="`t`"):
        quadratic.least_squares_objectives(phi, psi, np.zeros(3))


@pytest.mark.parametrize("m,n,p", [(3, 8, 2), (2, 10, 6), (6, 4, 3)])
def test_random_least_squares_has_the_prescribed_spectra(m, n, p):
    phi, psi, t = map(np.asarray, quadratic.random_least_squares(5, m, n, p, spectrum=(0.5, 3.0)))
    assert phi.shape == (m, n) and psi.shape == (p, n) and t.shape == (p,)
    s_phi = np.linalg.svd(phi, compute_uv=False)
    np.testing.assert_allclose([s_phi[0], s_phi[min(m, n) - 1]], [3.0, 0.5], atol=1e-12)
    s_m = np.linalg.svd(psi @ np.linalg.pinv(phi), compute_uv=False)[: min(m, p)]
    assert s_m.max() == pytest.approx(3.0, abs=1e-10) and s_m.min() >= 0.5 - 1e-10
    null = scipy.linalg.null_space(phi)
    if null.shape[1]:
        assert np.linalg.norm(psi @ null) > 1e-3              # the outer loss sees null(Phi)
    _, psi_in, _ = map(np.asarray, quadratic.random_least_squares(5, m, n, p, null_part=False))
    if null.shape[1]:
        np.testing.assert_allclose(psi_in @ scipy.linalg.null_space(phi), 0.0, atol=1e-12)


def test_random_least_squares_rejects_bad_input():
    with pytest.raises(ValueError, match="spectrum"):
        quadratic.random_least_squares(0, 2, 3, 1, spectrum=(2.0, 1.0))
    with pytest.raises(TypeError, match="`m`"):
        quadratic.random_least_squares(0, 2.0, 3, 1)
