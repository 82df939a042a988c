"""Data sets that work offline: MNIST from its original IDX files, and MNIST-1D from
the ``mnist1d`` package's generator."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np

from . import _validate

__all__ = ["load_mnist", "load_mnist1d", "read_idx", "MNIST_FILES", "MNISTNotFoundError",
           "mnist_places", "holds_mnist", "mnist_folders_near"]

#: File stem -> (SHA-256 of the decompressed file, expected shape).
MNIST_FILES = {
    "train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", (60000, 28, 28)),
    "train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", (60000,)),
    "t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", (10000,)),
}

#: Where ``load_mnist(download=True)`` fetches ``<stem>.gz`` from, in order.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_IDX_TYPES = {0x08: np.uint8}


class MNISTNotFoundError(FileNotFoundError):
    """The MNIST files are in none of the places searched.

    Attributes
    ----------
    places : list of pathlib.Path
        Every folder searched, in order.
    download_error : OSError or None
        Why downloading failed, if it was tried.
    """

    def __init__(self, message, places, download_error=None):
        super().__init__(message)
        self.places = list(places)
        self.download_error = download_error


def read_idx(path, expected_shape=None, sha256=None):
    """Read one IDX file, raw or gzipped.

    Parameters
    ----------
    path : str or os.PathLike
    expected_shape : tuple of int, optional
    sha256 : str, optional
        Checksum of the decompressed bytes.

    Returns
    -------
    ndarray of uint8

    Raises
    ------
    ValueError
        For a corrupt file: bad gzip stream, magic number, size or checksum.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"read_idx: {path} is not a valid gzip file ({err})") from err
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise ValueError(f"read_idx: {path} is corrupt: its SHA-256 differs from the "
                         f"published MNIST file; delete it and provide a fresh copy")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"read_idx: {path} is not an IDX file of unsigned bytes "
                         f"(magic {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise ValueError(f"read_idx: {path} is truncated or padded: header says {shape} "
                         f"({header + int(np.prod(shape))} bytes), file has {len(raw)}")
    if expected_shape is not None and shape != tuple(expected_shape):
        raise ValueError(f"read_idx: {path} has shape {shape}, expected {tuple(expected_shape)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, stem: str):
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def mnist_places(root=None, extra=()) -> list[Path]:
    """The folders :func:`load_mnist` searches, in order: ``root`` (one folder or a
    sequence of them; each one itself, then its ``mnist`` sub-folder, so that a root
    may be the MNIST folder or, as ``$VARSHIFT_DATA``, the folder that holds it),
    ``$VARSHIFT_DATA/mnist``, the ``extra`` folders, then the user cache
    (``$XDG_CACHE_HOME/varshift/mnist``, default ``~/.cache/varshift/mnist``), where
    downloads go."""
    roots = [] if root is None else [root] if isinstance(root, (str, os.PathLike)) else root
    places = [place for r in roots for place in (Path(r), Path(r) / "mnist")]
    if os.environ.get("VARSHIFT_DATA"):
        places.append(Path(os.environ["VARSHIFT_DATA"]) / "mnist")
    places += [Path(p) for p in extra]
    places.append(_cache_dir())
    return places


def holds_mnist(folder) -> bool:
    """Whether ``folder`` holds the four MNIST IDX files (raw or ``.gz``)."""
    return all(_find(Path(folder), stem) for stem in MNIST_FILES)


#: How deep below a folder, and how many folders at most, :func:`mnist_folders_near`
#: looks.
NEAR_DEPTH, NEAR_FOLDERS = 3, 2000


def mnist_folders_near(folder) -> list[Path]:
    """Folders near ``folder`` that hold the MNIST files, for a "did you mean" hint
    when ``folder`` holds neither them nor an ``mnist`` sub-folder with them.

    Looks below ``folder`` (e.g. torchvision's ``MNIST/raw``), at most
    :data:`NEAR_DEPTH` levels deep and :data:`NEAR_FOLDERS` folders in all, and, if
    ``folder`` does not exist (a typo), in and below its parent the same way.

    Parameters
    ----------
    folder : str or os.PathLike

    Returns
    -------
    list of pathlib.Path
        In the order found, breadth first; empty if none.
    """
    folder = Path(folder)
    start = folder if folder.is_dir() else folder.parent
    found, level, visited = [], [start], 0
    for _ in range(NEAR_DEPTH + 1):
        below = []
        for place in level:
            visited += 1
            if visited > NEAR_FOLDERS:
                return found
            if holds_mnist(place):
                found.append(place)
            try:
                below += sorted(p for p in place.iterdir() if p.is_dir() and not p.is_symlink())
            except OSError:
                continue  # unreadable: nothing to suggest there
        level = below
    return found


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "varshift" / "mnist"


def _download(folder: Path, mirrors) -> None:
    """Fetch the missing MNIST files into ``folder``, checksums verified. If it fails,
    the folders it created are removed again where they are still empty (offline, all
    of them); files verified before the failure are kept, so that the next try
    fetches only the rest. Nothing that existed before is touched."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _fetch(folder, mirrors)
    except BaseException:
        for place in created:  # deepest first
            try:
                place.rmdir()
            except OSError:  # not empty (a verified file), or already gone
                break
        raise


def _fetch(folder: Path, mirrors) -> None:
    for stem, (digest, _) in MNIST_FILES.items():
        if _find(folder, stem):
            continue
        errors = []
        for mirror in mirrors:
            target = folder / f"{stem}.gz.part"
            try:
                with urllib.request.urlopen(f"{mirror}{stem}.gz", timeout=30) as response, \
                        open(target, "wb") as out:
                    shutil.copyfileobj(response, out)
                if hashlib.sha256(gzip.decompress(target.read_bytes())).hexdigest() != digest:
                    raise ValueError("checksum mismatch")
                target.rename(folder / f"{stem}.gz")
                break
            except Exception as err:  # noqa: BLE001 - every failure is reported below
                errors.append(f"{mirror}: {err}")
                target.unlink(missing_ok=True)
        else:
            raise OSError(f"could not download {stem}.gz: " + "; ".join(errors))


def load_mnist(root=None, *, download=False, mirrors=MNIST_MIRRORS, extra=()):
    """The MNIST digits as float32 images in [0, 1] and int64 labels.

    Looks for the four IDX files (raw or ``.gz``) in, in order: ``root``, then
    ``root/mnist`` (``root`` may be the MNIST folder or the folder that holds it, as
    for ``$VARSHIFT_DATA``); ``$VARSHIFT_DATA/mnist``; the ``extra`` folders; the user cache
    ``$XDG_CACHE_HOME/varshift/mnist`` (default ``~/.cache/varshift/mnist``). If they
    are in none of these, ``download=True`` fetches them into the user cache, with
    checksum verification.

    Parameters
    ----------
    root : str or os.PathLike, or a sequence of them, optional
        Folder(s) with the files, or with an ``mnist`` sub-folder that has them.
    download : bool, default False
    mirrors : sequence of str
        Base URLs for the download.
    extra : sequence of str or os.PathLike
        More folders to search before the user cache (the command line adds
        ``../shared/data/mnist``, where this project's tests look).

    Returns
    -------
    x_train : ndarray of float32, shape (60000, 1, 28, 28)
    y_train : ndarray of int64, shape (60000,)
    x_test : ndarray of float32, shape (10000, 1, 28, 28)
    y_test : ndarray of int64, shape (10000,)

    Raises
    ------
    MNISTNotFoundError
        A FileNotFoundError naming every place searched and how to provide the files.
    ValueError
        If a file is corrupt.
    """
    places = mnist_places(root, extra)
    folder = next((p for p in places if holds_mnist(p)), None)
    download_error = None
    if folder is None and download:
        try:
            _download(places[-1], mirrors)
            folder = places[-1]
        except OSError as err:
            download_error = err
    if folder is not None:
        arrays = [read_idx(_find(folder, stem), shape, digest)
                  for stem, (digest, shape) in MNIST_FILES.items()]
        images = [(a.astype(np.float32) / 255.0)[:, None] for a in arrays[0::2]]
        labels = [a.astype(np.int64) for a in arrays[1::2]]
        return images[0], labels[0], images[1], labels[1]
    looked = "\n".join(f"  - {p}" for p in places)
    hint = (f"\nDownloading failed: {download_error}" if download_error
            else "\nOr call load_mnist(download=True) on a machine with internet access.")
    near = _near_roots(root)
    if near:
        hint += f"\nDid you mean root={str(near[0])!r}? It holds the four files."
    raise MNISTNotFoundError(
        "MNIST files not found. Looked for train-images-idx3-ubyte[.gz], "
        "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and "
        f"t10k-labels-idx1-ubyte[.gz] in:\n{looked}\n"
        "Put the four files in one of these folders, pass root=FOLDER, or set "
        "VARSHIFT_DATA to a folder that has an 'mnist' sub-folder with them." + hint,
        places, download_error)


def _near_roots(root) -> list[Path]:
    """Folders near the given ``root`` folder(s) that hold the MNIST files."""
    roots = [] if root is None else [root] if isinstance(root, (str, os.PathLike)) else root
    return [near for r in roots for near in mnist_folders_near(r)]


def load_mnist1d(num_samples=5000, seed=42, train_split=0.8):
    """MNIST-1D (Greydanus 2020), generated on the spot by the ``mnist1d`` package.

    Parameters
    ----------
    num_samples : int, default 5000
        Total number of sequences (train and test), a multiple of 10.
    seed : int, default 42
        The generator's seed (42 gives the published data set).
    train_split : float, default 0.8

    Returns
    -------
    x_train : ndarray of float32, shape (N_train, 1, 40)
    y_train : ndarray of int64, shape (N_train,)
    x_test : ndarray of float32, shape (N_test, 1, 40)
    y_test : ndarray of int64, shape (N_test,)

    Notes
    -----
    Needs the optional ``mnist1d`` package (``pip install mnist1d``); no
    download. NumPy's global random state, which the package reseeds, is restored.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise ImportError("load_mnist1d needs the mnist1d package: "
                          "pip install mnist1d") from err
    num_samples = _validate.integer(num_samples, "num_samples", "load_mnist1d", minimum=10)
    seed = _validate.seed(seed, "seed", "load_mnist1d")
    train_split = _validate.real(train_split, "train_split", "load_mnist1d", 0, 1,
                                 low_open=True, high_open=True)
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, train_split
    state = np.random.get_state()  # noqa: NPY002 - the package uses the legacy global state
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    as_x = lambda a: np.asarray(a, np.float32)[:, None, :]  # noqa: E731
    return (as_x(data["x"]), np.asarray(data["y"], np.int64),
            as_x(data["x_test"]), np.asarray(data["y_test"], np.int64))
