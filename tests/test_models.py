"""bilevel_lib.models.linear and .metrics against known answers.

Known answers: a NumPy forward pass of the linear classifier, accuracies counted by hand, and
the optimum of the strongly convex L2-regularized softmax regression found by SciPy's
Newton-CG in float64 (the gradient and Hessian written out in NumPy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

from bilevel_lib import blo
from bilevel_lib.models import linear, metrics, mlp


def test_linear_init_zeros_and_random_scale():
    p = linear.init(5, 3)
    assert p["W"].shape == (5, 3) and p["b"].shape == (3,)
    assert float(jnp.abs(p["W"]).sum()) == 0.0 and float(jnp.abs(p["b"]).sum()) == 0.0
    q = linear.init(400, 10, key=jax.random.PRNGKey(0), scale=0.5)
    assert 0.45 < float(jnp.std(q["W"])) < 0.55 and float(jnp.abs(q["b"]).sum()) == 0.0
    with pytest.raises(ValueError, match="num_classes"):
        linear.init(5, 1)
    with pytest.raises(TypeError, match="dim"):
        linear.init(5.0, 3)


def test_linear_apply_matches_numpy():
    rng = np.random.default_rng(0)
    w, b, u = rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal((6, 4))
    got = linear.apply({"W": jnp.asarray(w), "b": jnp.asarray(b)}, jnp.asarray(u))
    np.testing.assert_allclose(np.asarray(got), u @ w + b, rtol=1e-5, atol=1e-5)


def test_accuracy_of_logits_counted_by_hand():
    z = jnp.array([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0], [0.0, 5.0, 1.0], [1.0, 0.0, 0.0]])
    assert float(metrics.accuracy(z, jnp.array([0, 2, 1, 1]))) == 0.75
    assert float(metrics.accuracy(z, jnp.array([1, 0, 0, 0]))) == 0.25
    # an MLP's logits: the same rule on another model
    params = {"w0": jnp.eye(2), "b0": jnp.zeros(2), "w1": jnp.eye(2), "b1": jnp.zeros(2)}
    u = jnp.array([[2.0, 1.0], [0.0, 3.0]])
    assert float(metrics.accuracy(mlp.apply(params, u), jnp.array([0, 0]))) == 0.5


def test_accuracy_of_binary_scores_counted_by_hand():
    scores = jnp.array([0.5, -2.0, 0.0, -0.1])          # sign(0) counts as +1
    assert float(metrics.accuracy(scores, jnp.array([1.0, -1.0, 1.0, 1.0]))) == 0.75
    assert float(metrics.accuracy(scores, jnp.array([1, 1, -1, -1]))) == 0.5


def test_accuracy_under_jit_and_vmap():
    z = jnp.stack([jnp.eye(3), jnp.eye(3)[::-1]])
    acc = jax.jit(jax.vmap(metrics.accuracy, in_axes=(0, None)))(z, jnp.array([0, 1, 2]))
    np.testing.assert_allclose(np.asarray(acc), [1.0, 1.0 / 3.0], rtol=1e-6)


def test_accuracy_bad_input():
    with pytest.raises(TypeError, match="labels"):
        metrics.accuracy(jnp.zeros((3, 2)), jnp.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        metrics.accuracy(jnp.zeros((3, 2)), jnp.array([0, 1]))
    with pytest.raises(ValueError, match=r"\+-1"):
        metrics.accuracy(jnp.zeros(3), jnp.array([0, 1, 1]))


def _newton_softmax_regression(u, labels, num_classes, weight_decay):
    """The optimum of mean CE(u W + b) + wd/2 |W|^2 with sum(b) = 0, by SciPy (float64)."""
    n, d = u.shape
    onehot = np.eye(num_classes)[labels]
    basis = np.eye(num_classes)[:, :-1] - 1.0 / num_classes   # b = basis @ beta: sum(b) = 0
    basis, _ = np.linalg.qr(basis)

    def unpack(theta):
        return theta[: d * num_classes].reshape(d, num_classes), basis @ theta[d * num_classes:]

    def fun(theta):
        w, b = unpack(theta)
        z = u @ w + b
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        p = np.exp(logp)
        loss = -np.mean(np.sum(onehot * logp, axis=1)) + 0.5 * weight_decay * np.sum(w**2)
        g_z = (p - onehot) / n
        g_w = u.T @ g_z + weight_decay * w
        g_b = basis.T @ g_z.sum(axis=0)
        return loss, np.concatenate([g_w.ravel(), g_b])

    theta0 = np.zeros(d * num_classes + num_classes - 1)
    res = scipy.optimize.minimize(fun, theta0, jac=True, method="BFGS",
                                  options={"gtol": 1e-12, "maxiter": 10_000})
    w, b = unpack(res.x)
    return w, b, np.linalg.norm(fun(res.x)[1])


def test_gradient_descent_on_the_linear_classifier_reaches_the_strongly_convex_optimum(x64):
    # With an L2 penalty on W the cross-entropy is strongly convex in W and, on the subspace
    # sum(b) = 0 that gradient descent from zero never leaves, in b: one optimum.
    rng = np.random.default_rng(0)
    u = rng.standard_normal((40, 5))
    labels = rng.integers(0, 3, 40)
    wd = 0.1
    w_ref, b_ref, grad_norm = _newton_softmax_regression(u, labels, 3, wd)
    assert grad_norm < 1e-8

    def loss(p):
        logp = jax.nn.log_softmax(linear.apply(p, jnp.asarray(u)), axis=-1)
        ce = -jnp.mean(jnp.take_along_axis(logp, jnp.asarray(labels)[:, None], axis=1))
        return ce + 0.5 * wd * jnp.sum(p["W"] ** 2)

    p, _ = blo.minimize(loss, linear.init(5, 3, dtype=jnp.float64), steps=3000,
                        optimizer=optax.sgd(1.0))
    assert abs(float(jnp.sum(p["b"]))) < 1e-12
    np.testing.assert_allclose(np.asarray(p["W"]), w_ref, atol=1e-8)
    np.testing.assert_allclose(np.asarray(p["b"]), b_ref, atol=1e-8)
