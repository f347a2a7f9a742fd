r"""Anti-distillation: a regression task whose *outer* problem is overparameterized (Sec. 4.2).

There are ``m`` learned points at fixed inputs ``u_i``; the outer parameters ``x`` are their
targets. A linear model ``w . phi(u)`` is fitted to them (inner problem) and judged on ``p < m``
original points ``(v_j, t_j)`` (outer problem):

.. math::

    f(x, w) = \tfrac12 \sum_i \big(w^\top\phi(u_i) - x_i\big)^2 = \tfrac12\|\Phi w - x\|^2,
    \qquad
    F(w) = \tfrac12 \sum_j \big(w^\top\phi(v_j) - t_j\big)^2 = \tfrac12\|\Psi w - t\|^2.

The features are a bias and ``n_freq`` Fourier pairs with amplitudes decreasing in frequency,

.. math::

    \phi(u) = \big(a_0,\ a_1\sin u,\ a_1\cos u,\ \dots,\ a_n\sin nu,\ a_n\cos nu\big),

so a curve made of low frequencies needs small weights: the minimum-norm inner solution (where
cold-start gradient descent from ``w0 = 0`` converges, Lemma C.1) prefers smooth fits. The
paper's amplitudes are lost; :func:`amplitudes` states the ones this book uses.

With ``m > p`` many learned targets make the fit pass through the original points: the outer
problem has a whole affine set of solutions, and the hypergradient approximation picks one.
Cold-start BLO whose hypergradient replaces ``H^+`` by a spectral filter ``g(H)`` (the K-term
Neumann sum, ``(H + eps I)^{-1}``) converges to
:func:`bilevel_lib.quadratic.filtered_outer_solution`; with ``g(H) = H^+`` that is Theorem
3.1's outer solution closest to ``x0``.

Also here: an optax "optimizer" that solves the quadratic inner problem exactly
(:func:`exact_inner_solver`), and the task with a small ReLU MLP
(:mod:`bilevel_lib.models.mlp`) as the inner model (:func:`mlp_problem`). Sweeps over an
estimator option use :func:`bilevel_lib.blo.cold_start_sweep`.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _checks, blo, quadratic
from ..models import mlp

__all__ = [
    "SCHEDULES",
    "amplitudes",
    "fourier_features",
    "linear_features",
    "AntiDistillation",
    "anti_distillation",
    "exact_inner_solver",
    "MLPAntiDistillation",
    "mlp_init",
    "mlp_problem",
]

SCHEDULES = ("exponential", "linear")


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------


def amplitudes(n_freq=10, schedule="exponential", *, decay=0.6):
    r"""Amplitudes ``(a_0, a_1, ..., a_n)`` of the bias and the ``n = n_freq`` Fourier pairs.

    The paper states only that they decrease exponentially (main text) or linearly (its
    Fig. 16) in the frequency; the values are lost. This book uses

    * ``"exponential"``: :math:`a_k = \text{decay}^k` (default ``decay = 0.6``: ``a_0 = 1``
      for the bias, ``a_10 = 0.006``);
    * ``"linear"``: :math:`a_k = (n + 1 - k)/(n + 1)` (``a_0 = 1`` down to ``a_n = 1/(n+1)``).

    A unit-amplitude sinusoid of frequency k costs weight norm ``1/a_k``: high frequencies are
    expensive, and the inner Hessian's eigenvalues scale like ``a_k^2``.

    Args:
      n_freq: number of frequencies n (int >= 1).
      schedule: ``"exponential"`` or ``"linear"``.
      decay: ratio of successive amplitudes for ``"exponential"``, in (0, 1].

    Returns:
      Array of shape ``(n_freq + 1,)``; entry 0 multiplies the bias.

    Example:
      >>> amplitudes(3, "exponential", decay=0.5).tolist()
      [1.0, 0.5, 0.25, 0.125]
      >>> amplitudes(3, "linear").tolist()
      [1.0, 0.75, 0.5, 0.25]
    """
    n_freq = _checks.check_int(n_freq, "n_freq", lowest=1)
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}; got {schedule!r}.")
    k = np.arange(n_freq + 1)
    if schedule == "exponential":
        if not isinstance(decay, numbers.Real) or not 0.0 < decay <= 1.0:
            raise ValueError(f"`decay` must be a number in (0, 1]; got {decay!r}.")
        amps = float(decay) ** k
    else:
        amps = (n_freq + 1 - k) / (n_freq + 1)
    return jnp.asarray(amps, dtype=jnp.result_type(float))


def fourier_features(u, amps):
    r"""Feature matrix with rows ``(a_0, a_1 sin u, a_1 cos u, ..., a_n sin nu, a_n cos nu)``.

    Args:
      u: inputs, a scalar or a 1-D array of length N.
      amps: amplitudes ``(a_0, ..., a_n)`` (1-D, length >= 1), e.g. from :func:`amplitudes`.

    Returns:
      ``(N, 2n + 1)`` (or ``(2n + 1,)`` for a scalar ``u``). Column 0 is the bias, columns
      ``2k - 1`` and ``2k`` the sine and cosine of frequency k.

    Example:
      >>> import jax.numpy as jnp
      >>> fourier_features(jnp.array([0.0]), jnp.array([1.0, 0.5])).tolist()
      [[1.0, 0.0, 0.5]]
    """
    u = jnp.asarray(u)
    amps = jnp.asarray(amps)
    if u.ndim > 1:
        raise ValueError(f"`u` must be a scalar or 1-D; got shape {u.shape}.")
    if amps.ndim != 1 or amps.shape[0] < 1:
        raise ValueError(f"`amps` must be 1-D with at least one entry; got shape {amps.shape}.")
    if not jnp.issubdtype(u.dtype, jnp.floating):
        u = u.astype(jnp.result_type(float))
    k = jnp.arange(1, amps.shape[0], dtype=u.dtype)
    ku = u[..., None] * k
    pairs = jnp.stack([amps[1:] * jnp.sin(ku), amps[1:] * jnp.cos(ku)], axis=-1)
    pairs = pairs.reshape(*u.shape, 2 * (amps.shape[0] - 1))
    bias = jnp.broadcast_to(amps[0], (*u.shape, 1)).astype(pairs.dtype)
    return jnp.concatenate([bias, pairs], axis=-1)


def linear_features(u):
    r"""Features ``(u, 1)`` of the linear model ``w u + b`` (the 2-D picture of Fig. 11(c)).

    Example:
      >>> import jax.numpy as jnp
      >>> linear_features(jnp.array([0.0, 2.0])).tolist()
      [[0.0, 1.0], [2.0, 1.0]]
    """
    u = jnp.asarray(u)
    if u.ndim > 1:
        raise ValueError(f"`u` must be a scalar or 1-D; got shape {u.shape}.")
    if not jnp.issubdtype(u.dtype, jnp.floating):
        u = u.astype(jnp.result_type(float))
    return jnp.stack([u, jnp.ones_like(u)], axis=-1)


# ---------------------------------------------------------------------------------------------
# The linear (quadratic) task
# ---------------------------------------------------------------------------------------------


class AntiDistillation(NamedTuple):
    r"""The quadratic anti-distillation problem ``f = 1/2|Phi w - x|^2``, ``F = 1/2|Psi w - t|^2``.

    Fields: ``phi`` (m, n) features of the m learned inputs (rows), ``psi`` (p, n) features
    of the p original inputs, ``t`` (p,) original targets. A pytree (NamedTuple), so it can be
    closed over under ``jit``. Build it with :func:`anti_distillation`.
    """

    phi: jax.Array
    psi: jax.Array
    t: jax.Array

    def inner(self, x, w):
        """Inner objective ``f(x, w) = 1/2 |Phi w - x|^2`` (learned targets x)."""
        return 0.5 * jnp.sum((self.phi @ w - x) ** 2)

    def outer(self, x, w):
        """Outer objective ``F(w) = 1/2 |Psi w - t|^2`` on the original points (x unused)."""
        del x
        return 0.5 * jnp.sum((self.psi @ w - self.t) ** 2)

    def hessian(self):
        """Inner Hessian ``H = Phi^T Phi`` (n, n), independent of x."""
        return self.phi.T @ self.phi

    def response(self):
        r"""Outer map ``M = Psi Phi^+`` (p, m): the original-point predictions of the
        minimum-norm fit, ``Psi w(x) = M x`` for ``w(x) = Phi^+ x``."""
        # Phi^+ is the minimum-norm solution of Phi W = I (the core's pinv and zero threshold).
        m, n = self.phi.shape
        eye, zero = jnp.eye(m, dtype=self.phi.dtype), jnp.zeros((n, m), self.phi.dtype)
        return self.psi @ quadratic.closest_solution(self.phi, eye, zero)

    def inner_solution(self, x, w0=None):
        r"""The cold-start inner solution from ``w0`` (default 0): ``w0 + Phi^+ (x - Phi w0)``.

        Gradient descent on f from ``w0`` with a stable step converges here (Lemma C.1).
        """
        w0 = jnp.zeros(self.phi.shape[1], self.phi.dtype) if w0 is None else w0
        return quadratic.closest_solution(self.phi, x, w0)

    def inner_lr(self):
        r"""Inner step size ``alpha = 1 / lambda_max(H)`` (from ``eigvalsh``).

        Gradient descent, Neumann and unrolling are stable for ``alpha < 2/lambda_max``;
        ``1/lambda_max`` solves the top eigendirection in one step.
        """
        return 1.0 / jnp.linalg.eigvalsh(self.hessian())[-1]

    def outer_lr(self):
        r"""Outer step size ``beta = 1 / lambda_max(M M^T)``, the curvature of F(w(x)) in x.

        At the cold-start inner solution, a hypergradient that replaces ``H^+`` by a filter
        ``g(H)`` makes outer gradient descent act on the residual with the matrix
        ``Psi P g(H) Psi^T`` (P: projector onto ``range(H)``). For ``0 <= g(lambda) <=
        1/lambda`` on ``range(H)`` (Neumann with ``alpha <= 1/lambda_max``, damping) it is
        dominated by the exact one, ``M M^T = Psi H^+ Psi^T``, so this step is stable for all.
        """
        m = self.response()
        return 1.0 / jnp.linalg.eigvalsh(m @ m.T)[-1]

    def min_norm_outer_solution(self, x0):
        r"""Theorem 3.1's limit of cold-start BLO with the exact hypergradient (``w0 = 0``):
        ``x* = x0 + M^+ (t - M x0)``; see :func:`bilevel_lib.quadratic.min_norm_outer_solution`.

        Returns ``(x_star, w_star)``.
        """
        return quadratic.min_norm_outer_solution(self.phi, self.psi, self.t, x0)

    def filtered_outer_solution(self, x0, filt):
        r"""Limit of cold-start BLO whose hypergradient replaces ``1/lambda`` by ``filt``
        (``w0 = 0``); see :func:`bilevel_lib.quadratic.filtered_outer_solution`.

        Returns ``(x_inf, w_inf)``.
        """
        return quadratic.filtered_outer_solution(self.phi, self.psi, self.t, x0, filt)

    def _blo_options(self, outer_steps, outer_lr):
        beta = self.outer_lr() if outer_lr is None else outer_lr
        return dict(outer_opt=optax.sgd(beta), inner_opt=exact_inner_solver(self.hessian()),
                    outer_steps=outer_steps, inner_steps=1)

    def cold_start(self, x0, *, hypergrad, outer_steps, outer_lr=None):
        r"""Cold-start BLO from ``(x0, w0 = 0)`` with the inner problem solved exactly.

        Each outer step resets ``w = 0`` and takes one step of :func:`exact_inner_solver`
        (landing on ``Phi^+ x``, the limit of inner gradient descent), then an outer SGD step
        (default ``outer_lr``: :meth:`outer_lr`).

        Returns:
          ``(x, w, trace)``: final learned targets, the inner solution ``Phi^+ x`` *at* that
          final ``x``, and the trace of :func:`bilevel_lib.blo.cold_start`.
        """
        w0 = jnp.zeros(self.phi.shape[1], self.phi.dtype)
        x, _, trace = blo.cold_start(self.inner, self.outer, x0, w0, hypergrad=hypergrad,
                                     **self._blo_options(outer_steps, outer_lr))
        return x, self.inner_solution(x), trace

    def hypergradients(self, x, *, estimator, param, values, options=None):
        r"""The estimator at the cold-start inner solution ``Phi^+ x`` for every value of one
        option (e.g. ``steps`` with a static ``max_steps``), as one ``vmap``.

        Returns:
          Array ``(len(values), m)``.

        Example:
          >>> import jax.numpy as jnp
          >>> from bilevel_lib import hypergrad
          >>> prob = anti_distillation(jnp.array([0.0, 2.0]), jnp.array([1.0]),
          ...                          jnp.array([1.0]), linear_features)
          >>> h = prob.hypergradients(jnp.zeros(2), estimator=hypergrad.neumann, param="steps",
          ...                         values=[1, 2], options={"lr": 0.1})
          >>> [[f"{v:.2f}" for v in row] for row in h]   # K = 1: alpha Phi psi r, r = -1
          [['-0.10', '-0.30'], ['-0.16', '-0.44']]
        """
        _checks.check_callable(estimator, "estimator")
        values, options = blo.sweep_values(param, values, options)
        x = jnp.asarray(x)
        w = self.inner_solution(x)

        def one(value):
            return estimator(self.inner, self.outer, x, w, **{param: value}, **options)

        return jax.vmap(one)(values)

    def sweep(self, x0, *, estimator, param, values, options=None, outer_steps,
              outer_lr=None):
        r""":meth:`cold_start` for every value of one estimator option: one
        :func:`bilevel_lib.blo.cold_start_sweep` call (vmapped).

        Returns:
          ``(x, w, trace)`` with a leading axis over ``values``; ``w[i] = Phi^+ x[i]``.
        """
        w0 = jnp.zeros(self.phi.shape[1], self.phi.dtype)
        x, _, trace = blo.cold_start_sweep(self.inner, self.outer, x0, w0,
                                           estimator=estimator, param=param, values=values,
                                           options=options,
                                           **self._blo_options(outer_steps, outer_lr))
        return x, jax.vmap(self.inner_solution)(x), trace


def anti_distillation(u_learned, v_original, t_original, features):
    r"""Build an :class:`AntiDistillation` problem.

    Args:
      u_learned: (m,) fixed inputs of the learned points.
      v_original: (p,) inputs of the original points.
      t_original: (p,) targets of the original points.
      features: ``u -> (len(u), n)`` feature map, e.g.
        ``functools.partial(fourier_features, amps=amplitudes(10))`` or
        :func:`linear_features`.

    Returns:
      ``AntiDistillation(phi, psi, t)``.

    Example:
      >>> import jax.numpy as jnp
      >>> prob = anti_distillation(jnp.array([0.0, 2.0]), jnp.array([1.0]), jnp.array([1.0]),
      ...                          linear_features)
      >>> prob.phi.tolist(), prob.psi.tolist()
      ([[0.0, 1.0], [2.0, 1.0]], [[1.0, 1.0]])
      >>> x, w = prob.min_norm_outer_solution(jnp.zeros(2))   # the line through (1, 1)
      >>> [f"{v:.4f}" for v in x], [f"{v:.4f}" for v in abs(w)]
      (['1.0000', '1.0000'], ['0.0000', '1.0000'])
    """
    _checks.check_callable(features, "features")
    u_learned, v_original, t_original = (
        jnp.asarray(a) for a in (u_learned, v_original, t_original)
    )
    for name, arr in (("u_learned", u_learned), ("v_original", v_original),
                      ("t_original", t_original)):
        if arr.ndim != 1 or arr.shape[0] < 1:
            raise ValueError(f"`{name}` must be a non-empty 1-D array; got shape {arr.shape}.")
        if _checks.is_concrete(arr) and not bool(jnp.all(jnp.isfinite(arr))):
            raise ValueError(f"`{name}` must be finite; got {arr}.")
    if t_original.shape != v_original.shape:
        raise ValueError(
            f"`t_original` must have one target per original input {v_original.shape}; "
            f"got {t_original.shape}."
        )
    phi = jnp.asarray(features(u_learned))
    psi = jnp.asarray(features(v_original))
    if phi.ndim != 2 or phi.shape[0] != u_learned.shape[0] or psi.shape[1:] != phi.shape[1:]:
        raise ValueError(
            f"`features` must map (N,) inputs to an (N, n) matrix; got {phi.shape} for the "
            f"learned and {psi.shape} for the original inputs."
        )
    t = t_original.astype(phi.dtype)
    return AntiDistillation(phi, psi, t)


def exact_inner_solver(hess, *, rtol=None):
    r"""An optax transformation whose one step from ``y0`` lands on the closest inner minimizer.

    The update is ``-H^+ g``: for a quadratic ``f = 1/2 y^T H y + b^T y`` with ``g = H y0 + b``
    one step gives ``y0 - H^+(H y0 + b)``, exactly the limit of gradient descent from ``y0``
    (Lemma C.1). Used with ``inner_steps=1`` in :func:`bilevel_lib.blo.cold_start`, it is the
    paper's "cold-start inner solution computed analytically", without the ``1/(alpha
    lambda_min)`` gradient steps that ill-conditioned Fourier features would need.

    Args:
      hess: the constant (n, n) inner Hessian (1-D parameters only).
      rtol: relative cut-off of the pseudo-inverse (default: that of
        :func:`bilevel_lib.linalg.zero_threshold`).

    Returns:
      ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> H = jnp.array([[1.0, 0.0], [0.0, 0.0]])
      >>> opt = exact_inner_solver(H)
      >>> y0 = jnp.array([5.0, 7.0]); g = H @ y0 - jnp.array([2.0, 0.0])
      >>> updates, _ = opt.update(g, opt.init(y0))
      >>> optax.apply_updates(y0, updates).tolist()
      [2.0, 7.0]
    """
    hess = jnp.asarray(hess)
    if hess.ndim != 2 or hess.shape[0] != hess.shape[1]:
        raise ValueError(f"`hess` must be a square matrix; got shape {hess.shape}.")
    if _checks.is_concrete(hess) and not bool(jnp.all(jnp.isfinite(hess))):
        raise ValueError("`hess` must be finite.")
    # H^+ is the minimum-norm solution of H P = I (the core's pinv and zero threshold).
    n = hess.shape[0]
    hess_pinv = quadratic.closest_solution(0.5 * (hess + hess.T), jnp.eye(n, dtype=hess.dtype),
                                           jnp.zeros((n, n), hess.dtype), rtol=rtol)

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return -(hess_pinv @ updates).astype(updates.dtype), state

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------



# ---------------------------------------------------------------------------------------------
# The MLP version (App. F.2, Fig. 18)
# ---------------------------------------------------------------------------------------------


def mlp_init(key, sizes=(1, 10, 10, 1), dtype=None):
    r"""LeCun-normal parameters for :mod:`bilevel_lib.models.mlp`: N(0, 1/fan_in), zero biases.

    ``sizes=(1, 10, 10, 1)`` is the paper's "2 layers, 10 hidden units per layer" (141
    parameters). These are the He-normal draws of :func:`bilevel_lib.models.mlp.init` divided by
    ``sqrt(2)``. The paper does not state its initialization; with He's ``2/fan_in`` the
    untrained net's outputs on inputs in [-3, 3] are so large that gradient descent at lr 0.01
    often starts with a blow-up and ends in a poor fit.

    Returns:
      The dict pytree ``{"w0", "b0", ...}`` of :mod:`bilevel_lib.models.mlp`.

    Example:
      >>> import jax
      >>> params = mlp_init(jax.random.PRNGKey(0))
      >>> [params[f"w{i}"].shape for i in range(3)], mlp.num_params(params)
      ([(1, 10), (10, 10), (10, 1)], 141)
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    params = mlp.init(key, sizes, dtype=dtype)
    return {k: (v / jnp.sqrt(2.0).astype(dtype) if k.startswith("w") else v)
            for k, v in params.items()}


