"""Hostile and damaged files, from the user's side: ``varshift.inspect``, ``varshift.load``,
``Report.from_json`` and ``varshift inspect FILE`` give the documented error
(``varshift.ModelFileError``, a ValueError, naming the file and the entry or setting; exit
code 2 on the command line), read nothing outside the file, and finish in bounded time
and memory."""

import contextlib
import json
import os
import signal
import struct
import sys
import zipfile

import numpy as np
import pytest
from hostile_files import config, keras_archive, legacy_h5, rezip, weights_h5

import varshift
from varshift import ModelFileError, keras_file
from varshift.cli import main

h5py = pytest.importorskip("h5py")
pytestmark = pytest.mark.skipif(sys.platform == "win32",
                                reason="FIFOs, /dev/zero, symlinks and SIGALRM are POSIX")


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging: SIGALRM after ``seconds``."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def refused(call, path, *needles, error=ModelFileError):
    """``call(path)`` raises ``error`` naming the file and every needle; the message."""
    with deadline(60), pytest.raises(error) as err:
        call(path)
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert os.path.basename(str(path)) in message, message
    for needle in needles:
        assert needle in message, message
    return message


def exits_2(path, capsys, *needles):
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert os.path.basename(str(path)) in err
    for needle in needles:
        assert needle in err, err
    return err


# ------------------------------------------------------------------ reading other files
SECRET = b"SECRET-marker-7f3a9c"


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET + b"\n")
    return path


def _leaks(text):
    values = np.frombuffer(SECRET[:12], np.float32)
    return SECRET.decode() in text or any(f"{v:.3g}" in text for v in values if np.isfinite(v))


@pytest.mark.parametrize("layout", ["keras", "h5"])
def test_external_storage_never_reads_another_file(tmp_path, secret, capsys, layout):
    def external(h5, group):
        del h5[group]
        h5.create_dataset(group, shape=(3,), dtype="<f4", external=[(str(secret), 0, 12)])

    if layout == "keras":
        path = keras_archive(tmp_path / "m.keras", weights=weights_h5(
            edit=lambda h5: external(h5, "layers/batch_normalization/vars/2")))
    else:
        path = legacy_h5(tmp_path / "m.h5",
                         edit=lambda h5: external(h5, "model_weights/bn/seq/bn/moving_mean"))
    message = refused(varshift.inspect, path, "external file", "moving_mean" if layout == "h5"
                      else "vars/2")
    assert not _leaks(message)
    err = exits_2(path, capsys, "external file")
    assert not _leaks(err)


def test_virtual_dataset_is_refused(tmp_path):
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as h5:
        h5["x"] = np.arange(3, dtype=np.float32)

    def virtual(h5):
        del h5["layers/batch_normalization/vars/3"]
        layout = h5py.VirtualLayout(shape=(3,), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(source), "x", shape=(3,))
        h5["layers/batch_normalization/vars"].create_virtual_dataset("3", layout)

    path = keras_archive(tmp_path / "m.keras", weights=weights_h5(edit=virtual))
    refused(varshift.inspect, path, "virtual dataset", "vars/3")


@pytest.mark.parametrize("link", ["soft", "external-dataset", "external-group"])
def test_soft_and_external_links_are_refused(tmp_path, secret, link):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = np.arange(3, dtype=np.float32)
        h5.create_group("g/vars")

    def edit(h5):
        if link == "soft":
            del h5["model_weights/bn/seq/bn/moving_mean"]
            h5["model_weights/bn/seq/bn/moving_mean"] = h5py.SoftLink("/model_weights/bn/seq/bn/beta")
        elif link == "external-dataset":
            del h5["model_weights/bn/seq/bn/moving_mean"]
            h5["model_weights/bn/seq/bn/moving_mean"] = h5py.ExternalLink(str(other), "/x")
        else:
            del h5["model_weights/bn/seq"]
            h5["model_weights/bn/seq"] = h5py.ExternalLink(str(other), "/g")

    path = legacy_h5(tmp_path / "m.h5", edit=edit)
    refused(varshift.inspect, path, "soft link" if link == "soft" else "external link",
            "only hard links")


