"""bilevel_lib.blo against known answers.

Known answers: Theorem 3.1's closed-form outer limit (cold start + exact hypergradient converges
to the outer solution closest to x0), Lemma C.1's closed-form inner limit, and the two loops
re-written by hand in NumPy (gradient descent on the inner quadratic, the pinv / Neumann
hypergradient, an SGD outer step), which they must reproduce step by step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import make_least_squares

from bilevel_lib import blo, linalg, quadratic
from bilevel_lib import hypergrad as hg


def _steps_to_converge(rate, tol):
    return int(np.ceil(np.log(tol) / np.log(rate)))


def _outer_setup(p):
    """M = Psi Phi^+, the outer Hessian M^T M and a step size from its eigenvalues."""
    phi_pinv = np.linalg.pinv(p.phi)
    m = p.psi @ phi_pinv
    sig2 = np.linalg.svd(m, compute_uv=False) ** 2
    sig2 = sig2[sig2 > 1e-10 * sig2.max()]
    return m, 1.0 / sig2.max(), sig2.min() / sig2.max()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_theorem_3_1_cold_start_exact_reaches_closest_outer_solution(dtype):
    with jax.enable_x64(dtype == np.float64):
        p = make_least_squares(20, m=3, n=7, p=2, dtype=dtype)
        rng = np.random.default_rng(21)
        # Two runs in one vmap: the paper's y0 = 0, and a random y0 (the limit depends on it).
        y0s = np.stack([np.zeros(7), rng.standard_normal(7)])
        x0s = rng.standard_normal((2, 3))
        m, outer_lr, ratio = _outer_setup(p)
        assert m.shape == (2, 3) and ratio > 0.05  # outer solutions form a line in R^3
        # Inner: H = Phi^T Phi has nonzero eigenvalues in [1, 4]; lr = 1/4 contracts by 3/4.
        inner_steps = _steps_to_converge(0.75, 1e-15)
        outer_steps = _steps_to_converge(1.0 - ratio, 1e-11)
        run = jax.jit(jax.vmap(functools.partial(
            blo.cold_start, p.inner, p.outer, hypergrad=hg.exact,
            outer_opt=optax.sgd(outer_lr), inner_opt=optax.sgd(0.25),
            outer_steps=outer_steps, inner_steps=inner_steps, trace_y=True)))
        xs, _, trace = jax.tree_util.tree_map(
            np.asarray, run(jnp.asarray(x0s, dtype), jnp.asarray(y0s, dtype)))
        tol = 1e-8 if dtype == np.float64 else 2e-3
        null_m = np.linalg.svd(m)[2][-1]
        for i, (x0, y0) in enumerate(zip(x0s, y0s, strict=True)):
            x_star, y_star = map(np.asarray, quadratic.min_norm_outer_solution(
                p.phi, p.psi, p.t, x0, y0))
            np.testing.assert_allclose(xs[i], x_star, atol=tol)
            np.testing.assert_allclose(trace["y"][i, -1], y_star, atol=tol)
            # x* is a stationary point of the outer objective F(x) = 1/2 |M x - t'|^2 ...
            t_eff = p.t - p.psi @ (y0 - np.linalg.pinv(p.phi) @ (p.phi @ y0))
            np.testing.assert_allclose(m.T @ (m @ x_star - t_eff), 0.0, atol=tol)
            # ... and the closest one to x0: moving along the solution line increases |x - x0|.
            for step in (-0.5, 0.1, 1.0):
                assert (np.linalg.norm(x_star + step * null_m - x0)
                        > np.linalg.norm(x_star - x0))
            assert np.linalg.norm(x_star - x0) > 1e-2  # x0 itself is not a solution
            # Cold start resets y to y0 each step: the inner solution at x_t is the one
            # closest to y0 (Lemma C.1), for every t.
            for t in (0, 1, outer_steps // 2, outer_steps - 1):
                want = quadratic.closest_solution(p.phi, trace["x"][i, t].astype(np.float64),
                                                  y0)
                np.testing.assert_allclose(trace["y"][i, t], want, atol=tol)
        # y0 matters: the two runs end at different inner solutions.
        assert np.linalg.norm(trace["y"][0, -1] - trace["y"][1, -1]) > 1e-2


# ---------------------------------------------------------------------------------------------
# The loops step by step against a NumPy re-implementation
# ---------------------------------------------------------------------------------------------


def _numpy_loop(p, x0, y0, *, warm, outer_lr, inner_lr, outer_steps, inner_steps, hyper):
    """Algorithms 1 and 2 with gradient descent inner steps and an SGD outer step."""
    h_mat = p.phi.T @ p.phi
    x, y = x0.copy(), y0.copy()
    xs, ys, hs = [], [], []
    for _ in range(outer_steps):
        if not warm:
            y = y0.copy()
        for _ in range(inner_steps):
            y = y - inner_lr * (h_mat @ y - p.phi.T @ x)
        h = hyper(x, y)
        xs.append(x.copy())
        ys.append(y.copy())
        hs.append(h)
        x = x - outer_lr * h
    return x, y, np.array(xs), np.array(ys), np.array(hs)


def _pinv_hypergrad(p):
    phi_pinv = np.linalg.pinv(p.phi)
    return lambda x, y: phi_pinv.T @ p.psi.T @ (p.psi @ y - p.t)


def _neumann_hypergrad(p, steps, lr):
    h_mat = p.phi.T @ p.phi
    n = h_mat.shape[0]
    series = sum((np.linalg.matrix_power(np.eye(n) - lr * h_mat, j) for j in range(steps)),
                 np.zeros((n, n)))
    # B = -Phi^T, so -B^T (lr * series) F_y = Phi (lr * series) F_y.
    return lambda x, y: p.phi @ (lr * series) @ p.psi.T @ (p.psi @ y - p.t)


@pytest.mark.parametrize("warm, jit", [(False, False), (True, False), (True, True)])
def test_loops_match_numpy_step_by_step(x64, warm, jit):
    p = make_least_squares(22, m=3, n=6, p=2)
    rng = np.random.default_rng(23)
    x0, y0 = rng.standard_normal(3), rng.standard_normal(6)
    outer_lr, inner_lr, outer_steps, inner_steps = 0.3, 0.2, 6, 3
    loop = blo.warm_start if warm else blo.cold_start
    run = functools.partial(loop, p.inner, p.outer, hypergrad=hg.exact,
                            outer_opt=optax.sgd(outer_lr), inner_opt=optax.sgd(inner_lr),
                            outer_steps=outer_steps, inner_steps=inner_steps, trace_y=True)
    x, y, trace = (jax.jit(run) if jit else run)(jnp.asarray(x0), jnp.asarray(y0))
    want_x, want_y, xs, ys, hs = _numpy_loop(
        p, x0, y0, warm=warm, outer_lr=outer_lr, inner_lr=inner_lr, outer_steps=outer_steps,
        inner_steps=inner_steps, hyper=_pinv_hypergrad(p))

    assert set(trace) == {"x", "y", "outer_loss", "inner_loss", "hypergrad_norm"}
    assert trace["x"].shape == (outer_steps, 3) and trace["y"].shape == (outer_steps, 6)
    assert trace["outer_loss"].shape == (outer_steps,)
    np.testing.assert_allclose(trace["x"], xs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(trace["y"], ys, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x, want_x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(trace["hypergrad_norm"], np.linalg.norm(hs, axis=1), rtol=1e-10)
    np.testing.assert_allclose(
        trace["outer_loss"], 0.5 * np.sum((ys @ p.psi.T - p.t) ** 2, axis=1), rtol=1e-10)
    np.testing.assert_allclose(
        trace["inner_loss"], 0.5 * np.sum((ys @ p.phi.T - xs) ** 2, axis=1), rtol=1e-9,
        atol=1e-14)
    # Cold and warm really differ here (3 inner steps do not converge): the test can tell them
    # apart.
    other_y = _numpy_loop(p, x0, y0, warm=not warm, outer_lr=outer_lr, inner_lr=inner_lr,
                          outer_steps=outer_steps, inner_steps=inner_steps,
                          hyper=_pinv_hypergrad(p))[3]
    assert np.max(np.abs(other_y - ys)) > 1e-3


def test_vmap_over_seeds_reaches_each_closest_solution(x64):
    p = make_least_squares(24, m=3, n=6, p=2)
    m, outer_lr, ratio = _outer_setup(p)
    outer_steps = _steps_to_converge(1.0 - ratio, 1e-10)
    assert outer_steps < 1000

    def run(key):
        x0 = jax.random.normal(key, (3,), jnp.float64)
        x, _, _ = blo.cold_start(p.inner, p.outer, x0, jnp.zeros(6), hypergrad=hg.exact,
                                 outer_opt=optax.sgd(outer_lr), inner_opt=optax.sgd(0.25),
                                 outer_steps=outer_steps, inner_steps=120)
        return x0, x

    x0s, xs = jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(0), 3))
    for x0, x in zip(x0s, xs, strict=True):
        x_star, _ = quadratic.min_norm_outer_solution(p.phi, p.psi, p.t, x0)
        np.testing.assert_allclose(x, x_star, atol=1e-7)
    # Different starts give different limits: the implicit bias depends on x0.
    assert np.linalg.norm(xs[0] - xs[1]) > 1e-2


def test_vmap_over_outer_lr_and_neumann_lr(x64):
    p = make_least_squares(25, m=3, n=6, p=2)
    rng = np.random.default_rng(26)
    x0, y0 = rng.standard_normal(3), np.zeros(6)
    outer_lrs, neumann_lrs = np.array([0.1, 0.4]), np.array([0.05, 0.2])

    def run(outer_lr, neumann_lr):
        hyper = functools.partial(hg.neumann, steps=4, lr=neumann_lr)
        return blo.warm_start(p.inner, p.outer, jnp.asarray(x0), jnp.asarray(y0),
                              hypergrad=hyper, outer_opt=optax.sgd(outer_lr),
                              inner_opt=optax.sgd(0.2), outer_steps=5, inner_steps=2)[0]

    got = jax.jit(jax.vmap(run))(jnp.asarray(outer_lrs), jnp.asarray(neumann_lrs))
    for row, outer_lr, neumann_lr in zip(got, outer_lrs, neumann_lrs, strict=True):
        want = _numpy_loop(p, x0, y0, warm=True, outer_lr=outer_lr, inner_lr=0.2,
                           outer_steps=5, inner_steps=2,
                           hyper=_neumann_hypergrad(p, 4, neumann_lr))[0]
        np.testing.assert_allclose(row, want, rtol=1e-10)


def test_remark_3_2_strongly_convex_full_warm_equals_cold(x64):
    """With a strongly convex inner problem solved to convergence, warm start = cold start."""
    rng = np.random.default_rng(27)
    a = jnp.asarray(rng.standard_normal((4, 4)) + 3 * np.eye(4))
    psi, t = jnp.asarray(rng.standard_normal((2, 4))), jnp.asarray(rng.standard_normal(2))
    hess = np.asarray(a.T @ a)
    lam = np.linalg.eigvalsh(hess)
    inner = lambda x, y: 0.5 * jnp.sum((a @ y - x) ** 2)
    outer = lambda x, y: 0.5 * jnp.sum((psi @ y - t) ** 2)
    inner_steps = _steps_to_converge(1 - lam.min() / lam.max(), 1e-14)
    kw = dict(hypergrad=hg.exact, outer_opt=optax.sgd(0.05),
              inner_opt=optax.sgd(1.0 / lam.max()), outer_steps=8, inner_steps=inner_steps)
    x0, y0 = jnp.asarray(rng.standard_normal(4)), jnp.asarray(rng.standard_normal(4))
    xw = jax.jit(lambda x, y: blo.warm_start(inner, outer, x, y, **kw)[2]["x"])(x0, y0)
    xc = jax.jit(lambda x, y: blo.cold_start(inner, outer, x, y, **kw)[2]["x"])(x0, y0)
    np.testing.assert_allclose(xw, xc, atol=1e-10)
    assert np.linalg.norm(xw[-1] - xw[0]) > 1e-2


def test_pytree_parameters_and_trace_shapes():
    """x and y as dicts: the loop, the trace and the estimators keep the structure."""
    def inner(x, y):
        return 0.5 * jnp.sum((y["w"] - x["target"]) ** 2) + 0.5 * (y["b"] - x["shift"]) ** 2

    def outer(x, y):
        return 0.5 * jnp.sum((y["w"] - 1.0) ** 2) + 0.5 * (y["b"] + 2.0) ** 2

    x0 = {"target": jnp.zeros(3), "shift": jnp.asarray(0.0)}
    y0 = {"w": jnp.zeros(3), "b": jnp.asarray(0.0)}
    x, y, trace = jax.jit(lambda a, b: blo.cold_start(
        inner, outer, a, b, hypergrad=hg.exact, outer_opt=optax.sgd(0.5),
        inner_opt=optax.sgd(0.5), outer_steps=60, inner_steps=60, trace_y=True))(x0, y0)
    assert trace["x"]["target"].shape == (60, 3) and trace["x"]["shift"].shape == (60,)
    assert trace["y"]["w"].shape == (60, 3) and trace["y"]["b"].shape == (60,)
    assert x["target"].dtype == jnp.float32
    # y*(x) = x here, so the outer optimum is x = (1, 1, 1; -2).
    np.testing.assert_allclose(x["target"], 1.0, atol=1e-5)
    np.testing.assert_allclose(x["shift"], -2.0, atol=1e-5)
    np.testing.assert_allclose(y["w"], 1.0, atol=1e-5)


def test_log_every_prints_progress(capfd):
    inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
    outer = lambda x, y: 0.5 * jnp.sum((y - 3.0) ** 2)
    blo.warm_start(inner, outer, jnp.zeros(1), jnp.zeros(1), hypergrad=hg.exact,
                   outer_opt=optax.sgd(0.5), inner_opt=optax.sgd(0.5), outer_steps=5,
                   inner_steps=1, log_every=2)
    jax.effects_barrier()
    out = capfd.readouterr().out
    lines = [line for line in out.splitlines() if "warm-start step" in line]
    assert [line.split()[2] for line in lines] == ["1/5", "3/5", "5/5"]


# ---------------------------------------------------------------------------------------------
# v2: stateful inner optimizers, data batches, recorded solver info, warm-started solves
# ---------------------------------------------------------------------------------------------


def test_cold_start_resets_a_stateful_inner_optimizer_each_outer_step(x64):
    """Adam's moments must restart with y at every outer step: compare with a manual loop."""
    p = make_least_squares(30, m=3, n=6, p=2)
    rng = np.random.default_rng(31)
    x0, y0 = jnp.asarray(rng.standard_normal(3)), jnp.asarray(rng.standard_normal(6))
    inner_opt, outer_lr, outer_steps, inner_steps = optax.adam(0.05), 0.2, 4, 5
    _, _, trace = blo.cold_start(p.inner, p.outer, x0, y0, hypergrad=hg.exact,
                                 outer_opt=optax.sgd(outer_lr), inner_opt=inner_opt,
                                 outer_steps=outer_steps, inner_steps=inner_steps, trace_y=True)
    x, phi_pinv = np.asarray(x0), np.linalg.pinv(p.phi)
    for t in range(outer_steps):
        y, state = y0, inner_opt.init(y0)  # the reset under test
        for _ in range(inner_steps):
            g = p.phi.T @ (p.phi @ np.asarray(y) - x)
            updates, state = inner_opt.update(jnp.asarray(g), state, y)
            y = optax.apply_updates(y, updates)
        np.testing.assert_allclose(trace["y"][t], y, rtol=1e-10)
        np.testing.assert_allclose(trace["x"][t], x, rtol=1e-10)
        x = x - outer_lr * (phi_pinv.T @ p.psi.T @ (p.psi @ np.asarray(y) - p.t))
    # Adam really is stateful here: carrying its state (warm start) gives other iterates.
    _, _, warm = blo.warm_start(p.inner, p.outer, x0, y0, hypergrad=hg.exact,
                                outer_opt=optax.sgd(outer_lr), inner_opt=inner_opt,
                                outer_steps=outer_steps, inner_steps=inner_steps, trace_y=True)
    assert np.abs(warm["y"][1:] - trace["y"][1:]).max() > 1e-3


