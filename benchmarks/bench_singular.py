"""``lsqr`` vs ``cg`` vs ``exact`` on a singular inner problem (overparameterised least
squares), where dF/dy is partly outside range(H).

Inner: ``f(x, y) = 1/2 |Phi y - x|^2`` with ``Phi`` of shape ``n x d``, ``n < d`` (x are the
n regression targets, y the d weights), so ``H = Phi^T Phi`` has rank n and a null space of
dimension d - n. ``Phi``'s singular values are log-spaced from 1 to ``--smin`` (``cond`` of H on
its range: ``1 / smin^2``). Outer: ``F(x, y) = 1/2 |Psi y - z|^2`` on other features, so
``F_y = Psi^T (Psi y - z)`` has a component in ``null(H)``: the system ``H v = F_y`` is
inconsistent. The canonical (pinv) hypergradient ``-B^T H^+ F_y`` is the reference
(``hypergrad.exact`` in float64).

For K iterations the script reports the relative error of ``hypergrad.cg(steps=K)`` and
``hypergrad.lsqr(steps=K)`` against it, their HVP counts computed (cg: K + 1, with the probe;
lsqr: 2K + 2; both loops are ``lax.scan`` s of length K whose steps past an early stop are
masked but still compute their HVPs; the final true-residual HVP is dropped by ``jit`` when
unused), the iterations that were active and status, and
the per-call wall time of the jitted calls (one process, alternating rounds); then
``hypergrad.exact`` (d HVPs for the dense Hessian, plus ``eigh``) in float32 and float64.

Run: ``python benchmarks/bench_singular.py`` (under a minute).
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
from common import make_parser, rel, time_alternating

from bilevel_lib import hypergrad, linalg, runtime

jax.config.update("jax_enable_x64", True)


def problem(n, d, n_val, smin, seed=0):
    """float64 arrays; the float32 runs use exactly these values, rounded."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    g = jax.random.normal(k1, (n, d), jnp.float64)
    u, _, vt = jnp.linalg.svd(g, full_matrices=False)
    phi = (u * jnp.logspace(0.0, np.log10(smin), n)) @ vt
    psi = jax.random.normal(k2, (n_val, d), jnp.float64) / jnp.sqrt(d)
    z = jax.random.normal(k3, (n_val,), jnp.float64)
    x = jax.random.normal(k4, (n,), jnp.float64)
    return phi, psi, z, x


def objectives(phi, psi, z):
    def inner(x, y):
        return 0.5 * jnp.sum((phi @ y - x) ** 2)

    def outer(x, y):
        return 0.5 * jnp.sum((psi @ y - z) ** 2)

    return inner, outer


def main(argv=None):
    parser = make_parser(__doc__, rounds=9, reps=20)
    parser.add_argument("--n", type=int, default=100, help="training points (rank of H)")
    parser.add_argument("--d", type=int, default=400, help="inner parameters")
    parser.add_argument("--smin", type=float, default=0.1)
    parser.add_argument("--ks", type=str, default="5,10,20,50,100,200,400,800")
    parser.add_argument("--time-k", type=int, default=200, help="K whose calls are timed")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]

    print(runtime.device_report())
    phi, psi, z, x64 = problem(args.n, args.d, args.n, args.smin)
    inner64, outer64 = objectives(phi, psi, z)
    y64 = jnp.linalg.pinv(phi) @ x64  # the minimum-norm inner solution (any would do: H is
    # constant); the pinv reference in float64:
    ref = hypergrad.exact(inner64, outer64, x64, y64)
    f_y = jax.grad(outer64, argnums=1)(x64, y64)
    null_part = f_y - phi.T @ jnp.linalg.lstsq(phi.T, f_y)[0]
    print(f"Inner: overparameterised least squares, {args.n} points, {args.d} parameters "
          f"(H = Phi^T Phi, rank {args.n}, cond on its range {1 / args.smin**2:.0e}); "
          f"|F_y outside range(H)| / |F_y| = {float(jnp.linalg.norm(null_part)):.2f} / "
          f"{float(jnp.linalg.norm(f_y)):.2f}")

    for dtype in (jnp.float64, jnp.float32):
        cast = lambda a, dtype=dtype: jnp.asarray(a, dtype)  # noqa: E731
        inner, outer = objectives(cast(phi), cast(psi), cast(z))
        x, y = cast(x64), cast(y64)
        name = jnp.dtype(dtype).name
        print(f"\n{name}: relative error of the hypergradient vs the float64 pinv answer")
        print(f"  {'K':>5} | {'cg error':>9} {'HVPs':>5} {'|v|':>8} {'status':>18} | "
              f"{'lsqr error':>12} {'HVPs':>5} {'active':>6} {'status':>10}")
        for k in ks:
            hc, ic = jax.jit(functools.partial(hypergrad.cg, inner, outer, steps=k,
                                               return_info=True))(x, y)
            hm, im = jax.jit(functools.partial(hypergrad.lsqr, inner, outer, steps=k,
                                               return_info=True))(x, y)
            v_norm = float(jnp.linalg.norm(ic["solution"]))
            print(f"  {k:>5} | {rel(hc, ref):>9.2e} {k + 1:>5} {v_norm:>8.1e} "
                  f"{linalg.status_name(ic['status']) + ' @' + str(int(ic['steps'])):>18} | "
                  f"{rel(hm, ref):>12.2e} "
                  f"{2 * k + 2:>5} {int(im['steps']):>6} "
                  f"{linalg.status_name(im['status']):>10}")
        ex = jax.jit(functools.partial(hypergrad.exact, inner, outer))
        h_ex = ex(x, y)
        fns = {
            "cg": jax.jit(functools.partial(hypergrad.cg, inner, outer, steps=args.time_k)),
            "lsqr": jax.jit(functools.partial(hypergrad.lsqr, inner, outer,
                                                steps=args.time_k)),
            "exact": ex,
        }
        for fn in fns.values():
            jax.block_until_ready(fn(x, y))
        t = time_alternating(fns, (x, y), rounds=args.rounds, reps=args.reps)
        print(f"  exact ({args.d} HVPs + eigh): error {rel(h_ex, ref):.2e}")
        print(f"  per-call time (median of {args.rounds} rounds; best), K = {args.time_k}: "
              + ", ".join(f"{k} {1e3 * m:.2f} ms ({1e3 * b:.2f})" for k, (m, b) in t.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