@pytest.mark.parametrize("value, needle", [
    (np.ones((3, 1), np.float32), "shape (3, 1)"),
    (np.ones(3, np.int32), "dtype int32"),
    (np.array([b"a", b"b", b"c"]), "dtype |S1"),
    (np.float32(1), "a scalar"),
    (np.ones(4, np.float32), "differ in length"),
])
def test_variables_of_the_wrong_shape_or_dtype_are_refused(tmp_path, value, needle):
    def edit(h5):
        del h5["layers/batch_normalization/vars/3"]
        h5["layers/batch_normalization/vars/3"] = value

    path = keras_archive(tmp_path / "m.keras", weights=weights_h5(edit=edit))
    refused(varshift.inspect, path, needle)


# ------------------------------------------------------------------ bounded reads
def test_config_json_inflating_beyond_the_cap_is_not_read(tmp_path):
    text = b"{" + b" " * (64 * 2**20) + b"}"
    path = keras_archive(tmp_path / "bomb.keras", compression=zipfile.ZIP_DEFLATED,
                         config_json=text)
    assert path.stat().st_size < 2**20
    refused(varshift.inspect, path, "config.json", "limit")


def _central(data, member):
    """Offset of ``member``'s entry in the zip central directory ``data``."""
    at = data.index(b"PK\x01\x02")
    while data[at + 46:at + 46 + len(member)] != member.encode():
        at = data.index(b"PK\x01\x02", at + 1)
    return at