def test_sample_batches_reach_both_objectives(x64):
    """f = 1/2 |y - c x|^2, F = 1/2 |y - d|^2 with (c, d) drawn per step: dF/dx = c (c x - d)."""
    key = jax.random.PRNGKey(3)

    def sample(k, t):
        return 1.0 + jax.random.uniform(k, (2,)), jnp.sin(t + jnp.arange(2.0))

    inner = lambda x, y, c: 0.5 * jnp.sum((y - c * x) ** 2)
    outer = lambda x, y, d: 0.5 * jnp.sum((y - d) ** 2)
    x0, lr, steps = jnp.asarray([0.5, -1.0]), 0.1, 5
    _, _, trace = jax.jit(lambda x: blo.cold_start(
        inner, outer, x, jnp.zeros(2), hypergrad=hg.exact, outer_opt=optax.sgd(lr),
        inner_opt=optax.sgd(1.0), outer_steps=steps, inner_steps=1, key=key,
        sample=sample, hypergrad_info=True))(x0)
    x = np.asarray(x0)
    for t in range(steps):
        c = np.asarray(1.0 + jax.random.uniform(jax.random.fold_in(key, t), (2,)))
        d = np.sin(t + np.arange(2.0))
        np.testing.assert_allclose(trace["x"][t], x, rtol=1e-12)
        # one inner step of lr 1 solves f exactly: y = c x
        np.testing.assert_allclose(trace["outer_loss"][t], 0.5 * np.sum((c * x - d) ** 2),
                                   rtol=1e-12)
        x = x - lr * c * (c * x - d)
    assert isinstance(trace["hypergrad_info"], linalg.SolveInfo)
    assert trace["hypergrad_info"].solution is None  # dropped from the trace
    assert trace["hypergrad_info"]["status"].shape == (steps,)


