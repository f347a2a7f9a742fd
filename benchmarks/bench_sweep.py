"""One vmapped cold-start sweep vs a Python loop of separate runs (chapter "Anti-distillation").

The chapter's Fig. 11(b) sweeps the number of Neumann terms K over 13 values and the damping
eps over 13 values, each a 300-step cold-start BLO run on the Fourier anti-distillation task.
This script times, in one process:

* **vmapped**: ``AntiDistillation.sweep`` -- one jitted ``vmap`` over the 13 values (for K:
  ``max_steps = 1000`` and a traced ``steps``, so every lane runs 1000 masked terms);
* **loop**: a Python loop calling ``AntiDistillation.cold_start`` once per value, with
  ``functools.partial(hypergrad.neumann, steps=K, lr=alpha)``, as a naive user would write it
  (every K is a new static loop length, so every call traces and compiles again; each call runs
  only K terms).

"end-to-end" includes compilation (what a reader waits for); "steady state" re-runs
already-compiled functions (the loop with one cached jitted function per value). Both sweeps
must produce the same learned points. Run: ``python benchmarks/bench_sweep.py``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from common import timed

from bilevel_lib import hypergrad, runtime, spectral
from bilevel_lib.tasks import fourier

jax.config.update("jax_enable_x64", True)

KS = [1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000]
OUTER_STEPS = 300


def problem():
    features = functools.partial(fourier.fourier_features, amps=fourier.amplitudes(10))
    return fourier.anti_distillation(jnp.linspace(-3.0, 3.0, 13), jnp.array([0.0]),
                                     jnp.array([1.0]), features)


def compare(name, prob, x0, estimator, param, values, options):
    def vmapped():
        return prob.sweep(x0, estimator=estimator, param=param, values=values, options=options,
                          outer_steps=OUTER_STEPS)[0]

    def one(v):
        hg = functools.partial(estimator, **{param: v}, **options)
        return prob.cold_start(x0, hypergrad=hg, outer_steps=OUTER_STEPS)[0]

    def loop():
        return jnp.stack([one(v) for v in values])

    t_vmap, x_vmap = timed(vmapped)
    t_loop, x_loop = timed(loop)
    agree = float(jnp.max(jnp.abs(x_vmap - x_loop)))

    # Steady state: compiled once, then timed on a second call.
    vmapped_jit = jax.jit(vmapped)
    jitted = [jax.jit(functools.partial(one, v)) for v in values]
    timed(vmapped_jit)
    timed(lambda: [f() for f in jitted])
    s_vmap, _ = timed(vmapped_jit)
    s_loop, _ = timed(lambda: [f() for f in jitted])

    print(f"{name}: {len(values)} runs x {OUTER_STEPS} outer steps; "
          f"max |x_vmap - x_loop| = {agree:.1e}")
    print(f"  end-to-end (with compilation): vmapped {t_vmap:6.2f} s | loop {t_loop:6.2f} s | "
          f"loop / vmapped = {t_loop / t_vmap:5.1f}x")
    print(f"  steady state (compiled)      : vmapped {s_vmap:6.2f} s | loop {s_loop:6.2f} s | "
          f"loop / vmapped = {s_loop / s_vmap:5.1f}x")
    return t_loop / t_vmap, s_loop / s_vmap


def main():
    print(runtime.device_report())
    prob = problem()
    x0 = jnp.zeros(13)
    alpha = float(prob.inner_lr())
    compare("Neumann over K", prob, x0, hypergrad.neumann, "steps", KS, {"lr": alpha})
    eps = [float(spectral.matching_eps(steps=k, lr=alpha)) for k in KS]
    compare("damped over eps", prob, x0, hypergrad.damped, "eps", eps, {})


if __name__ == "__main__":
    main()
