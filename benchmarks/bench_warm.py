"""Time to a given hypergradient accuracy along a warm-start BLO run: warm-started solves vs
jaxopt's fixed-iteration cold solves.

Problem: ridge regression on 1024 fixed random tanh features of 8 inputs (a network whose
first layer is frozen: 1024 inner parameters), 512 training / 512 validation points of the
``bench_jaxopt.py`` task, x = three log ridge penalties (one per group of features, x0 = log
1e-4), outer = the validation loss. The inner Hessian is positive definite (eigenvalues
1e-4 to 0.08 at x0) and depends on x only. (A 1377-parameter ridge tanh MLP was tried first:
after 200 L-BFGS iterations at x0 its Hessian along the run had an eigenvalue of -7.7e-3, and
on an indefinite H neither a damped nor a short CG solve converges; see
``bench_points.py``.) The inner problem is solved exactly at x0; then ``blo.warm_start`` runs
T = 60 outer steps (Adam, lr 0.02, on x) with 5 SGD steps on y per outer step, so y tracks
y*(x) and moves slowly (|y_t+1 - y_t| / |y_t| ~ 4e-4). The states ``(x_t, y_t)`` of that run
are recorded, and every method then computes the T hypergradients at exactly these states
(float32), in one jitted ``lax.scan`` over t:

* ``ours damped``: ``hypergrad.damped(eps=1e-8, tol=tol, init=v_{t-1})`` -- CG on
  ``H + eps I`` in a ``while_loop``, warm-started from the previous step's solution
  (``info["solution"]``) and stopped on the true relative residual ``tol``;
* ``ours cg warm``: ``hypergrad.cg(steps=Kw, init=v_{t-1})`` -- a fixed, small number of CG
  steps from the previous solution;
* ``jaxopt cold``: ``custom_root`` + ``solve_cg(maxiter=K, tol=0)`` from zero at every step.

Accuracy is the relative error ``|h_t - h*_t| / |h*_t|`` against a float64 dense reference
``h*_t = F_x - B^T H^{-1} F_y`` at ``--n-ref`` evenly spaced steps. Each method's knob (tol,
Kw, K) is set to the loosest value whose *worst* error over those steps is below
``--target``. Then the T-step replays are timed against each other in alternating rounds in
one process, and the HVPs are counted exactly (a counting ``matvec`` in the same solvers).
Finally the whole ``blo.warm_start`` run (inner steps included) is timed with our damped
hypergradient (``warm_solve=True``) against the same run with jaxopt's.

Run: ``python benchmarks/bench_warm.py`` (about 2-3 minutes on 2 busy CPU cores).
"""

from __future__ import annotations

import functools
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from bench_jaxopt import jaxopt_hypergrad, make_data
from common import make_parser, rel, time_alternating, to_dtype
from jax.flatten_util import ravel_pytree

from bilevel_lib import blo, hypergrad, linalg, runtime

EPS = 1e-8  # damping of ours: a relative bias of at most EPS / lambda_min(H) <= 1e-4 here


def random_features(key, dim, n_features, dtype):
    """Frozen first layer ``u -> tanh(u W + c) / sqrt(n_features)`` (a fixed-kernel model)."""
    k_w, k_c = jax.random.split(key)
    w = 2.0 * jax.random.normal(k_w, (dim, n_features), dtype) / jnp.sqrt(dim)
    c = jax.random.uniform(k_c, (n_features,), dtype, -1.0, 1.0)
    return lambda u: jnp.tanh(u @ w + c) / jnp.sqrt(jnp.asarray(n_features, dtype))


def objectives(data, feats, n_groups):
    """Ridge regression on fixed features with one log penalty per group of features."""
    u, v, u_val, v_val = data
    phi, phi_val = feats(u), feats(u_val)
    group = jnp.arange(phi.shape[1]) % n_groups

    def inner(x, y):
        return 0.5 * jnp.mean((phi @ y - v) ** 2) + 0.5 * jnp.sum(jnp.exp(x)[group] * y**2)

    def outer(x, y):
        return 0.5 * jnp.mean((phi_val @ y - v_val) ** 2)

    return inner, outer


def dense_reference(inner64, outer64, x64, y64):
    y_flat, unravel = ravel_pytree(y64)

    def grad_y(x_, v):
        return ravel_pytree(jax.grad(inner64, argnums=1)(x_, unravel(v)))[0]

    # x and y are arguments, not closed-over constants: XLA would constant-fold the products.
    hess = np.asarray(jax.jit(lambda e, x_, y_: jax.vmap(
        lambda u: linalg.hvp(lambda v: grad_y(x_, v), y_, u))(e))(jnp.eye(y_flat.size), x64,
                                                                   y_flat))
    hess = 0.5 * (hess + hess.T)
    f_x, f_y = jax.grad(outer64, argnums=(0, 1))(x64, y64)
    v = np.linalg.solve(hess, np.asarray(ravel_pytree(f_y)[0]))
    _, vjp_x = jax.vjp(lambda xx: grad_y(xx, y_flat), x64)
    lam = np.linalg.eigvalsh(hess)
    return np.asarray(f_x) - np.asarray(vjp_x(jnp.asarray(v))[0]), lam[0], lam[-1]