def test_warm_solve_reduces_solver_steps(x64):
    # Strongly convex inner with 30 distinct eigenvalues in [1, 4]: CG needs many steps.
    p = make_least_squares(32, m=30, n=30, p=3)
    hyper = functools.partial(hg.cg, steps=60, tol=1e-8)
    kw = dict(hypergrad=hyper, outer_opt=optax.sgd(0.02), inner_opt=optax.sgd(0.25),
              outer_steps=8, inner_steps=100, hypergrad_info=True)
    x0, y0 = jnp.asarray(np.random.default_rng(33).standard_normal(30)), jnp.zeros(30)
    x_cold, _, cold = blo.cold_start(p.inner, p.outer, x0, y0, **kw)
    x_warm, _, warm = blo.cold_start(p.inner, p.outer, x0, y0, warm_solve=True, **kw)
    np.testing.assert_allclose(x_warm, x_cold, rtol=1e-6)  # same hypergradients (to tol) ...
    assert np.all(cold["hypergrad_info"]["status"] == 0)
    assert np.all(warm["hypergrad_info"]["status"] == 0)
    # ... from fewer CG iterations after the first outer step.
    assert warm["hypergrad_info"]["steps"][0] == cold["hypergrad_info"]["steps"][0]
    steps_warm, steps_cold = (np.asarray(r["hypergrad_info"]["steps"][1:]) for r in (warm, cold))
    assert np.all(steps_warm < steps_cold), (steps_warm, steps_cold)


