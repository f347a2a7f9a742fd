"""bilevel_lib.loops.descend against closed forms.

Known answers: gradient descent on a quadratic ``(I - lr H)^K`` applied to the start, one
Newton step on a quadratic landing on its minimizer, the product ``prod (1 - eta_j)`` of a
decreasing step schedule, and frozen iterates after ``active`` steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_lib import loops


def test_gradient_descent_on_a_quadratic_is_the_matrix_power(x64):
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    hess = q @ np.diag([0.5, 1.0, 2.0, 3.0]) @ q.T
    z0 = rng.standard_normal(4)
    got = loops.descend(lambda z, j: jnp.asarray(hess) @ z, jnp.asarray(z0), lr=0.3, length=7)
    want = np.linalg.matrix_power(np.eye(4) - 0.3 * hess, 7) @ z0
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-14)


def test_one_newton_step_lands_on_the_minimizer(x64):
    hess, b = jnp.array([[2.0, 0.5], [0.5, 1.0]]), jnp.array([1.0, -1.0])
    newton = lambda z, j: jnp.linalg.solve(hess, hess @ z - b)
    got = loops.descend(newton, jnp.array([3.0, 4.0]), lr=1.0, length=1)
    np.testing.assert_allclose(np.asarray(got), np.linalg.solve(hess, b), rtol=1e-12)


def test_step_schedule_and_trace(x64):
    # d(z) = z - 1, eta_j = 1 / (2 + j): z_K - 1 = -prod_j (1 - eta_j) = -(1/2)(2/3)... = -1/(K+1)
    z, (zs, ds) = loops.descend(lambda z, j: z - 1.0, jnp.array(0.0),
                                lr=lambda j: 1.0 / (2.0 + j), length=4, trace=True)
    assert float(z) == pytest.approx(1.0 - 1.0 / 5.0, rel=1e-12)
    np.testing.assert_allclose(np.asarray(zs), [1.0 - 1.0 / k for k in (1, 2, 3, 4)],
                               rtol=1e-12)
    np.testing.assert_allclose(np.asarray(ds), np.asarray(zs) - 1.0, rtol=1e-12)


def test_active_steps_freeze_the_iterate_and_sweep_under_vmap(x64):
    halve = lambda z, j: z                                # lr 1/2 halves z each active step
    z, (zs, ds) = loops.descend(halve, jnp.array(8.0), lr=0.5, length=5, active=2, trace=True)
    assert float(z) == 2.0 and zs.tolist() == [8.0, 4.0, 2.0, 2.0, 2.0]
    assert ds.tolist() == [8.0, 4.0, 0.0, 0.0, 0.0]
    sweep = jax.jit(jax.vmap(lambda k: loops.descend(halve, jnp.array(8.0), lr=0.5, length=5,
                                                     active=k)))
    assert sweep(jnp.arange(6)).tolist() == [8.0, 4.0, 2.0, 1.0, 0.5, 0.25]


def test_dynamic_length_runs_exactly_active_steps_under_map_jit_and_vmap(x64):
    halve = lambda z, j: z                                # lr 1/2 halves z each step
    run = lambda k: loops.descend(halve, jnp.array(8.0), lr=0.5, length=None, active=k)
    want = [8.0 * 0.5**k for k in range(6)]
    assert jax.jit(lambda ks: jax.lax.map(run, ks))(jnp.arange(6)).tolist() == want
    assert jax.jit(jax.vmap(run))(jnp.arange(6)).tolist() == want
    assert float(run(3)) == 1.0
    # a traced count is one loop of exactly that many steps: count the direction's calls
    calls = []
    count = lambda z, j: (jax.debug.callback(lambda: calls.append(1)), z)[1]
    jax.block_until_ready(jax.jit(lambda k: loops.descend(count, jnp.array(1.0), lr=0.5,
                                                          length=None, active=k))(3))
    assert len(calls) == 3
    # a known count is a scan: reverse-mode differentiation works, d(z0 / 2^3)/dz0 = 1/8
    grad = jax.grad(lambda z0: loops.descend(halve, z0, lr=0.5, length=None, active=3))
    assert float(grad(jnp.array(8.0))) == 0.125


def test_dynamic_length_bad_input():
    with pytest.raises(TypeError, match="active"):
        loops.descend(lambda z, j: z, jnp.zeros(2), lr=0.1, length=None)
    with pytest.raises(ValueError, match="trace"):
        loops.descend(lambda z, j: z, jnp.zeros(2), lr=0.1, length=None, active=2, trace=True)
    with pytest.raises(ValueError, match="active"):
        loops.descend(lambda z, j: z, jnp.zeros(2), lr=0.1, length=None, active=-1)


def test_pytree_iterates():
    z0 = {"a": jnp.ones(2), "b": jnp.array(4.0)}
    got = loops.descend(lambda z, j: z, z0, lr=0.5, length=2)
    assert got["a"].tolist() == [0.25, 0.25] and float(got["b"]) == 1.0


def test_bad_input():
    with pytest.raises(TypeError, match="direction"):
        loops.descend(3.0, jnp.zeros(2), lr=0.1, length=2)
    with pytest.raises(TypeError, match="length"):
        loops.descend(lambda z, j: z, jnp.zeros(2), lr=0.1, length=2.0)
    with pytest.raises(ValueError, match="length"):
        loops.descend(lambda z, j: z, jnp.zeros(2), lr=0.1, length=-1)
