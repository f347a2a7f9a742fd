"""Per-call CG hypergradient vs jaxopt at a non-stationary and at a stationary inner point.

Same problem as ``bench_jaxopt.py`` (ridge-regularized 8-64-64-1 tanh MLP, 4801 inner
parameters, x = three per-layer log ridge penalties, outer = validation loss), at two points:

* ``initial``: the initial weights, far from any minimum. The inner Hessian there is
  indefinite (the script proves it: a negative eigenvalue from a dense float64 Hessian, and
  the ``negative_curvature`` flag of our CG). This is where the v1 CG froze.
* ``stationary``: the near-exact inner solution of ``bench_jaxopt.py`` (L-BFGS + Newton-CG in
  float64), where the Hessian is positive definite.

At each point, in float32, both libraries compute ``dF/dx = F_x - B^T v`` with ``v`` from K
conjugate-gradient iterations on ``H v = F_y`` (ours: ``hypergrad.cg(steps=K)``; jaxopt:
``custom_root`` with ``solve_cg(maxiter=K, tol=0)``, so both run exactly K iterations). On an
indefinite H a short CG is not a converged solve for either library, so the script reports
(1) ours vs jaxopt at the same K (like with like) and (2) both against the float64 dense
answer ``F_x - B^T H^{-1} F_y`` (``numpy.linalg.solve`` on the dense Hessian; H is
nonsingular at both points), for several K. The K = 20 calls are timed in alternating rounds
in one process (median ratio and best-round ratio).

Run: ``python benchmarks/bench_points.py`` (about 3 minutes on 2 CPU cores, more under load);
``--skip-dense`` drops the float64 dense reference, ``--points initial`` one point only.
"""

from __future__ import annotations

import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.sparse.linalg
from bench_jaxopt import (
    jaxopt_hypergrad,
    make_problem,
    newton_polish,
    objectives,
    solve_inner,
)
from common import make_parser, rel, time_alternating, to_dtype
from jax.flatten_util import ravel_pytree

from bilevel_lib import hypergrad, linalg, runtime

RIDGE = 1e-2


def dense_reference(inner64, outer64, x64, y64, chunk=256):
    """float64 ``F_x - B^T H^{-1} F_y`` from the dense Hessian, and its extreme eigenvalues."""
    y_flat, unravel = ravel_pytree(y64)
    n = y_flat.size

    def grad_y(x_, v):
        return ravel_pytree(jax.grad(inner64, argnums=1)(x_, unravel(v)))[0]

    @jax.jit  # x and y as arguments: closed-over constants would be constant-folded by XLA
    def columns(e, x_, y_):
        return jax.vmap(lambda u: linalg.hvp(lambda v: grad_y(x_, v), y_, u))(e)

    eye = np.eye(n)
    hess = np.concatenate([np.asarray(columns(eye[i:i + chunk], x64, y_flat))
                           for i in range(0, n, chunk)])
    hess = 0.5 * (hess + hess.T)
    f_x, f_y = jax.grad(outer64, argnums=(0, 1))(x64, y64)
    v = np.linalg.solve(hess, np.asarray(ravel_pytree(f_y)[0]))
    _, vjp_x = jax.vjp(lambda xx: grad_y(xx, y_flat), x64)
    h = np.asarray(f_x) - np.asarray(vjp_x(jnp.asarray(v))[0])
    lam_min = scipy.sparse.linalg.eigsh(hess, k=1, which="SA", return_eigenvectors=False)[0]
    lam_max = scipy.sparse.linalg.eigsh(hess, k=1, which="LA", return_eigenvectors=False)[0]
    n_neg = None
    if lam_min < 0:  # count negative eigenvalues with one LDL^T (Sylvester's inertia)
        _, d, _ = scipy.linalg.ldl(hess)  # d: block diagonal, 1x1 and 2x2 blocks
        n_neg = int(np.sum(scipy.linalg.eigvalsh_tridiagonal(np.diag(d), np.diag(d, 1)) < 0))
    return h, float(lam_min), float(lam_max), n_neg