def replay_fns(inner, outer, y_like, maxiter):
    """Jitted T-step replays ``(xs, ys) -> (hypergradients, solver steps)``."""
    zero = jax.tree_util.tree_map(jnp.zeros_like, y_like)

    def warm_scan(estimator):
        def body(v_prev, xy):
            h, info = estimator(inner, outer, xy[0], xy[1], init=v_prev, return_info=True)
            return info["solution"], (h, info["steps"])

        return jax.jit(lambda xs, ys: lax_scan(body, zero, (xs, ys)))

    def damped(tol):
        return warm_scan(functools.partial(hypergrad.damped, eps=EPS, tol=tol, max_steps=maxiter))

    def cg_warm(k):
        return warm_scan(functools.partial(hypergrad.cg, steps=k))

    def jaxopt_cold(k):
        hg = jaxopt_hypergrad(inner, outer, None, maxiter=k, tol=0.0)

        def body(_, xy):
            return None, (hg(xy[0], xy[1]), jnp.asarray(k, jnp.int32))

        return jax.jit(lambda xs, ys: lax_scan(body, None, (xs, ys)))

    return damped, cg_warm, jaxopt_cold


def lax_scan(body, carry, xs):
    return jax.lax.scan(body, carry, xs)[1]


def count_hvps(inner, outer, xs, ys, method, knob, maxiter):
    """Exact HVP count of a replay: the same solvers with a counting ``matvec``."""
    count = [0]

    def tick():
        count[0] += 1

    y_flat0, unravel = ravel_pytree(jax.tree_util.tree_map(lambda a: a[0], ys))
    v_prev = jnp.zeros_like(y_flat0)

    @jax.jit
    def one(x, y_flat, v0):
        def grad_y(v):
            return ravel_pytree(jax.grad(inner, argnums=1)(x, unravel(v)))[0]

        def matvec(u):
            jax.debug.callback(tick)
            return linalg.hvp(grad_y, y_flat, u)

        b = ravel_pytree(jax.grad(outer, argnums=1)(x, unravel(y_flat)))[0]
        if method == "damped":
            v, info = linalg.damped_solve(matvec, b, eps=EPS, tol=knob, max_steps=maxiter,
                                          init=v0)
        elif method == "cg_warm":
            v, info = linalg.cg_solve(matvec, b, steps=knob, init=v0)
        else:
            v = jax.scipy.sparse.linalg.cg(matvec, b, tol=0.0, maxiter=knob)[0]
            info = {"residual": jnp.zeros(())}
        return v, info["residual"]

    for t in range(xs.shape[0]):
        y_flat = ravel_pytree(jax.tree_util.tree_map(lambda a, t=t: a[t], ys))[0]
        v, res = one(xs[t], y_flat, v_prev)
        jax.block_until_ready(res)
        v_prev = v
    return count[0]


