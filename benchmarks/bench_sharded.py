"""A Table 3 seed sweep on 1 device and sharded over 8 (``runtime.sharded_vmap``).

The paper-scale Table 3 is a sweep (data sets x learned-image counts x methods x seeds); each
cell's seeds run as one ``bilevel_lib.runtime.sharded_vmap(run, keys)``: a 1-D
``Mesh`` over ``jax.devices()`` with the keys placed by ``NamedSharding``, so every device runs
its share of the seeds. This script times one such cell: ``image_distill.warm_start_run`` on
real MNIST (``prepare("mnist", download=False)``), ``num_learned=1``, ``batch_size=1000``,
``inner_lr=1.0``, ``outer_lr=0.01``, ``--steps`` outer steps (500), ``--seeds`` seeds (8).

Each configuration runs in its own subprocess of this script, because the device count is
fixed when jax is imported: 1 device, and 8 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``, as in
``tests/test_image_distill.py::test_sharded_sweep_equals_single_device_vmap``).
``sharded_vmap`` traces and compiles ``run`` on every call, so to report compile time apart
from run time the script uses its pieces: the same ``Mesh``, ``NamedSharding``,
``jax.device_put`` of the keys and ``jax.jit(jax.vmap(run), out_shardings=...)``, built
``.lower(keys).compile()`` (timed as compile) and then called once (timed as run).

Checks (the script exits 1 if one fails, 0 otherwise):

1. the sharded outputs of the first and the last device's seeds equal a plain single-device
   ``jax.jit(jax.vmap(run))`` of the same seeds (the reference of that test), every output,
   within its tolerance ``rtol=2e-5, atol=2e-6`` (they are in fact bit for bit equal);
2. ``sharded_vmap`` itself gives bit for bit the outputs of the timed pieces, on a short
   sweep (``--library-steps`` outer steps, 20), so the timed code path is the library's.

The 8-device run is **not** within that tolerance of the 1-device sweep (all 8 seeds in one
``vmap`` on one device), and the script only reports that difference (final outer loss,
accuracies on the original and test sets, the learned image, the classifier). XLA's CPU code
for a vmap over 8 seeds rounds differently from the code for 1 seed a device: 4.8e-7 max abs
difference after 1 outer step, 7e-7 after 5, 3e-3 (classifier) after 30, and of order 1
after 500 (test accuracy of one seed up to 12 points apart; over the 8 seeds a mean of 38.7%
on 1 device, 35.3% on 8, ranges 33-43% and 31-39%), because this run (inner step 1.0 on
one learned image) amplifies a rounding error, roughly 1.4-fold a step between steps 5 and
30. So the per-seed numbers of such a sweep depend on how many seeds share a device; only
their distribution over seeds is reproducible.

**What the CPU numbers mean.** The 8 simulated devices share the machine's cores
(``os.cpu_count()`` is printed): with fewer than 8 cores, 8 simulated devices cannot run 8 times
faster than one (on 2 cores, 2x at the very best, and XLA's CPU backend already uses several
threads for one device). The point of the CPU run is that the sharded code path is exercised
and gives the same numbers as a single device does for the same per-device batch. On a
machine with 8 GPUs (``--platform gpu``: 1 GPU against 8, ``jax.devices()[:n]``; not run
here) the ratio is the real speed-up. A multi-host run needs only
``jax.distributed.initialize()`` before the sweep; ``jax.devices()`` then lists every host's
devices and the same call shards the seeds over all of them.

Run from the repository root:

    .venv/bin/python benchmarks/bench_sharded.py [--steps 500] [--seeds 8] [--devices 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RTOL, ATOL = 2e-5, 2e-6          # as in tests/test_image_distill.py (sharded vs single device)
_COUNT_FLAG = "--xla_force_host_platform_device_count"


def _leaves_equal(a, b):
    import jax

    leaves = jax.tree_util.tree_leaves
    return all(np.array_equal(np.asarray(u), np.asarray(v))
               for u, v in zip(leaves(a), leaves(b), strict=True))


def child(args):
    """One configuration: ``args.child`` devices; writes the results to ``args.out``."""
    import functools

    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from bilevel_lib import runtime
    from bilevel_lib.tasks import image_distill as idl

    n_dev = args.child
    if len(jax.devices()) < n_dev:
        raise SystemExit(f"asked for {n_dev} devices, jax sees {jax.devices()}")
    devices = jax.devices()[:n_dev]
    start = time.perf_counter()
    splits = idl.prepare("mnist", download=False)
    prepare_s = time.perf_counter() - start
    original = tuple(map(jnp.asarray, splits["original"]))
    evals = {"original": original, "test": tuple(map(jnp.asarray, splits["test"]))}

    def make_run(steps):
        return functools.partial(idl.warm_start_run, original=original, num_learned=1,
                                 outer_steps=steps, inner_lr=1.0, outer_lr=0.01,
                                 batch_size=1000)

    keys = jax.random.split(jax.random.PRNGKey(0), args.seeds)
    # sharded_vmap's pieces (bilevel_lib/tasks/image_distill.py), padding included
    pad = -args.seeds % n_dev
    padded = jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, axis=0)]) if pad else keys
    sharding = NamedSharding(Mesh(np.array(devices), ("seeds",)), PartitionSpec("seeds"))
    placed = jax.device_put(padded, sharding)

    def pieces(run):
        start = time.perf_counter()
        compiled = jax.jit(jax.vmap(run), out_shardings=sharding).lower(placed).compile()
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(placed))
        run_s = time.perf_counter() - start
        return jax.tree_util.tree_map(lambda a: a[:args.seeds], out), compile_s, run_s

    run = make_run(args.steps)
    out, compile_s, run_s = pieces(run)
    x, y, trace = out
    shards = {len(leaf.sharding.device_set) for leaf in jax.tree_util.tree_leaves(out)}
    accs = jax.jit(jax.vmap(lambda c: idl.evaluate(c, evals)))(y)
    extra = {}
    if n_dev > 1:
        # the first and the last device's seeds, as one plain single-device vmap (the test's
        # reference): the same per-device batch, so the same rounding
        per = len(padded) // n_dev
        single = jax.jit(jax.vmap(run))
        diffs = []
        for lo in sorted({0, (args.seeds - 1) // per * per}):
            ref = single(jax.device_put(padded[lo:lo + per], devices[0]))
            leaves = jax.tree_util.tree_leaves
            for a, b in zip(leaves(out), leaves(ref), strict=True):
                a = np.asarray(a)[lo:lo + per]
                b = np.asarray(b)[:len(a)]
                diffs.append((float(np.max(np.abs(a - b))),
                              bool(np.allclose(a, b, rtol=RTOL, atol=ATOL))))
        short = make_run(args.library_steps)
        lib = jax.block_until_ready(runtime.sharded_vmap(short, keys, devices=devices))
        extra = dict(shard_max_diff=max(d for d, _ in diffs),
                     shard_close=all(c for _, c in diffs), shard_seeds=per,
                     library_equal=_leaves_equal(lib, pieces(short)[0]))

    np.savez(args.out, outer_loss=np.asarray(trace["outer_loss"][:, -1]),
             acc_original=np.asarray(accs["original"]), acc_test=np.asarray(accs["test"]),
             points=np.asarray(x["points"]), label_logits=np.asarray(x["label_logits"]),
             W=np.asarray(y["W"]), b=np.asarray(y["b"]))
    print("RESULT " + json.dumps(dict(
        devices=[str(d) for d in devices], visible=len(jax.devices()),
        platform=devices[0].platform, prepare_s=prepare_s, compile_s=compile_s, run_s=run_s,
        output_devices=sorted(shards), **extra)), flush=True)


def configuration(n_dev, args, out):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if args.platform == "cpu":
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(_COUNT_FLAG)]
        env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags + [f"{_COUNT_FLAG}={n_dev}"]))
    else:
        env["JAX_PLATFORMS"] = args.platform
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n_dev), "--out", out,
           "--steps", str(args.steps), "--seeds", str(args.seeds),
           "--library-steps", str(args.library_steps)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"the {n_dev}-device run failed (exit {proc.returncode}):\n"
                 f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_s"] = wall
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="outer steps T (500)")
    parser.add_argument("--seeds", type=int, default=8, help="seeds in the sweep (8)")
    parser.add_argument("--devices", type=int, default=8, help="devices of the sharded run (8)")
    parser.add_argument("--platform", default="cpu",
                        help="cpu (simulated devices, default) or gpu/tpu (real ones)")
    parser.add_argument("--library-steps", type=int, default=20,
                        help="outer steps of the short sharded_vmap-vs-pieces check (20)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args)

    print(f"os.cpu_count() = {os.cpu_count()}; warm_start_run on MNIST, num_learned=1, "
          f"batch_size=1000, inner_lr=1.0, outer_lr=0.01, T={args.steps}, "
          f"{args.seeds} seeds", flush=True)
    results, ok = {}, True
    with tempfile.TemporaryDirectory() as tmp:
        for n_dev in (1, args.devices):
            out = os.path.join(tmp, f"{n_dev}.npz")
            r = configuration(n_dev, args, out)
            r["arrays"] = dict(np.load(out))
            results[n_dev] = r
            ok &= r["output_devices"] == [n_dev]
            print(f"{n_dev} device(s) ({r['platform']}, {r['visible']} visible): "
                  f"{', '.join(r['devices'])}\n"
                  f"  compile {r['compile_s']:6.2f} s | run {r['run_s']:6.2f} s | "
                  f"MNIST prepare {r['prepare_s']:.1f} s | subprocess {r['wall_s']:.1f} s | "
                  f"outputs on {r['output_devices']} device(s)", flush=True)
    one, many = results[1], results[args.devices]
    print(f"speed-up of the run, 1 device / {args.devices}: "
          f"{one['run_s'] / many['run_s']:.2f}x (compile {one['compile_s']:.2f} s vs "
          f"{many['compile_s']:.2f} s)")
    ok &= many["shard_close"] and many["library_equal"]
    print(f"check 1, {args.devices} devices vs a plain single-device vmap of the same "
          f"{many['shard_seeds']} seed(s) a device (first and last device's seeds, every "
          f"output): max abs difference {many['shard_max_diff']:.2e} "
          f"({'ok' if many['shard_close'] else 'DIFFERENT'}, rtol={RTOL}, atol={ATOL})")
    print(f"check 2, sharded_vmap itself == the timed pieces (T={args.library_steps}, bit "
          f"for bit): {'ok' if many['library_equal'] else 'DIFFERENT'}")
    a, b = one["arrays"], many["arrays"]
    print(f"{args.devices} devices vs the 1-device sweep ({args.seeds} seeds in one vmap), max "
          f"abs difference (informative: within rtol={RTOL}, atol={ATOL}?):")
    for name in a:
        diff = float(np.max(np.abs(a[name] - b[name])))
        close = bool(np.allclose(b[name], a[name], rtol=RTOL, atol=ATOL))
        print(f"  {name:13s} {diff:9.2e}  {'yes' if close else 'no'}")
    for n_dev, arrays in ((1, a), (args.devices, b)):
        acc = 100 * arrays["acc_test"]
        print(f"final test accuracy over the {args.seeds} seeds, {n_dev} device(s): mean "
              f"{acc.mean():.2f}%, min {acc.min():.2f}%, max {acc.max():.2f}%")
    print("all checks passed" if ok else "CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
