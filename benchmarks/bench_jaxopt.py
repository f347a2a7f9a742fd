"""Truncated-CG hypergradient: ``bilevel_lib.hypergrad.cg`` against jaxopt's implicit diff.

The inner problem is a ridge-regularized MLP (2 hidden layers of 64 tanh units) fitted to a
synthetic regression task; the outer parameters ``x`` are the three per-layer log ridge
penalties, the outer objective is the validation loss:

    f(x, y) = 1/(2n) |net(y; U) - v|^2 + 1/2 sum_l exp(x_l) (|W_l|^2 + |b_l|^2),
    F(x, y) = 1/(2n') |net(y; U') - v'|^2.

The inner problem is first solved to near stationarity (L-BFGS, then two Newton-CG steps, in
float64; ``|grad_y f|`` ends near 1e-15). At the float32 copy of that point both libraries
compute the same quantity, ``dF/dx = F_x - B^T v`` with ``v`` from 20 conjugate-gradient
iterations on ``H v = F_y``:

* ours: ``bilevel_lib.hypergrad.cg(inner, outer, x, y, steps=20)``;
* jaxopt: ``jaxopt.implicit_diff.custom_root`` on the optimality condition ``grad_y f = 0``
  with ``solve = linear_solve.solve_cg(maxiter=20, tol=0)`` (``tol=0``: no early stop, so it
  also runs exactly 20 iterations), differentiated with ``jax.grad``.

Both are jitted and warmed up, then timed in alternating rounds (many calls each, with
``block_until_ready``) in one process; the script prints the per-call times, their ratio
(ours / jaxopt) and the largest difference between the two hypergradients. A second check
compares ``bilevel_lib.hypergrad.exact`` (dense Hessian + pseudo-inverse) with jaxopt run to
convergence, in float64.

Run: ``pip install -r benchmarks/requirements.txt && python benchmarks/bench_jaxopt.py``.
"""

from __future__ import annotations

import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import make_parser, max_abs_diff, time_alternating, to_dtype, tree_norm
from jax.flatten_util import ravel_pytree

from bilevel_lib import hypergrad, runtime

try:
    from jaxopt import implicit_diff, linear_solve
except ImportError:  # pragma: no cover - a clear message instead of a traceback
    sys.exit("bench_jaxopt.py needs jaxopt: pip install -r benchmarks/requirements.txt")

WIDTH = 64
CG_STEPS = 20
RIDGE = 1e-2  # per-layer ridge penalty exp(x_l) at the benchmark point


# ---------------------------------------------------------------------------------------------
# The problem
# ---------------------------------------------------------------------------------------------


def make_data(key, n_train, n_val, dim, dtype):
    k_u, k_v, k_w, k_n1, k_n2 = jax.random.split(key, 5)
    w_true = jax.random.normal(k_w, (dim,), dtype)

    def target(u):
        return jnp.sin(u @ w_true) + 0.5 * jnp.cos(2.0 * u[:, 0])

    u = jax.random.normal(k_u, (n_train, dim), dtype)
    u_val = jax.random.normal(k_v, (n_val, dim), dtype)
    v = target(u) + 0.1 * jax.random.normal(k_n1, (n_train,), dtype)
    v_val = target(u_val) + 0.1 * jax.random.normal(k_n2, (n_val,), dtype)
    return u, v, u_val, v_val


def init_mlp(key, dim, dtype):
    sizes = [dim, WIDTH, WIDTH, 1]
    keys = jax.random.split(key, len(sizes) - 1)
    params = {}
    for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        params[f"w{i}"] = jax.random.normal(k, (a, b), dtype) / jnp.sqrt(jnp.asarray(a, dtype))
        params[f"b{i}"] = jnp.zeros((b,), dtype)
    return params


def net(y, u):
    h = jnp.tanh(u @ y["w0"] + y["b0"])
    h = jnp.tanh(h @ y["w1"] + y["b1"])
    return (h @ y["w2"] + y["b2"])[:, 0]


