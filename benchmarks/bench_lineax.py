"""``bilevel_lib`` against lineax (and jaxopt) on the same HVP operator.

optimistix is not timed: ``optimistix.root_find(..., max_steps=0)`` with ``ImplicitAdjoint``
still runs its solver's first step in the forward pass (``optx.Newton`` materializes the
4801 x 4801 Jacobian: about 3 s a call against 30 ms), and ``optx.ImplicitAdjoint.apply``
needs closure-free functions; its backward pass is a ``lineax.linear_solve``, the lineax row.

Part 1, minimum-norm solves. ``bilevel_lib.linalg.lsqr_solve`` (LSQR with ``A^T = A``; what
``hypergrad.lsqr`` calls) against ``lineax.LSMR`` on ``A v = b`` with ``A`` a Hessian given
only through its Hessian-vector product (forward-over-reverse: the gradient linearized once,
``linalg.hvp_operator``, as ``hypergrad`` does; lineax gets the same function as a
``FunctionLinearOperator`` with the ``symmetric_tag``, so its ``A^T u`` is the same HVP).
Both cost 2 HVPs per iteration. Systems:

* ``singular``: the inner problem of ``bench_singular.py`` (``1/2 |Phi y - x|^2``, ``Phi``
  100 x 400 with singular values log-spaced from 1 to 0.1, so ``H = Phi^T Phi`` has rank 100)
  and ``b = F_y``, which is partly outside ``range(H)``: singular and inconsistent;
* ``indefinite``: ``1/2 y^T A y`` with ``A = Q diag(lam) Q^T`` (n = 400, ``Q`` random
  orthogonal), 200 nonzero eigenvalues of magnitude log-spaced from 1 to 0.1 and random sign,
  200 zeros, and a random ``b`` (indefinite, singular, inconsistent).

The reference is ``pinv(A) b`` from the dense float64 matrix (``numpy.linalg.pinv``). For K
iterations (both stop earlier at rounding level, each by its own test) the script reports
the relative error ``|v - A^+ b| / |A^+ b|`` and the steps taken; then per-call times of the
jitted solves at ``--time-k`` iterations, and at a tolerance (``--tol``: ours ``tol``, LSMR
``rtol = atol``), in alternating rounds in one process.

Part 2, the CG hypergradient at the stationary point of ``bench_jaxopt.py`` (MLP 8-64-64-1,
4801 inner parameters, positive definite ``H``), K = 20 iterations on every side:

* ours: ``hypergrad.cg(inner, outer, x, y, steps=K)``;
* lineax: ``F_x - B^T v`` with ``v = lineax.linear_solve(FunctionLinearOperator(HVP,
  positive_semidefinite_tag), F_y, lineax.CG(rtol=0, atol=0, max_steps=K,
  stabilise_every=None))`` (``stabilise_every=None``: no extra residual HVPs, so both run K
  HVPs; the tolerances 0 turn early stopping off);
* jaxopt: as in ``bench_jaxopt.py`` (``custom_root`` with ``solve_cg(maxiter=K, tol=0)``).

Accuracy: relative error against a float64 converged answer (lineax CG to ``rtol=1e-12``,
checked against ours run to ``tol=1e-12``). Time: per call, alternating rounds.

Run: ``pip install -r benchmarks/requirements.txt && python benchmarks/bench_lineax.py``
(about 2 minutes on 2 busy CPU cores; ``--skip-cg`` or ``--skip-minnorm`` for one part).
"""

from __future__ import annotations

import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from bench_jaxopt import jaxopt_hypergrad, make_problem, objectives, stationary_point
from bench_singular import problem as singular_problem
from common import make_parser, rel, time_alternating, to_dtype
from jax.flatten_util import ravel_pytree

from bilevel_lib import hypergrad, linalg, runtime

# bench_singular.py turns float64 on for the whole process when imported; this script keeps
# JAX's default (float32 unless asked), as bench_jaxopt.py, and asks for float64 where it uses it.
jax.config.update("jax_enable_x64", False)

try:
    import lineax as lx
except ImportError:  # pragma: no cover - a clear message instead of a traceback
    sys.exit("bench_lineax.py needs lineax: "
             "pip install -r benchmarks/requirements.txt")


