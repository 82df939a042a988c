"""Small Keras model files written by hand (h5py and zipfile, no Keras), in the layouts
``varshift.inspect`` reads, for the hostile-file and fuzz tests.

The model is Sequential [InputLayer, Dense, BatchNormalization(bn), Dropout], with the
optimizer's step count saved.
"""

import io
import json
import zipfile

import numpy as np

MEAN = np.array([0.5, -1.0, 2.0], np.float32)
VARIANCE = np.array([2.0, 0.5, 3.0], np.float32)


def config(**bn):
    """A Sequential model's config; ``bn`` overrides the BatchNormalization's settings."""
    settings = {"name": "bn", "axis": -1, "momentum": 0.99, "epsilon": 0.001, "center": True,
                "scale": True, **bn}
    return {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "InputLayer", "config": {"name": "input"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 3,
                                           "kernel_initializer": {}}},
        {"class_name": "BatchNormalization", "config": settings},
        {"class_name": "Dropout", "config": {"name": "drop", "rate": 0.5}}]}}


def weights_h5(steps=5, edit=None) -> bytes:
    """The ``model.weights.h5`` of a ``.keras`` archive; ``edit(h5)`` changes it."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        dense = h5.create_group("layers/dense/vars")
        dense.attrs["name"] = "dense"
        dense["0"], dense["1"] = np.ones((3, 3), np.float32), np.zeros(3, np.float32)
        bn = h5.create_group("layers/batch_normalization/vars")
        bn.attrs["name"] = "bn"
        for key, value in enumerate([np.ones(3, np.float32), np.zeros(3, np.float32), MEAN,
                                     VARIANCE]):
            bn[str(key)] = value
        h5["optimizer/vars/0"] = np.int64(steps)
        if edit is not None:
            edit(h5)
    return buffer.getvalue()


def keras_archive(path, *, config_json=None, weights=None, compression=zipfile.ZIP_STORED,
                  extra=None):
    """Write a ``.keras`` archive: ``config_json`` (bytes; default: :func:`config`),
    ``weights`` (bytes; default: :func:`weights_h5`), ``extra`` members."""
    members = {"config.json": json.dumps(config()).encode() if config_json is None else config_json,
               "metadata.json": json.dumps({"keras_version": "3.5.0"}).encode(),
               "model.weights.h5": weights_h5() if weights is None else weights, **(extra or {})}
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def legacy_h5(path, *, model_config=None, steps=5, edit=None):
    """Write a legacy HDF5 model as Keras 3 does (variable-length string attributes);
    ``model_config``: a dict or JSON text; ``edit(h5)`` changes the file."""
    import h5py

    text = h5py.string_dtype()
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = (model_config if isinstance(model_config, str)
                                    else json.dumps(model_config or config()))
        h5.attrs["keras_version"] = "3.5.0"
        weights = h5.create_group("model_weights")
        weights.attrs["layer_names"] = np.array(["dense", "bn", "drop"], dtype=text)
        for name, variables in [("dense", {"kernel": np.ones((3, 3), np.float32),
                                           "bias": np.zeros(3, np.float32)}),
                                ("bn", {"gamma": np.ones(3, np.float32),
                                        "beta": np.zeros(3, np.float32),
                                        "moving_mean": MEAN, "moving_variance": VARIANCE})]:
            group = weights.create_group(name)
            group.attrs["weight_names"] = np.array([f"seq/{name}/{v}" for v in variables],
                                                   dtype=text)
            for v, value in variables.items():
                group[f"seq/{name}/{v}"] = value
        weights.create_group("drop").attrs["weight_names"] = np.array([], np.float64)
        optimizer = h5.create_group("optimizer_weights")
        optimizer.attrs["weight_names"] = np.array(["adam/iteration", "adam/learning_rate"],
                                                   dtype=text)
        optimizer["adam/iteration"] = np.int64(steps)
        optimizer["adam/learning_rate"] = np.float32(1e-3)
        if edit is not None:
            edit(h5)
    return path


def rezip(src, dst, replace):
    """Copy the zip ``src`` to ``dst`` with members replaced (bytes) or removed (None),
    keeping each member's compression."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = replace.get(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info, data)
    return dst