def test_concrete_steps_with_max_steps_work_inside_jit():
    # A Python int `steps` with a static `max_steps` inside jit (a sweep's fixed member) used to
    # fail: the range check ran a staged jnp op on the constant. Neumann K = 2, alpha = 1/4,
    # H = 2: 0.25 * (1 + 0.5) * 2 = 0.75.
    inner = lambda x, y: 0.5 * jnp.sum(2.0 * (y - x) ** 2)
    outer = lambda x, y: jnp.sum(y)
    f = jax.jit(lambda x: hg.neumann(inner, outer, x, x, steps=2, max_steps=5, lr=0.25))
    assert float(f(jnp.ones(1))[0]) == pytest.approx(0.75)


@pytest.mark.parametrize("warm", [True, False])
def test_monitor_sees_the_numpy_loop_state_every_few_steps(x64, warm):
    # The hand-written NumPy loop gives x after each update and the inner parameters trained
    # during each step: the monitor must see exactly those, after steps 2, 4 and 6.
    p = make_least_squares(22, m=3, n=6, p=2)
    rng = np.random.default_rng(23)
    x0, y0 = rng.standard_normal(3), rng.standard_normal(6)
    kw = dict(outer_lr=0.3, inner_lr=0.2, outer_steps=6, inner_steps=3)
    loop = blo.warm_start if warm else blo.cold_start
    x, y, trace = jax.jit(functools.partial(
        loop, p.inner, p.outer, hypergrad=hg.exact, outer_opt=optax.sgd(kw["outer_lr"]),
        inner_opt=optax.sgd(kw["inner_lr"]), outer_steps=6, inner_steps=3,
        monitor=lambda x_, y_: {"x": x_, "y": y_, "F": p.outer(x_, y_)}, monitor_every=2))(
        jnp.asarray(x0), jnp.asarray(y0))
    want_x, _, xs, ys, _ = _numpy_loop(p, x0, y0, warm=warm, hyper=_pinv_hypergrad(p), **kw)
    after = np.vstack([xs[1:], want_x[None]])          # x after updates 1..6
    np.testing.assert_allclose(trace["monitor"]["x"], after[1::2], rtol=1e-10)
    np.testing.assert_allclose(trace["monitor"]["y"], ys[1::2], rtol=1e-10)
    np.testing.assert_allclose(trace["monitor"]["F"],
                               0.5 * np.sum((ys[1::2] @ p.psi.T - p.t) ** 2, axis=1), rtol=1e-10)
    assert trace["x"].shape == (6, 3)