# ---------------------------------------------------------------------------------------------
# The shared operator: a Hessian-vector product on flat vectors
# ---------------------------------------------------------------------------------------------


def flat_hvp(inner, x, y):
    """``(matvec, y_flat)``: ``v -> H v`` for ``H = d^2 f / dy^2`` at ``(x, y)``, on flat
    vectors, forward-over-reverse (how ``bilevel_lib.hypergrad`` builds its operator)."""
    y_flat, unravel = ravel_pytree(y)

    def grad_y(yy):
        return ravel_pytree(jax.grad(inner, argnums=1)(x, unravel(yy)))[0]

    # Linearized once (what hypergrad.cg does inside): every solver gets the same operator.
    return linalg.hvp_operator(grad_y, y_flat), y_flat


def lineax_operator(matvec, like, tag):
    return lx.FunctionLinearOperator(matvec, jax.ShapeDtypeStruct(like.shape, like.dtype), tag)


def lineax_solve(matvec, b, solver, tag):
    """``(v, steps)`` from ``lineax.linear_solve`` (``throw=False``: running out of steps is
    the point of a truncated solve, not an error)."""
    sol = lx.linear_solve(lineax_operator(matvec, b, tag), b, solver, throw=False)
    return sol.value, sol.stats["num_steps"]


def lineax_hypergrad(inner, outer, solver):
    """``dF/dx = F_x - B^T v`` with ``v`` from ``solver`` on the PSD-tagged HVP operator."""

    def hypergradient(x, y):
        f_x, f_y = jax.grad(outer, argnums=(0, 1))(x, y)
        matvec, y_flat = flat_hvp(inner, x, y)
        v, _ = lineax_solve(matvec, ravel_pytree(f_y)[0], solver, lx.positive_semidefinite_tag)
        unravel = ravel_pytree(y)[1]
        _, vjp_x = jax.vjp(lambda xx: jax.grad(inner, argnums=1)(xx, y), x)
        (b_t_v,) = vjp_x(unravel(v))
        return f_x - b_t_v

    return hypergradient


# ---------------------------------------------------------------------------------------------
# Part 1: minimum-norm solves
# ---------------------------------------------------------------------------------------------


def minnorm_systems(smin):
    """``{name: (make_matvec, b, A)}``, ``b`` and ``A`` in float64; ``make_matvec(dtype)`` is
    the HVP of the system's objective with its arrays in ``dtype``."""
    phi, psi, z, x = singular_problem(100, 400, 100, smin)
    y = jnp.linalg.pinv(phi) @ x
    b_sing = psi.T @ (psi @ y - z)  # F_y of bench_singular.py's outer objective

    def matvec_sing(dtype):
        phi_, x_, y_ = (jnp.asarray(a, dtype) for a in (phi, x, y))
        return flat_hvp(lambda xx, yy: 0.5 * jnp.sum((phi_ @ yy - xx) ** 2), x_, y_)[0]

    n, rank = 400, 200
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    q, _ = jnp.linalg.qr(jax.random.normal(k1, (n, n), jnp.float64))
    signs = jnp.where(jax.random.bernoulli(k2, 0.5, (rank,)), 1.0, -1.0)
    lam = jnp.concatenate([signs * jnp.logspace(0.0, np.log10(smin), rank), jnp.zeros(n - rank)])
    a = (q * lam) @ q.T
    a = 0.5 * (a + a.T)

    def matvec_ind(dtype):
        a_ = a.astype(dtype)
        return flat_hvp(lambda xx, yy: 0.5 * yy @ (a_ @ yy), jnp.zeros((), dtype),
                        jnp.zeros(n, dtype))[0]

    b_ind = jax.random.normal(k3, (n,), jnp.float64)
    return {"singular": (matvec_sing, b_sing, phi.T @ phi),
            "indefinite": (matvec_ind, b_ind, a)}


