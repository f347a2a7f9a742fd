"""Tests of bilevel_lib.tasks.image_distill against known answers.

Known answers used here: the softmax cross-entropy and its gradient written in NumPy and
checked by central finite differences (float64); the first-order optimality condition of a
strongly convex (L2-regularized) re-training; soft labels computed by hand; the identity
augmentation (theta = 0) giving the plain classifier loss; the cold-start identity
``y = Phi_K(0, x)``; and the single-device ``vmap`` as the answer of the sharded sweep (in a
subprocess with 8 host devices). Data are a few dozen random 4x4 "images"; one optional test
reads MNIST and skips when it is not installed.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bilevel_lib import blo, runtime
from bilevel_lib.models import linear, metrics
from bilevel_lib.tasks import distill, image_data
from bilevel_lib.tasks import image_distill as idl

ROOT = Path(__file__).resolve().parents[1]


def tiny_images(n=40, d=16, seed=0, dtype=np.float32):
    """``n`` 4x4 "images" in [0, 1] with labels ``i mod 10``: a class prototype plus noise.

    The prototypes are the same for every ``seed`` (so a classifier fitted on one seed's
    images generalises to another's); the noise is the seed's.
    """
    prototypes = np.random.default_rng(12345).uniform(size=(10, d))
    labels = np.arange(n) % 10
    noise = 0.1 * np.random.default_rng(seed).standard_normal((n, d))
    images = np.clip(prototypes[labels] + noise, 0.0, 1.0)
    return jnp.asarray(images, dtype), jnp.asarray(labels)


def np_cross_entropy(logits, targets):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -np.mean(np.sum(targets * logp, axis=1))


# ----- the classifier --------------------------------------------------------------------------


def test_classifier_loss_and_gradient_match_numpy_and_finite_differences(x64):
    rng = np.random.default_rng(1)
    pts = rng.standard_normal((6, 16))
    targets = rng.dirichlet(np.ones(10), size=6)
    y = {"W": jnp.asarray(rng.standard_normal((16, 10))),
         "b": jnp.asarray(rng.standard_normal(10))}
    wd = 0.3
    loss = functools.partial(idl.classifier_loss, points=jnp.asarray(pts),
                             targets=jnp.asarray(targets), weight_decay=wd)
    by_hand = (np_cross_entropy(pts @ np.asarray(y["W"]) + np.asarray(y["b"]), targets)
               + 0.5 * wd * np.sum(np.asarray(y["W"]) ** 2))
    np.testing.assert_allclose(float(loss(y)), by_hand, rtol=1e-12)
    grad = jax.grad(loss)(y)
    h = 1e-6
    for _ in range(4):
        direction = {"W": jnp.asarray(rng.standard_normal((16, 10))),
                     "b": jnp.asarray(rng.standard_normal(10))}
        plus = jax.tree_util.tree_map(lambda a, v: a + h * v, y, direction)
        minus = jax.tree_util.tree_map(lambda a, v: a - h * v, y, direction)
        fd = (float(loss(plus)) - float(loss(minus))) / (2 * h)
        ad = sum(float(jnp.sum(grad[k] * direction[k])) for k in ("W", "b"))
        assert abs(fd - ad) < 1e-7 * max(1.0, abs(ad))
    # the closed-form gradient: W-gradient U^T (softmax(Z) - P) / n + wd W
    z = pts @ np.asarray(y["W"]) + np.asarray(y["b"])
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(grad["W"]),
                               pts.T @ (p - targets) / 6 + wd * np.asarray(y["W"]), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(grad["b"]), (p - targets).mean(0), atol=1e-12)


def test_retrain_reaches_the_strongly_convex_optimum(x64):
    # 20 separable points, L2 penalty 0.1: a unique minimizer, where the gradient vanishes.
    pts, lab = tiny_images(20, seed=2, dtype=np.float64)
    x = {"points": pts, "label_logits": 4.0 * jax.nn.one_hot(lab, 10, dtype=jnp.float64)}
    wd = 0.1
    y, losses = jax.jit(functools.partial(idl.retrain, steps=3000, lr=0.5,
                                          weight_decay=wd))(x)
    pts_, targets = distill.learned_data(x)
    grad = jax.grad(idl.classifier_loss)(y, pts_, targets, weight_decay=wd)
    norm = float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree_util.tree_leaves(grad))))
    assert norm < 1e-8
    assert bool(jnp.all(jnp.diff(losses) <= 1e-12))       # gradient descent, small step
    assert float(metrics.accuracy(linear.apply(y, pts), lab)) == 1.0
    acc = idl.retrain_accuracy(x, {"train": (pts, lab)}, steps=3000, lr=0.5, weight_decay=wd)
    assert float(acc["train"]) == 1.0


# ----- learned data and objectives ------------------------------------------------------------


def test_learned_init_soft_labels_by_hand():
    x = idl.init_learned(jax.random.PRNGKey(0), 10, 16, label_scale=2.0, noise=0.1)
    assert x["points"].shape == (10, 16) and x["label_logits"].shape == (10, 10)
    soft = np.asarray(distill.soft_labels(x["label_logits"]))
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    hot, cold = np.e**2 / (np.e**2 + 9), 1 / (np.e**2 + 9)
    np.testing.assert_allclose(soft, np.where(np.eye(10) > 0, hot, cold), rtol=1e-6)
    one = idl.init_learned(jax.random.PRNGKey(0), 1, 784)
    assert one["points"].size + one["label_logits"].size == 794     # the paper's count
    # the inner objective is the cross-entropy against these soft labels
    y = {"W": jnp.asarray(np.random.default_rng(0).standard_normal((16, 10)), jnp.float32),
         "b": jnp.zeros(10)}
    inner, _ = idl.objectives(*tiny_images())
    by_hand = np_cross_entropy(np.asarray(x["points"]) @ np.asarray(y["W"]), soft)
    np.testing.assert_allclose(float(inner(x, y)), by_hand, rtol=1e-5)


def test_outer_objective_full_and_minibatch():
    pts, lab = tiny_images()
    _, outer = idl.objectives(pts, lab)
    y = {"W": jnp.asarray(np.random.default_rng(3).standard_normal((16, 10)), jnp.float32),
         "b": jnp.zeros(10)}
    onehot = np.eye(10)[np.asarray(lab)]
    z = np.asarray(pts) @ np.asarray(y["W"])
    np.testing.assert_allclose(float(outer(None, y)), np_cross_entropy(z, onehot), rtol=1e-5)
    rows = jnp.array([3, 7, 11])
    np.testing.assert_allclose(float(outer(None, y, rows)),
                               np_cross_entropy(z[[3, 7, 11]], onehot[[3, 7, 11]]), rtol=1e-5)


def test_cold_start_run_returns_the_retrained_classifier():
    pts, lab = tiny_images()
    kw = dict(num_learned=10, outer_steps=15, inner_steps=10, inner_lr=0.5, outer_lr=0.02)
    for batch_size in (None, 8):
        x, y, trace = jax.jit(functools.partial(idl.cold_start_run, original=(pts, lab),
                                                batch_size=batch_size, **kw))(
            jax.random.PRNGKey(0))
        inner, _ = idl.objectives(pts, lab)
        y_k = blo.inner_gd(inner, x, idl.init_classifier(16), lr=0.5, steps=10)
        for k in ("W", "b"):
            np.testing.assert_allclose(np.asarray(y[k]), np.asarray(y_k[k]), atol=1e-6)
        assert trace["label_logits"].shape == (15, 10, 10) and "x" not in trace
        assert float(trace["outer_loss"][-1]) < float(trace["outer_loss"][0])


def test_warm_start_run_fits_the_original_set():
    pts, lab = tiny_images()
    x, y, trace = jax.jit(functools.partial(
        idl.warm_start_run, original=(pts, lab), num_learned=10, outer_steps=300,
        inner_lr=0.5, outer_lr=0.05, batch_size=20))(jax.random.PRNGKey(1))
    assert trace["outer_loss"].shape == (300,)
    assert float(trace["outer_loss"][-1]) < 0.5 * float(trace["outer_loss"][0])
    # the logits recorded at step 0 are the initial one-hot ones
    np.testing.assert_allclose(np.asarray(trace["label_logits"][0]), np.eye(10), atol=1e-6)
    assert float(idl.evaluate(y, {"o": (pts, lab)})["o"]) > 0.5


# ----- the augmentation net ---------------------------------------------------------------------


def test_identity_augmentation_gives_the_plain_classifier_loss():
    train, val = tiny_images(20, seed=4), tiny_images(30, seed=5)
    inner, outer = idl.augmentation_objectives(train, val, weight_decay=0.01)
    theta = idl.init_augmentation(16, noise_dim=3)
    y = {"W": jnp.asarray(np.random.default_rng(6).standard_normal((16, 10)), jnp.float32),
         "b": jnp.ones(10)}
    noise = jax.random.normal(jax.random.PRNGKey(0), (20, 3))
    np.testing.assert_allclose(float(inner(theta, y, noise)),
                               float(idl.classifier_loss(y, *train, weight_decay=0.01)),
                               rtol=1e-6)
    np.testing.assert_allclose(float(outer(theta, y)),
                               float(idl.classifier_loss(y, *val)), rtol=1e-6)
    # a known map: A = -I cancels the image, leaving B eps + c
    rng = np.random.default_rng(7)
    b, c = rng.standard_normal((16, 3)), rng.standard_normal(16)
    theta = {"A": -jnp.eye(16), "B": jnp.asarray(b, jnp.float32), "c": jnp.asarray(c, jnp.float32)}
    np.testing.assert_allclose(np.asarray(idl.augment(theta, train[0], noise)),
                               np.asarray(noise) @ b.T + c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["warm", "cold"])
def test_augmentation_run_with_a_frozen_net_is_plain_training_of_the_classifier(method, x64):
    # Known answer: with outer step size 0 the net stays the identity (theta = 0, B = 0), the
    # augmented training set is the training set, and the run trains the classifier as
    # fit_classifier does: T alternating SGD steps (warm), K SGD steps from zero (cold).
    train, val = tiny_images(20, seed=4, dtype=np.float64), tiny_images(30, seed=5,
                                                                         dtype=np.float64)
    steps = 30 if method == "warm" else 10
    run = functools.partial(
        idl.augmentation_run, train=train, validation=val, method=method, outer_steps=30,
        inner_steps=1 if method == "warm" else steps, inner_lr=0.5, outer_opt=optax.sgd(0.0),
        noise_dim=3, batch_size=10)
    theta, y, _ = jax.jit(run)(jax.random.PRNGKey(0))
    assert set(theta) == {"A", "B", "c"}
    assert all(float(jnp.abs(v).max()) == 0.0 for v in theta.values())
    y_ref, _ = idl.fit_classifier(train, steps=steps, lr=0.5)
    for k in ("W", "b"):
        np.testing.assert_allclose(np.asarray(y[k]), np.asarray(y_ref[k]), rtol=1e-10,
                                   atol=1e-12)
    # With a real outer step the noise map is learned (its gradient, by finite differences,
    # is in tests/test_image_tasks.py).
    theta, _, trace = jax.jit(functools.partial(run, outer_opt=optax.adam(0.01)))(
        jax.random.PRNGKey(0))
    assert float(jnp.abs(theta["B"]).max()) > 0 and "x" not in trace


# ----- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"name": "svhn"}, ValueError, "must be one of"),
        ({"name": "mnist", "n_original": 55_000}, ValueError, "must not exceed"),
        ({"name": "cifar10", "n_val": 45_000}, ValueError, "must not exceed"),
        ({"name": "mnist", "n_original": 0}, ValueError, "n_original"),
        ({"name": "mnist", "n_val": 2.5}, TypeError, "n_val"),
    ],
)
def test_prepare_rejects_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        idl.prepare(**kwargs)


def test_standardize_by_hand_and_raw_classifier_equals_it_on_raw_pixels(x64):
    # By hand: pixel means (1, 3, 5); centered rows (-1, -1, -2), (1, 1, 2); overall std
    # sqrt((1 + 1 + 4) * 2 / 6) = sqrt(2). The other split uses the first one's statistics.
    pts = np.array([[0.0, 2.0, 3.0], [2.0, 4.0, 7.0]])
    splits = {"original": (pts, np.array([0, 1])), "test": (np.ones((1, 3)), np.array([2]))}
    out, stats = idl.standardize(splits)
    np.testing.assert_allclose(out["original"][0], [[-1, -1, -2], [1, 1, 2]] / np.sqrt(2))
    np.testing.assert_allclose(out["test"][0], [[0, -2, -4]] / np.sqrt(2))
    np.testing.assert_array_equal(out["test"][1], [2])
    np.testing.assert_allclose(stats["mean"], [1, 3, 5])
    np.testing.assert_allclose(stats["scale"], np.sqrt(2))
    # The raw classifier: the same logits on the raw rows as y on the standardized ones.
    key_w, key_b = jax.random.split(jax.random.PRNGKey(0))
    y = {"W": jax.random.normal(key_w, (3, 10), jnp.float64),
         "b": jax.random.normal(key_b, (10,), jnp.float64)}
    raw = idl.raw_classifier(y, stats)
    np.testing.assert_allclose(linear.apply(raw, jnp.asarray(pts)),
                               linear.apply(y, jnp.asarray(out["original"][0])), rtol=1e-12)
    np.testing.assert_allclose(raw["W"], y["W"] / np.sqrt(2))
    np.testing.assert_allclose(raw["b"], y["b"] - np.array([1, 3, 5]) @ y["W"] / np.sqrt(2))


def test_standardize_rejects_bad_input():
    with pytest.raises(ValueError, match="`fit` must be one of"):
        idl.standardize({"original": (np.ones((2, 3)), np.zeros(2))}, fit="test")
    with pytest.raises(ValueError, match="all equal"):
        idl.standardize({"original": (np.ones((2, 3)), np.zeros(2))})
    with pytest.raises(ValueError, match=r"\(n >= 1, d\)"):
        idl.standardize({"original": (np.ones(3), np.zeros(3))})


def test_learned_images_rule_and_label_errors():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="too many learned images for the classes"):
        idl.init_learned(key, 15, 16)
    assert idl.init_learned(key, 20, 16)["points"].shape == (20, 16)   # 2 per class
    with pytest.raises(ValueError, match="too many learned images"):
        idl.init_learned(key, 3, 16, num_classes=2)
    with pytest.raises(ValueError, match="one per learned image"):
        idl.init_learned(key, 2, 16, labels=[0, 1, 2])
    with pytest.raises(ValueError, match="class indices in"):
        idl.init_learned(key, 2, 16, labels=[0, 10])
    with pytest.raises(ValueError, match="anti-distillation"):
        idl.warm_start_run(key, tiny_images(5), num_learned=10, outer_steps=1, inner_lr=0.1,
                           outer_lr=0.1)
    with pytest.raises(ValueError, match="int class indices"):
        idl.objectives(jnp.ones((3, 4)), jnp.ones(3))
    with pytest.raises(ValueError, match="batch_size"):
        idl.cold_start_run(key, tiny_images(), num_learned=1, outer_steps=1, inner_steps=1,
                           inner_lr=0.1, outer_lr=0.1, batch_size=100)
    with pytest.raises(ValueError, match="method"):
        idl.augmentation_run(key, tiny_images(), tiny_images(), method="lukewarm",
                             outer_steps=1, inner_lr=0.1, outer_lr=0.1)
    with pytest.raises(ValueError, match="n_val"):
        idl.augmentation_sample(20, 3, batch_size=5)
    with pytest.raises(ValueError, match="differ in size"):
        idl.augmentation_objectives(tiny_images(d=16), tiny_images(d=9))
    with pytest.raises(ValueError, match="leading batch axis"):
        runtime.sharded_vmap(lambda k: k, jnp.zeros(()))
    with pytest.raises(ValueError, match="leading batch axis"):
        runtime.sharded_vmap(lambda kv: kv, (jnp.zeros((3, 2)), jnp.zeros(4)))


def test_sharded_vmap_of_a_pytree_sweep_on_the_visible_devices():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    scales = jnp.array([1.0, 2.0, 3.0])
    run = lambda ks: {"draw": ks[1] * jax.random.normal(ks[0], (2,))}
    out = runtime.sharded_vmap(run, (keys, scales))
    np.testing.assert_allclose(np.asarray(out["draw"]),
                               np.asarray(jax.vmap(run)((keys, scales))["draw"]), rtol=1e-6)


# ----- sharding over devices -------------------------------------------------------------------

_SHARDED = textwrap.dedent("""
    import functools, jax, jax.numpy as jnp, numpy as np
    from bilevel_lib import runtime
    from bilevel_lib.tasks import image_distill as idl
    assert len(jax.devices()) == 8, jax.devices()
    rng = np.random.default_rng(0)
    pts = jnp.asarray(rng.uniform(size=(40, 16)), jnp.float32)
    lab = jnp.asarray(np.arange(40) % 10)
    run = functools.partial(idl.warm_start_run, original=(pts, lab), num_learned=10,
                            outer_steps=20, inner_lr=0.5, outer_lr=0.01, batch_size=10)
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    ref = jax.jit(jax.vmap(run))(keys)
    assert len(ref[1]["W"].sharding.device_set) == 1
    out = runtime.sharded_vmap(run, keys)
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref)):
        assert a.shape == b.shape and a.shape[0] == 8
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
        assert len(a.sharding.device_set) == 8
        assert len({s.device for s in a.addressable_shards}) == 8
        assert a.addressable_shards[0].data.shape[0] == 1     # one seed a device
    # 6 seeds on 8 devices: padded, then cut back to 6
    draw = lambda k: jax.random.normal(k, (3,))
    padded = runtime.sharded_vmap(draw, keys[:6])
    np.testing.assert_array_equal(np.asarray(padded), np.asarray(jax.vmap(draw)(keys[:6])))
    print("SHARDED-OK")