def main(argv=None):
    parser = make_parser(__doc__, rounds=15, reps=20)
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="CG iterations timed")
    parser.add_argument("--ks", type=str, default="20,100,300",
                        help="CG iteration counts compared with the dense reference")
    parser.add_argument("--lbfgs-iters", type=int, default=1000)
    parser.add_argument("--points", type=str, default="initial,stationary")
    parser.add_argument("--skip-dense", action="store_true")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]

    print(runtime.device_report())
    dtype = jnp.float32
    data, inner, outer, x, y0 = make_problem(args.n_train, args.dim, dtype)

    points = {}
    for name in args.points.split(","):
        if name == "initial":
            points[name] = y0  # float32 weights, made float64 (exactly) for the reference
        elif name == "stationary":
            start = time.perf_counter()
            with jax.enable_x64(True):
                inner64, _ = objectives(to_dtype(data, jnp.float64))
                x64 = to_dtype(x, jnp.float64)
                y64 = solve_inner(inner64, x64, to_dtype(y0, jnp.float64), args.lbfgs_iters)
                points[name] = newton_polish(inner64, x64, y64, iters=2, cg_steps=500)
            print(f"stationary point: {args.lbfgs_iters} L-BFGS + 2 Newton-CG steps in float64 "
                  f"({time.perf_counter() - start:.1f} s)")
        else:
            sys.exit(f"unknown point {name!r}: use initial and/or stationary")

    summary = []
    for name, y64_point in points.items():
        y = to_dtype(y64_point, dtype)
        gnorm = float(jnp.linalg.norm(ravel_pytree(jax.grad(inner, argnums=1)(x, y))[0]))
        print(f"\n=== point: {name}  (|grad_y f| = {gnorm:.2e} in float32) ===")
        ref = None
        if not args.skip_dense:
            start = time.perf_counter()
            with jax.enable_x64(True):
                inner64, outer64 = objectives(to_dtype(data, jnp.float64))
                ref, lam_min, lam_max, n_neg = dense_reference(
                    inner64, outer64, to_dtype(x, jnp.float64), to_dtype(y64_point, jnp.float64))
            neg = "" if n_neg is None else f", {n_neg} negative eigenvalues"
            print(f"dense float64 Hessian: eigenvalues in [{lam_min:.3e}, {lam_max:.3e}]{neg}"
                  f" ({time.perf_counter() - start:.1f} s)")
            print(f"dense float64 reference dF/dx = {np.array2string(ref, precision=6)}")

        print("K CG iterations, float32: relative errors (2-norm over the 3 components)")
        print(f"  {'K':>5} {'|ours-jaxopt|/|jaxopt|':>23} {'ours vs dense64':>16} "
              f"{'jaxopt vs dense64':>18} {'ours steps':>10} {'residual':>9}  status")
        rows = {}
        for k in sorted(set(ks) | {args.steps}):
            ours_k = jax.jit(functools.partial(hypergrad.cg, inner, outer, steps=k,
                                               return_info=True))
            theirs_k = jax.jit(jaxopt_hypergrad(inner, outer, y, maxiter=k, tol=0.0))
            h_o, info = ours_k(x, y)
            h_t = theirs_k(x, y)
            e_o = rel(h_o, ref) if ref is not None else float("nan")
            e_t = rel(h_t, ref) if ref is not None else float("nan")
            rows[k] = (rel(h_o, h_t), e_o, e_t)
            print(f"  {k:>5} {rows[k][0]:>23.2e} {e_o:>16.2e} {e_t:>18.2e} "
                  f"{int(info['steps']):>10} {float(info['residual']):>9.2e}  "
                  f"{linalg.status_name(info['status'])}"
                  f"{' (negative curvature met)' if bool(info['negative_curvature']) else ''}")
        # Like with like without float32 rounding: the same K iterations in float64.
        with jax.enable_x64(True):
            inner64, outer64 = objectives(to_dtype(data, jnp.float64))
            x64, yk64 = to_dtype(x, jnp.float64), to_dtype(y64_point, jnp.float64)
            h_o64, info64 = jax.jit(functools.partial(
                hypergrad.cg, inner64, outer64, steps=args.steps, return_info=True))(x64, yk64)
            h_t64 = jax.jit(jaxopt_hypergrad(inner64, outer64, yk64, maxiter=args.steps,
                                             tol=0.0))(x64, yk64)
            d64 = rel(h_o64, h_t64)
            e64 = rel(h_o64, ref) if ref is not None else float("nan")
        print(f"  float64, K = {args.steps}: |ours - jaxopt| / |jaxopt| = {d64:.2e}, ours vs "
              f"dense64 {e64:.2e}, {int(info64['steps'])} steps, "
              f"{linalg.status_name(info64['status'])}")

        k = args.steps
        ours = jax.jit(functools.partial(hypergrad.cg, inner, outer, steps=k))
        theirs = jax.jit(jaxopt_hypergrad(inner, outer, y, maxiter=k, tol=0.0))
        jax.block_until_ready(ours(x, y))
        jax.block_until_ready(theirs(x, y))
        t = time_alternating({"ours": ours, "jaxopt": theirs}, (x, y), rounds=args.rounds,
                             reps=args.reps)
        (t_o, t_o_min), (t_t, t_t_min) = t["ours"], t["jaxopt"]
        print(f"timing, K = {k}, {args.rounds} rounds x {args.reps} calls (median; best):")
        print(f"  ours {1e3 * t_o:.3f} ms ({1e3 * t_o_min:.3f}), jaxopt {1e3 * t_t:.3f} ms "
              f"({1e3 * t_t_min:.3f}); ratio ours/jaxopt {t_o / t_t:.3f} "
              f"(best rounds {t_o_min / t_t_min:.3f})")
        summary.append((name, rows[k], d64, t_o / t_t, t_o_min / t_t_min))

    print(f"\nSummary (K = {args.steps}, float32):")
    print(f"  {'point':>10} {'ours vs jaxopt':>15} {'(float64)':>10} {'ours vs dense':>14} "
          f"{'jaxopt vs dense':>16} {'time ratio':>11} {'best-round':>11}")
    for name, (d, e_o, e_t), d64, ratio, best in summary:
        print(f"  {name:>10} {d:>15.2e} {d64:>10.2e} {e_o:>14.2e} {e_t:>16.2e} {ratio:>11.3f} "
              f"{best:>11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