def minnorm_part(args):
    ks = [int(k) for k in args.ks.split(",")]
    with jax.enable_x64(True):
        systems = minnorm_systems(args.smin)
    print("\nPart 1: minimum-norm solve, ours (linalg.lsqr_solve = LSQR) vs lineax.LSMR, "
          "same HVP operator")
    for name, (make_matvec, b64, a64) in systems.items():
        a_np = np.asarray(a64)
        ref = np.linalg.pinv(a_np, rcond=1e-10, hermitian=True) @ np.asarray(b64)
        lam = np.linalg.eigvalsh(a_np)
        null = np.asarray(b64) - a_np @ (np.linalg.pinv(a_np, rcond=1e-10) @ a_np
                                         @ np.asarray(b64))
        print(f"\n[{name}] n = {b64.size}, rank {int(np.sum(np.abs(lam) > 1e-10))}, "
              f"eigenvalues {lam.min():.2f} to {lam.max():.2f}, "
              f"|b outside range(A)| / |b| = {np.linalg.norm(null) / np.linalg.norm(b64):.2f}")
        for dtype in (jnp.float64, jnp.float32):
            # float32 with float64 off: lineax 0.1.1's LSMR fails on float32 under
            # jax_enable_x64 (a lax.select of float32 and float64 in its first step).
            with jax.enable_x64(dtype == jnp.float64):
                minnorm_dtype(args, ks, make_matvec, b64, ref, dtype)


def minnorm_dtype(args, ks, make_matvec, b64, ref, dtype):
    """Part 1 for one system in one precision (call it with float64 on for float64)."""
    b = b64.astype(dtype)
    matvec = make_matvec(dtype)
    tag = lx.symmetric_tag

    def ours(b, k, tol=None, matvec=matvec):
        v, info = linalg.lsqr_solve(matvec, b, steps=k, tol=tol)
        return v, info.steps

    def lsmr(b, k, tol=0.0, matvec=matvec, tag=tag):
        return lineax_solve(matvec, b, lx.LSMR(rtol=tol, atol=tol, max_steps=k), tag)

    dname = jnp.dtype(dtype).name
    print(f"  {dname}: relative error vs float64 pinv (steps taken)")
    print(f"    {'K':>5} | {'ours':>9} {'steps':>5} | {'LSMR':>9} {'steps':>5}")
    fns = {}
    for k in sorted(set(ks) | {args.time_k}):
        f_o = jax.jit(functools.partial(ours, k=k))
        f_l = jax.jit(functools.partial(lsmr, k=k))
        if k == args.time_k:
            fns = {"ours": f_o, "lsmr": f_l}
        if k not in ks:
            continue
        (v_o, s_o), (v_l, s_l) = f_o(b), f_l(b)
        print(f"    {k:>5} | {rel(v_o, ref):>9.2e} {int(s_o):>5} | "
              f"{rel(v_l, ref):>9.2e} {int(s_l):>5}")
    label = f"K = {args.time_k}"
    if dtype == jnp.float64:
        kmax = 4 * args.time_k
        fns["ours_tol"] = jax.jit(functools.partial(ours, k=kmax, tol=args.tol))
        fns["lsmr_tol"] = jax.jit(functools.partial(lsmr, k=kmax, tol=args.tol))
        for key in ("ours_tol", "lsmr_tol"):
            v, s = fns[key](b)
            print(f"    tol {args.tol:.0e} (at most {kmax} steps): {key[:4]} error "
                  f"{rel(v, ref):.2e} after {int(s)} steps")
    for fn in fns.values():
        jax.block_until_ready(fn(b))
    t = time_alternating(fns, (b,), rounds=args.rounds, reps=args.reps)
    print(f"    time per solve, {label} (median of {args.rounds} rounds; best): "
          + ", ".join(f"{k} {1e3 * m:.2f} ms ({1e3 * m_best:.2f})"
                      for k, (m, m_best) in t.items()))
    print(f"    ratio ours / LSMR at {label}: {t['ours'][0] / t['lsmr'][0]:.2f} "
          f"(best rounds {t['ours'][1] / t['lsmr'][1]:.2f})"
          + (f"; at tol {args.tol:.0e}: {t['ours_tol'][0] / t['lsmr_tol'][0]:.2f} "
             f"({t['ours_tol'][1] / t['lsmr_tol'][1]:.2f})" if "ours_tol" in t else ""))


# ---------------------------------------------------------------------------------------------
# Part 2: CG hypergradient
# ---------------------------------------------------------------------------------------------