def _patch(path, member, local, central, fmt, *values):
    """Write ``values`` at ``local`` in ``member``'s local header and at ``central`` in
    its central directory entry."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        offset = zf.getinfo(member).header_offset
    struct.pack_into(fmt, data, offset + local, *values)
    struct.pack_into(fmt, data, _central(data, member) + central, *values)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("member", ["model.weights.h5", "config.json"])
def test_zip_member_declaring_4_gb_is_refused(tmp_path, member):
    path = _patch(keras_archive(tmp_path / "m.keras"), member, 18, 20, "<II", 0xFFFFFFF0,
                  0xFFFFFFF0)
    refused(varshift.inspect, path, member)


def test_hdf5_dataset_declaring_2_36_values_is_not_read(tmp_path):
    def edit(h5):
        del h5["layers/batch_normalization/vars/2"]
        h5.create_dataset("layers/batch_normalization/vars/2", shape=(2**36,), dtype="<f4",
                          chunks=(1024,))

    path = keras_archive(tmp_path / "m.keras", weights=weights_h5(edit=edit))
    refused(varshift.inspect, path, "vars/2", "1-D float array of 1 to")


def _npy_header(shape, dtype="<f8"):
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.npz"
    varshift.save(varshift.nn.Sequential(varshift.nn.Dense(4, 3), varshift.nn.BatchNorm(3),
                                         seed=0), path)
    return path


def test_npz_member_and_npy_declaring_2_40_values_are_refused(tmp_path, model_file):
    huge = _npy_header((2**20, 2**20)) + b"\0" * 64
    bad = rezip(model_file, tmp_path / "huge.npz", {"0.weight.npy": huge})
    refused(varshift.load, bad, "'0.weight'", "1099511627776 values")
    (tmp_path / "huge.npy").write_bytes(huge)
    refused(varshift.load, tmp_path / "huge.npy", "1099511627776 values")
    fits = _npy_header((2**20,)) + b"\0" * 64  # under the cap, but not in the file
    bad = rezip(model_file, tmp_path / "short.npz", {"0.weight.npy": fits})
    refused(varshift.load, bad, "'0.weight'", "8388608 bytes", "truncated")


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "directory"])
def test_only_regular_files_are_read(tmp_path, capsys, target):
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        source = tmp_path / "fifo"
    elif target == "directory":
        source = tmp_path / "folder"
        source.mkdir()
    else:
        source = target
        if not os.path.exists(source):
            pytest.skip("no /dev/zero")
    kind = {"/dev/zero": "a device", "fifo": "a FIFO", "directory": "a directory"}[target]
    for name, call in [("m.keras", varshift.inspect), ("m.npz", varshift.load),
                       ("r.json", varshift.Report.from_json)]:
        link = tmp_path / name
        link.symlink_to(source)
        refused(call, link, kind, "not a regular file")
    exits_2(tmp_path / "m.keras", capsys)


# ------------------------------------------------------------------ libhdf5 stuck or crashing
def _global_heap_loop(h5_bytes):
    """Set the size of the free space at the end of the first global heap collection
    (where variable-length strings live) to 0: libhdf5 then parses it forever."""
    data = bytearray(h5_bytes)
    at = data.index(b"GCOL")
    size = struct.unpack_from("<Q", data, at + 8)[0]
    p = at + 16
    while p + 16 <= at + size:
        index, _, _, length = struct.unpack_from("<HHIQ", data, p)
        if index == 0:
            struct.pack_into("<Q", data, p + 8, 0)
            return bytes(data)
        p += 16 + (length + 7) // 8 * 8
    raise AssertionError("no free space in the global heap")


def test_a_stuck_hdf5_library_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(keras_file, "HDF5_TIME_LIMIT", 3.0)
    path = legacy_h5(tmp_path / "m.h5")
    path.write_bytes(_global_heap_loop(path.read_bytes()))
    refused(varshift.inspect, path, "took longer than 3 s")


def test_a_string_type_that_would_crash_hdf5_is_not_read(tmp_path):
    """A flipped bit in the flags of the variable-length string type of 'weight_names'
    (an unknown kind of variable-length type) crashes libhdf5 on reading: the type is
    checked first."""
    path = legacy_h5(tmp_path / "m.h5")
    data = bytearray(path.read_bytes())
    name = data.find(b"weight_names\0")
    while name >= 0:
        vlen = data.find(b"\x19\x01", name, name + 32)  # class 9 (variable length), v1
        if vlen >= 0:
            data[vlen + 1] ^= 0x02  # its flags
        name = data.find(b"weight_names\0", name + 1)
    path.write_bytes(bytes(data))
    refused(varshift.inspect, path, "weight_names", "not a string")


def test_a_crashing_hdf5_child_is_a_model_file_error(tmp_path, monkeypatch):
    crash = tmp_path / "crash.py"
    crash.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setattr(keras_file, "_SERVER", str(crash))
    path = legacy_h5(tmp_path / "m.h5")
    refused(varshift.inspect, path, "HDF5 library fail", str(-signal.SIGSEGV))


# ------------------------------------------------------------------ documented errors only
def _nested_keras_config(depth):
    """JSON text of ``depth`` Sequential models nested around :func:`config`'s."""
    return ('{"class_name": "Sequential", "config": {"name": "s", "layers": [' * depth
            + json.dumps(config()) + "]}}" * depth)


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path, model_file):
    path = keras_archive(tmp_path / "deep.keras", config_json=_nested_keras_config(400).encode())
    refused(varshift.inspect, path, "config.json", "nested more than")
    path = legacy_h5(tmp_path / "deep.h5", model_config=_nested_keras_config(400))
    refused(varshift.inspect, path, "model_config", "nested more than")

    with np.load(model_file) as data:
        arrays = dict(data)
    meta = json.loads(str(arrays["__varshift__"]))
    inner = json.dumps(meta["architecture"])
    for depth, needle in [(5000, "nested more than"), (60, "nested more than 50 deep")]:
        architecture = '{"class": "Sequential", "args": {"layers": [' * depth + inner + "]}}" * depth
        text = json.dumps({**meta, "architecture": "@"}).replace('"@"', architecture)
        arrays["__varshift__"] = np.array(text)
        np.savez(tmp_path / "deep.npz", **arrays)
        refused(varshift.load, tmp_path / "deep.npz", "__varshift__" if depth == 5000
                else "architecture", needle)

    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError, match="nested more than"):
        varshift.Report.from_json('{"layers": ' + deep + "}")
    (tmp_path / "deep.json").write_text('{"layers": ' + deep + "}")
    refused(varshift.Report.from_json, tmp_path / "deep.json", "nested more than",
            error=ValueError)


