"""Which OpenBLAS kernel sets this CPU can run, for the portable checks.

JAX's CPU ``eigh``, ``svd``, ``qr`` and friends call LAPACK in SciPy's OpenBLAS, which picks its
kernels from the CPU at run time; ``OPENBLAS_CORETYPE`` makes it pick another CPU's kernels, so
its rounding can be tried here. A kernel set the CPU lacks the instructions for (SkylakeX's
AVX-512 on a CPU without it) dies with SIGILL, so each one is probed in a subprocess first.

Usage::

    python .ci/openblas_kernels.py                 # every runnable kernel set, one per line
    python .ci/openblas_kernels.py --foreign       # those whose kernels differ from the
                                                   # default's and from each other's
    python .ci/openblas_kernels.py --foreign 2     # the first 2 of those (CANDIDATES order)

The second form is what CI uses: on an AMD or AVX2 Intel machine (default Haswell kernels) it
gives Prescott and Sandybridge; on an AVX-512 Intel machine (default SkylakeX) Haswell and
Prescott.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

# SkylakeX: AVX-512 (Intel server); Haswell: AVX2 (also what OpenBLAS runs on AMD Zen);
# Prescott: SSE3-era kernels (reported as Katmai); Sandybridge: AVX without FMA.
CANDIDATES = ("SkylakeX", "Haswell", "Zen", "Prescott", "Sandybridge")

_PROBE = r"""
import ctypes, glob, os
import numpy as np
import scipy, scipy.linalg
a = np.random.default_rng(0).standard_normal((64, 64))
scipy.linalg.eigh(a + a.T)
scipy.linalg.svd(a)
name = "unknown"
for path in glob.glob(os.path.join(os.path.dirname(scipy.__file__) + ".libs", "*openblas*")):
    lib = ctypes.CDLL(path)
    for sym in ("scipy_openblas_get_corename", "scipy_openblas_get_corename64_",
                "openblas_get_corename"):
        fn = getattr(lib, sym, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            name = fn().decode()
            break
print(name)
"""


def corename(coretype: str | None) -> str | None:
    """The kernel set OpenBLAS runs under ``coretype`` (None: the default), or None if it dies."""
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    if coretype is not None:
        env["OPENBLAS_CORETYPE"] = coretype
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--foreign", type=int, nargs="?", const=0, default=None,
                        help="print runnable kernel sets unlike the default's and each other's"
                             " (at most this many; all when no number is given)")
    parser.add_argument("--candidates", default=" ".join(CANDIDATES),
                        help="OPENBLAS_CORETYPE values to try, in order (space-separated)")
    parser.add_argument("--verbose", action="store_true", help="report each probe on stderr")
    args = parser.parse_args()
    default = corename(None)
    runnable, seen = [], {default}
    for coretype in args.candidates.split():
        name = corename(coretype)
        if args.verbose:
            print(f"OPENBLAS_CORETYPE={coretype}: "
                  f"{'not runnable on this CPU' if name is None else 'runs ' + name}"
                  f" (default runs {default})", file=sys.stderr)
        if name is None:
            continue
        if args.foreign is None:
            runnable.append(coretype)
        elif name not in seen:
            runnable.append(coretype)
            seen.add(name)
    if args.foreign:
        runnable = runnable[: args.foreign]
    print("\n".join(runnable))


if __name__ == "__main__":
    main()
