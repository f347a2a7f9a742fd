"""Known answers for the linear-classifier tasks of chapter 5 (bilevel_lib.tasks.image_distill).

* The augmentation net's hypergradient (one unrolled SGD step of the classifier, what
  ``augmentation_run(method="warm")`` follows) against central finite differences of the
  outer loss written in NumPy alone, for a full and a diagonal ``A``.
* Re-training the classifier on learned data with weight decay (``retrain``) reaches the
  optimum of the strongly convex problem, found by SciPy's BFGS in float64 with the gradient
  written in NumPy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from bilevel_lib import hypergrad
from bilevel_lib.tasks import image_distill as idl


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _ce(z, targets):
    """Mean cross-entropy of logits ``z`` with one-hot or soft ``targets`` (NumPy)."""
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -np.mean(np.sum(targets * logp, axis=1))


def _numpy_one_step_outer(theta, y, u, t, eps, v, s, lr, wd):
    """F(theta, y_1(theta)), y_1 = one SGD step on the augmented training loss (NumPy)."""
    a = theta["A"]
    aug = u + (u * a if a.ndim == 1 else u @ a.T) + eps @ theta["B"].T + theta["c"]
    onehot = np.eye(10)[t]
    g_z = (_softmax(aug @ y["W"] + y["b"]) - onehot) / len(t)
    w1 = y["W"] - lr * (aug.T @ g_z + wd * y["W"])
    b1 = y["b"] - lr * g_z.sum(axis=0)
    return _ce(v @ w1 + b1, np.eye(10)[s])


@pytest.mark.parametrize("diagonal", [False, True])
def test_augmentation_hypergradient_matches_finite_differences(diagonal, x64):
    rng = np.random.default_rng(0)
    d, k, n, n_val, lr, wd = 6, 2, 8, 12, 0.7, 0.05
    u, v = rng.uniform(0, 1, (n, d)), rng.uniform(0, 1, (n_val, d))
    t, s = rng.integers(0, 10, n), rng.integers(0, 10, n_val)
    eps = rng.standard_normal((n, k))
    theta = {"A": 0.3 * rng.standard_normal(d if diagonal else (d, d)),
             "B": 0.3 * rng.standard_normal((d, k)), "c": 0.1 * rng.standard_normal(d)}
    y = {"W": 0.5 * rng.standard_normal((d, 10)), "b": 0.1 * rng.standard_normal(10)}
    inner, outer = idl.augmentation_objectives((jnp.asarray(u), jnp.asarray(t)),
                                               (jnp.asarray(v), jnp.asarray(s)),
                                               weight_decay=wd)
    noise = jnp.asarray(eps)
    jtheta = jax.tree_util.tree_map(jnp.asarray, theta)
    jy = jax.tree_util.tree_map(jnp.asarray, y)
    hg = hypergrad.unroll(lambda th, y_: inner(th, y_, noise), outer, jtheta, jy, steps=1,
                          lr=lr)
    h = 1e-5
    for name in ("A", "B", "c"):
        for _ in range(3):
            direction = rng.standard_normal(theta[name].shape)
            plus = dict(theta, **{name: theta[name] + h * direction})
            minus = dict(theta, **{name: theta[name] - h * direction})
            fd = (_numpy_one_step_outer(plus, y, u, t, eps, v, s, lr, wd)
                  - _numpy_one_step_outer(minus, y, u, t, eps, v, s, lr, wd)) / (2 * h)
            got = float(np.sum(np.asarray(hg[name]) * direction))
            assert got == pytest.approx(fd, rel=1e-6, abs=1e-9), name
    # ... and it is not zero: theta reaches F through the step
    assert max(float(jnp.abs(hg[name]).max()) for name in hg) > 1e-3


def test_retrain_reaches_the_strongly_convex_optimum(x64):
    rng = np.random.default_rng(1)
    m, d, wd = 10, 5, 0.1
    pts = rng.standard_normal((m, d))
    logits = 2.0 * rng.standard_normal((m, 10))
    targets = _softmax(logits)
    y, _ = idl.retrain({"points": jnp.asarray(pts), "label_logits": jnp.asarray(logits)},
                       steps=4000, lr=1.0, weight_decay=wd)

    # The reference: minimize over W and b with sum(b) = 0 (gradient descent from zero never
    # leaves it; softmax ignores a common shift of b), b = basis @ beta.
    basis, _ = np.linalg.qr(np.eye(10)[:, :-1] - 0.1)

    def fun(theta):
        w, b = theta[: d * 10].reshape(d, 10), basis @ theta[d * 10:]
        g_z = (_softmax(pts @ w + b) - targets) / m
        loss = _ce(pts @ w + b, targets) + 0.5 * wd * np.sum(w**2)
        return loss, np.concatenate([(pts.T @ g_z + wd * w).ravel(), basis.T @ g_z.sum(0)])

    res = scipy.optimize.minimize(fun, np.zeros(d * 10 + 9), jac=True, method="BFGS",
                                  options={"gtol": 1e-10, "maxiter": 10_000})
    # BFGS stops where its line search stalls, which moves with the BLAS kernels (1e-8 to
    # 1e-9 here): polish with Newton steps on a central-difference Hessian of the exact
    # gradient, which converge to rounding level whatever BFGS left.
    ref = res.x
    for _ in range(4):
        h = 1e-5
        hess = np.stack([(fun(ref + h * e)[1] - fun(ref - h * e)[1]) / (2 * h)
                         for e in np.eye(ref.size)], axis=1)
        ref = ref - np.linalg.solve(0.5 * (hess + hess.T), fun(ref)[1])
    assert np.linalg.norm(fun(ref)[1]) < 1e-11
    np.testing.assert_allclose(np.asarray(y["W"]), ref[: d * 10].reshape(d, 10), atol=1e-7)
    np.testing.assert_allclose(np.asarray(y["b"]), basis @ ref[d * 10:], atol=1e-7)
