r"""Error rates of hypergradient approximations, inexact and stochastic hypergradient descent.

The task code of chapter 7 (Grazzi & Pontil's tutorial, sections "Error Rates for AID and
ITD", "Inexact Hypergradient Descent" and "Stochastic Bilevel Optimization"):

* :func:`contraction_constants` -- the contraction factor ``q`` of the inner gradient step
  ``Phi(w) = w - alpha grad g(w)`` and CG's rate ``p = (sqrt(kappa) - 1) / (sqrt(kappa) + 1)``
  from the spectrum of the inner Hessian;
* :func:`make_logistic`, :func:`mnist_odd_even`, :func:`logistic_objectives`,
  :func:`logistic_solution`, :func:`accuracy` -- L2-regularized logistic regression with labels
  in ``{-1, +1}``, on synthetic data or on MNIST odd vs even;
* :func:`scaled_ridge_objectives` -- ridge regression whose outer parameters scale the
  features: the inner Hessian's null space moves with ``x`` when the penalty ``mu`` is 0;
* :func:`log_schedule` and :func:`inexact_descent` -- inexact hypergradient descent (IHD)
  with a step-dependent estimator (the schedule ``t_s = k_s = ceil(kappa log(s + 1))``), and
  for the complexity results :func:`running_mean_sq` (the average the theorems bound),
  :func:`schedule_iterations` (total inner and linear-solve iterations), :func:`sihd_samples`
  (samples used by stochastic IHD) and :func:`loglog_slope`;
* :func:`stochastic_fixed_point`, :func:`sfp_step_sizes`, :func:`sid` and :func:`mse_split` --
  stochastic implicit differentiation (SID) on the logistic task, with decreasing step sizes
  chosen by the tutorial's conditions, and the bias/variance split of its mean squared error;
  :func:`linear_map_sigma2` -- the variance constant ``sigma_2`` of SID's linear-system map.

The deterministic estimators themselves are the core's (:mod:`bilevel_lib.hypergrad`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .. import loops
from ..models import metrics
from . import image_data
from .ridge import RidgeData, make_ridge

__all__ = [
    "contraction_constants",
    "make_logistic",
    "mnist_odd_even",
    "logistic_loss",
    "logistic_objectives",
    "logistic_solution",
    "accuracy",
    "scaled_ridge_objectives",
    "log_schedule",
    "inexact_descent",
    "running_mean_sq",
    "schedule_iterations",
    "sihd_samples",
    "loglog_slope",
    "stochastic_fixed_point",
    "sfp_step_sizes",
    "sid",
    "mse_split",
    "linear_map_sigma2",
]


def contraction_constants(hess, lr):
    r"""The rates of ITD/AID-FP (``q``) and AID-CG (``p``) from a symmetric inner Hessian.

    .. math::

        q = \max_i |1 - \alpha \mu_i|,\qquad \kappa = \mu_{\max} / \mu_{\min},\qquad
        p = \frac{\sqrt\kappa - 1}{\sqrt\kappa + 1}

    ``q`` is the Lipschitz constant of the gradient step ``w - alpha grad g(w)`` on a quadratic
    with Hessian ``hess`` (a contraction iff ``q < 1``), and ``p`` the classic per-step rate of
    conjugate gradient on ``hess``.

    Args:
      hess: symmetric positive definite matrix ``(d, d)``.
      lr: the inner step size ``alpha``.

    Returns:
      dict with float ``q``, ``p``, ``kappa``, ``mu_min``, ``mu_max``.

    Example:
      >>> import jax.numpy as jnp
      >>> c = contraction_constants(jnp.diag(jnp.array([1.0, 4.0])), 0.25)
      >>> c["q"], c["kappa"], round(c["p"], 4)
      (0.75, 4.0, 0.3333)
    """
    mu = np.linalg.eigvalsh(np.asarray(hess, dtype=np.float64))
    mu_min, mu_max = float(mu[0]), float(mu[-1])
    if mu_min <= 0:
        raise ValueError(f"`hess` must be positive definite; its smallest eigenvalue is {mu_min}.")
    q = float(np.max(np.abs(1.0 - lr * mu)))
    kappa = mu_max / mu_min
    p = (np.sqrt(kappa) - 1.0) / (np.sqrt(kappa) + 1.0)
    return {"q": q, "p": float(p), "kappa": kappa, "mu_min": mu_min, "mu_max": mu_max}


def make_logistic(key, *, n_train=100, n_val=100, dim=20, noise=0.5, dtype=None):
    """Synthetic binary data: :func:`~bilevel_lib.tasks.ridge.make_ridge` with labels ``sign(y)``.

    Example:
      >>> import jax
      >>> d = make_logistic(jax.random.PRNGKey(0), n_train=5, n_val=3, dim=2)
      >>> sorted(set(d.y.tolist()) | set(d.y_val.tolist())) in ([-1.0, 1.0], [-1.0], [1.0])
      True
    """
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    r = make_ridge(key, n_train=n_train, n_val=n_val, dim=dim, noise=noise, dtype=dtype)
    return RidgeData(r.X, jnp.where(r.y >= 0, 1.0, -1.0).astype(r.X.dtype), r.X_val,
                     jnp.where(r.y_val >= 0, 1.0, -1.0).astype(r.X.dtype))


def _features(images, pool):
    x = image_data.as_float(images).reshape(-1, 28, 28)
    x = np.asarray(x, dtype=np.float64)
    if pool > 1:
        s = 28 // pool
        x = x[:, : s * pool, : s * pool].reshape(-1, s, pool, s, pool).mean(axis=(2, 4))
    x = x.reshape(len(x), -1)
    x = np.concatenate([x, np.ones((len(x), 1))], axis=1)         # the bias feature
    return x / np.linalg.norm(x, axis=1, keepdims=True)            # rows of unit norm


def mnist_odd_even(n_train, n_val, n_test, *, pool=2, seed=0, dtype=None):
    r"""MNIST odd (label +1) vs even (-1) digits: random train/validation/test subsets.

    Train and validation images are drawn without replacement from MNIST's training split,
    test images from its test split (NumPy ``default_rng(seed)``). Images are average-pooled
    ``pool x pool`` (``pool=2``: 14 x 14 = 196 pixels), a constant bias feature is appended and
    every row is scaled to unit norm, so the data part of the logistic Hessian has
    ``mu_max <= 1/4``.

    Returns:
      ``(data, (X_test, y_test))`` with ``data`` a :class:`~bilevel_lib.tasks.ridge.RidgeData`.

    Example:
      >>> data, (x_test, y_test) = mnist_odd_even(100, 50, 20)  # doctest: +SKIP
      >>> data.X.shape, x_test.shape  # doctest: +SKIP
      ((100, 197), (20, 197))
    """
    rng = np.random.default_rng(seed)
    images, labels = image_data.load("mnist", "train")
    idx = rng.permutation(len(labels))[: n_train + n_val]
    x = _features(images[idx], pool)
    y = np.where(labels[idx] % 2 == 1, 1.0, -1.0)
    t_images, t_labels = image_data.load("mnist", "test")
    t_idx = rng.permutation(len(t_labels))[:n_test]
    x_test = _features(t_images[t_idx], pool)
    y_test = np.where(t_labels[t_idx] % 2 == 1, 1.0, -1.0)
    arr = partial(jnp.asarray, dtype=jnp.zeros(()).dtype if dtype is None else dtype)
    data = RidgeData(arr(x[:n_train]), arr(y[:n_train]), arr(x[n_train:]), arr(y[n_train:]))
    return data, (arr(x_test), arr(y_test))


def logistic_loss(w, X, y, weights=None):
    r"""Mean logistic loss ``(1/n) sum_i log(1 + exp(-y_i x_i^T w))`` (optionally weighted).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(logistic_loss(jnp.zeros(2), jnp.ones((3, 2)), jnp.ones(3))), 4)
      0.6931
    """
    losses = jnp.logaddexp(0.0, -y * (X @ w))
    if weights is None:
        return jnp.mean(losses)
    return jnp.sum(weights * losses)


def _penalty(x, log_lam):
    return jnp.exp(x) if log_lam else x


def logistic_objectives(data, *, log_lam=False):
    r"""``(inner, outer)`` of L2-regularized logistic regression tuned on validation data.

    .. math::

        g(\lambda, w) = \frac1n\sum_i \log(1 + e^{-y_i x_i^\top w}) + \frac\lambda2\|w\|^2,
        \qquad E(w) = \frac1{n'}\sum_j \log(1 + e^{-y'_j x_j'^\top w})

    with ``lambda = x`` (``log_lam=False``) or ``lambda = exp(x)`` (``log_lam=True``, so that
    descent on ``x`` keeps ``lambda > 0``). ``g`` is ``lambda``-strongly convex.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> inner, outer = logistic_objectives(make_logistic(jax.random.PRNGKey(0), dim=3))
      >>> round(float(outer(jnp.array(0.1), jnp.zeros(3))), 4)
      0.6931
    """

    def inner(x, w):
        return logistic_loss(w, data.X, data.y) + 0.5 * _penalty(x, log_lam) * jnp.sum(w**2)

    def outer(x, w):
        return logistic_loss(w, data.X_val, data.y_val)

    return inner, outer


def logistic_solution(data, x, *, log_lam=False, steps=25):
    r"""The inner solution ``w(lambda)`` by ``steps`` Newton steps from 0 (dense Hessian).

    ``g`` is smooth and strongly convex, so Newton converges quadratically; 25 steps reach
    machine precision on the chapter's problems (the test checks the gradient).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> data = make_logistic(jax.random.PRNGKey(0), dim=3)
      >>> inner, _ = logistic_objectives(data)
      >>> w = logistic_solution(data, jnp.array(0.1))
      >>> bool(jnp.max(jnp.abs(jax.grad(inner, argnums=1)(jnp.array(0.1), w))) < 1e-5)
      True
    """
    inner, _ = logistic_objectives(data, log_lam=log_lam)
    grad = jax.grad(inner, argnums=1)
    hess = jax.hessian(inner, argnums=1)

    w0 = jnp.zeros(data.X.shape[1], data.X.dtype)
    return loops.descend(lambda w, j: jnp.linalg.solve(hess(x, w), grad(x, w)), w0, lr=1.0,
                         length=steps)


def accuracy(w, X, y):
    """Deprecated: ``bilevel_lib.models.metrics.accuracy(X @ w, y)``, the library's one accuracy.

    Example:
      >>> import jax.numpy as jnp
      >>> float(accuracy(jnp.array([1.0]), jnp.array([[1.0], [-2.0]]), jnp.array([1.0, 1.0])))
      0.5
    """
    return metrics.accuracy(X @ w, y)


def scaled_ridge_objectives(data, mu):
    r"""Ridge regression with learned feature scales ``x`` and a fixed penalty ``mu >= 0``.

    .. math::

        g(x, w) = \frac1{2n}\|X\,\mathrm{diag}(x)\,w - y\|^2 + \frac\mu2\|w\|^2,\qquad
        E(x, w) = \frac1{2n'}\|X'\mathrm{diag}(x)\,w - y'\|^2

    With ``mu > 0`` the inner problem is strongly convex. With ``mu = 0`` and ``d > n`` its
    Hessian ``diag(x) X^T X diag(x) / n`` is singular, with a null space that moves with ``x``:
    an inner iterate carried over from earlier outer steps keeps a memory of them.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> data = make_ridge(jax.random.PRNGKey(0), n_train=3, dim=4)
      >>> inner, outer = scaled_ridge_objectives(data, 0.0)
      >>> h = jax.hessian(inner, argnums=1)(jnp.ones(4), jnp.zeros(4))
      >>> int(jnp.linalg.matrix_rank(h))
      3
    """
    n, n_val = data.X.shape[0], data.X_val.shape[0]

    def inner(x, w):
        r = data.X @ (x * w) - data.y
        return 0.5 / n * jnp.sum(r**2) + 0.5 * mu * jnp.sum(w**2)

    def outer(x, w):
        return 0.5 / n_val * jnp.sum((data.X_val @ (x * w) - data.y_val) ** 2)

    return inner, outer


def log_schedule(s, kappa):
    r"""The tutorial's schedule ``t_s = k_s = ceil(kappa log(s + 1))`` (int32; 0 at s = 0).

    Example:
      >>> import jax.numpy as jnp
      >>> log_schedule(jnp.arange(4), 2.0).tolist()
      [0, 2, 3, 3]
    """
    return jnp.ceil(kappa * jnp.log(jnp.asarray(s, jnp.float32) + 1.0) - 1e-9).astype(jnp.int32)


def inexact_descent(estimate, x0, *, lr, steps, max_steps=None):
    r"""Inexact hypergradient descent ``x_{s+1} = x_s - alpha * estimate(x_s, s)``.

    The core loops (:mod:`bilevel_lib.blo`) take one hypergradient with fixed options; here the
    estimator also gets the step index ``s``, so its inner and linear-solve iteration counts
    can follow a schedule (with ``max_steps`` and traced counts inside ``estimate``). The loop
    is :func:`bilevel_lib.loops.descend` with ``estimate`` as its direction.

    Args:
      estimate: ``estimate(x, s) -> array like x`` (jit-able, ``s`` a traced int32).
      x0: starting outer parameters (array).
      lr: the outer step size alpha.
      steps: S, the number of outer steps (static int, or traced when ``max_steps`` is given:
        one compilation for a sweep over S).
      max_steps: static loop length; steps ``s >= S`` leave ``x`` unchanged and return
        ``x_S`` and a zero estimate.

    Returns:
      ``(xs, hs)``: the iterates ``x_0 .. x_{S-1}`` and the estimates used at them (padded to
      ``max_steps`` as above).

    Example:
      >>> import jax.numpy as jnp
      >>> xs, hs = inexact_descent(lambda x, s: 2 * x, jnp.array(1.0), lr=0.25, steps=3)
      >>> xs.tolist()
      [1.0, 0.5, 0.25]
      >>> inexact_descent(lambda x, s: 2 * x, jnp.array(1.0), lr=0.25, steps=2,
      ...                 max_steps=3)[0].tolist()
      [1.0, 0.5, 0.25]
    """
    length = steps if max_steps is None else max_steps
    active = None if max_steps is None else steps
    return loops.descend(estimate, jnp.asarray(x0), lr=lr, length=length, active=active,
                         trace=True)[1]


def running_mean_sq(gs):
    r"""The average squared norm over the first ``S`` steps, for every ``S``.

    .. math:: \frac1S\sum_{s=0}^{S-1}\|g_s\|^2,\qquad S = 1, \dots, \text{len}(g)

    the left-hand side of the IHD theorems (``g_s`` the exact hypergradients along a run).

    Args:
      gs: array ``(S_max, ...)``: one gradient per step (leading axis).

    Returns:
      array ``(S_max,)``; entry ``S - 1`` is the average over the first ``S`` steps.

    Example:
      >>> import jax.numpy as jnp
      >>> running_mean_sq(jnp.array([[3.0, 4.0], [1.0, 0.0]])).tolist()
      [25.0, 13.0]
    """
    gs = jnp.asarray(gs)
    sq = jnp.sum(gs.reshape(gs.shape[0], -1) ** 2, axis=1)
    return jnp.cumsum(sq) / jnp.arange(1, gs.shape[0] + 1)


def schedule_iterations(counts):
    r"""Total inner plus linear-solve iterations of the first ``S`` outer steps, for every ``S``.

    .. math:: N(S) = \sum_{s=0}^{S-1} (t_s + k_s) = 2\sum_{s=0}^{S-1} t_s
              \quad (t_s = k_s)

    With the log schedule ``t_s = ceil(kappa log(s + 1))``, ``N(S) ~ 2 kappa S log S``: an
    average squared gradient ``O(1/S)`` then costs ``O(eps^-1 log eps^-1)`` iterations (the
    tutorial's deterministic complexity).

    Args:
      counts: int array ``(S_max,)`` of ``t_s`` (e.g. :func:`log_schedule` of ``arange``).

    Returns:
      array ``(S_max,)``; entry ``S - 1`` is ``N(S)``.

    Example:
      >>> import jax.numpy as jnp
      >>> schedule_iterations(log_schedule(jnp.arange(4), 2.0)).tolist()  # t_s = 0, 2, 3, 3
      [0, 4, 10, 16]
    """
    return 2 * jnp.cumsum(jnp.asarray(counts))


def sihd_samples(steps, c, *, batch):
    r"""Samples drawn by ``S`` steps of stochastic IHD with ``t_s = k_s = J_s = ceil(c S)``.

    Each SID estimate draws ``t`` inner and ``k`` linear-solve minibatches of ``batch``
    training examples and ``J`` validation examples:

    .. math:: n(S) = S\,\lceil cS\rceil\,(2b + 1) = O(S^2)

    so an average squared gradient ``O(1/S)`` costs ``O(eps^-2)`` samples (the tutorial's
    stochastic sample complexity).

    Args:
      steps: ``S`` (int or int array).
      c: the constant ``c > 0``.
      batch: the training minibatch ``b`` of both solvers.

    Returns:
      ``n(S)`` (NumPy int or int array).

    Example:
      >>> sihd_samples(4, 8, batch=4).tolist()      # 4 * 32 * 9
      1152
    """
    s = np.asarray(steps)
    return s * np.ceil(c * s - 1e-9).astype(np.int64) * (2 * batch + 1)


def loglog_slope(n, y):
    r"""Least-squares slope of ``log y`` against ``log n``: the exponent of a power law.

    .. math:: y \approx C n^{a} \;\Rightarrow\; \hat a = \arg\min_a \min_b
              \sum_i (\log y_i - a \log n_i - b)^2

    Example:
      >>> import numpy as np
      >>> round(loglog_slope(np.array([1.0, 10.0, 100.0]), np.array([3.0, 0.3, 0.03])), 6)
      -1.0
    """
    n, y = np.asarray(n, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.any(n <= 0) or np.any(y <= 0):
        raise ValueError("`n` and `y` must be positive.")
    return float(np.polyfit(np.log(n), np.log(y), 1)[0])


def stochastic_fixed_point(step_dir, z0, key, *, steps, max_steps=None, lr, beta, gamma):
    r"""Stochastic fixed-point iterations with decreasing step sizes (the tutorial's SID solver).

    .. math:: z_{j+1} = z_j - \alpha\,\eta_j\, \widehat{G}(z_j, \zeta_j),\qquad
              \eta_j = \frac{\beta}{\gamma + j}

    i.e. ``z + eta_j (T(z, zeta) - z)`` for the map ``T(z) = z - alpha G(z)``: stochastic
    gradient descent on the inner problem (``G`` a minibatch gradient) or on the linear system
    (``G(v) = H_batch v - b``). With ``beta > 1/(1 - q^2)`` and ``gamma >= beta (1 + sigma_2)``
    the tutorial's theorem gives ``E|z_j - z*|^2 = O(1 / (gamma + j))``.

    Args:
      step_dir: ``step_dir(z, key_j) -> array like z`` (the stochastic direction G).
      z0: the starting point.
      key: PRNG key; step ``j`` uses ``jax.random.fold_in(key, j)``.
      steps: number of active steps (int, may be traced).
      max_steps: static loop length (steps ``j >= steps`` leave ``z`` unchanged), or ``None``
        (the default) for a loop of exactly ``steps`` steps, traced or not (see
        :func:`bilevel_lib.loops.descend`; not reverse-differentiable). Step ``j`` uses the
        same key and step size either way, so the ``steps``-step iterate is a prefix of any
        longer run.
      lr, beta, gamma: ``alpha``, ``beta`` and ``gamma`` above.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> g = lambda z, k: z - 1.0             # deterministic: z_j - 1 = -prod(1 - eta_i)
      >>> z = stochastic_fixed_point(g, jnp.zeros(1), jax.random.PRNGKey(0), steps=3,
      ...                            max_steps=5, lr=1.0, beta=1.0, gamma=2.0)
      >>> round(float(z[0]), 4)                # 1 - (1/2)(2/3)(3/4)
      0.75
    """
    return loops.descend(lambda z, j: step_dir(z, jax.random.fold_in(key, j)), z0,
                         lr=lambda j: lr * (beta / (gamma + j)), length=max_steps, active=steps)


def sfp_step_sizes(lipschitz, strong_convexity, *, beta_factor=2.0, gamma_factor=2.0):
    r"""Step sizes of :func:`stochastic_fixed_point` that meet the tutorial's conditions.

    For gradient steps ``T(w) = w - alpha grad g(w)`` on a ``mu``-strongly convex, ``L``-smooth
    ``g``:

    .. math::

        \alpha = \frac1L,\qquad q = 1 - \alpha\mu,\qquad
        \beta = \frac{c_\beta}{1 - q^2} > \frac1{1 - q^2},\qquad \gamma = c_\gamma\,\beta

    (``q`` the contraction factor of ``T``; ``gamma >= beta (1 + sigma_2)`` holds for variance
    constants ``sigma_2 <= c_gamma - 1``). Works on traced values.

    Args:
      lipschitz: ``L``, an upper bound on the largest Hessian eigenvalue.
      strong_convexity: ``mu``, a lower bound on the smallest one (``0 < mu <= L``).
      beta_factor: ``c_beta > 1``.
      gamma_factor: ``c_gamma >= 1``.

    Returns:
      dict with ``lr`` (alpha), ``beta`` and ``gamma``, the keyword arguments of
      :func:`stochastic_fixed_point` and :func:`sid`.

    Example:
      >>> s = sfp_step_sizes(1.0, 0.5)        # alpha = 1, q = 1/2, beta = 2 / (3/4)
      >>> [round(float(s[k]), 4) for k in ("lr", "beta", "gamma")]
      [1.0, 2.6667, 5.3333]
    """
    lr = 1.0 / lipschitz
    q = 1.0 - lr * strong_convexity
    beta = beta_factor / (1.0 - q**2)
    return {"lr": lr, "beta": beta, "gamma": gamma_factor * beta}


def _batch_weights(key, n, size, max_size):
    """Indices of a with-replacement minibatch of traced ``size`` and weights ``1/size``."""
    idx = jax.random.randint(key, (max_size,), 0, n)
    weights = jnp.where(jnp.arange(max_size) < size, 1.0 / size, 0.0)
    return idx, weights


def sid(data, x, key, *, t, k, J, max_t=None, max_k=None, max_J=None, batch=32, lr,
        beta, gamma, log_lam=True):
    r"""The stochastic implicit-differentiation hypergradient of the logistic task.

    1. ``w_t``: ``t`` steps of :func:`stochastic_fixed_point` on ``g`` with training minibatches
       of size ``batch`` (from ``w = 0``);
    2. ``grad_w E`` on a validation minibatch of size ``J`` (with replacement);
    3. ``v_k``: ``k`` stochastic fixed-point steps on ``H_batch v = grad_w E`` (training
       minibatches of size ``batch`` for the Hessian-vector products, from ``v = 0``);
    4. ``dF/dx = -B^T v_k`` with ``B = d/dx grad_w g`` (here the penalty's ``lambda' w``, no
       data: the outer objective does not depend on ``x`` directly).

    Any of ``t``, ``k``, ``J`` may be ``None``: the exact limit (``w(lambda)`` by Newton, a
    dense solve, the full validation set). Integers may be traced (one compilation for a
    sweep): ``t`` and ``k`` with or without ``max_t``/``max_k`` (a static loop length with the
    extra steps masked, which a ``vmap`` over counts needs; without it the loop runs exactly
    ``t`` or ``k`` steps, the cheap choice under ``lax.map`` over counts), ``J`` only with
    ``max_J``.

    Returns:
      The scalar estimate of ``dF/dx``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from bilevel_lib import hypergrad
      >>> data = make_logistic(jax.random.PRNGKey(0), dim=3)
      >>> x = jnp.array(-2.0)
      >>> inner, outer = logistic_objectives(data, log_lam=True)
      >>> h = hypergrad.exact(inner, outer, x, logistic_solution(data, x, log_lam=True))
      >>> h_sid = sid(data, x, jax.random.PRNGKey(1), t=None, k=None, J=None, lr=1.0,
      ...             beta=1.0, gamma=1.0)
      >>> bool(jnp.abs(h - h_sid) < 1e-5 * jnp.abs(h))
      True
    """
    n, d = data.X.shape
    n_val = data.X_val.shape[0]
    k_in, k_out, k_lin = jax.random.split(key, 3)
    inner, _ = logistic_objectives(data, log_lam=log_lam)

    def batch_inner(w, xx, kk):
        idx = jax.random.randint(kk, (batch,), 0, n)
        return (logistic_loss(w, data.X[idx], data.y[idx])
                + 0.5 * _penalty(xx, log_lam) * jnp.sum(w**2))

    if t is None:
        w = logistic_solution(data, x, log_lam=log_lam)
    else:
        grad_b = jax.grad(batch_inner)
        w = stochastic_fixed_point(lambda w_, kk: grad_b(w_, x, kk), jnp.zeros(d, data.X.dtype),
                                   k_in, steps=t, max_steps=max_t,
                                   lr=lr, beta=beta, gamma=gamma)
    if J is None:
        e_w = jax.grad(logistic_loss)(w, data.X_val, data.y_val)
    else:
        idx, wts = _batch_weights(k_out, n_val, J, J if max_J is None else max_J)
        e_w = jax.grad(logistic_loss)(w, data.X_val[idx], data.y_val[idx], wts)
    if k is None:
        v = jnp.linalg.solve(jax.hessian(inner, argnums=1)(x, w), e_w)
    else:
        def lin_dir(v_, kk):
            hv = jax.jvp(lambda w_: jax.grad(batch_inner)(w_, x, kk), (w,), (v_,))[1]
            return hv - e_w

        v = stochastic_fixed_point(lin_dir, jnp.zeros(d, data.X.dtype), k_lin, steps=k,
                                   max_steps=max_k, lr=lr, beta=beta,
                                   gamma=gamma)
    # B^T v = d/dx <grad_w g(x, w), v>: the penalty's part (data terms do not depend on x).
    b_t_v = jax.grad(lambda xx: _penalty(xx, log_lam) * jnp.vdot(w, v))(x)
    return -b_t_v


def mse_split(estimates, exact):
    r"""Mean squared error of estimates (leading axis: repetitions) and its bias/variance split.

    .. math:: \mathrm{MSE} = \|\bar h - h\|^2 + \tfrac1R \textstyle\sum_r \|h_r - \bar h\|^2

    Returns:
      ``(mse, bias2, variance)`` (the identity holds exactly for these sample versions).

    Example:
      >>> import jax.numpy as jnp
      >>> [float(v) for v in mse_split(jnp.array([1.0, 3.0]), 0.0)]
      [5.0, 4.0, 1.0]
    """
    estimates = jnp.asarray(estimates)
    err = estimates - exact
    mean = jnp.mean(estimates, axis=0)
    axes = tuple(range(1, estimates.ndim))
    mse = jnp.mean(jnp.sum(err**2, axis=axes) if axes else err**2)
    bias2 = jnp.sum((mean - exact) ** 2)
    dev = estimates - mean
    var = jnp.mean(jnp.sum(dev**2, axis=axes) if axes else dev**2)
    return mse, bias2, var


def linear_map_sigma2(data, x, w, *, batch, log_lam=True):
    r"""The smallest variance constant ``sigma_2`` of SID's linear-system map at ``w``.

    The map is ``T(v, zeta) = v - alpha (H_zeta v - b)`` with ``H_zeta`` the Hessian of a
    with-replacement minibatch of ``batch`` training examples (as in :func:`sid`). Its variance
    is quadratic in ``v``, ``V[T(v)] = alpha^2 v^T M v`` with

    .. math::

        M = \frac1b\Big(\frac1n\sum_i h_i^2\|x_i\|^2 x_i x_i^\top - H_0^2\Big),\qquad
        H_0 = \frac1n\sum_i h_i x_i x_i^\top,\quad h_i = \sigma'(y_i x_i^\top w)

    and ``||T(v) - v||^2 = alpha^2 ||H v - b||^2`` with ``H = H_0 + lambda I``. The condition
    ``V[T(v)] <= sigma_1 + sigma_2 ||T(v) - v||^2`` holds for some finite ``sigma_1`` exactly
    when ``sigma_2 >= lambda_max(H^-1 M H^-1)``, which this returns (independent of ``alpha``
    and ``b``). The inner map has ``sigma_2 = 0``: its per-example gradients are bounded.

    Args:
      data: the logistic task's :class:`~bilevel_lib.tasks.ridge.RidgeData`.
      x: the outer parameter (``lambda``, or ``log lambda`` with ``log_lam=True``).
      w: the inner point the linear system is set up at.
      batch: the training minibatch size ``b``.

    Returns:
      float ``sigma_2``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> data = make_logistic(jax.random.PRNGKey(0), n_train=20, dim=3)
      >>> s1 = linear_map_sigma2(data, jnp.array(0.1), jnp.zeros(3), batch=1, log_lam=False)
      >>> s4 = linear_map_sigma2(data, jnp.array(0.1), jnp.zeros(3), batch=4, log_lam=False)
      >>> bool(abs(s1 - 4 * s4) < 1e-9 * s1)
      True
    """
    X = np.asarray(data.X, dtype=np.float64)
    y = np.asarray(data.y, dtype=np.float64)
    lam = float(_penalty(x, log_lam))
    m = y * (X @ np.asarray(w, dtype=np.float64))
    sig = 1.0 / (1.0 + np.exp(-m))
    h = sig * (1.0 - sig)
    n, d = X.shape
    h0 = (X * h[:, None]).T @ X / n
    second = (X * (h**2 * np.sum(X**2, axis=1))[:, None]).T @ X / n
    cov = (second - h0 @ h0) / batch
    hinv = np.linalg.inv(h0 + lam * np.eye(d))
    return float(np.linalg.eigvalsh(hinv @ cov @ hinv)[-1])
