r"""Image dataset distillation and a data-augmentation net with a linear classifier (Table 3).

The paper's Table 3 and Fig. 9 train a **linear softmax classifier** ``y = {"W", "b"}``,
``logits = u W + b``, on learned data ``x`` and measure it on the data of the outer objective:

* **dataset distillation**: ``x = {"points": (m, d), "label_logits": (m, C)}``, ``m = 1`` or
  ``10`` learned images in total, each with a learned soft label ``softmax(l_i)`` ("1 learned
  image + 10-dim soft label (794 outer params)" on MNIST). The inner objective is the
  classifier's cross-entropy on the learned images, the outer one its cross-entropy on the
  *original set*, the first ``n_original = 10,000`` training images:

  .. math::

      f(x, y) = \frac1m \sum_{i=1}^m \mathrm{CE}\big(\tilde u_i W + b,\ \mathrm{softmax}
                (\ell_i)\big) + \frac{\lambda}{2}\lVert W\rVert^2,\qquad
      F(x, y) = \frac1N \sum_{j=1}^N \mathrm{CE}\big(u_j W + b,\ t_j\big);

* **data augmentation** (Table 3, right: "linear data-augmentation net in front of a
  classifier; 50 training points; full validation set"): the outer parameters
  ``theta = {"A", "B", "c"}`` of a linear augmentation net
  ``aug(u, eps) = u + A u + B eps + c`` (``eps ~ N(0, I_k)`` drawn afresh at every outer step,
  with ``blo``'s ``key``/``sample``) are tuned so that the classifier trained on the augmented
  50 training images does well on the validation set; ``theta = 0`` is the identity map.
  The paper does not give the net's exact form; this residual linear map of the image plus a
  learned linear map of noise is the book's choice.

What Table 3 reports is the accuracy on the outer objective's own data (the original set; the
validation set for the augmentation net), which warm start's weights have seen through every
past ``x``; :func:`evaluate` on the ``"test"`` split of :func:`prepare` shows how much of it
generalises.

Runs (:func:`warm_start_run`, :func:`cold_start_run`, :func:`augmentation_run`) are the loops
of :mod:`bilevel_lib.blo` (one ``lax.scan``), take a PRNG key first and are ``jit``- and
``vmap``-able over it; their optimizers are optax transformations (``outer_opt``,
``inner_opt``; :func:`learned_data_opt` gives images and soft labels their own);
:func:`bilevel_lib.runtime.sharded_vmap` runs such a sweep with its seed axis sharded over
every visible device.
"Warm-start + re-training" is :func:`retrain_accuracy`: a fresh classifier trained on the
final learned data alone. :func:`standardize` puts every split on standardized pixels (the
same linear model in other coordinates; :func:`raw_classifier` converts a classifier back).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _checks, blo, hypergrad, runtime
from ..models import linear, metrics
from . import distill, image_data

__all__ = [
    "NUM_CLASSES",
    "prepare",
    "standardize",
    "raw_classifier",
    "init_classifier",
    "classifier_loss",
    "evaluate",
    "init_learned",
    "learned_data_opt",
    "objectives",
    "warm_start_run",
    "cold_start_run",
    "retrain",
    "retrain_accuracy",
    "fit_classifier",
    "init_augmentation",
    "augment",
    "augmentation_objectives",
    "augmentation_sample",
    "augmentation_run",
    "augmentation_retrain_accuracy",
]

NUM_CLASSES = 10

# The validation split is always the last 10,000 training images (disjoint from the original
# set, which is a prefix of the training images).
_N_TRAIN = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000}


def prepare(name, *, n_original=10_000, n_val=10_000, download=True):
    r"""The splits of Table 3 as float32 rows in ``[0, 1]`` and int32 labels.

    * ``"original"``: the first ``n_original`` training images (the paper's outer objective
      uses 10,000);
    * ``"validation"``: the **last** ``n_val`` training images (10,000 by default), disjoint
      from the original set (so ``n_original + n_val`` may not exceed the training split);
    * ``"test"``: the whole test split (10,000 images).

    Args:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
      n_original: size of the original set (int >= 1).
      n_val: size of the validation split (int >= 1).
      download: passed to :func:`bilevel_lib.tasks.image_data.load`.

    Returns:
      A dict ``{"original": (points, labels), "validation": (...), "test": (...)}`` of
      float32 ``(n, d)`` rows (``d = 784`` for MNIST and Fashion-MNIST, 3072 for CIFAR-10) and
      int32 ``(n,)`` labels.

    Raises:
      ValueError: an unknown ``name``, or sizes that do not fit in the training split.

    Example:
      >>> prepare("mnist", n_original=55_000)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: `n_original` + `n_val` (65000) must not exceed the 60000 training images ...
      >>> splits = prepare("mnist", n_original=100)  # doctest: +SKIP
      >>> splits["original"][0].shape, splits["validation"][0].shape  # doctest: +SKIP
      ((100, 784), (10000, 784))
    """
    if name not in _N_TRAIN:
        raise ValueError(f"`name` must be one of {', '.join(map(repr, _N_TRAIN))}; got {name!r}.")
    n_original = _checks.check_int(n_original, "n_original", lowest=1)
    n_val = _checks.check_int(n_val, "n_val", lowest=1)
    n_train = _N_TRAIN[name]
    if n_original + n_val > n_train:
        raise ValueError(
            f"`n_original` + `n_val` ({n_original + n_val}) must not exceed the {n_train} "
            f"training images of {name!r}."
        )
    images, labels = image_data.load(name, "train", download=download)
    test_images, test_labels = image_data.load(name, "test", download=download)
    labels = np.asarray(labels, np.int32)
    return {
        "original": (image_data.as_float(images[:n_original]), labels[:n_original]),
        "validation": (image_data.as_float(images[n_train - n_val:]), labels[n_train - n_val:]),
        "test": (image_data.as_float(test_images), np.asarray(test_labels, np.int32)),
    }


def standardize(splits, *, fit="original"):
    r"""Standardized pixels: every split's rows as ``(u - mu) / s``, with ``mu`` the per-pixel
    mean and ``s`` the overall standard deviation of the split ``fit`` (not per pixel: pixels
    that never light up in ``fit`` would divide by zero).

    A linear classifier on standardized pixels *is* a linear classifier on raw pixels
    (:func:`raw_classifier` converts it), so the model class, its outer objective on the
    original set and the accuracies it can reach are unchanged. What changes is the geometry
    the gradient methods see: the inputs are centered and of unit scale, and a learned image
    lives in the same coordinates.

    Args:
      splits: ``{name: (points (n, d), labels (n,))}``, e.g. from :func:`prepare`.
      fit: the split whose statistics are used (the original set: the data the outer
        objective sees; the test split must not be used).

    Returns:
      ``(standardized splits, stats)`` with ``stats = {"mean": (d,), "scale": ()}`` (float32,
      the dtype of :func:`prepare`'s rows); labels are passed through.

    Raises:
      ValueError: ``fit`` is not a split, or its pixels are all equal (``s = 0``).

    Example:
      >>> import numpy as np
      >>> pts = np.array([[0.0, 2.0], [2.0, 4.0]], np.float32)
      >>> out, stats = standardize({"original": (pts, np.array([0, 1]))})
      >>> out["original"][0].tolist(), stats["mean"].tolist(), float(stats["scale"])
      ([[-1.0, -1.0], [1.0, 1.0]], [1.0, 3.0], 1.0)
    """
    if fit not in splits:
        raise ValueError(f"`fit` must be one of the splits ({', '.join(map(repr, splits))}); "
                         f"got {fit!r}.")
    ref = np.asarray(splits[fit][0], np.float64)
    if ref.ndim != 2 or ref.shape[0] < 1:
        raise ValueError(f"`splits[{fit!r}]` points must be (n >= 1, d) rows; "
                         f"got shape {ref.shape}.")
    mean = ref.mean(0)
    scale = float(np.sqrt(np.mean(np.square(ref - mean))))
    if not scale > 0:
        raise ValueError(f"the pixels of `splits[{fit!r}]` are all equal to their mean: "
                         "there is no scale to standardize by.")
    dtype = np.asarray(splits[fit][0]).dtype
    out = {name: (((np.asarray(pts, np.float64) - mean) / scale).astype(dtype), labels)
           for name, (pts, labels) in splits.items()}
    return out, {"mean": mean.astype(dtype), "scale": np.asarray(scale, dtype)}


def raw_classifier(y, stats):
    r"""The classifier on raw pixels whose logits equal those of ``y`` on standardized ones.

    With ``stats = {"mean": mu, "scale": s}`` from :func:`standardize`,

    .. math:: \frac{u - \mu}{s}\,W + b = u\,\frac{W}{s} + \Big(b - \frac{\mu W}{s}\Big),

    so ``raw_classifier(y, stats) = {"W": W / s, "b": b - mu @ W / s}``.

    Example:
      >>> import jax.numpy as jnp
      >>> y = {"W": jnp.eye(2), "b": jnp.zeros(2)}
      >>> r = raw_classifier(y, {"mean": jnp.array([1.0, 3.0]), "scale": jnp.asarray(2.0)})
      >>> r["W"].tolist(), r["b"].tolist()
      ([[0.5, 0.0], [0.0, 0.5]], [-0.5, -1.5])
    """
    W = y["W"] / stats["scale"]
    return {"W": W, "b": y["b"] - jnp.asarray(stats["mean"], W.dtype) @ W}


def init_classifier(dim, num_classes=NUM_CLASSES, *, key=None, scale=0.01, dtype=None):
    r"""The classifier of Table 3: :func:`bilevel_lib.models.linear.init` with ``C = 10``.

    Example:
      >>> p = init_classifier(4)
      >>> p["W"].shape, p["b"].shape
      ((4, 10), (10,))
    """
    return linear.init(dim, num_classes, key=key, scale=scale, dtype=dtype)


def classifier_loss(y, points, targets, *, weight_decay=0.0):
    r"""Mean cross-entropy of the linear classifier, plus ``weight_decay / 2 * ||W||^2``.

    .. math:: \ell(W, b) = -\frac1n \sum_n \sum_c p_{nc}\log\mathrm{softmax}(u_n W + b)_c
              + \frac{\lambda}{2}\lVert W\rVert_F^2

    Args:
      y: ``{"W": (d, C), "b": (C,)}``.
      points: ``(n, d)`` inputs.
      targets: int labels ``(n,)`` or soft labels ``(n, C)``.
      weight_decay: lambda >= 0 (the bias is not penalized).

    Example:
      >>> import jax.numpy as jnp
      >>> y = init_classifier(2, 2)                  # zero logits: CE = log 2
      >>> round(float(classifier_loss(y, jnp.ones((3, 2)), jnp.array([0, 1, 1]))), 5)
      0.69315
    """
    ce = distill.cross_entropy(linear.apply(y, points), targets)
    return ce + 0.5 * weight_decay * jnp.sum(jnp.square(y["W"]))


def accuracy(y, points, labels):
    """Deprecated: ``bilevel_lib.models.metrics.accuracy(linear.apply(y, points), labels)``."""
    warnings.warn("image_distill.accuracy(y, points, labels) is deprecated: use "
                  "bilevel_lib.models.metrics.accuracy(linear.apply(y, points), labels).",
                  DeprecationWarning, stacklevel=2)
    return metrics.accuracy(linear.apply(y, points), labels)


def evaluate(y, eval_sets):
    """Accuracy of the classifier ``y`` on each of ``eval_sets`` (``{name: (points, labels)}``).

    Example:
      >>> import jax.numpy as jnp
      >>> y = {"W": jnp.eye(2), "b": jnp.zeros(2)}
      >>> {k: float(v) for k, v in evaluate(y, {"a": (jnp.eye(2), jnp.array([0, 1]))}).items()}
      {'a': 1.0}
    """
    return {name: metrics.accuracy(linear.apply(y, pts), lab)
            for name, (pts, lab) in eval_sets.items()}


def _check_num_learned(num_learned, num_classes):
    num_learned = _checks.check_int(num_learned, "num_learned", lowest=1)
    if num_learned > num_classes and num_learned % num_classes:
        raise ValueError(
            f"too many learned images for the classes: `num_learned` ({num_learned}) must be "
            f"at most `num_classes` ({num_classes}) or a multiple of it, so that the initial "
            "labels i mod C give every class the same number of images (or at most one)."
        )
    return num_learned


def init_learned(key, num_learned, dim, *, num_classes=NUM_CLASSES, labels=None, noise=0.1,
                 label_scale=1.0):
    r"""Initial learned images and label logits ``{"points": (m, d), "label_logits": (m, C)}``.

    ``points = noise * N(0, 1)`` (from ``key``) and ``label_logits = label_scale *
    onehot(labels)``, so image i starts with the soft label ``softmax(label_scale e_{t_i})``.

    The rule on ``m = num_learned``: ``m <= C`` (at most one image a class; the default
    labels ``t_i = i`` are distinct) or ``m`` a multiple of ``C`` (the default ``t_i = i mod C``
    gives every class ``m / C`` images); otherwise "too many learned images for the classes".

    Args:
      key: PRNG key.
      num_learned: m (int >= 1; the paper uses 1 and 10).
      dim: d, the flattened image size.
      num_classes: C.
      labels: optional ``(m,)`` int initial labels in ``[0, C)`` (default ``i mod C``).
      noise: standard deviation of the initial pixels.
      label_scale: the initial logit of the labelled class (0: uniform soft labels).

    Returns:
      The dict ``x``; its soft labels are ``bilevel_lib.tasks.distill.soft_labels(
      x["label_logits"])``.

    Example:
      >>> import jax
      >>> x = init_learned(jax.random.PRNGKey(0), 1, 784)
      >>> x["points"].size + x["label_logits"].size     # the paper's 794 outer parameters
      794
      >>> init_learned(jax.random.PRNGKey(0), 15, 784)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: too many learned images for the classes: `num_learned` (15) must be at most ...
    """
    num_classes = _checks.check_int(num_classes, "num_classes", lowest=2)
    m = _check_num_learned(num_learned, num_classes)
    dim = _checks.check_int(dim, "dim", lowest=1)
    if labels is None:
        labels = np.arange(m) % num_classes
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (m,):
        raise ValueError(
            f"`labels` must be {m} int class indices (one per learned image); got "
            f"{labels.dtype} of shape {labels.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"`labels` must be class indices in [0, {num_classes}).")
    dtype = jnp.result_type(float)
    points = noise * jax.random.normal(key, (m, dim), dtype)
    logits = label_scale * jax.nn.one_hot(labels, num_classes, dtype=dtype)
    return {"points": points, "label_logits": logits}


def _check_data(points, labels, name):
    points, labels = jnp.asarray(points), jnp.asarray(labels)
    if points.ndim != 2:
        raise ValueError(f"`{name}` points must have shape (N, d); got {points.shape}.")
    if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.shape != points.shape[:1]:
        raise ValueError(
            f"`{name}` labels must be {points.shape[0]} int class indices; got {labels.dtype} "
            f"of shape {labels.shape}."
        )
    return points, labels


def objectives(original_points, original_labels, *, weight_decay=0.0):
    r"""Distillation objectives ``inner(x, y, batch=None)`` and ``outer(x, y, batch=None)``.

    ``inner`` is :func:`classifier_loss` on the learned images with their soft labels (see
    the module docstring); ``outer`` the cross-entropy on the original set, or on the rows
    ``batch`` (int indices) of it: the ``sample`` of a minibatched run passes them.

    Args:
      original_points: ``(N, d)`` float original images.
      original_labels: ``(N,)`` int labels.
      weight_decay: L2 penalty of the inner problem (0: the overparameterized one).

    Returns:
      ``(inner, outer)``.

    Example:
      >>> import jax.numpy as jnp
      >>> inner, outer = objectives(jnp.ones((3, 4)), jnp.array([0, 1, 2]))
      >>> x = {"points": jnp.ones((1, 4)), "label_logits": jnp.zeros((1, 10))}
      >>> y = init_classifier(4)
      >>> [round(float(v), 4) for v in (inner(x, y), outer(x, y), jnp.log(10.0))]
      [2.3026, 2.3026, 2.3026]
    """
    points, labels = _check_data(original_points, original_labels, "original")

    def inner(x, y, batch=None):
        del batch  # the learned data are the whole inner data set
        pts, targets = distill.learned_data(x)
        return classifier_loss(y, pts, targets, weight_decay=weight_decay)

    def outer(x, y, batch=None):
        del x  # the original data enter only through the classifier
        if batch is None:
            return distill.cross_entropy(linear.apply(y, points), labels)
        return distill.cross_entropy(linear.apply(y, points[batch]), labels[batch])

    return inner, outer


def _minibatch_sample(n, batch_size, shared_key=None):
    batch_size = _checks.check_int(batch_size, "batch_size", lowest=1)
    if batch_size > n:
        raise ValueError(f"`batch_size` ({batch_size}) must not exceed the data set size ({n}).")

    def sample(key, step):
        if shared_key is not None:
            # The same rows for every run of a vmapped sweep: XLA then multiplies one
            # minibatch by all the runs' classifiers at once (about 2x faster on the CPU
            # than a separate gather and product per run).
            key = jax.random.fold_in(shared_key, step)
        # With replacement: `choice(..., replace=False)` shuffles all n indices at every
        # step, which made a minibatch step slower than a full-batch one on the CPU.
        return None, jax.random.randint(key, (batch_size,), 0, n)

    return sample


def _optimizers(outer_lr, outer_opt, inner_lr, inner_opt, box=None):
    """The run's ``(outer_opt, inner_opt)``: the given optax transformations or the defaults."""
    if (outer_lr is None) == (outer_opt is None):
        raise TypeError("give exactly one of `outer_lr` (for the default optax.adam(outer_lr)) "
                        "and `outer_opt` (an optax transformation).")
    outer_opt = optax.adam(outer_lr) if outer_opt is None else outer_opt
    inner_opt = optax.sgd(inner_lr) if inner_opt is None else inner_opt
    for opt, name in ((outer_opt, "outer_opt"), (inner_opt, "inner_opt")):
        if not (hasattr(opt, "init") and hasattr(opt, "update")):
            raise TypeError(f"`{name}` must be an optax.GradientTransformation; got "
                            f"{type(opt).__name__}.")
    if box is not None:
        outer_opt = optax.chain(outer_opt, distill.keep_in_box(*box))
    return outer_opt, inner_opt


def learned_data_opt(points, label_logits):
    r"""One optax transformation for the learned data, another for their soft-label logits.

    ``optax.multi_transform`` over ``x = {"points", "label_logits"}``: the images move with
    ``points`` and the logits ``\ell_i`` with ``label_logits``, e.g. two Adams with their own
    step sizes. Pass it as ``outer_opt`` of :func:`warm_start_run` or :func:`cold_start_run`.

    Args:
      points: optax ``GradientTransformation`` for ``x["points"]``.
      label_logits: optax ``GradientTransformation`` for ``x["label_logits"]``.

    Returns:
      An optax ``GradientTransformation`` for the dict ``x``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> opt = learned_data_opt(optax.sgd(0.5), optax.sgd(2.0))
      >>> x = {"points": jnp.ones(2), "label_logits": jnp.ones(3)}
      >>> g = {"points": jnp.ones(2), "label_logits": jnp.ones(3)}
      >>> u, _ = opt.update(g, opt.init(x), x)
      >>> u["points"].tolist(), u["label_logits"].tolist()
      ([-0.5, -0.5], [-2.0, -2.0, -2.0])
    """
    return optax.multi_transform(
        {"points": points, "label_logits": label_logits},
        lambda x: {k: k for k in x})


def _slim(trace, keep_points=False):
    # The learned images stacked over T steps are T m d floats: keep the soft-label logits
    # (paper Fig. 9b) and drop the images (unless asked), which jit then never materializes.
    trace = dict(trace)
    x = trace.pop("x")
    trace["label_logits"] = x["label_logits"]
    if keep_points:
        trace["points"] = x["points"]
    if "monitor" in trace:
        trace["accuracy"] = trace.pop("monitor")
    return trace


_RUN_ARGS = r"""
    Args:
      key: PRNG key: the learned images' initialization (and the minibatches).
      original: ``(points (N, d), labels (N,))``, the original set of the outer objective.
      num_learned: m, learned images in total (see :func:`init_learned` for the rule).
      outer_steps: T (static int).
      inner_lr: inner SGD step size alpha (the step the hypergradient differentiates).
      outer_lr: step size of the default outer optimizer ``optax.adam(outer_lr)``; give it
        or ``outer_opt``, not both.
      outer_opt: optax ``GradientTransformation`` for ``x`` (e.g. ``optax.adam(1e-2,
        eps=1e-4)``, or :func:`learned_data_opt` for separate images and labels).
      inner_opt: optax ``GradientTransformation`` for the classifier (default
        ``optax.sgd(inner_lr)``).
      batch_size: outer minibatch of the original set per step, drawn with replacement
        (``None``: all of it).
      batch_key: optional PRNG key of the minibatches (default: one split from ``key``).
        Give every run of a sweep the same one and they all see the same minibatch at
        each step, which a vmapped sweep computes about twice as fast on the CPU.
      weight_decay: L2 penalty of the inner problem.
      box: optional ``(low, high)``: keep the learned pixels in this box
        (``bilevel_lib.tasks.distill.keep_in_box``).
      init: keyword arguments of :func:`init_learned` (``noise``, ``label_scale``,
        ``labels``).
      eval_sets: optional ``{name: (points, labels)}``: record accuracies during the run
        (paper Fig. 9a) in ``trace["accuracy"]``: ``"model"``, the run's own classifier,
        and, with ``retrain``, ``"retrained"``, a fresh classifier trained on the current
        learned data (:func:`retrain_accuracy`), each ``{name: (T / eval_every,)}``.
      eval_every: record after every that many outer steps (a divisor of T).
      retrain: keyword arguments of :func:`retrain_accuracy` (``steps``, ``lr``, ...).
      y0: the classifier the run starts from (default: zero weights and bias; e.g.
        :func:`init_classifier` with a ``key`` for a random start). Cold start re-trains
        from it at every outer step.
      trace_points: also keep the learned images of every step, ``trace["points"]``
        ``(T, m, d)`` (memory T m d floats).
"""


def warm_start_run(key, original, *, num_learned, outer_steps, inner_lr, outer_lr=None,
                   outer_opt=None, inner_opt=None, inner_steps=1, batch_size=None,
                   batch_key=None, weight_decay=0.0, box=None, init=None, y0=None,
                   eval_sets=None, eval_every=None, retrain=None, trace_points=False):
    return _distill_run(key, original, num_learned=num_learned, outer_steps=outer_steps,
                        inner_lr=inner_lr, outer_lr=outer_lr, outer_opt=outer_opt,
                        inner_opt=inner_opt, inner_steps=inner_steps,
                        batch_size=batch_size, batch_key=batch_key,
                        weight_decay=weight_decay, box=box, init=init,
                        y0=y0, warm=True, eval_sets=eval_sets, eval_every=eval_every,
                        retrain=retrain, trace_points=trace_points)


warm_start_run.__doc__ = r"""Alternating warm-start distillation (the paper's "warm-start").

    :func:`bilevel_lib.blo.warm_start` from the zero classifier (or ``y0``): ``inner_steps``
    steps of ``inner_opt`` (SGD of step ``inner_lr`` by default) on the learned data, then one
    step of ``outer_opt`` (Adam of step ``outer_lr`` by default) on ``x`` along the
    hypergradient of one unrolled SGD step of size ``inner_lr``
    (``bilevel_lib.hypergrad.unroll``, ``steps=1``), ``y`` carried over:

    .. math:: y_{t+1} = y_t - \alpha\nabla_y f(x_t, y_t),\qquad
              x_{t+1} = x_t + \mathrm{opt}\Big(\tfrac{d}{dx}F\big(x, y_{t+1}(x)\big)\Big)

    With another ``inner_opt`` the hypergradient still differentiates the SGD step.
    """ + _RUN_ARGS + r"""
      inner_steps: inner steps per outer step (1: alternating).

    Returns:
      ``(x, y, trace)``: the final learned data, the classifier (which has seen every past
      ``x``: evaluate it with :func:`evaluate`), and ``trace`` of ``blo.warm_start`` with
      ``"label_logits"`` ``(T, m, C)`` in place of ``"x"``. Jit it (``functools.partial``
      the keywords); ``jax.vmap`` it over keys.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> pts = jnp.array([[1.0, 0.0], [0.0, 1.0]] * 5)
      >>> lab = jnp.array([0, 1] * 5)
      >>> x, y, tr = warm_start_run(jax.random.PRNGKey(0), (pts, lab), num_learned=2,
      ...     outer_steps=200, inner_lr=0.5, outer_lr=0.05)
      >>> float(metrics.accuracy(linear.apply(y, pts), lab)), tr["label_logits"].shape
      (1.0, (200, 2, 10))
    """


def cold_start_run(key, original, *, num_learned, outer_steps, inner_steps, inner_lr,
                   outer_lr=None, outer_opt=None, inner_opt=None, batch_size=None,
                   batch_key=None, weight_decay=0.0, box=None, init=None, y0=None,
                   eval_sets=None, eval_every=None, retrain=None, trace_points=False):
    return _distill_run(key, original, num_learned=num_learned, outer_steps=outer_steps,
                        inner_lr=inner_lr, outer_lr=outer_lr, outer_opt=outer_opt,
                        inner_opt=inner_opt, inner_steps=inner_steps,
                        batch_size=batch_size, batch_key=batch_key,
                        weight_decay=weight_decay, box=box, init=init,
                        y0=y0, warm=False, eval_sets=eval_sets, eval_every=eval_every,
                        retrain=retrain, trace_points=trace_points)


cold_start_run.__doc__ = r"""Cold-start distillation: re-train from zero at every outer step.

    ``y_t = Phi_K(0, x_t)`` (``inner_steps = K`` SGD steps from the zero classifier) and an
    Adam step on ``x`` along the exact gradient of ``x -> F(x, Phi_K(0, x))``:
    :func:`bilevel_lib.blo.cold_start_unrolled` (full batch), or
    :func:`bilevel_lib.blo.cold_start` with ``distill.full_unroll`` and minibatches.
    """ + _RUN_ARGS + r"""
      inner_steps: K, the re-training length (static int).

    Returns:
      ``(x, y, trace)``: the final learned data, the classifier re-trained on them (from
      zero), and the trace (``"label_logits"`` ``(T, m, C)`` in place of ``"x"``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> pts = jnp.array([[1.0, 0.0], [0.0, 1.0]] * 5)
      >>> lab = jnp.array([0, 1] * 5)
      >>> x, y, tr = cold_start_run(jax.random.PRNGKey(0), (pts, lab), num_learned=2,
      ...     outer_steps=50, inner_steps=20, inner_lr=0.5, outer_lr=0.05)
      >>> float(metrics.accuracy(linear.apply(y, pts), lab)), tr["outer_loss"].shape
      (1.0, (50,))
    """


def _monitor(eval_sets, eval_every, retrain, outer_steps):
    if eval_sets is None:
        if eval_every is not None or retrain is not None:
            raise TypeError("`eval_every` and `retrain` need `eval_sets`.")
        return {}
    eval_sets = {name: _check_data(*pair, f"eval_sets[{name!r}]")
                 for name, pair in dict(eval_sets).items()}
    if eval_every is None:
        raise TypeError("`eval_every` is required with `eval_sets`.")
    eval_every = _checks.check_int(eval_every, "eval_every", lowest=1)
    if outer_steps % eval_every:
        raise ValueError(f"`outer_steps` ({outer_steps}) must be a multiple of `eval_every` "
                         f"({eval_every}).")

    def monitor(x, y):
        out = {"model": evaluate(y, eval_sets)}
        if retrain is not None:
            out["retrained"] = retrain_accuracy(x, eval_sets, **retrain)
        return out

    return dict(monitor=monitor, monitor_every=eval_every)


def _distill_run(key, original, *, num_learned, outer_steps, inner_lr, outer_lr, outer_opt,
                 inner_opt, inner_steps, batch_size, batch_key, weight_decay, box, init, y0,
                 warm,
                 eval_sets, eval_every, retrain, trace_points):
    points, labels = _check_data(*original, "original")
    m = _check_num_learned(num_learned, NUM_CLASSES)
    if m > points.shape[0]:
        raise ValueError(
            f"`num_learned` ({m}) exceeds the original set ({points.shape[0]} images): that is "
            "anti-distillation, not distillation."
        )
    init_key, run_key = jax.random.split(key)
    x0 = init_learned(init_key, m, points.shape[1], **(init or {}))
    if y0 is None:
        y0 = init_classifier(points.shape[1], NUM_CLASSES)
    inner, outer = objectives(points, labels, weight_decay=weight_decay)
    sample = None if batch_size is None else _minibatch_sample(points.shape[0], batch_size,
                                                               batch_key)
    if not warm and sample is not None and inner_opt is not None:
        raise ValueError("cold start with `batch_size` differentiates SGD re-training of step "
                         "`inner_lr`: leave `inner_opt` unset (or use the full batch).")
    outer_opt, inner_opt = _optimizers(outer_lr, outer_opt, inner_lr, inner_opt, box)
    common = dict(outer_opt=outer_opt, inner_opt=inner_opt,
                  outer_steps=outer_steps, inner_steps=inner_steps)
    if sample is not None:
        common.update(key=run_key, sample=sample)
    common.update(_monitor(eval_sets, eval_every, retrain, outer_steps))
    if warm:
        hg = functools.partial(hypergrad.unroll, steps=1, lr=inner_lr)
        x, y, trace = blo.warm_start(inner, outer, x0, y0, hypergrad=hg, **common)
    elif sample is None:
        x, y, trace = blo.cold_start_unrolled(inner, outer, x0, y0, **common)
    else:
        hg = distill.full_unroll(y0, steps=inner_steps, lr=inner_lr)
        x, _, trace = blo.cold_start(inner, outer, x0, y0, hypergrad=hg, **common)
        y = blo.inner_gd(inner, x, y0, lr=inner_lr, steps=inner_steps)
    return x, y, _slim(trace, trace_points)


def retrain(x, *, steps, lr, weight_decay=0.0, y0=None):
    r"""Train a fresh linear classifier on the learned data ``x`` alone (SGD from ``y0``).

    The paper's "re-training": :func:`bilevel_lib.blo.minimize` of ``f(x, .)`` (the inner
    objective of :func:`objectives`) from ``y0`` (default: zero).

    Args:
      x: ``{"points": (m, d), "label_logits": (m, C)}``.
      steps: SGD steps (static int).
      lr: step size.
      weight_decay: L2 penalty lambda (> 0 makes the problem strongly convex).
      y0: starting classifier (default zeros).

    Returns:
      ``(y, losses)``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = {"points": jnp.eye(2), "label_logits": jnp.array([[5.0, 0.0], [0.0, 5.0]])}
      >>> y, losses = retrain(x, steps=100, lr=1.0)
      >>> acc = metrics.accuracy(linear.apply(y, jnp.eye(2)), jnp.array([0, 1]))
      >>> float(acc), bool(losses[-1] < losses[0])
      (1.0, True)
    """
    pts, targets = distill.learned_data(x)
    if y0 is None:
        y0 = init_classifier(pts.shape[1], targets.shape[1], dtype=pts.dtype)
    return blo.minimize(
        lambda y: classifier_loss(y, pts, targets, weight_decay=weight_decay), y0,
        steps=steps, optimizer=optax.sgd(lr))


def retrain_accuracy(x, eval_sets, *, steps, lr, weight_decay=0.0):
    """Accuracy on each of ``eval_sets`` of the classifier :func:`retrain` fits to ``x``.

    "Warm-start + re-training" of Table 3 when ``x`` is a warm-start run's learned data.
    Jittable and vmappable over ``x``.

    Returns:
      ``{name: accuracy}`` for ``eval_sets = {name: (points, labels)}``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = {"points": jnp.eye(2), "label_logits": jnp.array([[5.0, 0.0], [0.0, 5.0]])}
      >>> acc = retrain_accuracy(x, {"train": (jnp.eye(2), jnp.array([0, 1]))}, steps=50, lr=1.0)
      >>> float(acc["train"])
      1.0
    """
    y, _ = retrain(x, steps=steps, lr=lr, weight_decay=weight_decay)
    return evaluate(y, eval_sets)


def fit_classifier(data, *, steps, lr=None, optimizer=None, weight_decay=0.0, batch_size=None,
                   batch_key=None):
    r"""Train the linear classifier on ``data`` itself: the reference a distillation aims at.

    ``optimizer`` (default ``optax.sgd(lr)``; give ``lr`` or ``optimizer``) from the zero
    classifier on the cross-entropy of ``data = (points, labels)``
    (:func:`bilevel_lib.blo.minimize`): full-batch, or with ``batch_size`` on minibatches
    drawn with replacement, step ``t`` on the rows ``randint(fold_in(batch_key, t))`` that
    :func:`warm_start_run` with the same ``batch_key`` and ``batch_size`` puts in its outer
    objective at step ``t``. On Table 3's original set this measures what a classifier that
    sees the original data *directly* reaches on it, at a given number of steps.

    Args:
      data: ``(points (N, d), labels (N,))``.
      steps: optimizer steps (static int).
      lr: step size of ``optax.sgd(lr)``; give it or ``optimizer``, not both.
      optimizer: optax ``GradientTransformation``.
      weight_decay: L2 penalty lambda.
      batch_size: rows per step (``None``: all of them). The row indices of all steps are
        drawn before the loop (``steps * batch_size`` ints).
      batch_key: PRNG key of the minibatches (required with ``batch_size``).

    Returns:
      ``(y, losses)``: the classifier and the loss before each step (on that step's rows).

    Example:
      >>> import jax.numpy as jnp
      >>> y, losses = fit_classifier((jnp.eye(3), jnp.array([0, 1, 2])), steps=200, lr=1.0)
      >>> acc = metrics.accuracy(linear.apply(y, jnp.eye(3)), jnp.array([0, 1, 2]))
      >>> float(acc), bool(losses[-1] < 0.1)
      (1.0, True)
    """
    pts, lab = _check_data(*data, "data")
    if (lr is None) == (optimizer is None):
        raise TypeError("give exactly one of `lr` (for optax.sgd(lr)) and `optimizer`.")
    steps = _checks.check_steps(steps, "steps")
    optimizer = optax.sgd(lr) if optimizer is None else optimizer
    y0 = init_classifier(pts.shape[1], NUM_CLASSES, dtype=pts.dtype)
    if batch_size is None:
        if batch_key is not None:
            raise TypeError("`batch_key` needs `batch_size` (the full batch draws nothing).")
        return blo.minimize(lambda y: classifier_loss(y, pts, lab, weight_decay=weight_decay),
                            y0, steps=steps, optimizer=optimizer)
    if batch_key is None:
        raise TypeError("`batch_key` (a PRNG key) is required with `batch_size`.")
    sample = _minibatch_sample(pts.shape[0], batch_size, batch_key)
    rows = jax.vmap(lambda t: sample(None, t)[1])(jnp.arange(steps))
    return blo.minimize(
        lambda y, r: classifier_loss(y, pts[r], lab[r], weight_decay=weight_decay), y0,
        steps=steps, optimizer=optimizer, batches=rows)


# ---------------------------------------------------------------------------------------------
# The data-augmentation net
# ---------------------------------------------------------------------------------------------


def init_augmentation(dim, *, noise_dim=8, noise_scale=0.0, key=None, diagonal=False,
                      dtype=None):
    r"""The starting augmentation ``theta = {"A": 0 (d, d), "B": (d, k), "c": 0 (d,)}``.

    With ``diagonal``, ``A`` is a ``(d,)`` vector of per-pixel gains (``augment`` then
    multiplies pixel p by ``1 + A_p``) instead of a full ``d x d`` map. ``B = 0`` by
    default: the identity map, no augmentation. With ``noise_scale = s > 0``
    (and a ``key``), ``B`` has i.i.d. ``N(0, s^2 / k)`` entries, so the net starts as a
    random augmentation that adds to each pixel Gaussian noise of variance about ``s^2``
    (``E[(B B^T)_{pp}] = s^2``), whose scale and directions the outer problem then tunes.

    Example:
      >>> theta = init_augmentation(784, noise_dim=8)
      >>> sum(v.size for v in theta.values()), float(abs(theta["B"]).sum())
      (621712, 0.0)
      >>> import jax
      >>> b = init_augmentation(784, noise_scale=0.5, key=jax.random.PRNGKey(0))["B"]
      >>> bool(abs(float((b ** 2).sum(1).mean()) - 0.25) < 0.02)
      True
      >>> init_augmentation(784, diagonal=True)["A"].shape
      (784,)
    """
    dim = _checks.check_int(dim, "dim", lowest=1)
    noise_dim = _checks.check_int(noise_dim, "noise_dim", lowest=1)
    if not noise_scale >= 0:
        raise ValueError(f"`noise_scale` must be >= 0; got {noise_scale}.")
    dtype = dtype or jnp.result_type(float)
    b = jnp.zeros((dim, noise_dim), dtype)
    if noise_scale:
        if key is None:
            raise TypeError("`key` (a PRNG key) is required with `noise_scale` > 0.")
        b = noise_scale / np.sqrt(noise_dim) * jax.random.normal(key, (dim, noise_dim), dtype)
    a = jnp.zeros((dim,) if diagonal else (dim, dim), dtype)
    return {"A": a, "B": b, "c": jnp.zeros((dim,), dtype)}


def augment(theta, points, noise):
    r"""The linear augmentation net ``aug(u, eps) = u + A u + B eps + c``, row by row.

    A residual linear map of the image plus a learned linear function of Gaussian noise
    ``eps`` (fresh at each step), so ``theta = 0`` is the identity and ``B`` sets the
    (learned, image-space) covariance ``B B^T`` of the random augmentation. A ``(d,)``
    vector ``A`` is the diagonal map ``diag(A)``: per-pixel gains.

    Args:
      theta: ``{"A": (d, d) or (d,), "B": (d, k), "c": (d,)}``.
      points: ``(n, d)``.
      noise: ``(n, k)``.

    Example:
      >>> import jax.numpy as jnp
      >>> theta = {"A": jnp.eye(2), "B": jnp.ones((2, 1)), "c": jnp.zeros(2)}
      >>> augment(theta, jnp.array([[1.0, 2.0]]), jnp.array([[0.5]])).tolist()
      [[2.5, 4.5]]
      >>> theta["A"] = jnp.array([1.0, 1.0])                  # diag(A) = I, as above
      >>> augment(theta, jnp.array([[1.0, 2.0]]), jnp.array([[0.5]])).tolist()
      [[2.5, 4.5]]
    """
    a = theta["A"]
    mapped = points * a if jnp.ndim(a) == 1 else points @ a.T
    return points + mapped + noise @ theta["B"].T + theta["c"]


def augmentation_objectives(train, validation, *, weight_decay=0.0):
    r"""``inner(theta, y, noise)`` on the augmented training set, ``outer`` on validation.

    .. math::

        f(\theta, y) = \mathrm{CE}\big(\mathrm{aug}_\theta(U, \varepsilon) W + b, t\big)
                       + \tfrac{\lambda}{2}\lVert W\rVert^2,\qquad
        F(\theta, y) = \mathrm{CE}(V W + b, s)

    ``outer(theta, y, batch=None)`` takes optional int indices of the validation rows.

    Args:
      train: ``(points (n, d), labels (n,))`` (the paper uses 50 training images).
      validation: ``(points, labels)`` (the paper: "full validation set").
      weight_decay: inner L2 penalty.

    Example:
      >>> import jax.numpy as jnp
      >>> inner, outer = augmentation_objectives((jnp.ones((2, 3)), jnp.array([0, 1])),
      ...                                        (jnp.ones((1, 3)), jnp.array([2])))
      >>> theta, y = init_augmentation(3, noise_dim=1), init_classifier(3)
      >>> round(float(inner(theta, y, jnp.zeros((2, 1)))), 4)     # log 10
      2.3026
    """
    train_pts, train_lab = _check_data(*train, "train")
    val_pts, val_lab = _check_data(*validation, "validation")
    if train_pts.shape[1] != val_pts.shape[1]:
        raise ValueError(
            f"`train` and `validation` images differ in size: {train_pts.shape[1]} vs "
            f"{val_pts.shape[1]}."
        )

    def inner(theta, y, noise):
        return classifier_loss(y, augment(theta, train_pts, noise), train_lab,
                               weight_decay=weight_decay)

    def outer(theta, y, batch=None):
        del theta  # the validation images are not augmented
        if batch is None:
            return distill.cross_entropy(linear.apply(y, val_pts), val_lab)
        return distill.cross_entropy(linear.apply(y, val_pts[batch]), val_lab[batch])

    return inner, outer


def augmentation_sample(n_train, noise_dim, *, n_val=None, batch_size=None, batch_key=None,
                        frozen_noise=None):
    """``sample(key, step) -> (noise (n_train, k), validation rows or None)`` for ``blo``.

    Fresh standard-normal noise for every training image at every outer step (drawn from
    ``key``, which ``blo`` folds with the step), and a minibatch of ``batch_size`` validation
    indices out of ``n_val``, drawn with replacement (``None``: the full validation set).

    Args:
      n_train, noise_dim: the noise is ``(n_train, noise_dim)``.
      n_val: validation set size (required with ``batch_size``).
      batch_size: validation rows per step (``None``: all of them).
      batch_key: optional PRNG key of the validation rows: the same rows at step t for
        every run given this key (a fair comparison of two methods, a faster sweep).
      frozen_noise: optional ``(n_train, noise_dim)`` array used at *every* step in place of
        fresh noise (the ablation that turns the augmentation into a fixed data set).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> s = augmentation_sample(50, 8)
      >>> noise, rows = s(jax.random.PRNGKey(0), 0)
      >>> noise.shape, rows is None
      ((50, 8), True)
      >>> s = augmentation_sample(2, 1, n_val=9, batch_size=4, batch_key=jax.random.PRNGKey(1),
      ...                         frozen_noise=jnp.ones((2, 1)))
      >>> (n0, r0), (n1, r1) = s(jax.random.PRNGKey(2), 0), s(jax.random.PRNGKey(3), 0)
      >>> bool((r0 == r1).all()), n0.ravel().tolist()
      (True, [1.0, 1.0])
    """
    n_train = _checks.check_int(n_train, "n_train", lowest=1)
    noise_dim = _checks.check_int(noise_dim, "noise_dim", lowest=1)
    if batch_size is not None and n_val is None:
        raise ValueError("`n_val` (the validation set size) is required with `batch_size`.")
    if frozen_noise is not None and jnp.shape(frozen_noise) != (n_train, noise_dim):
        raise ValueError(f"`frozen_noise` must have shape {(n_train, noise_dim)}; got "
                         f"{jnp.shape(frozen_noise)}.")
    rows = None if batch_size is None else _minibatch_sample(n_val, batch_size, batch_key)

    def sample(key, step):
        noise_key, rows_key = jax.random.split(key)
        if frozen_noise is None:
            noise = jax.random.normal(noise_key, (n_train, noise_dim), jnp.result_type(float))
        else:
            noise = jnp.asarray(frozen_noise)
        return noise, (None if rows is None else rows(rows_key, step)[1])

    return sample


def augmentation_run(key, train, validation, *, method="warm", outer_steps, inner_lr,
                     outer_lr=None, outer_opt=None, inner_opt=None, inner_steps=1, noise_dim=8,
                     noise_scale=0.0, diagonal=False, freeze_noise=False, batch_size=None,
                     batch_key=None, weight_decay=0.0, eval_sets=None, eval_every=None):
    r"""Tune the linear augmentation net on the validation set (Table 3, right).

    ``method="warm"``: :func:`bilevel_lib.blo.warm_start` with a one-step unrolled
    hypergradient (alternating steps, the classifier carried over); ``"cold"``:
    :func:`bilevel_lib.blo.cold_start` re-training the classifier from zero for
    ``inner_steps`` steps each outer step with ``distill.full_unroll``. Both draw the
    augmentation noise of each step with ``key`` and :func:`augmentation_sample`; a
    cold-start re-training uses its step's noise in all its inner steps.

    Args:
      key: PRNG key of the noise, of the starting ``B`` (with ``noise_scale``) and of the
        validation minibatches (unless ``batch_key``).
      train, validation: ``(points, labels)`` pairs.
      method: ``"warm"`` or ``"cold"``.
      outer_steps: T; inner_steps: inner SGD steps per outer step (static ints).
      inner_lr: inner SGD step size (the step the hypergradient differentiates).
      outer_lr: step size of the default ``optax.adam(outer_lr)`` for ``theta``; or
      outer_opt: any optax ``GradientTransformation`` for ``theta`` (give one of the two).
      inner_opt: optax ``GradientTransformation`` of warm start's classifier steps (default
        ``optax.sgd(inner_lr)``; cold start re-trains with SGD of step ``inner_lr``).
      noise_dim: k; batch_size: validation rows per step, drawn with replacement
        (``None``: all).
      noise_scale: the starting ``B`` of :func:`init_augmentation` (0: no noise at first).
      diagonal: per-pixel gains ``A`` (``(d,)``) instead of a full ``d x d`` map.
      freeze_noise: draw the noise once and use it at every step (an ablation: the net then
        maps 50 fixed noisy images, a learned data set rather than an augmentation). A
        traced boolean works too: a sweep over both settings compiles once.
      batch_key: optional PRNG key of the validation minibatches (see
        :func:`augmentation_sample`): warm and cold start given the same one see the same
        validation rows at every step.
      weight_decay: inner L2 penalty.
      eval_sets, eval_every: optional ``{name: (points, labels)}`` and a divisor of T:
        record the accuracy of the classifier (carried over, or re-trained) on each set
        after every ``eval_every`` outer steps in ``trace["accuracy"]``, ``{name: (T /
        eval_every,)}``: the convergence curve.

    Returns:
      ``(theta, y, trace)`` of ``blo`` (``trace`` without the stacked ``theta``); ``y`` is
      the carried-over classifier (warm) or the last step's re-trained one (cold).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> pts = jnp.array([[1.0, 0.0], [0.0, 1.0]]); lab = jnp.array([0, 1])
      >>> th, y, tr = augmentation_run(jax.random.PRNGKey(0), (pts, lab), (pts, lab),
      ...     outer_steps=100, inner_lr=0.5, outer_lr=0.01, noise_dim=2)
      >>> float(metrics.accuracy(linear.apply(y, pts), lab)), tr["outer_loss"].shape
      (1.0, (100,))
    """
    if method not in ("warm", "cold"):
        raise ValueError(f"`method` must be 'warm' or 'cold'; got {method!r}.")
    inner, outer = augmentation_objectives(train, validation, weight_decay=weight_decay)
    train_pts = jnp.asarray(train[0])
    n_val = jnp.shape(validation[0])[0]
    init_key, noise_key, run_key = jax.random.split(key, 3)
    theta0 = init_augmentation(train_pts.shape[1], noise_dim=noise_dim,
                               noise_scale=noise_scale, key=init_key, diagonal=diagonal)
    y0 = init_classifier(train_pts.shape[1], NUM_CLASSES)
    static_freeze = isinstance(freeze_noise, (bool, np.bool_))
    frozen = None
    if not static_freeze or freeze_noise:
        frozen = jax.random.normal(noise_key, (train_pts.shape[0], noise_dim), theta0["B"].dtype)
    sample = augmentation_sample(train_pts.shape[0], noise_dim, n_val=n_val,
                                 batch_size=batch_size, batch_key=batch_key,
                                 frozen_noise=frozen if static_freeze else None)
    if not static_freeze:
        fresh = sample

        def sample(key, step):
            noise, rows = fresh(key, step)
            return jnp.where(freeze_noise, frozen, noise), rows
    if method == "cold" and inner_opt is not None:
        raise ValueError("cold start differentiates SGD re-training of step `inner_lr`: leave "
                         "`inner_opt` unset.")
    outer_opt, inner_opt = _optimizers(outer_lr, outer_opt, inner_lr, inner_opt)
    common = dict(outer_opt=outer_opt, inner_opt=inner_opt,
                  outer_steps=outer_steps, inner_steps=inner_steps, key=run_key, sample=sample)
    if eval_sets is not None:
        sets = {name: _check_data(*pair, f"eval_sets[{name!r}]")
                for name, pair in dict(eval_sets).items()}
        common.update(_monitor(sets, eval_every, None, outer_steps))
    elif eval_every is not None:
        raise TypeError("`eval_every` needs `eval_sets`.")
    if method == "warm":
        hg = functools.partial(hypergrad.unroll, steps=1, lr=inner_lr)
        theta, y, trace = blo.warm_start(inner, outer, theta0, y0, hypergrad=hg, **common)
    else:
        hg = distill.full_unroll(y0, steps=inner_steps, lr=inner_lr)
        theta, y, trace = blo.cold_start(inner, outer, theta0, y0, hypergrad=hg, **common)
    trace = {k: v for k, v in trace.items() if k != "x"}
    if "monitor" in trace:
        trace["accuracy"] = trace.pop("monitor")["model"]
    return theta, y, trace


def augmentation_retrain_accuracy(theta, key, train, eval_sets, *, draws, steps, lr,
                                  weight_decay=0.0):
    r"""Re-train a fresh classifier on ``draws`` augmented copies of the training set.

    The augmented set ``{aug_theta(u_i, eps_{ir})}``, ``r = 1..draws`` (noise from ``key``),
    with the original labels, fitted by SGD from zero (:func:`bilevel_lib.blo.minimize`):
    "warm-start + re-training" for the augmentation net.

    Returns:
      ``{name: accuracy}`` on ``eval_sets``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> pts = jnp.array([[1.0, 0.0], [0.0, 1.0]]); lab = jnp.array([0, 1])
      >>> acc = augmentation_retrain_accuracy(init_augmentation(2, noise_dim=1),
      ...     jax.random.PRNGKey(0), (pts, lab), {"val": (pts, lab)}, draws=2, steps=50, lr=1.0)
      >>> float(acc["val"])
      1.0
    """
    pts, lab = _check_data(*train, "train")
    draws = _checks.check_int(draws, "draws", lowest=1)
    noise = jax.random.normal(key, (draws * pts.shape[0], theta["B"].shape[1]), pts.dtype)
    aug_pts = augment(theta, jnp.tile(pts, (draws, 1)), noise)
    aug_lab = jnp.tile(lab, draws)
    y0 = init_classifier(pts.shape[1], NUM_CLASSES, dtype=pts.dtype)
    y, _ = blo.minimize(
        lambda y: classifier_loss(y, aug_pts, aug_lab, weight_decay=weight_decay), y0,
        steps=steps, optimizer=optax.sgd(lr))
    return evaluate(y, eval_sets)


# The old homes of the classifier and of the sweep: the models and the runtime now hold them.
_MOVED = {"classify": ("bilevel_lib.models.linear.apply", linear.apply),
          "sharded_vmap": ("bilevel_lib.runtime.sharded_vmap", runtime.sharded_vmap)}


def __getattr__(name):
    if name in _MOVED:
        new_home, obj = _MOVED[name]
        warnings.warn(f"bilevel_lib.tasks.image_distill.{name} is deprecated: use {new_home}.",
                      DeprecationWarning, stacklevel=2)
        return obj
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