def main(argv=None):
    parser = make_parser(__doc__, rounds=7, reps=1)
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--ridge", type=float, default=1e-4)
    parser.add_argument("--outer-steps", type=int, default=60)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--inner-lr", type=float, default=1.0)
    parser.add_argument("--outer-lr", type=float, default=0.02)
    parser.add_argument("--target", type=float, default=1e-3,
                        help="worst relative hypergradient error allowed over the ref steps")
    parser.add_argument("--n-ref", type=int, default=6)
    parser.add_argument("--skip-full-run", action="store_true")
    args = parser.parse_args(argv)

    print(runtime.device_report())
    key_data, key_feat = jax.random.split(jax.random.PRNGKey(0))
    dtype = jnp.float32
    data = make_data(key_data, args.n_train, args.n_train, args.dim, dtype)
    feats = random_features(key_feat, args.dim, args.features, dtype)
    inner, outer = objectives(data, feats, args.groups)
    x0 = jnp.log(jnp.full(args.groups, args.ridge, dtype))
    n_params = args.features
    with jax.enable_x64(True):
        inner64, outer64 = objectives(to_dtype(data, jnp.float64), lambda u: jnp.asarray(
            feats(jnp.asarray(u, dtype)), jnp.float64), args.groups)
        # Start at the exact inner solution for x0 (a linear solve: the inner problem is
        # quadratic); the warm-start run then tracks y*(x) with a few SGD steps only.
        zero = jnp.zeros(n_params)
        hess0 = jax.hessian(inner64, argnums=1)(to_dtype(x0, jnp.float64), zero)
        g0 = jax.grad(inner64, argnums=1)(to_dtype(x0, jnp.float64), zero)
        y_start = jnp.asarray(np.linalg.solve(np.asarray(hess0), -np.asarray(g0)), dtype)
    print(f"Inner problem: ridge regression on {n_params} fixed tanh features of {args.dim} "
          f"inputs, {args.groups} log penalties (x0 = log {args.ridge:g}), {args.n_train} "
          f"training / {args.n_train} validation points, float32")

    # The trajectory: warm-start BLO, damped hypergradient with a tight tolerance.
    run_kw = dict(outer_opt=optax.adam(args.outer_lr), inner_opt=optax.sgd(args.inner_lr),
                  outer_steps=args.outer_steps, inner_steps=args.inner_steps)
    tight = functools.partial(hypergrad.damped, eps=EPS, tol=1e-5, max_steps=n_params)
    _, _, trace = jax.jit(lambda x, y: blo.warm_start(
        inner, outer, x, y, hypergrad=tight, warm_solve=True, trace_y=True, **run_kw))(
        x0, y_start)
    xs, ys = trace["x"], trace["y"]
    t_count = args.outer_steps
    ref_steps = np.unique(np.linspace(0, t_count - 1, args.n_ref).round().astype(int))
    moved = [rel(ravel_pytree(jax.tree_util.tree_map(lambda a, t=t: a[t + 1], ys))[0],
                 ravel_pytree(jax.tree_util.tree_map(lambda a, t=t: a[t], ys))[0])
             for t in range(t_count - 1)]
    print(f"Warm-start run: {t_count} outer steps (Adam {args.outer_lr}), {args.inner_steps} "
          f"SGD({args.inner_lr}) inner steps each; x: {np.asarray(xs[0]).round(3)} -> "
          f"{np.asarray(xs[-1]).round(3)}; |y_t+1 - y_t| / |y_t|: median "
          f"{statistics.median(moved):.1e}, max {max(moved):.1e}")

    start = time.perf_counter()
    refs, lams = {}, []
    with jax.enable_x64(True):
        for t in ref_steps:
            y_t = to_dtype(jax.tree_util.tree_map(lambda a, t=t: a[t], ys), jnp.float64)
            refs[t], lo, hi = dense_reference(inner64, outer64, to_dtype(xs[t], jnp.float64),
                                              y_t)
            lams.append((lo, hi))
    print(f"Dense float64 references at steps {ref_steps.tolist()} "
          f"({time.perf_counter() - start:.1f} s); eigenvalues of H in "
          f"[{min(lo for lo, _ in lams):.2e}, {max(hi for _, hi in lams):.2e}]")

    damped, cg_warm, jaxopt_cold = replay_fns(inner, outer, y_start, maxiter=n_params)
    # Calibration with a traced knob (one compilation per method): the tolerance of damped,
    # the steps of cg (masked, max 64) and jaxopt's maxiter (its while loop takes a traced
    # bound). Cold solves are independent, so jaxopt is only evaluated at the ref steps.
    zero = jax.tree_util.tree_map(jnp.zeros_like, y_start)

    def warm_traced(estimator):
        def run(xs_, ys_, knob):
            def body(v_prev, xy):
                h, info = estimator(inner, outer, xy[0], xy[1], knob, init=v_prev,
                                    return_info=True)
                return info["solution"], (h, info["steps"])

            return lax_scan(body, zero, (xs_, ys_))

        return jax.jit(run)

    cal_damped = warm_traced(lambda f, big_f, x, y, tol, **kw: hypergrad.damped(
        f, big_f, x, y, eps=EPS, tol=tol, max_steps=n_params, **kw))
    cal_cg = warm_traced(lambda f, big_f, x, y, k, **kw: hypergrad.cg(
        f, big_f, x, y, steps=k, max_steps=64, **kw))

    @jax.jit
    def cal_jaxopt(xs_, ys_, k):
        hg = jaxopt_hypergrad(inner, outer, None, maxiter=k, tol=0.0)
        return jax.lax.map(lambda xy: hg(xy[0], xy[1]), (xs_, ys_)), k * jnp.ones(
            xs_.shape[0], jnp.int32)

    sub = jax.tree_util.tree_map(lambda a: a[ref_steps], (xs, ys))
    print(f"\nCalibration to a worst relative error <= {args.target:g} over the ref steps:")
    chosen = {}
    grids = {
        "ours damped": (damped, cal_damped, False,
                        [1e-1, 3e-2, 1e-2, 5e-3, 3e-3, 2e-3, 1e-3, 7e-4, 5e-4, 3e-4, 2e-4,
                         1e-4, 5e-5, 3e-5, 1e-5]),
        "ours cg warm": (cg_warm, cal_cg, False,
                         [2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64]),
        "jaxopt cold": (jaxopt_cold, cal_jaxopt, True,
                        [*range(5, 60, 5), *range(60, 200, 10), *range(200, 401, 25)]),
    }
    for name, (make, cal, on_sub, grid) in grids.items():
        for knob in grid:
            arg = jnp.asarray(knob, dtype if isinstance(knob, float) else jnp.int32)
            hs, steps = cal(*(sub if on_sub else (xs, ys)), arg)
            errs = [rel(hs[i] if on_sub else hs[t], refs[t]) for i, t in enumerate(ref_steps)]
            per_step, worst, steps = np.asarray(steps), max(errs), int(jnp.sum(steps))
            print(f"  {name:13s} {'tol' if 'damped' in name else 'K'} = {knob:<7g} worst error "
                  f"{worst:.2e}  (solver steps {'per step' if on_sub else 'over the run'} "
                  f"{steps // len(ref_steps) if on_sub else steps})")
            if worst <= args.target:
                chosen[name] = (make(knob), knob, errs, per_step)
                break
        else:
            print(f"  {name}: target not reached on this grid")

    if "jaxopt cold" not in chosen or "ours damped" not in chosen:
        print("target not reached by both sides: no timing")
        return 0
    print("\nAt the chosen settings:")
    kinds = {"ours damped": "damped", "ours cg warm": "cg_warm", "jaxopt cold": "jaxopt"}
    hvps = {}
    for name, (_, knob, errs, per_step) in chosen.items():
        hvps[name] = count_hvps(inner, outer, xs, ys, kinds[name], knob, n_params)
        print(f"  {name:13s} ({'tol' if 'damped' in name else 'K'} = {knob:g}): errors at ref "
              f"steps [{' '.join(f'{e:.1e}' for e in errs)}]; {hvps[name]} HVPs over "
              f"{t_count} steps ({hvps[name] / t_count:.1f} per step)")
        if not name.startswith("jaxopt"):
            print(f"    solver iterations: {per_step[0]} at t = 0 (cold), then median "
                  f"{np.median(per_step[1:]):g}, range {per_step[1:].min()}-{per_step[1:].max()}")

    fns = {name: c[0] for name, c in chosen.items()}
    for fn in fns.values():
        jax.block_until_ready(fn(xs, ys))
    timing = time_alternating(fns, (xs, ys), rounds=args.rounds, reps=args.reps)
    t_j, t_j_min = timing["jaxopt cold"]
    print(f"\nReplay of the {t_count} hypergradients, {args.rounds} alternating rounds "
          f"x {args.reps} (median; best round):")
    for name, (t, t_min) in timing.items():
        print(f"  {name:13s} {1e3 * t:9.1f} ms ({1e3 * t_min:.1f})  ratio to jaxopt "
              f"{t / t_j:.3f} (best rounds {t_min / t_j_min:.3f}); HVP ratio "
              f"{hvps[name] / hvps['jaxopt cold']:.3f}")

    if not args.skip_full_run:
        k_j = chosen["jaxopt cold"][1]
        tol = chosen["ours damped"][1]
        ours_hg = functools.partial(hypergrad.damped, eps=EPS, tol=tol, max_steps=n_params)
        jx = jaxopt_hypergrad(inner, outer, None, maxiter=k_j, tol=0.0)
        theirs_hg = lambda f, big_f, x, y: jx(x, y)  # noqa: E731 (same f, F: closed over)
        runs = {
            "ours damped": jax.jit(lambda x, y: blo.warm_start(
                inner, outer, x, y, hypergrad=ours_hg, warm_solve=True, **run_kw)[0]),
            "jaxopt cold": jax.jit(lambda x, y: blo.warm_start(
                inner, outer, x, y, hypergrad=theirs_hg, **run_kw)[0]),
        }
        finals = {name: np.asarray(jax.block_until_ready(fn(x0, y_start)))
                  for name, fn in runs.items()}
        timing = time_alternating(runs, (x0, y_start), rounds=args.rounds, reps=args.reps)
        t_j, t_j_min = timing["jaxopt cold"]
        t_o, t_o_min = timing["ours damped"]
        print(f"\nWhole blo.warm_start run ({t_count} outer x {args.inner_steps} inner steps, "
              f"hypergradients included), {args.rounds} alternating rounds:")
        print(f"  ours damped (warm_solve) {1e3 * t_o:.1f} ms ({1e3 * t_o_min:.1f}), jaxopt "
              f"{1e3 * t_j:.1f} ms ({1e3 * t_j_min:.1f}); ratio {t_o / t_j:.3f} (best rounds "
              f"{t_o_min / t_j_min:.3f}); final x: ours {finals['ours damped'].round(4)}, "
              f"jaxopt {finals['jaxopt cold'].round(4)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