class MLPAntiDistillation(NamedTuple):
    r"""Anti-distillation with a ReLU MLP as the inner model (paper Fig. 18).

    ``f(x, params) = 1/2 sum_i (mlp(u_i) - x_i)^2``, ``F(params) = 1/2 sum_j (mlp(v_j) - t_j)^2``.
    Build it with :func:`mlp_problem`.
    """

    u: jax.Array
    v: jax.Array
    t: jax.Array

    @staticmethod
    def predict(params, u):
        """The MLP (a :mod:`bilevel_lib.models.mlp` pytree) at scalar inputs, ``(N,) -> (N,)``."""
        return mlp.apply(params, jnp.asarray(u)[:, None])[:, 0]

    def inner(self, x, params):
        """Inner objective on the learned points (targets x)."""
        return 0.5 * jnp.sum((self.predict(params, self.u) - x) ** 2)

    def outer(self, x, params):
        """Outer objective on the original points (x unused)."""
        del x
        return 0.5 * jnp.sum((self.predict(params, self.v) - self.t) ** 2)


def mlp_problem(u_learned, v_original, t_original):
    r"""Build an :class:`MLPAntiDistillation` problem (same inputs as :func:`anti_distillation`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> prob = mlp_problem(jnp.array([0.5, 1.0]), jnp.array([0.0]), jnp.array([1.0]))
      >>> float(prob.outer(jnp.zeros(2), mlp_init(jax.random.PRNGKey(0))))   # mlp(0) = 0
      0.5
    """
    arrs = [jnp.asarray(a) for a in (u_learned, v_original, t_original)]
    for name, arr in zip(("u_learned", "v_original", "t_original"), arrs, strict=True):
        if arr.ndim != 1 or arr.shape[0] < 1:
            raise ValueError(f"`{name}` must be a non-empty 1-D array; got shape {arr.shape}.")
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise TypeError(f"`{name}` must be floating point; got {arr.dtype}.")
    if arrs[2].shape != arrs[1].shape:
        raise ValueError(
            f"`t_original` must have one target per original input {arrs[1].shape}; "
            f"got {arrs[2].shape}."
        )
    return MLPAntiDistillation(*arrs)
