"""Wall time and accuracy of the Table 3 runs on real MNIST (sizes the coming chapter 5).

For 1 and 10 learned images: one warm-start run (alternating steps, full batch and outer
minibatches), one cold-start run, and the re-training of a fresh classifier on the learned
data; then the augmentation net (50 training images, full validation set), warm and cold.
Compile time is reported apart from run time (``jit(...).lower(...).compile()``). Needs MNIST
installed (``bilevel_lib.tasks.datasets.load``); run from the repository root:

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_image_distill.py [--seeds 2]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp

from bilevel_lib.tasks import image_distill as idl


def _percent(accs):
    return "  ".join(f"{k} {100 * float(v):5.1f}" for k, v in sorted(accs.items()))


def _timed(fn, *args):
    compiled = jax.jit(fn).lower(*args).compile()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--warm-steps", type=int, default=3000)
    parser.add_argument("--cold-steps", type=int, default=300)
    parser.add_argument("--cold-inner", type=int, default=100)
    parser.add_argument("--retrain-steps", type=int, default=1000)
    parser.add_argument("--skip-augmentation", action="store_true")
    args = parser.parse_args()

    start = time.perf_counter()
    splits = idl.prepare("mnist", download=False)
    print(f"prepare: {time.perf_counter() - start:.1f} s; devices {jax.devices()}")
    original = tuple(map(jnp.asarray, splits["original"]))
    test = tuple(map(jnp.asarray, splits["test"]))
    evals = {"original": original, "test": test}
    retrain = functools.partial(idl.retrain_accuracy, eval_sets=evals,
                                steps=args.retrain_steps, lr=0.5)
    lrs = dict(inner_lr=0.5, outer_lr=0.01)
    for m in (1, 10):
        runs = {
            f"warm T={args.warm_steps} full batch": functools.partial(
                idl.warm_start_run, original=original, num_learned=m,
                outer_steps=args.warm_steps, **lrs),
            f"warm T={args.warm_steps} batch 1000": functools.partial(
                idl.warm_start_run, original=original, num_learned=m,
                outer_steps=args.warm_steps, batch_size=1000, **lrs),
            f"cold T={args.cold_steps} K={args.cold_inner}": functools.partial(
                idl.cold_start_run, original=original, num_learned=m,
                outer_steps=args.cold_steps, inner_steps=args.cold_inner, **lrs),
        }
        for name, run in runs.items():
            for seed in range(args.seeds):
                start = time.perf_counter()
                (x, y, _), run_s = _timed(run, jax.random.PRNGKey(seed))
                total = time.perf_counter() - start
                accs, retrain_s = _timed(retrain, x)
                print(f"m={m:2d} {name:22s} seed {seed}: run {run_s:5.1f} s (with compile "
                      f"{total:5.1f} s) | model {_percent(idl.evaluate(y, evals))} | "
                      f"re-trained ({retrain_s:.1f} s) {_percent(accs)}", flush=True)
    if args.skip_augmentation:
        return
    train = tuple(a[:50] for a in original)
    val = tuple(map(jnp.asarray, splits["validation"]))
    evals = {"validation": val, "test": test}
    retrain = functools.partial(idl.augmentation_retrain_accuracy, key=jax.random.PRNGKey(9),
                                train=train, eval_sets=evals, draws=20,
                                steps=args.retrain_steps, lr=0.5)
    runs = {
        "augmentation warm T=1000": functools.partial(
            idl.augmentation_run, train=train, validation=val, method="warm",
            outer_steps=1000, inner_lr=0.5, outer_lr=1e-3),
        "augmentation cold T=200 K=100": functools.partial(
            idl.augmentation_run, train=train, validation=val, method="cold",
            outer_steps=200, inner_steps=100, inner_lr=0.5, outer_lr=1e-4),
    }
    for name, run in runs.items():
        for seed in range(args.seeds):
            (theta, y, _), run_s = _timed(run, jax.random.PRNGKey(seed))
            accs, retrain_s = _timed(retrain, theta)
            print(f"{name:30s} seed {seed}: run {run_s:5.1f} s | model "
                  f"{_percent(idl.evaluate(y, evals))} | re-trained ({retrain_s:.1f} s) "
                  f"{_percent(accs)}", flush=True)
    plain = retrain(idl.init_augmentation(784))
    print(f"no augmentation (theta = 0), 50 images re-trained: {_percent(plain)}")


if __name__ == "__main__":
    main()
