"""bilevel_lib.tasks.toy_data, .mlp and .distill against known answers.

Known answers used here: exact ring geometry (noise-free radii, class counts), the sinusoid's
defining inequality, a NumPy forward pass of the MLP, central finite differences (float64), the
softmax and cross-entropy written in NumPy, the closed form of gradient descent on a quadratic,
the closed form of the unrolled derivative ``1 - (1 - a)^K``, and a Kaczmarz projection
(``quadratic.project_hyperplane``) as the limit of gradient descent on one linear equation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bilevel_lib import blo, hypergrad, quadratic
from bilevel_lib.models import mlp
from bilevel_lib.tasks import distill, toy_data

# ---------------------------------------------------------------------------------------------
# toy_data
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [2, 3])
def test_rings_geometry_and_balance(num_classes):
    radii = np.arange(1, num_classes + 1) * 1.5
    points, labels = toy_data.rings(50, num_classes=num_classes, radii=radii, noise=0.0, seed=3)
    points, labels = np.asarray(points), np.asarray(labels)
    assert points.shape == (50 * num_classes, 2) and points.dtype == np.float32
    assert np.bincount(labels).tolist() == [50] * num_classes
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), radii[labels], rtol=1e-6)


def test_rings_noise_and_seed():
    p1, _ = toy_data.rings(2000, noise=0.1, seed=0)
    p2, _ = toy_data.rings(2000, noise=0.1, seed=0)
    p3, _ = toy_data.rings(2000, noise=0.1, seed=1)
    assert np.array_equal(np.asarray(p1), np.asarray(p2))
    assert not np.array_equal(np.asarray(p1), np.asarray(p3))
    radius = np.linalg.norm(np.asarray(p1), axis=1)
    # class 0 at radius 1: radial noise has standard deviation 0.1 (4000 draws, 3-sigma bands)
    assert abs(radius[:2000].mean() - 1.0) < 3 * 0.1 / np.sqrt(2000)
    assert abs(radius[:2000].std() - 0.1) < 0.01
    # angles are uniform: the mean direction is near zero
    assert np.linalg.norm(np.asarray(p1)[:2000].mean(axis=0)) < 0.1


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"n_per_class": 0}, ValueError),
        ({"n_per_class": 2.5}, TypeError),
        ({"n_per_class": 5, "num_classes": 1}, ValueError),
        ({"n_per_class": 5, "radii": [1.0, 2.0, 3.0]}, ValueError),
        ({"n_per_class": 5, "radii": [2.0, 1.0]}, ValueError),
        ({"n_per_class": 5, "radii": [0.0, 1.0]}, ValueError),
        ({"n_per_class": 5, "noise": -0.1}, ValueError),
    ],
)
def test_rings_bad_input(kwargs, err):
    with pytest.raises(err):
        toy_data.rings(**kwargs)


def test_sinusoid_labels_follow_the_curve():
    points, labels = toy_data.sinusoid(1000, amplitude=0.7, frequency=3.0, extent=2.0,
                                       margin=0.05, seed=2)
    u = np.asarray(points, dtype=np.float64)
    gap = u[:, 1] - 0.7 * np.sin(3.0 * u[:, 0])
    assert np.all((gap > 0) == (np.asarray(labels) == 1))
    assert np.all(np.abs(gap) > 0.05 - 1e-6)
    assert np.all(np.abs(u) <= 2.0)
    assert 0.3 < np.asarray(labels).mean() < 0.7


@pytest.mark.parametrize(
    "kwargs", [{"n": 1}, {"n": 10, "margin": 2.0}, {"n": 10, "extent": 0.0},
               {"n": 10, "amplitude": -1.0}]
)
def test_sinusoid_bad_input(kwargs):
    with pytest.raises(ValueError):
        toy_data.sinusoid(**kwargs)


# ---------------------------------------------------------------------------------------------
# mlp
# ---------------------------------------------------------------------------------------------


def _numpy_forward(params, u):
    n = len(params) // 2
    h = np.asarray(u, np.float64)
    for i in range(n):
        h = h @ np.asarray(params[f"w{i}"], np.float64) + np.asarray(params[f"b{i}"], np.float64)
        if i < n - 1:
            h = np.maximum(h, 0.0)
    return h


def test_mlp_shapes_count_and_init_scale():
    sizes = (2, 200, 200, 200, 200, 3)
    params = mlp.init(jax.random.PRNGKey(0), sizes)
    assert mlp.num_layers(params) == 5
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        assert params[f"w{i}"].shape == (a, b) and params[f"b{i}"].shape == (b,)
        assert np.all(np.asarray(params[f"b{i}"]) == 0.0)
    assert mlp.num_params(params) == sum(
        a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    # He init: the 200x200 weights have standard deviation sqrt(2/200) = 0.1 (40,000 draws)
    assert abs(float(jnp.std(params["w1"])) - 0.1) < 0.003


def test_mlp_apply_matches_numpy():
    params = mlp.init(jax.random.PRNGKey(1), (2, 7, 5, 3))
    params = {k: v + 0.1 for k, v in params.items()}  # nonzero biases
    u = np.random.default_rng(0).standard_normal((11, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(mlp.apply(params, u)), _numpy_forward(params, u),
                               rtol=1e-5, atol=1e-5)
    assert mlp.apply(params, u[0]).shape == (3,)


def test_mlp_gradient_finite_differences(x64):
    params = mlp.init(jax.random.PRNGKey(2), (2, 6, 6, 2), dtype=jnp.float64)
    u = jnp.asarray(np.random.default_rng(1).standard_normal((9, 2)))
    labels = jnp.asarray([0, 1, 1, 0, 1, 0, 0, 1, 1])

    @jax.jit
    def f(p, inputs):
        return distill.cross_entropy(mlp.apply(p, inputs), labels)

    g_params, g_inputs = jax.grad(f, argnums=(0, 1))(params, u)
    rng = np.random.default_rng(3)
    h = 1e-6
    for name in ("w0", "b1", "w2"):
        direction = jnp.asarray(rng.standard_normal(params[name].shape))
        plus = dict(params, **{name: params[name] + h * direction})
        minus = dict(params, **{name: params[name] - h * direction})
        fd = (f(plus, u) - f(minus, u)) / (2 * h)
        assert abs(float(jnp.vdot(g_params[name], direction)) - float(fd)) < 1e-7
    direction = jnp.asarray(rng.standard_normal(u.shape))
    fd = (f(params, u + h * direction) - f(params, u - h * direction)) / (2 * h)
    assert abs(float(jnp.vdot(g_inputs, direction)) - float(fd)) < 1e-7


def test_mlp_bad_input():
    with pytest.raises(ValueError, match="sizes"):
        mlp.init(jax.random.PRNGKey(0), (2,))
    with pytest.raises(ValueError, match="sizes"):
        mlp.init(jax.random.PRNGKey(0), (2, 0, 1))
    params = mlp.init(jax.random.PRNGKey(0), (2, 4, 2))
    with pytest.raises(ValueError, match="inputs"):
        mlp.apply(params, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="keys"):
        mlp.apply({"w0": params["w0"], "bias": params["b0"]}, jnp.zeros((5, 2)))
    with pytest.raises(TypeError, match="params"):
        mlp.apply([params["w0"]], jnp.zeros((5, 2)))


# ---------------------------------------------------------------------------------------------
# distill: labels, losses, objectives
# ---------------------------------------------------------------------------------------------


def test_soft_labels_are_a_softmax():
    logits = np.random.default_rng(0).standard_normal((4, 3)) * 5
    p = np.asarray(distill.soft_labels(jnp.asarray(logits, jnp.float32)))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(TypeError, match="label_logits"):
        distill.soft_labels(jnp.array([1, 2]))


def test_cross_entropy_hard_soft_and_numpy():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, 3))
    t = np.array([0, 2, 1, 1, 0, 2])
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    expected = -logp[np.arange(6), t].mean()
    hard = float(distill.cross_entropy(jnp.asarray(z, jnp.float32), jnp.asarray(t)))
    soft = float(distill.cross_entropy(jnp.asarray(z, jnp.float32),
                                       jnp.asarray(np.eye(3)[t], jnp.float32)))
    assert hard == pytest.approx(expected, rel=1e-5)
    assert soft == pytest.approx(expected, rel=1e-5)
    q = rng.dirichlet(np.ones(3), size=6)
    assert float(distill.cross_entropy(jnp.asarray(z), jnp.asarray(q))) == pytest.approx(
        -(q * logp).sum(axis=1).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="targets"):
        distill.cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 3]))
    with pytest.raises(ValueError, match="targets"):
        distill.cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match="targets"):
        distill.cross_entropy(jnp.zeros((2, 3)), jnp.ones((2, 2)) / 2)
    with pytest.raises(ValueError, match="logits"):
        distill.cross_entropy(jnp.zeros(3), jnp.array([0]))


def test_accuracy_known_answer():
    apply = lambda p, u: u @ p
    pts = jnp.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert float(distill.accuracy(apply, jnp.eye(2), pts, jnp.array([0, 1, 1, 1]))) == 0.75
    with pytest.raises(TypeError, match="labels"):
        distill.accuracy(apply, jnp.eye(2), pts, jnp.ones(4))


def test_objectives_hard_and_soft_labels():
    apply = lambda p, u: u @ p
    data, data_labels = jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([0, 1])
    y = jnp.array([[1.0, -1.0], [0.5, 2.0]])
    x = jnp.array([[0.3, 0.7], [-1.0, 0.2]])
    labels = jnp.array([1, 0])
    inner, outer = distill.objectives(apply, data, data_labels, labels=labels)

    def ce_np(z, t):
        z = np.asarray(z, np.float64)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -(np.asarray(t) * logp).sum(axis=1).mean()

    assert float(inner(x, y)) == pytest.approx(ce_np(np.asarray(x @ y), np.eye(2)[[1, 0]]),
                                               rel=1e-5)
    assert float(outer(x, y)) == pytest.approx(ce_np(np.asarray(data @ y), np.eye(2)), rel=1e-5)
    assert float(outer(x + 5.0, y)) == float(outer(x, y))  # x reaches F only through y

    logits = jnp.array([[0.0, 1.0], [2.0, -1.0]])
    inner_soft, _ = distill.objectives(apply, data, data_labels)
    q = np.exp(np.asarray(logits)) / np.exp(np.asarray(logits)).sum(axis=1, keepdims=True)
    value = float(inner_soft({"points": x, "label_logits": logits}, y))
    assert value == pytest.approx(ce_np(np.asarray(x @ y), q), rel=1e-5)
    with pytest.raises(ValueError, match="labels"):
        inner_soft(x, y)  # hard-label x without labels


def test_objectives_bad_input():
    apply = lambda p, u: u @ p
    with pytest.raises(ValueError, match="data_points"):
        distill.objectives(apply, jnp.zeros(3), jnp.zeros(3, jnp.int32))
    with pytest.raises(TypeError, match="data_labels"):
        distill.objectives(apply, jnp.zeros((3, 2)), jnp.zeros(3))
    with pytest.raises(ValueError, match="data_labels"):
        distill.objectives(apply, jnp.zeros((3, 2)), jnp.zeros(4, jnp.int32))
    with pytest.raises(TypeError, match="labels"):
        distill.objectives(apply, jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32), labels=[0.5])
    with pytest.raises(TypeError, match="apply"):
        distill.objectives(None, jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32))
    inner, _ = distill.objectives(apply, jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32),
                                  labels=jnp.array([0, 1, 1]))
    with pytest.raises(ValueError, match="labels"):
        inner(jnp.zeros((2, 2)), jnp.eye(2))  # 2 learned points, 3 labels


def test_inner_gradient_in_learned_points_finite_differences(x64):
    params = mlp.init(jax.random.PRNGKey(0), (2, 8, 3), dtype=jnp.float64)
    data, data_labels = toy_data.rings(5, num_classes=3, seed=0)
    inner, _ = distill.objectives(mlp.apply, data.astype(jnp.float64), data_labels)
    inner = jax.jit(inner)
    x = {"points": jnp.asarray([[0.3, -0.2], [1.1, 0.4]]),
         "label_logits": jnp.asarray([[0.5, 0.0, -0.5], [0.1, 0.2, 0.3]])}
    g = jax.grad(inner)(x, params)
    rng = np.random.default_rng(0)
    h = 1e-6
    for key in ("points", "label_logits"):
        d = jnp.asarray(rng.standard_normal(x[key].shape))
        fd = (inner(dict(x, **{key: x[key] + h * d}), params)
              - inner(dict(x, **{key: x[key] - h * d}), params)) / (2 * h)
        assert abs(float(jnp.vdot(g[key], d)) - float(fd)) < 1e-7


# ---------------------------------------------------------------------------------------------
# distill: training, re-training, unrolling, replay
# ---------------------------------------------------------------------------------------------


def test_train_matches_gradient_descent_closed_form(x64):
    a = jnp.array([[2.0, 0.0], [0.0, 0.5]])
    b = jnp.array([1.0, -1.0])
    loss_fn = lambda w: 0.5 * w @ a @ w - b @ w
    w, losses = blo.minimize(loss_fn, jnp.zeros(2), steps=7, optimizer=optax.sgd(0.3))
    # w_k = (I - (I - lr A)^k) A^{-1} b, elementwise for diagonal A
    diag = np.array([2.0, 0.5])
    expected = (1 - (1 - 0.3 * diag) ** 7) * np.array([1.0, -1.0]) / diag
    np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-12)
    assert losses.shape == (7,) and float(losses[0]) == 0.0
    w0, _ = blo.minimize(loss_fn, jnp.ones(2), steps=0, optimizer=optax.sgd(0.3))
    assert np.asarray(w0).tolist() == [1.0, 1.0]


def test_gradient_descent_on_one_equation_is_a_projection(x64):
    """Lemma C.1 / App. B.2: GD on (a.w - t)^2 / 2 from w0 converges to the projection of w0."""
    a, t = jnp.array([0.8, 1.0]), 1.0
    for w0 in (jnp.zeros(2), jnp.array([1.0, -2.0])):
        w, _ = blo.minimize(lambda w: 0.5 * (a @ w - t) ** 2, w0, steps=500,
                             optimizer=optax.sgd(0.5))
        np.testing.assert_allclose(np.asarray(w),
                                   np.asarray(quadratic.project_hyperplane(w0, a, t)), atol=1e-10)


def test_retrain_reaches_zero_loss_on_separable_points():
    params0 = mlp.init(jax.random.PRNGKey(0), (2, 32, 32, 3))
    pts = jnp.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5], [0.2, -1.5]])
    labels = jnp.array([0, 1, 2, 2])
    params, losses = distill.retrain(mlp.apply, params0, pts, labels, steps=400,
                                     optimizer=optax.adam(0.02))
    assert float(losses[0]) > 0.3 and float(losses[-1]) < 1e-3
    assert float(distill.accuracy(mlp.apply, params, pts, labels)) == 1.0
    soft = jnp.eye(3)[labels]
    params_soft, _ = distill.retrain(mlp.apply, params0, pts, soft, steps=400,
                                     optimizer=optax.adam(0.02))
    assert float(distill.loss(mlp.apply, params_soft, pts, labels)) < 1e-3


def test_train_bad_input():
    with pytest.raises(TypeError, match="optimizer"):
        blo.minimize(lambda w: jnp.sum(w), jnp.zeros(2), steps=3, optimizer=0.1)
    with pytest.raises(TypeError, match="steps"):
        blo.minimize(lambda w: jnp.sum(w), jnp.zeros(2), steps=3.0, optimizer=optax.sgd(0.1))
    with pytest.raises(TypeError, match="params0"):
        blo.minimize(lambda w: jnp.sum(w), jnp.zeros(2, jnp.int32), steps=3,
                      optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="targets"):
        distill.retrain(lambda p, u: u @ p, jnp.eye(2), jnp.zeros((3, 2)), jnp.array([0, 1]),
                        steps=3, optimizer=optax.sgd(0.1))


@pytest.mark.parametrize("steps, lr", [(1, 0.5), (3, 0.2), (10, 0.9)])
def test_full_unroll_closed_form(steps, lr, x64):
    """inner = |y - x|^2 / 2 from y0 = 0: y_K = (1 - (1 - lr)^K) x, so dF/dx for F = c.y is
    (1 - (1 - lr)^K) c, whatever y the estimator is handed."""
    inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
    c = jnp.array([1.0, -2.0])
    outer = lambda x, y: c @ y
    hg = distill.full_unroll(jnp.zeros(2), steps=steps, lr=lr)
    out = hg(inner, outer, jnp.array([0.3, 0.4]), jnp.array([9.0, 9.0]))
    np.testing.assert_allclose(np.asarray(out), (1 - (1 - lr) ** steps) * np.asarray(c),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="lr"):
        distill.full_unroll(jnp.zeros(2), steps=3, lr=0.0)


def test_full_unroll_matches_finite_differences_of_retraining(x64):
    """The cold-start hypergradient is the derivative of x -> F(re-trained model on x)."""
    params0 = mlp.init(jax.random.PRNGKey(4), (2, 6, 2), dtype=jnp.float64)
    data, data_labels = toy_data.rings(10, seed=1)
    inner, outer = distill.objectives(mlp.apply, data.astype(jnp.float64), data_labels,
                                      labels=jnp.array([0, 1]))
    x = jnp.array([[0.2, 0.1], [1.5, -0.5]])
    hg = distill.full_unroll(params0, steps=20, lr=0.1)(inner, outer, x, params0)

    @jax.jit
    def cold(x_):
        y, _ = blo.minimize(lambda p: inner(x_, p), params0, steps=20, optimizer=optax.sgd(0.1))
        return outer(x_, y)

    d = jnp.asarray(np.random.default_rng(0).standard_normal(x.shape))
    h = 1e-6
    fd = (cold(x + h * d) - cold(x - h * d)) / (2 * h)
    assert abs(float(jnp.vdot(hg, d)) - float(fd)) < 1e-7


def test_cold_start_with_full_unroll_reaches_the_closed_form_optimum(x64):
    """Scalar check of Theorem 3.1's setting: f = (y - x)^2/2, F = (y - 3)^2/2, y0 = 0, so the
    cold-start map is y(x) = (1 - (1 - lr)^K) x and the outer optimum is x = 3 / (1 - (1-lr)^K)."""
    inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
    outer = lambda x, y: 0.5 * jnp.sum((y - 3.0) ** 2)
    k, lr = 4, 0.3
    x, _, _ = blo.cold_start(inner, outer, jnp.zeros(1), jnp.zeros(1),
                             hypergrad=distill.full_unroll(jnp.zeros(1), steps=k, lr=lr),
                             outer_opt=optax.sgd(1.0), inner_opt=optax.sgd(lr),
                             outer_steps=300, inner_steps=k)
    assert float(x[0]) == pytest.approx(3.0 / (1 - (1 - lr) ** k), rel=1e-8)


def test_replay_reproduces_warm_start_and_closed_form(x64):
    # closed form on a scalar quadratic: y_{t+1} = (1 - lr) y_t + lr x_t
    inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
    xs = jnp.array([[1.0], [2.0], [-1.0], [0.5]])
    y = 0.0
    for xt in np.asarray(xs)[:, 0]:
        y = 0.7 * y + 0.3 * xt
    assert float(blo.replay(inner, jnp.zeros(1), xs, lr=0.3)[0]) == pytest.approx(y)
    # warm start with one inner SGD step per outer step is the replay of its own trajectory
    params0 = mlp.init(jax.random.PRNGKey(0), (2, 8, 2), dtype=jnp.float64)
    data, data_labels = toy_data.rings(20, seed=0)
    inner, outer = distill.objectives(mlp.apply, data.astype(jnp.float64), data_labels,
                                      labels=jnp.array([0, 1]))
    x0 = jnp.array([[0.1, 0.2], [-0.3, 0.4]])
    hg = functools.partial(hypergrad.unroll, steps=1, lr=0.05)
    _, y_warm, trace = blo.warm_start(inner, outer, x0, params0, hypergrad=hg,
                                      outer_opt=optax.adam(0.05), inner_opt=optax.sgd(0.05),
                                      outer_steps=30, inner_steps=1)
    y_replay = blo.replay(inner, params0, trace["x"], lr=0.05)
    for k in y_warm:
        np.testing.assert_allclose(np.asarray(y_replay[k]), np.asarray(y_warm[k]), atol=1e-12)


def test_trajectory_data_hard_and_soft():
    trace = jnp.arange(5 * 2 * 2, dtype=jnp.float32).reshape(5, 2, 2)
    pts, t = distill.trajectory_data(trace, jnp.array([0, 1]), every=2)
    assert pts.shape == (6, 2) and t.tolist() == [0, 1, 0, 1, 0, 1]
    np.testing.assert_array_equal(np.asarray(pts[2]), np.asarray(trace[2, 0]))
    logits = jnp.zeros((5, 2, 3)).at[:, 1, 2].set(5.0)
    pts, t = distill.trajectory_data({"points": trace, "label_logits": logits})
    assert t.shape == (10, 3)
    np.testing.assert_allclose(np.asarray(t.sum(axis=1)), 1.0, rtol=1e-6)
    assert int(jnp.argmax(t[1])) == 2
    with pytest.raises(ValueError, match="labels"):
        distill.trajectory_data(trace)
    with pytest.raises(ValueError, match="every"):
        distill.trajectory_data(trace, jnp.array([0, 1]), every=0)


def test_replay_snapshots_match_prefix_replays():
    inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
    xs = jnp.arange(12.0).reshape(6, 2)
    y_t, snaps = blo.replay(inner, jnp.zeros(2), xs, lr=0.25, every=2)
    assert snaps.shape == (3, 2)
    for k in range(3):
        np.testing.assert_allclose(
            np.asarray(snaps[k]),
            np.asarray(blo.replay(inner, jnp.zeros(2), xs[: 2 * (k + 1)], lr=0.25)),
            rtol=1e-6)
    np.testing.assert_allclose(np.asarray(snaps[-1]), np.asarray(y_t))
    with pytest.raises(ValueError, match="every"):
        blo.replay(inner, jnp.zeros(2), xs, lr=0.25, every=4)
    with pytest.raises(ValueError, match="lr"):
        blo.replay(inner, jnp.zeros(2), xs, lr=-1.0)


def test_keep_in_box_projects_points_only():
    box = distill.keep_in_box(-1.0, 2.0)
    x = {"points": jnp.array([[0.0, 1.5], [-0.5, 0.0]]), "label_logits": jnp.zeros((2, 3))}
    updates = {"points": jnp.array([[-3.0, 1.0], [0.2, 0.1]]),
               "label_logits": jnp.full((2, 3), 7.0)}
    new = optax.apply_updates(x, box.update(updates, box.init(x), x)[0])
    np.testing.assert_allclose(np.asarray(new["points"]), [[-1.0, 2.0], [-0.3, 0.1]], atol=1e-6)
    np.testing.assert_allclose(np.asarray(new["label_logits"]), 7.0)
    # chained after Adam inside warm start, the learned points never leave the box
    opt = optax.chain(optax.adam(0.5), distill.keep_in_box(-0.2, 0.2))
    inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
    outer = lambda x, y: -jnp.sum(y)           # pushes x (through y) towards +infinity
    x_final, _, trace = blo.warm_start(
        inner, outer, jnp.zeros(2), jnp.zeros(2), outer_opt=opt, inner_opt=optax.sgd(0.5),
        hypergrad=functools.partial(hypergrad.unroll, steps=1, lr=0.5), outer_steps=20,
        inner_steps=1)
    assert float(jnp.max(jnp.abs(trace["x"]))) <= 0.2 + 1e-7
    np.testing.assert_allclose(np.asarray(x_final), [0.2, 0.2], atol=1e-7)
    with pytest.raises(ValueError, match="low"):
        distill.keep_in_box(1.0, 1.0)


def test_mlp_out_scale():
    p1 = mlp.init(jax.random.PRNGKey(0), (2, 8, 8, 3))
    p2 = mlp.init(jax.random.PRNGKey(0), (2, 8, 8, 3), out_scale=0.1)
    np.testing.assert_allclose(np.asarray(p2["w2"]), 0.1 * np.asarray(p1["w2"]), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(p2["w0"]), np.asarray(p1["w0"]))
    with pytest.raises(ValueError, match="out_scale"):
        mlp.init(jax.random.PRNGKey(0), (2, 3), out_scale=-1.0)


def test_cold_start_closed_form_and_agrees_with_blo_full_unroll(x64):
    """f = (y - x)^2/2, F = (y - 3)^2/2 from y0 = 0 with K SGD steps: y(x) = c x with
    c = 1 - (1 - lr)^K, so the outer optimum is x = 3 / c with F = 0 and f = (1 - c)^2 x^2 / 2;
    the whole trajectory equals blo.cold_start with full_unroll (same gradient, same updates)."""
    inner = lambda x, y: 0.5 * jnp.sum((y - x) ** 2)
    outer = lambda x, y: 0.5 * jnp.sum((y - 3.0) ** 2)
    k, lr = 4, 0.3
    c = 1 - (1 - lr) ** k
    x, y, tr = blo.cold_start_unrolled(inner, outer, jnp.zeros(1), jnp.zeros(1),
                                  inner_opt=optax.sgd(lr), inner_steps=k,
                                  outer_opt=optax.sgd(1.0), outer_steps=300)
    assert float(x[0]) == pytest.approx(3.0 / c, rel=1e-8)
    assert float(y[0]) == pytest.approx(3.0, rel=1e-8)
    xs = np.asarray(tr["x"])[:, 0]
    np.testing.assert_allclose(np.asarray(tr["inner_loss"]), 0.5 * ((1 - c) * xs) ** 2,
                               rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(tr["outer_loss"]), 0.5 * (c * xs - 3.0) ** 2,
                               rtol=1e-10, atol=1e-14)
    _, _, ref = blo.cold_start(inner, outer, jnp.zeros(1), jnp.zeros(1),
                               hypergrad=distill.full_unroll(jnp.zeros(1), steps=k, lr=lr),
                               outer_opt=optax.sgd(1.0), inner_opt=optax.sgd(lr),
                               outer_steps=300, inner_steps=k)
    np.testing.assert_allclose(np.asarray(tr["x"]), np.asarray(ref["x"]), rtol=1e-12)


def test_cold_start_through_adam_matches_finite_differences(x64):
    """The first outer step moves x along -lr_out * dF/dx of the Adam re-training, checked by
    central finite differences of x -> F(x, re-trained model)."""
    params0 = mlp.init(jax.random.PRNGKey(4), (2, 6, 2), dtype=jnp.float64)
    data, data_labels = toy_data.rings(10, seed=1)
    inner, outer = distill.objectives(mlp.apply, data.astype(jnp.float64), data_labels,
                                      labels=jnp.array([0, 1]))
    x = jnp.array([[0.2, 0.1], [1.5, -0.5]])
    adam = optax.adam(1e-2, eps_root=1e-8)
    x1, _, tr = blo.cold_start_unrolled(inner, outer, x, params0, inner_opt=adam, inner_steps=15,
                                   outer_opt=optax.sgd(1.0), outer_steps=1)
    grad = x - x1

    @jax.jit
    def cold(x_):
        y, _ = blo.minimize(lambda p: inner(x_, p), params0, steps=15, optimizer=adam)
        return outer(x_, y)

    assert float(tr["outer_loss"][0]) == pytest.approx(float(cold(x)), rel=1e-10)
    d = jnp.asarray(np.random.default_rng(0).standard_normal(x.shape))
    h = 1e-6
    fd = (cold(x + h * d) - cold(x - h * d)) / (2 * h)
    assert abs(float(jnp.vdot(grad, d)) - float(fd)) < 1e-6 * max(1.0, abs(float(fd)))
    with pytest.raises(TypeError, match="inner_opt"):
        blo.cold_start_unrolled(inner, outer, x, params0, inner_opt=None, inner_steps=1,
                           outer_opt=optax.sgd(1.0), outer_steps=1)