def _corrupt_deflate(path, member):
    """Overwrite the middle of a deflated member's compressed bytes."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        offset = zf.getinfo(member).header_offset
    start = offset + 30 + sum(struct.unpack_from("<HH", data, offset + 26))
    data[start + 2:start + 2 + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    return path


def test_corrupt_deflate_and_unknown_methods_are_model_file_errors(tmp_path, model_file, capsys):
    big = json.dumps({**config(), "pad": "x" * 5000}).encode()
    path = keras_archive(tmp_path / "z.keras", compression=zipfile.ZIP_DEFLATED, config_json=big)
    _corrupt_deflate(path, "config.json")
    refused(varshift.inspect, path, "config.json", "damaged")
    exits_2(path, capsys, "config.json")
    path = _patch(keras_archive(tmp_path / "m.keras"), "config.json", 8, 10, "<H", 99)
    refused(varshift.inspect, path, "config.json", "compression method 99")

    with np.load(model_file) as data:
        arrays = dict(data)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    assert isinstance(varshift.load(tmp_path / "c.npz"), varshift.nn.Sequential)
    _corrupt_deflate(tmp_path / "c.npz", "0.weight.npy")
    refused(varshift.load, tmp_path / "c.npz", "'0.weight'", "damaged")
    bzip2 = tmp_path / "b.npz"
    bzip2.write_bytes(model_file.read_bytes())
    _patch(bzip2, "0.weight.npy", 8, 10, "<H", zipfile.ZIP_BZIP2)
    refused(varshift.load, bzip2, "'0.weight.npy'", "compression method 12")


def test_truncated_members_are_model_file_errors(tmp_path):
    """A deflated member whose data ends early (EOFError inside zipfile)."""
    big = json.dumps({**config(), "pad": "x" * 5000}).encode()
    path = keras_archive(tmp_path / "z.keras", compression=zipfile.ZIP_DEFLATED, config_json=big)
    _patch(path, "config.json", 18, 20, "<I", 40)  # compressed size: 40 bytes
    refused(varshift.inspect, path, "config.json")


@pytest.mark.parametrize("layout", ["keras", "h5"])
def test_step_counts_and_momenta_that_overflow(tmp_path, layout):
    def write(name, steps, **bn):
        if layout == "keras":
            return keras_archive(tmp_path / f"{name}.keras",
                                 config_json=json.dumps(config(**bn)).encode(),
                                 weights=weights_h5(steps=steps))
        return legacy_h5(tmp_path / f"{name}.h5", model_config=config(**bn), steps=steps)

    refused(varshift.inspect, write("negative", -10**6), "step count", "-1000000",
            "cannot be negative")
    for momentum in (1.5, -3.0):
        result = varshift.inspect(write("fast", 10**6, momentum=momentum))
        assert result.optimizer_iterations == 10**6
        json.loads(result.to_json())
        str(result)


def test_batchnorm_vars_stored_as_a_dataset(tmp_path):
    def edit(h5):
        del h5["layers/batch_normalization/vars"]
        h5["layers/batch_normalization/vars"] = np.zeros(4, np.float32)

    path = keras_archive(tmp_path / "m.keras", weights=weights_h5(edit=edit))
    refused(varshift.inspect, path, "'bn'", "0 variables", "vars")


def test_missing_hdf5_objects_are_named(tmp_path):
    def edit(h5):
        del h5["model_weights/bn/seq/bn/moving_variance"]

    path = legacy_h5(tmp_path / "m.h5", edit=edit)
    refused(varshift.inspect, path, "model_weights/bn/seq/bn/moving_variance", "missing")


@pytest.mark.parametrize("settings, needle", [
    ({"momentum": "fast"}, "setting 'momentum' must be a finite number, got 'fast'"),
    ({"epsilon": [0.001]}, "setting 'epsilon' must be a finite number >= 0, got [0.001]"),
    ({"epsilon": -1.0}, "setting 'epsilon' must be a finite number >= 0"),
    ({"center": "yes"}, "setting 'center' must be true or false"),
    ({"axis": 1.5}, "setting 'axis' must be an integer or a list of integers"),
    ({"momentum": 10**400}, "setting 'momentum' must be a finite number"),
])
@pytest.mark.parametrize("layout", ["keras", "h5"])
def test_wrong_typed_settings_are_named(tmp_path, capsys, settings, needle, layout):
    if layout == "keras":
        path = keras_archive(tmp_path / "m.keras", config_json=json.dumps(config(**settings)).encode())
    else:
        path = legacy_h5(tmp_path / "m.h5", model_config=config(**settings))
    refused(varshift.inspect, path, "layer 'bn'", needle)
    exits_2(path, capsys, needle)


@pytest.mark.parametrize("change, needle", [
    (lambda c: c["config"]["layers"][2].update(class_name=5), "setting 'class_name' must be a string, got 5"),
    (lambda c: c["config"]["layers"][3]["config"].update(rate="high"), "layer 'drop': setting 'rate'"),
    (lambda c: c["config"]["layers"][1]["config"].update(trainable="no"), "setting 'trainable'"),
    (lambda c: c["config"].update(layers={"a": 1}), "setting 'layers' must be a list"),
    (lambda c: c["config"]["layers"].append([1, 2]), "must be a JSON object, got [1, 2]"),
    (lambda c: c["config"]["layers"][2].update(inbound_nodes=[{"keras_history": [5]}]),
     "setting 'keras_history'"),
])
def test_malformed_configs_name_the_setting(tmp_path, change, needle):
    model = config()
    change(model)
    path = keras_archive(tmp_path / "m.keras", config_json=json.dumps(model).encode())
    refused(varshift.inspect, path, "config.json", needle)


def test_numbers_beyond_the_digit_limit_name_the_file(tmp_path, model_file):
    digits = "9" * 5000
    path = keras_archive(tmp_path / "v.keras",
                         extra={"metadata.json": ('{"keras_version": ' + digits + "}").encode()})
    refused(varshift.inspect, path, "metadata.json", "not valid JSON")
    path = keras_archive(tmp_path / "s.keras",
                         extra={"metadata.json": json.dumps({"keras_version": digits}).encode()})
    assert varshift.inspect(path).keras_version == digits  # a long string is only a string
    with np.load(model_file) as data:
        arrays = dict(data)
    text = str(arrays["__varshift__"]).replace('"version": 1', '"version": ' + digits)
    arrays["__varshift__"] = np.array(text)
    np.savez(tmp_path / "v.npz", **arrays)
    refused(varshift.load, tmp_path / "v.npz", "__varshift__", "digits")


def test_huge_declared_layers_are_refused_not_a_memory_error(tmp_path, model_file):
    with np.load(model_file) as data:
        arrays = dict(data)
    meta = json.loads(str(arrays["__varshift__"]))
    meta["architecture"]["args"]["layers"][0]["args"].update(in_features=2**40, out_features=2**40)
    arrays["__varshift__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "huge.npz", **arrays)
    refused(varshift.load, tmp_path / "huge.npz", "architecture")


def test_model_file_error_is_exported_and_a_value_error():
    assert varshift.ModelFileError is ModelFileError and issubclass(ModelFileError, ValueError)
    assert "ModelFileError" in varshift.__all__
    assert sys.modules["varshift.inspection"].ModelFileError is ModelFileError