def cg_part(args):
    k = args.cg_steps
    dtype = jnp.float32
    print(f"\nPart 2: CG hypergradient, K = {k}, at the stationary point of bench_jaxopt.py")
    data, inner, outer, x, y0 = make_problem(args.n_train, args.dim, dtype)
    start = time.perf_counter()
    y64, g64 = stationary_point(data, x, y0, args.lbfgs_iters)
    if not g64 <= args.max_grad:
        # Away from a stationary point the implicit hypergradients (ours, lineax's, jaxopt's)
        # are not the derivative of anything, and "accuracy" against a reference means little.
        sys.exit(f"Part 2 refused: |grad_y f| = {g64:.1e} > --max-grad {args.max_grad:.0e} at "
                 f"the inner point; raise --lbfgs-iters (now {args.lbfgs_iters}).")
    with jax.enable_x64(True):
        inner64, outer64 = objectives(to_dtype(data, jnp.float64))
        x64 = to_dtype(x, jnp.float64)
        ref = jax.jit(lineax_hypergrad(inner64, outer64, lx.CG(
            rtol=1e-12, atol=0.0, max_steps=20000)))(x64, y64)
        ours64 = jax.jit(functools.partial(hypergrad.cg, inner64, outer64, steps=3000,
                                           tol=1e-12))(x64, y64)
    y = to_dtype(y64, dtype)
    print(f"  inner solve in float64 ({time.perf_counter() - start:.1f} s, references "
          f"included): |grad_y f| = {g64:.1e}; float64 reference (lineax CG to rtol 1e-12) "
          f"{np.array2string(np.asarray(ref), precision=8)}, ours to tol 1e-12 differs by "
          f"{rel(ours64, ref):.1e} (relative)")

    cg = lx.CG(rtol=0.0, atol=0.0, max_steps=k, stabilise_every=None)
    fns = {
        "ours": jax.jit(functools.partial(hypergrad.cg, inner, outer, steps=k)),
        "lineax": jax.jit(lineax_hypergrad(inner, outer, cg)),
        # lineax's default recomputes the true residual every 10 steps (2 HVPs more at K =
        # 20): the same HVP count as ours (a scale probe and one true residual).
        "lineax (stab. 10)": jax.jit(lineax_hypergrad(inner, outer, lx.CG(
            rtol=0.0, atol=0.0, max_steps=k))),
        "jaxopt": jax.jit(jaxopt_hypergrad(inner, outer, y, maxiter=k, tol=0.0)),
    }
    outs = {name: jax.block_until_ready(fn(x, y)) for name, fn in fns.items()}
    t = time_alternating(fns, (x, y), rounds=args.cg_rounds, reps=args.cg_reps)
    print(f"  float32, {args.cg_rounds} rounds x {args.cg_reps} calls (median ms per call; "
          "best round):")
    print(f"    {'':>17} | {'error vs f64':>12} | {'vs ours':>8} | {'ms':>8} | "
          f"{'ours / this':>11}")
    for name, h in outs.items():
        m, mb = t[name]
        print(f"    {name:>17} | {rel(h, ref):>12.2e} | {rel(h, outs['ours']):>8.1e} | "
              f"{1e3 * m:>8.3f} | {t['ours'][0] / m:>5.2f} ({t['ours'][1] / mb:.2f})")


def main(argv=None):
    parser = make_parser(__doc__, rounds=9, reps=10)
    parser.add_argument("--smin", type=float, default=0.1,
                        help="smallest nonzero |eigenvalue| (or singular value) in part 1")
    parser.add_argument("--ks", type=str, default="50,100,300")
    parser.add_argument("--time-k", type=int, default=300, help="K whose solves are timed")
    parser.add_argument("--tol", type=float, default=1e-8, help="tolerance of the tol rows")
    parser.add_argument("--cg-steps", type=int, default=20)
    parser.add_argument("--cg-rounds", type=int, default=9)
    parser.add_argument("--cg-reps", type=int, default=10)
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--lbfgs-iters", type=int, default=1000)
    parser.add_argument("--max-grad", type=float, default=1e-8,
                        help="part 2 refuses to run at a point with a larger |grad_y f|")
    parser.add_argument("--skip-minnorm", action="store_true")
    parser.add_argument("--skip-cg", action="store_true")
    args = parser.parse_args(argv)
    print(runtime.device_report())
    print(f"lineax {lx.__version__}")
    if not args.skip_minnorm:
        minnorm_part(args)
    if not args.skip_cg:
        cg_part(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