def objectives(data):
    u, v, u_val, v_val = data

    def inner(x, y):
        fit = 0.5 * jnp.mean((net(y, u) - v) ** 2)
        ridge = sum(jnp.exp(x[i]) * (jnp.sum(y[f"w{i}"] ** 2) + jnp.sum(y[f"b{i}"] ** 2))
                    for i in range(3))
        return fit + 0.5 * ridge

    def outer(x, y):
        return 0.5 * jnp.mean((net(y, u_val) - v_val) ** 2)

    return inner, outer


def solve_inner(inner, x, y0, iters):
    """L-BFGS on the inner objective (jitted ``lax.fori_loop``); call it in float64."""
    opt = optax.lbfgs()
    f = functools.partial(inner, x)
    value_and_grad = optax.value_and_grad_from_state(f)

    @jax.jit
    def run(y):
        def step(_, carry):
            y_, state = carry
            value, grad = value_and_grad(y_, state=state)
            updates, state = opt.update(grad, state, y_, value=value, grad=grad, value_fn=f)
            return optax.apply_updates(y_, updates), state

        return jax.lax.fori_loop(0, iters, step, (y, opt.init(y)))[0]

    return run(y0)


def newton_polish(inner, x, y, *, iters, cg_steps):
    """Newton steps ``y <- y - H^{-1} grad`` with the Hessian solve by CG (Hessian-vector
    products only): quadratic convergence once L-BFGS is close. Call it in float64."""
    y_flat, unravel = ravel_pytree(y)

    def grad(v):
        return ravel_pytree(jax.grad(inner, argnums=1)(x, unravel(v)))[0]

    @jax.jit
    def step(v):
        hvp = jax.linearize(grad, v)[1]
        return v - hypergrad.conjugate_gradient(hvp, grad(v), steps=cg_steps)

    for _ in range(iters):
        y_flat = step(y_flat)
    return unravel(y_flat)


def jaxopt_hypergrad(inner, outer, y_star, *, maxiter, tol):
    """dF/dx by jaxopt: implicit differentiation of the root of grad_y f(x, .) at y_star."""

    def optimality(y, x):
        return jax.grad(inner, argnums=1)(x, y)

    solve = functools.partial(linear_solve.solve_cg, maxiter=maxiter, tol=tol)

    @implicit_diff.custom_root(optimality, solve=solve)
    def inner_solution(y_init, x):
        del x  # the inner problem is already solved: y_init *is* the root
        return y_init

    def outer_of_x(x, y):
        return outer(x, inner_solution(y, x))

    return jax.grad(outer_of_x)


def stationary_point(data, x, y0, lbfgs_iters):
    """The inner solution at ``x`` in float64 (float32 L-BFGS stalls far from stationarity):
    L-BFGS, then two Newton-CG polishing steps. Returns ``(y_star64, |grad_y f|)``."""
    with jax.enable_x64(True):
        inner64, _ = objectives(to_dtype(data, jnp.float64))
        x64 = to_dtype(x, jnp.float64)
        y64 = solve_inner(inner64, x64, to_dtype(y0, jnp.float64), lbfgs_iters)
        y64 = newton_polish(inner64, x64, y64, iters=2, cg_steps=500)
        return y64, tree_norm(jax.grad(inner64, argnums=1)(x64, y64))


def make_problem(n_train, dim, dtype):
    """The problem the scripts share: ``(data, inner, outer, x, y0)``; prints a summary."""
    key_data, key_init = jax.random.split(jax.random.PRNGKey(0))
    data = make_data(key_data, n_train, n_train, dim, dtype)
    inner, outer = objectives(data)
    x = jnp.log(jnp.full(3, RIDGE, dtype))
    y0 = init_mlp(key_init, dim, dtype)
    n_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(y0))
    print(f"Inner problem: MLP {dim}-{WIDTH}-{WIDTH}-1 (tanh), {n_params} parameters, "
          f"{n_train} training / {n_train} validation points, {jnp.dtype(dtype).name}")
    return data, inner, outer, x, y0