""")


def test_sharded_sweep_equals_single_device_vmap():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "SHARDED-OK" in proc.stdout


# ----- real data (optional) ---------------------------------------------------------------------


def test_prepare_mnist_shapes_and_splits():
    try:
        splits = idl.prepare("mnist", n_original=100, n_val=50, download=False)
        images, labels = image_data.load("mnist", "train", download=False)
    except image_data.DatasetNotFoundError:
        pytest.skip("MNIST is not installed")
    (o, ol), (v, vl), (t, tl) = splits["original"], splits["validation"], splits["test"]
    assert o.shape == (100, 784) and v.shape == (50, 784) and t.shape == (10_000, 784)
    assert o.dtype == v.dtype == t.dtype == np.float32
    assert ol.dtype == tl.dtype == np.int32 and tl.shape == (10_000,)
    assert 0.0 <= o.min() and o.max() <= 1.0
    np.testing.assert_array_equal(o, image_data.as_float(images[:100]))
    np.testing.assert_array_equal(v, image_data.as_float(images[-50:]))
    np.testing.assert_array_equal(vl, labels[-50:])


@pytest.mark.parametrize("run", [idl.warm_start_run, idl.cold_start_run])
@pytest.mark.parametrize("batch_size", [None, 8])
def test_recorded_accuracy_equals_that_of_a_shorter_run(run, batch_size):
    # A T-step run's accuracy recorded after T/2 steps is the final accuracy of a T/2-step
    # run from the same key (same initialization, same minibatches); the re-trained one is
    # retrain_accuracy of that run's learned data, computed independently.
    pts, lab = tiny_images()
    test = tiny_images(seed=1)
    evals = {"original": (pts, lab), "test": test}
    retrain = dict(steps=50, lr=0.5)
    kw = dict(original=(pts, lab), num_learned=10, inner_lr=0.5, outer_lr=0.02,
              batch_size=batch_size)
    if run is idl.cold_start_run:
        kw["inner_steps"] = 10
    _, _, trace = jax.jit(functools.partial(run, outer_steps=20, eval_sets=evals,
                                            eval_every=10, retrain=retrain, **kw))(
        jax.random.PRNGKey(0))
    x, y, _ = jax.jit(functools.partial(run, outer_steps=10, **kw))(jax.random.PRNGKey(0))
    acc = trace["accuracy"]
    assert set(acc) == {"model", "retrained"} and acc["model"]["test"].shape == (2,)
    for name, want in idl.evaluate(y, evals).items():
        assert abs(float(acc["model"][name][0]) - float(want)) < 1e-6
    for name, want in idl.retrain_accuracy(x, evals, **retrain).items():
        assert abs(float(acc["retrained"][name][0]) - float(want)) < 1e-6
    assert 0.0 <= float(acc["model"]["test"][1]) <= 1.0


def test_accuracy_recording_errors_name_the_argument():
    pts, lab = tiny_images()
    kw = dict(original=(pts, lab), num_learned=10, outer_steps=10, inner_lr=0.5, outer_lr=0.02)
    with pytest.raises(TypeError, match="eval_every"):
        idl.warm_start_run(jax.random.PRNGKey(0), eval_sets={"o": (pts, lab)}, **kw)
    with pytest.raises(TypeError, match="eval_sets"):
        idl.warm_start_run(jax.random.PRNGKey(0), eval_every=5, **kw)
    with pytest.raises(ValueError, match="multiple of `eval_every`"):
        idl.warm_start_run(jax.random.PRNGKey(0), eval_sets={"o": (pts, lab)}, eval_every=3,
                           **kw)
    with pytest.raises(ValueError, match="eval_sets\\['o'\\]"):
        idl.warm_start_run(jax.random.PRNGKey(0), eval_sets={"o": (pts, lab[:3])},
                           eval_every=5, **kw)


def test_fit_classifier_reaches_the_strongly_convex_optimum(x64):
    # Hard labels: the NumPy cross-entropy's gradient (by central differences) vanishes there.
    pts, lab = tiny_images(20, seed=2, dtype=np.float64)
    wd = 0.1
    y, _ = jax.jit(functools.partial(idl.fit_classifier, steps=3000, lr=0.5,
                                     weight_decay=wd))((pts, lab))
    w, b = np.asarray(y["W"]), np.asarray(y["b"])
    onehot = np.eye(10)[lab]

    def loss(w_):
        return np_cross_entropy(pts @ w_ + b, onehot) + 0.5 * wd * np.sum(w_ ** 2)

    eps, worst = 1e-5, 0.0
    for i, j in [(0, 0), (3, 7), (15, 9), (8, 2)]:
        e = np.zeros_like(w)
        e[i, j] = eps
        worst = max(worst, abs(loss(w + e) - loss(w - e)) / (2 * eps))
    assert worst < 1e-7
    assert float(metrics.accuracy(linear.apply(y, pts), lab)) == 1.0
    with pytest.raises(ValueError, match="`data` labels"):
        idl.fit_classifier((pts, lab[:3]), steps=1, lr=0.1)


# ----- optimizers as arguments ------------------------------------------------------------------


def _hand_grads(pts, lab, wd=0.0):
    """``inner``, ``outer`` and the one-step unrolled hypergradient, written out directly."""

    def ce(logits, targets):
        return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), axis=1))

    def inner(x, y):
        return (ce(x["points"] @ y["W"] + y["b"], jax.nn.softmax(x["label_logits"]))
                + 0.5 * wd * jnp.sum(y["W"] ** 2))

    def outer(y):
        return ce(pts @ y["W"] + y["b"], jax.nn.one_hot(lab, 10, dtype=pts.dtype))

    return inner, outer


def test_warm_start_run_with_given_optimizers_equals_the_loop_by_hand(x64):
    # Adam (b1 = 0.5, b2 = 0.99, eps = 1e-6) on the images and SGD on the label logits,
    # written out in NumPy, around one inner SGD step and its unrolled hypergradient.
    pts, lab = tiny_images(30, dtype=np.float64)
    alpha, lr_p, lr_l, b1, b2, eps, steps = 0.5, 0.05, 0.3, 0.5, 0.99, 1e-6, 12
    opt = idl.learned_data_opt(optax.adam(lr_p, b1=b1, b2=b2, eps=eps), optax.sgd(lr_l))
    key = jax.random.PRNGKey(3)
    x_run, y_run, trace = idl.warm_start_run(key, (pts, lab), num_learned=2, outer_steps=steps,
                                             inner_lr=alpha, outer_opt=opt, trace_points=True)
    inner, outer = _hand_grads(pts, lab)
    x = idl.init_learned(jax.random.split(key)[0], 2, 16)
    y = idl.init_classifier(16)
    mom, vel = np.zeros((2, 16)), np.zeros((2, 16))
    def step(x_, y_):
        return jax.tree_util.tree_map(lambda a, d: a - alpha * d, y_,
                                      jax.grad(inner, argnums=1)(x_, y_))

    for t in range(1, steps + 1):
        np.testing.assert_allclose(np.asarray(trace["points"][t - 1]), np.asarray(x["points"]),
                                   rtol=1e-9, atol=1e-12)
        y_new = step(x, y)                                  # the inner SGD step
        g = jax.grad(lambda x_, y_=y_new: outer(step(x_, y_)))(x)  # through one more step
        gp = np.asarray(g["points"])
        mom = b1 * mom + (1 - b1) * gp
        vel = b2 * vel + (1 - b2) * gp ** 2
        mhat, vhat = mom / (1 - b1 ** t), vel / (1 - b2 ** t)
        x = {"points": x["points"] - lr_p * mhat / (np.sqrt(vhat) + eps),
             "label_logits": x["label_logits"] - lr_l * g["label_logits"]}
        y = y_new
    for k in ("points", "label_logits"):
        np.testing.assert_allclose(np.asarray(x_run[k]), np.asarray(x[k]), rtol=1e-8,
                                   atol=1e-10)
    for k in ("W", "b"):
        np.testing.assert_allclose(np.asarray(y_run[k]), np.asarray(y[k]), rtol=1e-8,
                                   atol=1e-10)


def test_cold_start_run_with_given_optimizers_and_start_equals_the_loop_by_hand(x64):
    # Full batch: x <- x - beta d/dx F(x, Phi_K(y0, x)), Phi_K = K momentum-SGD steps from a
    # random y0, written out; the gradient of the re-training by jax.grad of the loop.
    pts, lab = tiny_images(30, dtype=np.float64)
    alpha, mu, beta, K, steps = 0.5, 0.5, 0.2, 6, 8
    key = jax.random.PRNGKey(5)
    y0 = idl.init_classifier(16, key=jax.random.PRNGKey(9), scale=0.1)
    x_run, y_run, _ = idl.cold_start_run(
        key, (pts, lab), num_learned=2, outer_steps=steps, inner_steps=K, inner_lr=alpha,
        inner_opt=optax.sgd(alpha, momentum=mu), outer_opt=optax.sgd(beta), y0=y0)
    inner, outer = _hand_grads(pts, lab)

    def phi(x_):
        y, v = y0, jax.tree_util.tree_map(jnp.zeros_like, y0)
        for _ in range(K):
            g = jax.grad(inner, argnums=1)(x_, y)
            v = jax.tree_util.tree_map(lambda v_, g_: mu * v_ + g_, v, g)
            y = jax.tree_util.tree_map(lambda y_, v_: y_ - alpha * v_, y, v)
        return y

    x = idl.init_learned(jax.random.split(key)[0], 2, 16)
    for _ in range(steps):
        g = jax.grad(lambda x_: outer(phi(x_)))(x)
        x = jax.tree_util.tree_map(lambda a, b: a - beta * b, x, g)
    for k in ("points", "label_logits"):
        np.testing.assert_allclose(np.asarray(x_run[k]), np.asarray(x[k]), rtol=1e-8,
                                   atol=1e-10)
    y = phi(x)
    for k in ("W", "b"):
        np.testing.assert_allclose(np.asarray(y_run[k]), np.asarray(y[k]), rtol=1e-8,
                                   atol=1e-10)


def test_cold_start_from_zero_predicts_at_most_two_classes_with_one_image(x64):
    # From W = 0, b = 0 every SGD step on one image v adds v^T g to W and g to b (the same
    # g), so W = v^T c and b = c: the logits of image u are (u . v + 1) c, whose arg-max is
    # arg-max c or arg-min c.
    pts, lab = tiny_images(40, dtype=np.float64)
    x, y, _ = idl.cold_start_run(jax.random.PRNGKey(0), (pts, lab), num_learned=1,
                                 outer_steps=20, inner_steps=30, inner_lr=0.5, outer_lr=0.05)
    logits = np.asarray(linear.apply(y, pts))
    c = np.asarray(y["b"])
    scale = np.asarray(pts) @ np.asarray(x["points"][0]) + 1.0
    np.testing.assert_allclose(logits, np.outer(scale, c), rtol=1e-9, atol=1e-12)
    assert set(logits.argmax(1)) <= {int(c.argmax()), int(c.argmin())}


def test_optimizer_arguments_are_checked():
    kw = dict(original=tiny_images(), num_learned=2, outer_steps=2, inner_lr=0.1)
    key = jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match="exactly one of `outer_lr`"):
        idl.warm_start_run(key, **kw)
    with pytest.raises(TypeError, match="exactly one of `outer_lr`"):
        idl.warm_start_run(key, outer_lr=0.1, outer_opt=optax.sgd(0.1), **kw)
    with pytest.raises(TypeError, match="`inner_opt` must be an optax"):
        idl.warm_start_run(key, outer_lr=0.1, inner_opt=0.1, **kw)
    with pytest.raises(ValueError, match="leave `inner_opt` unset"):
        idl.cold_start_run(key, outer_lr=0.1, inner_steps=2, inner_opt=optax.sgd(0.1),
                           batch_size=5, **kw)
    with pytest.raises(ValueError, match="leave `inner_opt` unset"):
        idl.augmentation_run(key, tiny_images(), tiny_images(), method="cold", outer_steps=1,
                             inner_lr=0.1, outer_lr=0.1, inner_opt=optax.sgd(0.1))
    with pytest.raises(TypeError, match="exactly one of `lr`"):
        idl.fit_classifier(tiny_images(), steps=1, lr=0.1, optimizer=optax.sgd(0.1))


# ----- shared minibatches, the noise ablation, shared sweep arguments ---------------------------


@pytest.mark.parametrize("run", [idl.warm_start_run, idl.cold_start_run])
def test_a_shared_batch_key_gives_every_run_the_same_minibatches(run):
    # With zero initial pixels (init noise 0) two keys start from the same learned data, so
    # they differ only through their minibatches: equal with one batch_key, not without.
    pts, lab = tiny_images()
    kw = dict(original=(pts, lab), num_learned=10, outer_steps=15, inner_lr=0.5,
              outer_lr=0.02, batch_size=8, init=dict(noise=0.0))
    if run is idl.cold_start_run:
        kw["inner_steps"] = 5
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    shared = jax.vmap(functools.partial(run, batch_key=jax.random.PRNGKey(9), **kw))(keys)[0]
    own = jax.vmap(functools.partial(run, **kw))(keys)[0]
    np.testing.assert_array_equal(np.asarray(shared["points"][0]),
                                  np.asarray(shared["points"][1]))
    assert float(jnp.abs(own["points"][0] - own["points"][1]).max()) > 1e-4


def test_starting_noise_scale_and_frozen_noise():
    b = idl.init_augmentation(400, noise_dim=8, noise_scale=0.3, key=jax.random.PRNGKey(0))["B"]
    # E[(B B^T)_pp] = s^2; the mean over 400 pixels of a chi^2_8 / 8 has relative sd 0.025
    assert abs(float(jnp.mean(jnp.sum(b ** 2, 1))) / 0.09 - 1) < 0.15
    with pytest.raises(TypeError, match="key"):
        idl.init_augmentation(4, noise_scale=0.3)
    with pytest.raises(ValueError, match="noise_scale"):
        idl.init_augmentation(4, noise_scale=-1.0)
    frozen = jnp.arange(6.0).reshape(3, 2)
    sample = idl.augmentation_sample(3, 2, n_val=20, batch_size=5,
                                     batch_key=jax.random.PRNGKey(1), frozen_noise=frozen)
    fresh = idl.augmentation_sample(3, 2, n_val=20, batch_size=5,
                                    batch_key=jax.random.PRNGKey(1))
    (n0, r0), (n1, _) = sample(jax.random.PRNGKey(2), 0), sample(jax.random.PRNGKey(3), 1)
    np.testing.assert_array_equal(np.asarray(n0), np.asarray(frozen))
    np.testing.assert_array_equal(np.asarray(n1), np.asarray(frozen))
    (f0, q0), (f1, q1) = fresh(jax.random.PRNGKey(2), 0), fresh(jax.random.PRNGKey(3), 0)
    np.testing.assert_array_equal(np.asarray(q0), np.asarray(r0))   # rows: the shared key's
    np.testing.assert_array_equal(np.asarray(q1), np.asarray(q0))
    assert float(jnp.abs(f0 - f1).max()) > 0                        # noise: the run's own
    with pytest.raises(ValueError, match="frozen_noise"):
        idl.augmentation_sample(3, 2, frozen_noise=jnp.zeros((2, 2)))


@pytest.mark.parametrize("method", ["warm", "cold"])
def test_augmentation_recorded_accuracy_and_frozen_noise(method):
    # The accuracy recorded after T/2 of T steps is the final accuracy of a T/2-step run
    # from the same key; freezing the noise changes the run (the noise mattered).
    train, val = tiny_images(20, seed=4), tiny_images(30, seed=5)
    kw = dict(train=train, validation=val, method=method, inner_lr=0.5, outer_lr=0.05,
              inner_steps=1 if method == "warm" else 5, noise_dim=3, noise_scale=0.5,
              batch_size=10, batch_key=jax.random.PRNGKey(3))
    evals = {"val": val}
    _, _, trace = jax.jit(functools.partial(idl.augmentation_run, outer_steps=20,
                                            eval_sets=evals, eval_every=10, **kw))(
        jax.random.PRNGKey(0))
    theta, y, _ = jax.jit(functools.partial(idl.augmentation_run, outer_steps=10, **kw))(
        jax.random.PRNGKey(0))
    assert trace["accuracy"]["val"].shape == (2,)
    direct = metrics.accuracy(linear.apply(y, val[0]), val[1])
    assert abs(float(trace["accuracy"]["val"][0]) - float(direct)) < 1e-6
    frozen, _, _ = jax.jit(functools.partial(idl.augmentation_run, outer_steps=10,
                                             freeze_noise=True, **kw))(jax.random.PRNGKey(0))
    assert float(jnp.abs(frozen["c"] - theta["c"]).max()) > 1e-4
    # a traced switch gives each static setting's run (one compilation for both)
    switch = jax.jit(lambda f: idl.augmentation_run(jax.random.PRNGKey(0), outer_steps=10,
                                                    freeze_noise=f, **kw)[0])
    for flag, want in ((True, frozen), (False, theta)):
        for name in want:
            np.testing.assert_allclose(np.asarray(switch(jnp.asarray(flag))[name]),
                                       np.asarray(want[name]), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="eval_sets"):
        idl.augmentation_run(jax.random.PRNGKey(0), outer_steps=10, eval_every=5, **kw)


def test_sharded_vmap_broadcasts_shared_arguments():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    run = lambda k, data: jax.random.normal(k, (2,)) @ data
    for data in (jnp.eye(2), 2.0 * jnp.eye(2)):     # the second call reuses the first's program
        np.testing.assert_allclose(np.asarray(runtime.sharded_vmap(run, keys, data)),
                                   np.asarray(jax.vmap(run, (0, None))(keys, data)), rtol=1e-6)


def test_old_homes_of_the_classifier_and_the_sweep_warn_and_agree():
    y = {"W": jnp.array([[1.0, 0.0], [0.0, 1.0]]), "b": jnp.zeros(2)}
    pts, lab = jnp.array([[1.0, 0.0], [1.0, 2.0]]), jnp.array([0, 0])
    with pytest.warns(DeprecationWarning, match="metrics.accuracy"):
        assert float(idl.accuracy(y, pts, lab)) == 0.5
    with pytest.warns(DeprecationWarning, match="linear.apply"):
        assert idl.classify is linear.apply
    with pytest.warns(DeprecationWarning, match="runtime.sharded_vmap"):
        assert idl.sharded_vmap is runtime.sharded_vmap
    with pytest.raises(AttributeError, match="no_such_name"):
        idl.no_such_name  # noqa: B018


# ----- the classifier trained on the original set directly ---------------------------------------


def _rows(batch_key, steps, batch_size, n):
    """The documented minibatch rule: step t draws randint(fold_in(batch_key, t))."""
    return [np.asarray(jax.random.randint(jax.random.fold_in(batch_key, t), (batch_size,), 0, n))
            for t in range(steps)]


def test_minimize_with_batches_takes_step_t_on_batch_t(x64):
    # SGD on 0.5 |p - c_t|^2: p <- p - lr (p - c_t), written out by hand.
    targets = np.arange(12.0).reshape(6, 2)
    p, losses = blo.minimize(lambda p, c: 0.5 * jnp.sum((p - c) ** 2), jnp.zeros(2), steps=6,
                             optimizer=optax.sgd(0.5), batches=jnp.asarray(targets))
    q, expected = np.zeros(2), []
    for c in targets:
        expected.append(0.5 * np.sum((q - c) ** 2))
        q = q - 0.5 * (q - c)
    np.testing.assert_allclose(np.asarray(p), q, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(losses), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="leading axis of length `steps`"):
        blo.minimize(lambda p, c: jnp.sum(p * c), jnp.zeros(2), steps=5,
                     optimizer=optax.sgd(0.5), batches=jnp.asarray(targets))


def test_fit_classifier_on_minibatches_equals_sgd_by_hand_on_warm_starts_rows(x64):
    pts, lab = tiny_images(30, dtype=np.float64)
    key, steps, batch, lr = jax.random.PRNGKey(4), 7, 5, 0.7
    y, losses = idl.fit_classifier((pts, lab), steps=steps, lr=lr, batch_size=batch,
                                   batch_key=key)
    P, onehot = np.asarray(pts), np.eye(10)[np.asarray(lab)]
    w, b, expected = np.zeros((16, 10)), np.zeros(10), []
    for r in _rows(key, steps, batch, 30):
        logits = P[r] @ w + b
        expected.append(np_cross_entropy(logits, onehot[r]))
        z = np.exp(logits - logits.max(1, keepdims=True))
        g = (z / z.sum(1, keepdims=True) - onehot[r]) / batch
        w, b = w - lr * P[r].T @ g, b - lr * g.sum(0)
    np.testing.assert_allclose(np.asarray(y["W"]), w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(losses), expected, rtol=1e-10)
    # Warm start with the same batch_key scores its outer objective on the same rows: with a
    # classifier that never moves (inner_opt sets every step to zero) it stays at y0, so its
    # outer loss at step t is y0's on those rows.
    y0 = idl.init_classifier(16, key=jax.random.PRNGKey(1), scale=1.0, dtype=jnp.float64)
    _, _, trace = idl.warm_start_run(jax.random.PRNGKey(0), (pts, lab), num_learned=1,
                                     outer_steps=steps, inner_lr=0.1, outer_lr=0.1, y0=y0,
                                     inner_opt=optax.set_to_zero(),
                                     batch_size=batch, batch_key=key)
    w0, b0 = np.asarray(y0["W"]), np.asarray(y0["b"])
    np.testing.assert_allclose(
        np.asarray(trace["outer_loss"]),
        [np_cross_entropy(P[r] @ w0 + b0, onehot[r]) for r in _rows(key, steps, batch, 30)],
        rtol=1e-10)


def test_fit_classifier_minibatch_arguments_are_checked():
    data = tiny_images()
    with pytest.raises(TypeError, match="`batch_key` .* is required with `batch_size`"):
        idl.fit_classifier(data, steps=2, lr=0.1, batch_size=4)
    with pytest.raises(TypeError, match="`batch_key` needs `batch_size`"):
        idl.fit_classifier(data, steps=2, lr=0.1, batch_key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="`batch_size` .* must not exceed"):
        idl.fit_classifier(data, steps=2, lr=0.1, batch_size=400,
                           batch_key=jax.random.PRNGKey(0))