def test_cold_start_unrolled_monitor_sees_the_retrained_model(x64):
    inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)   # noqa: E731
    outer = lambda x, y: 0.5 * jnp.sum((y - 3.0) ** 2)  # noqa: E731
    # One inner SGD step of size 1/2 from 0 gives y = x / 2; x_{t+1} = x_t - (x_t/2 - 3)/2.
    x, y, tr = blo.cold_start_unrolled(
        inner, outer, jnp.zeros(1), jnp.zeros(1), inner_opt=optax.sgd(0.5), inner_steps=1,
        outer_opt=optax.sgd(1.0), outer_steps=6, monitor=lambda x_, y_: (x_, y_),
        monitor_every=3)
    xs = [0.0]
    for _ in range(6):
        xs.append(xs[-1] - 0.5 * (0.5 * xs[-1] - 3.0))
    np.testing.assert_allclose(tr["monitor"][0][:, 0], [xs[3], xs[6]], rtol=1e-12)
    np.testing.assert_allclose(tr["monitor"][1][:, 0], [xs[3] / 2, xs[6] / 2], rtol=1e-12)


def test_monitor_errors_name_the_argument(x64):
    p = make_least_squares(22, m=3, n=6, p=2)
    kw = dict(hypergrad=hg.exact, outer_opt=optax.sgd(0.1), inner_opt=optax.sgd(0.1),
              outer_steps=5, inner_steps=1)
    with pytest.raises(ValueError, match="multiple of `monitor_every`"):
        blo.warm_start(p.inner, p.outer, jnp.zeros(3), jnp.zeros(6), monitor=lambda x, y: x,
                       monitor_every=2, **kw)
    with pytest.raises(TypeError, match="monitor_every"):
        blo.warm_start(p.inner, p.outer, jnp.zeros(3), jnp.zeros(6), monitor=lambda x, y: x,
                       **kw)
    with pytest.raises(TypeError, match="without `monitor`"):
        blo.cold_start(p.inner, p.outer, jnp.zeros(3), jnp.zeros(6), monitor_every=1, **kw)