def main(argv=None):
    parser = make_parser(__doc__, rounds=15, reps=20)
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--lbfgs-iters", type=int, default=1000)
    parser.add_argument("--skip-exact", action="store_true",
                        help="skip the float64 exact-vs-jaxopt agreement check")
    args = parser.parse_args(argv)

    print(runtime.device_report())
    dtype = jnp.float32
    data, inner, outer, x, y0 = make_problem(args.n_train, args.dim, dtype)
    n_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(y0))

    # Solve in float64 (float32 L-BFGS stalls far from stationarity), on the same float32 data.
    start = time.perf_counter()
    y_star64, grad64 = stationary_point(data, x, y0, args.lbfgs_iters)
    y_star = to_dtype(y_star64, dtype)
    grad32 = tree_norm(jax.grad(inner, argnums=1)(x, y_star))
    print(f"Inner solve: {args.lbfgs_iters} L-BFGS iterations + 2 Newton-CG steps in float64 "
          f"({time.perf_counter() - start:.1f} s): |grad_y f| = {grad64:.1e} (float64), "
          f"{grad32:.1e} at the float32 copy; f = {float(inner(x, y_star)):.5f}, "
          f"F = {float(outer(x, y_star)):.5f}")

    ours = jax.jit(functools.partial(hypergrad.cg, inner, outer, steps=CG_STEPS))
    # throw=False drops the run-time failure check: its cost is the difference.
    unchecked = jax.jit(functools.partial(hypergrad.cg, inner, outer, steps=CG_STEPS,
                                          throw=False))
    theirs = jax.jit(jaxopt_hypergrad(inner, outer, y_star, maxiter=CG_STEPS, tol=0.0))
    h_ours = jax.block_until_ready(ours(x, y_star))  # warm-up: compile once each
    h_theirs = jax.block_until_ready(theirs(x, y_star))
    jax.block_until_ready(unchecked(x, y_star))
    # Equal work: jaxopt with tol=0 never stops early; ours always runs its 20 matvecs (a
    # fixed-length scan) but its breakdown guard could freeze the iterate early. If the 20th
    # iteration still changed the answer, none was frozen (freezing is permanent).
    h_19 = jax.jit(functools.partial(hypergrad.cg, inner, outer, steps=CG_STEPS - 1))(x, y_star)
    all_active = bool(jnp.any(h_19 != h_ours))

    timings = time_alternating({"ours": ours, "unchecked": unchecked, "jaxopt": theirs},
                               (x, y_star), rounds=args.rounds, reps=args.reps)
    (t_ours, t_ours_min), (t_jaxopt, t_jaxopt_min) = timings["ours"], timings["jaxopt"]
    t_free, t_free_min = timings["unchecked"]
    diff = max_abs_diff(h_ours, h_theirs)
    scale = float(jnp.max(jnp.abs(h_theirs)))
    print()
    print(f"CG with {CG_STEPS} iterations, {args.rounds} rounds x {args.reps} calls each "
          "(median of the rounds' mean time per call; best round in brackets):")
    print(f"  bilevel_lib.hypergrad.cg : {1e3 * t_ours:8.3f} ms  ({1e3 * t_ours_min:.3f})")
    print(f"  jaxopt custom_root + cg  : {1e3 * t_jaxopt:8.3f} ms  ({1e3 * t_jaxopt_min:.3f})")
    print(f"  ... with throw=False     : {1e3 * t_free:8.3f} ms  ({1e3 * t_free_min:.3f})")
    print(f"  time ratio ours / jaxopt : {t_ours / t_jaxopt:.3f}  "
          f"(best rounds: {t_ours_min / t_jaxopt_min:.3f}); throw=False: "
          f"{t_free / t_jaxopt:.3f} ({t_free_min / t_jaxopt_min:.3f})")
    print(f"  hypergradient (ours)     : {np.array2string(np.asarray(h_ours), precision=6)}")
    print(f"  hypergradient (jaxopt)   : {np.array2string(np.asarray(h_theirs), precision=6)}")
    print(f"  max |ours - jaxopt|      : {diff:.3e}  (relative to max |h|: {diff / scale:.3e})")
    print(f"  all {CG_STEPS} of our CG iterations active (no breakdown freeze): {all_active}")

    if not args.skip_exact:
        with jax.enable_x64(True):
            inner64, outer64 = objectives(to_dtype(data, jnp.float64))
            x64, y64 = to_dtype(x, jnp.float64), y_star64
            start = time.perf_counter()
            h_exact = jax.jit(functools.partial(hypergrad.exact, inner64, outer64))(x64, y64)
            h_exact = jax.block_until_ready(h_exact)
            t_exact = time.perf_counter() - start
            conv = jax.jit(jaxopt_hypergrad(inner64, outer64, y64, maxiter=20 * n_params,
                                            tol=1e-12))
            h_conv = jax.block_until_ready(conv(x64, y64))
            h_cg64 = jax.jit(functools.partial(hypergrad.cg, inner64, outer64,
                                               steps=CG_STEPS))(x64, y64)
            h_jaxopt_cg64 = jax.jit(jaxopt_hypergrad(inner64, outer64, y64, maxiter=CG_STEPS,
                                                     tol=0.0))(x64, y64)
            diff64 = max_abs_diff(h_exact, h_conv)
            scale64 = float(jnp.max(jnp.abs(h_conv)))
            print()
            print("Agreement at convergence (float64, same point):")
            fmt = functools.partial(np.array2string, precision=8)
            print(f"  hypergrad.exact          : {fmt(np.asarray(h_exact))}"
                  f"  (dense {n_params}x{n_params} Hessian + eigh; {t_exact:.1f} s with compile)")
            print(f"  jaxopt, cg to tol 1e-12  : {fmt(np.asarray(h_conv))}")
            print(f"  max |exact - jaxopt|     : {diff64:.3e}  (relative: {diff64 / scale64:.3e})")
            # The same 20 CG iterations given the *same* Hessian-vector product: ours and
            # jax.scipy's cg (which jaxopt's solve_cg calls) on H v = dF/dy.
            y_flat, unravel = ravel_pytree(y64)
            f_y = ravel_pytree(jax.grad(outer64, argnums=1)(x64, y64))[0]

            def grad_flat(v):
                return ravel_pytree(jax.grad(inner64, argnums=1)(x64, unravel(v)))[0]

            hvp = jax.linearize(grad_flat, y_flat)[1]
            v_ours = jax.jit(lambda b: hypergrad.conjugate_gradient(hvp, b, steps=CG_STEPS))(f_y)
            v_scipy = jax.jit(lambda b: jax.scipy.sparse.linalg.cg(
                hvp, b, tol=0.0, maxiter=CG_STEPS)[0])(f_y)
            print("20 CG iterations in float64:")
            print(f"  same HVP, ours vs jax.scipy cg (v in H v = dF/dy): max abs difference "
                  f"{max_abs_diff(v_ours, v_scipy):.1e} (max |v| = "
                  f"{float(jnp.max(jnp.abs(v_scipy))):.2f})")
            print(f"  hypergradients, ours vs jaxopt: max abs difference "
                  f"{max_abs_diff(h_cg64, h_jaxopt_cg64):.1e} (rounding in the two HVPs, "
                  "forward-over-reverse vs reverse-over-reverse, amplified by CG)")
            print(f"  ours vs exact: max abs error {max_abs_diff(h_cg64, h_exact):.1e} "
                  "(20 iterations do not converge here: truncation error)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
