"""The MNIST loader: real files, raw and gzipped IDX, corrupt files, search order."""

import gzip
import shutil

import numpy as np
import pytest

from varshift import datasets
from varshift.datasets import load_mnist, read_idx


def test_real_mnist_loads_with_documented_checks(mnist_dir):
    x_train, y_train, x_test, y_test = load_mnist(mnist_dir)
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert x_train.mean() * 255 == pytest.approx(33.318, abs=1e-3)
    assert set(np.unique(y_test)) == set(range(10))


def write_idx(path, array, gz=False):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_raw_and_gzipped_idx_read_the_same(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = read_idx(write_idx(tmp_path / "a-idx3-ubyte", a))
    gz = read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", a, gz=True))
    assert np.array_equal(raw, a) and np.array_equal(gz, a)


def test_corrupt_files_are_rejected_clearly(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a-idx3-ubyte", a)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated or padded: header says"):
        read_idx(path)
    (tmp_path / "b.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a valid gzip file"):
        read_idx(tmp_path / "b.gz")
    (tmp_path / "c").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        read_idx(tmp_path / "c")
    with pytest.raises(ValueError, match="SHA-256 differs"):
        read_idx(write_idx(tmp_path / "d", a), sha256="0" * 64)
    with pytest.raises(ValueError, match=r"has shape \(2, 3, 4\), expected \(5,\)"):
        read_idx(write_idx(tmp_path / "e", a), expected_shape=(5,))


def test_corrupt_mnist_copy_is_rejected(tmp_path, mnist_dir):
    for f in mnist_dir.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    name = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(name.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one wrong label
    name.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz is corrupt"):
        load_mnist(tmp_path)


def test_missing_files_error_names_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("VARSHIFT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(tmp_path / "root")
    message = str(err.value)
    for place in (tmp_path / "root", tmp_path / "data" / "mnist", tmp_path / "cache" / "varshift" / "mnist"):
        assert str(place) in message
    assert "VARSHIFT_DATA" in message and "download=True" in message


def test_environment_variable_and_cache_are_searched(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VARSHIFT_DATA", str(mnist_dir.parent))
    assert load_mnist()[1].shape == (60000,)
    monkeypatch.delenv("VARSHIFT_DATA")
    cache = tmp_path / "cache" / "varshift" / "mnist"
    cache.mkdir(parents=True)
    for f in mnist_dir.glob("*.gz"):  # raw files in the cache
        (cache / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    assert load_mnist()[3].shape == (10000,)


def test_download_verifies_and_installs_into_the_cache(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("VARSHIFT_DATA", raising=False)
    mirror = f"file://{mnist_dir}/"
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in mnist_dir.glob("*.gz"):
        (broken / f.name).write_bytes(gzip.compress(b"junk"))
    x_train, *_ = load_mnist(download=True, mirrors=[f"file://{broken}/", mirror])
    assert x_train.shape == (60000, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "cache" / "varshift" / "mnist").iterdir()) == sorted(
        f"{stem}.gz" for stem in datasets.MNIST_FILES)


def test_failed_download_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("VARSHIFT_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="Downloading failed: could not download"):
        load_mnist(download=True, mirrors=[f"file://{tmp_path}/nowhere/"])


def test_mnist1d_is_generated_offline_and_leaves_numpy_global_state_alone():
    pytest.importorskip("mnist1d")
    state = np.random.get_state()  # noqa: NPY002
    x_train, y_train, x_test, y_test = datasets.load_mnist1d(num_samples=500)
    after = np.random.get_state()  # noqa: NPY002
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]
    assert x_train.shape == (400, 1, 40) and x_test.shape == (100, 1, 40)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert set(np.unique(y_train)) == set(range(10))
    again = datasets.load_mnist1d(num_samples=500)
    assert np.array_equal(again[0], x_train)  # deterministic given the seed


def _linked_mnist(mnist_dir, folder):
    folder.mkdir(parents=True)
    for stem in datasets.MNIST_FILES:
        (folder / f"{stem}.gz").symlink_to(mnist_dir / f"{stem}.gz")
    return folder


def test_root_may_be_the_folder_that_holds_mnist(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.delenv("VARSHIFT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = _linked_mnist(mnist_dir, tmp_path / "data" / "mnist")
    assert load_mnist(folder.parent)[3].shape == (10000,)  # as VARSHIFT_DATA
    assert load_mnist(folder)[3].shape == (10000,)


def test_missing_files_error_suggests_a_folder_near_root(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.delenv("VARSHIFT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    raw = _linked_mnist(mnist_dir, tmp_path / "data" / "MNIST" / "raw")
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(tmp_path / "data")
    assert f"Did you mean root={str(raw)!r}?" in str(err.value)
    assert datasets.mnist_folders_near(tmp_path / "dat") == [raw]  # a typo: from the parent
    assert datasets.mnist_folders_near(raw / "deeper") == [raw]


def test_folders_near_looks_only_so_deep(tmp_path, mnist_dir):
    deep = tmp_path.joinpath(*"abcd")
    _linked_mnist(mnist_dir, deep)
    assert datasets.mnist_folders_near(tmp_path) == []  # 4 levels down
    assert datasets.mnist_folders_near(tmp_path / "a") == [deep]


def test_failed_download_leaves_no_folder_it_created(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("VARSHIFT_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="Downloading failed"):
        load_mnist(download=True, mirrors=[f"file://{tmp_path}/nowhere/"])
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even cache/


def test_failed_download_keeps_what_existed_before(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("VARSHIFT_DATA", raising=False)
    (tmp_path / "cache" / "varshift" / "numba").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="Downloading failed"):
        load_mnist(download=True, mirrors=[f"file://{tmp_path}/nowhere/"])
    assert sorted(p.name for p in (tmp_path / "cache" / "varshift").iterdir()) == ["numba"]
    cache = tmp_path / "cache" / "varshift" / "mnist"
    cache.mkdir()  # existed before, empty: kept
    with pytest.raises(FileNotFoundError, match="Downloading failed"):
        load_mnist(download=True, mirrors=[f"file://{tmp_path}/nowhere/"])
    assert cache.is_dir()
    # one file fetched and verified before the failure is kept for the next try
    shutil.rmtree(cache)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    first = next(iter(datasets.MNIST_FILES))
    shutil.copy(mnist_dir / f"{first}.gz", mirror)
    with pytest.raises(FileNotFoundError, match="Downloading failed"):
        load_mnist(download=True, mirrors=[f"file://{mirror}/"])
    assert [p.name for p in cache.iterdir()] == [f"{first}.gz"]