def test_jit_failure_check_leaves_every_bit_of_a_long_run_unchanged():
    # The run-time check (throw=True) must not touch the answer: an earlier check, threaded into
    # the hypergradient as "+ 0", changed XLA's code around it, and chapter 4's 8,000-step runs
    # then left their path (a last-bit difference from step 14 on, amplified). Known answer: the
    # same jitted run without the check (throw=False), bit for bit, over a float32 MLP
    # distillation run long enough for such a difference to show.
    from bilevel_lib.models import mlp
    from bilevel_lib.tasks import distill, toy_data

    points, labels = toy_data.rings(150, num_classes=3, noise=0.1, seed=0)
    y0 = mlp.init(jax.random.PRNGKey(20), (2, 64, 64, 3), out_scale=0.1)
    inner, outer = distill.objectives(mlp.apply, points, labels)
    x0 = {"points": 0.01 * jax.random.normal(jax.random.PRNGKey(22), (2, 2)),
          "label_logits": 2.0 * jax.nn.one_hot(jnp.array([1, 2]), 3)}

    def run(throw):
        hypergradient = functools.partial(hg.unroll, steps=10, lr=1e-3, throw=throw)
        return jax.jit(lambda x, y: blo.warm_start(
            inner, outer, x, y, hypergrad=hypergradient, outer_opt=optax.adam(1e-2),
            inner_opt=optax.sgd(1e-3), outer_steps=300, inner_steps=1))(x0, y0)

    checked, unchecked = run(True), run(False)
    for a, b in zip(jax.tree_util.tree_leaves(checked), jax.tree_util.tree_leaves(unchecked),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
