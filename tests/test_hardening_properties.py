"""Property (issue 10): random bad arguments and data given to the public functions fail
only with ValueError, TypeError or OSError (varshift.NonFiniteError is a ValueError),
with a message that names the argument or the file, and leave the model (parameters,
buffers, random streams, modes) and any existing file unchanged.

Each example corrupts one argument of one call and keeps the others valid. The oracles
below say which values are valid; examples whose value happens to be valid are
discarded, so every remaining call is a misuse.
"""

import atexit
import json
import math
import numbers
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import blobs, dropout_before_bn, healthy, trained
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import varshift
from varshift import diagnose, evaluate, fit, measure, nn, optim, recalibrate

ALLOWED = (ValueError, TypeError, OSError)
FEATURES = 20


def state(model):
    return (model.state_dict(), model.rng_state(), [layer.training for _, layer in model.walk()])


def same_state(model, before):
    params, rng, modes = state(model)
    return (params.keys() == before[0].keys()
            and all(np.array_equal(before[0][k], v) for k, v in params.items())
            and rng == before[1] and modes == before[2])


class World:
    """A trained model, data, a saved file: built once for all examples."""

    def __init__(self):
        self.x, self.y = blobs(64)
        self.model = trained(dropout_before_bn(), (self.x, self.y), epochs=1)
        self.other = healthy()
        self.folder = Path(tempfile.mkdtemp(prefix="varshift-property-"))
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)
        self.file = self.folder / "model.npz"
        varshift.save(self.model, self.file)


WORLD = World()

# ------------------------------------------------------------------ oracles
def is_int(v, minimum):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and v >= minimum


def is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


def int_tuple_ok(n, minimum):
    return lambda v: is_int(v, minimum) or (
        isinstance(v, (list, tuple)) and len(v) == n and all(is_int(i, minimum) for i in v))


VALID = {
    "pos_int": lambda v: is_int(v, 1),
    "opt_pos_int": lambda v: v is None or is_int(v, 1),
    "seed": lambda v: v is None or is_int(v, 0),
    "flag": lambda v: isinstance(v, (bool, np.bool_)) or (is_int(v, 0) and v <= 1),
    "fraction": lambda v: is_real(v) and 0 <= v < 1,
    "momentum": lambda v: v is None or (is_real(v) and 0 <= v <= 1),
    "pos_float": lambda v: is_real(v) and v > 0,
    "nonneg_float": lambda v: is_real(v) and v >= 0,
    "float": is_real,
    "off_on": lambda v: isinstance(v, str) and v in ("off", "on"),
    "eval_train": lambda v: isinstance(v, str) and v in ("eval", "train"),
}


def valid_inputs(x):
    x = np.asarray(x) if isinstance(x, np.ndarray) else None
    return (x is not None and x.dtype.kind in "biuf" and x.ndim == 2 and x.shape[1] == FEATURES
            and len(x) >= 2 and bool(np.isfinite(x).all()))


# ------------------------------------------------------------------ strategies
junk = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
    st.lists(st.integers(-1, 3), max_size=3), st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
    st.sampled_from([np.random.default_rng(0), object(), {"a": 1}, np.float32(np.nan),
                     np.int64(-4), np.zeros(3), b"bytes", 1j]))

arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, np.complex64,
                           np.dtype("<U2")]),
    shape=st.one_of(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
                    st.tuples(st.integers(0, 5), st.sampled_from([FEATURES, FEATURES - 1]))))


@st.composite
def bad_inputs(draw):
    """Inputs the model cannot take: bad arrays, batches with a bad one, non-data."""
    kind = draw(st.sampled_from(["array", "nan", "batches", "junk"]))
    if kind == "array":
        x = draw(arrays)
        assume(not valid_inputs(x))
        return x
    if kind == "nan":
        x = WORLD.x[:draw(st.integers(2, 64))].copy()
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return x
    if kind == "batches":
        bad = draw(arrays)
        assume(not valid_inputs(bad))
        batches = [WORLD.x[:32], bad] if draw(st.booleans()) else [bad]
        return iter(batches) if draw(st.booleans()) else batches
    return draw(junk)


@st.composite
def bad_pairs(draw):
    """(x, y) training data with bad inputs or labels, or no pair at all."""
    x, y = WORLD.x, WORLD.y
    kind = draw(st.sampled_from(["x", "y", "junk"]))
    if kind == "x":
        return draw(bad_inputs()), y
    if kind == "y":
        shapes = st.sampled_from([(64,), (63,), (64, 2), (), (0,)])
        labels = draw(st.one_of(
            hnp.arrays(st.sampled_from([np.int64, np.float64, np.uint8, np.dtype("<U1")]), shapes),
            hnp.arrays(np.int64, shapes, elements=st.integers(-2, 4)),
            st.just(np.eye(2)[y]), st.just(y + 2), st.just(-y)))
        assume(not (labels.dtype.kind in "iu" and labels.shape == (64,)
                    and labels.min() >= 0 and labels.max() < 2))
        return x, labels
    value = draw(junk)
    assume(not (isinstance(value, (list, tuple)) and len(value) == 2))
    return value


def names_file(message, path) -> bool:
    """Whether ``message`` names ``path`` (as is, or escaped as in a repr)."""
    return str(path) in message or repr(str(path))[1:-1] in message


def bad(kind):
    return junk.filter(lambda v: not VALID[kind](v))


def other_optimizer():
    model = healthy()
    return optim.SGD(model, lr=0.1)


def nan_lr_optimizer():
    opt = optim.SGD(WORLD.model, lr=0.1)
    opt.lr = float("nan")
    return opt


BAD = {
    "model": st.one_of(junk, st.builds(nn.CrossEntropyLoss), st.just(WORLD.x)),
    "data": bad_inputs(),
    "holdout": st.one_of(bad_inputs(), st.just("generator")),
    "pair": bad_pairs(),
    "batch_size": bad("pos_int"),
    "epochs": bad("pos_int"),
    "train_batch_size": bad("opt_pos_int"),
    "seed": bad("seed"),
    "flag": bad("flag"),
    "off_on": junk.filter(lambda v: not VALID["off_on"](v)),
    "eval_train": junk.filter(lambda v: not VALID["eval_train"](v)),
    "report": st.one_of(junk, st.just("other model"), st.just("dict")),
    "loss": st.one_of(junk, st.builds(nn.Dense, st.just(1), st.just(1))),
    "optimizer": st.one_of(junk, st.builds(other_optimizer), st.builds(nan_lr_optimizer)),
}


def resolve(name, value):
    """Values that need the world: one-shot generators, other models' reports."""
    if name == "holdout" and isinstance(value, str) and value == "generator":
        return (b for b in [WORLD.x])
    if name == "report" and isinstance(value, str) and value in ("other model", "dict"):
        report = measure(WORLD.other, WORLD.x)
        return report if value == "other model" else report.to_dict()
    return value


# function: (call, {argument: kind of bad value}, name expected in messages per argument)
def _fit(a):
    return fit(a["model"], a["data"], a["loss"], a["optimizer"], epochs=a["epochs"],
               batch_size=a["batch_size"], seed=a["seed"], progress=a["progress"],
               validation_data=a["validation_data"], eval_train=a["eval_train"],
               drop_last=a["drop_last"])


CALLS = {
    "measure": (lambda a: measure(a["model"], a["data"], batch_size=a["batch_size"],
                                  seed=a["seed"], progress=a["progress"]),
                {"model": "model", "data": "data", "batch_size": "batch_size", "seed": "seed",
                 "progress": "flag"}),
    "diagnose": (lambda a: diagnose(a["model"], a["data"], batch_size=a["batch_size"],
                                    train_batch_size=a["train_batch_size"], seed=a["seed"],
                                    report=a["report"], progress=a["progress"]),
                 {"model": "model", "data": "data", "batch_size": "batch_size",
                  "train_batch_size": "train_batch_size", "seed": "seed", "report": "report",
                  "progress": "flag"}),
    "recalibrate": (lambda a: recalibrate(a["model"], a["data"], batch_size=a["batch_size"],
                                          dropout=a["dropout"], holdout=a["holdout"],
                                          seed=a["seed"], progress=a["progress"],
                                          reports=a["reports"]),
                    {"model": "model", "data": "data", "batch_size": "batch_size",
                     "dropout": "off_on", "holdout": "holdout", "seed": "seed",
                     "progress": "flag", "reports": "flag"}),
    "fit": (_fit, {"model": "model", "data": "pair", "loss": "loss", "optimizer": "optimizer",
                   "epochs": "epochs", "batch_size": "batch_size", "seed": "seed",
                   "progress": "flag", "validation_data": "pair", "eval_train": "flag",
                   "drop_last": "flag"}),
    "evaluate": (lambda a: evaluate(a["model"], a["data"], a["loss"], a["batch_size"],
                                    batchnorm=a["batchnorm"], dropout=a["dropout"],
                                    seed=a["seed"]),
                 {"model": "model", "data": "pair", "loss": "loss", "batch_size": "batch_size",
                  "batchnorm": "eval_train", "dropout": "eval_train", "seed": "seed"}),
}


def defaults():
    w = WORLD
    return {"model": w.model, "data": w.x, "batch_size": 32, "seed": 0, "progress": False,
            "train_batch_size": None, "report": None, "dropout": "off", "holdout": None,
            "reports": True, "loss": nn.CrossEntropyLoss(), "optimizer": optim.SGD(w.model, lr=0.1),
            "epochs": 1, "validation_data": None, "eval_train": False, "drop_last": False,
            "batchnorm": "eval"}


@st.composite
def misuses(draw):
    function = draw(st.sampled_from(sorted(CALLS)))
    call, kinds = CALLS[function]
    argument = draw(st.sampled_from(sorted(kinds)))
    value = resolve(kinds[argument], draw(BAD[kinds[argument]]))
    args = defaults()
    if function in ("fit", "evaluate"):
        args["data"] = (WORLD.x, WORLD.y)
        args["dropout"] = "eval"
    args[argument] = value
    return function, call, argument, args


@settings(max_examples=500, deadline=None)
@given(misuses())
def test_public_functions_fail_cleanly_and_change_nothing(misuse):
    function, call, argument, args = misuse
    model = args["model"] if isinstance(args["model"], nn.Layer) else WORLD.model
    before = state(model)
    try:
        call(args)
    except ALLOWED as err:
        message = str(err)
        assert argument in message or (argument == "validation_data" and "validation" in message), \
            f"{function}({argument}=...): {type(err).__name__}: {message}"
        assert same_state(model, before), f"{function}({argument}=...) changed the model"
    except Exception as err:  # noqa: BLE001 - the property: nothing else escapes
        pytest.fail(f"{function}({argument}=...) raised {type(err).__name__}: {err}")
    else:  # a misuse that worked must still not have touched a model it only reads
        if function not in ("fit", "recalibrate"):
            assert same_state(model, before)
        else:  # put the shared model back
            model.load_state_dict(before[0])
            model.set_rng_state(before[1])


@settings(max_examples=100, deadline=None)
@given(st.one_of(
    st.tuples(st.just("model"), st.one_of(junk, st.builds(nn.CrossEntropyLoss))),
    st.tuples(st.just("path"), st.one_of(junk.filter(lambda v: not isinstance(v, str)),
                                         st.sampled_from(["folder", "missing folder"]))),
    st.tuples(st.just("setting"), st.sampled_from(["seed", "rate"])),
))
def test_save_fails_cleanly_and_keeps_the_existing_file(case):
    argument, value = case
    saved = WORLD.file.read_bytes()
    model, path = WORLD.model, WORLD.file
    restore = None
    if argument == "model":
        model = value
    elif argument == "path":
        path = {"folder": WORLD.folder, "missing folder": WORLD.folder / "no" / "m.npz"}.get(
            value, value) if isinstance(value, str) else value
    else:  # a setting of the Dropout layer changed after construction: a file cannot hold it
        restore = (WORLD.model[2], value, getattr(WORLD.model[2], value))
        setattr(WORLD.model[2], value, np.random.default_rng(0))
    try:
        with pytest.raises(ALLOWED) as err:
            varshift.save(model, path)
        message = str(err.value)
        assert (argument in message or names_file(message, path) if argument != "setting"
                else "cannot" in message and names_file(message, WORLD.file)), message
    finally:
        if restore:
            setattr(*restore)
    assert WORLD.file.read_bytes() == saved
    assert sorted(p.name for p in WORLD.folder.iterdir()) == ["model.npz"]  # no temporary files


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=False),
              st.text(max_size=5)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=4), children, max_size=3)),
    max_leaves=6)


def json_paths(value, prefix=()):
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, child in items:
        yield from json_paths(child, prefix + (key,))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_load_of_corrupt_metadata_or_arrays_names_the_file(data):
    with np.load(WORLD.file) as stored:
        arrays = dict(stored)
    meta = json.loads(str(arrays["__varshift__"]))
    target = data.draw(st.sampled_from(["meta", "array", "path"]))
    if target == "meta":
        where = data.draw(st.sampled_from([p for p in json_paths(meta) if p]))
        parent = meta
        for key in where[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[where[-1]]
        else:
            parent[where[-1]] = data.draw(json_values)
    elif target == "array":
        key = data.draw(st.sampled_from(sorted(k for k in arrays if k != "__varshift__")))
        if data.draw(st.booleans()):
            del arrays[key]
        else:
            arrays[key] = data.draw(arrays_for_state)
    path = WORLD.folder / "corrupt.npz"
    try:
        if target == "path":
            path = data.draw(st.one_of(junk, st.just(WORLD.folder), st.just(WORLD.folder / "no.npz")))
        else:
            arrays["__varshift__"] = np.array(json.dumps(meta))
            np.savez(path, **arrays)
        try:
            varshift.load(path)
        except ALLOWED as err:
            assert "path" in str(err) or names_file(str(err), path), str(err)
        except Exception as err:  # noqa: BLE001 - the property: nothing else escapes
            pytest.fail(f"load raised {type(err).__name__}: {err}")
    finally:
        (WORLD.folder / "corrupt.npz").unlink(missing_ok=True)


arrays_for_state = hnp.arrays(st.sampled_from([np.float32, np.int64, np.dtype("<U1")]),
                              hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))


# ------------------------------------------------------------------ layer constructors
CONSTRUCTORS = {
    nn.Dense: {"in_features": "pos_int", "out_features": "pos_int", "bias": "flag"},
    nn.Conv1D: {"in_channels": "pos_int", "out_channels": "pos_int", "kernel_size": "tuple1",
                "stride": "tuple1", "padding": "conv_pad1", "dilation": "tuple1", "bias": "flag"},
    nn.Conv2D: {"in_channels": "pos_int", "out_channels": "pos_int", "kernel_size": "tuple2",
                "stride": "tuple2", "padding": "conv_pad2", "dilation": "tuple2", "bias": "flag"},
    nn.MaxPool2D: {"kernel_size": "tuple2", "stride": "opt_tuple2", "padding": "pad2"},
    nn.AvgPool1D: {"kernel_size": "tuple1", "stride": "opt_tuple1", "padding": "pad1"},
    nn.BatchNorm: {"num_features": "pos_int", "eps": "pos_float", "momentum": "momentum",
                   "affine": "flag", "track_running_stats": "flag", "unbiased": "flag"},
    nn.Dropout: {"rate": "fraction", "seed": "seed"},
    nn.GaussianDropout: {"rate": "fraction", "seed": "seed"},
    nn.Uout: {"beta": "nonneg_float", "seed": "seed"},
    nn.LeakyReLU: {"negative_slope": "float"},
    nn.ELU: {"alpha": "pos_float"},
}
REQUIRED = {nn.Dense: (3, 4), nn.Conv1D: (1, 2, 3), nn.Conv2D: (1, 2, 3), nn.MaxPool2D: (2,),
            nn.AvgPool1D: (2,), nn.BatchNorm: (3,)}
VALID.update({
    "tuple1": int_tuple_ok(1, 1), "tuple2": int_tuple_ok(2, 1),
    "opt_tuple1": lambda v: v is None or int_tuple_ok(1, 1)(v),
    "opt_tuple2": lambda v: v is None or int_tuple_ok(2, 1)(v),
    "pad1": lambda v: int_tuple_ok(1, 0)(v) and np.all(np.asarray(v) <= 1),  # half the kernel 2
    "pad2": lambda v: int_tuple_ok(2, 0)(v) and np.all(np.asarray(v) <= 1),
    "conv_pad1": lambda v: (isinstance(v, str) and v == "same") or int_tuple_ok(1, 0)(v),
    "conv_pad2": lambda v: (isinstance(v, str) and v == "same") or int_tuple_ok(2, 0)(v),
})


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_layer_constructors_name_the_bad_argument(data):
    cls = data.draw(st.sampled_from(sorted(CONSTRUCTORS, key=lambda c: c.__name__)))
    argument, kind = data.draw(st.sampled_from(sorted(CONSTRUCTORS[cls].items())))
    value = data.draw(junk.filter(lambda v: not VALID[kind](v)))
    names = list(CONSTRUCTORS[cls])
    args = dict(zip(names, REQUIRED.get(cls, ())))
    args[argument] = value
    try:
        cls(**args)
    except (ValueError, TypeError) as err:
        assert f"{cls.__name__}: {argument}" in str(err), str(err)
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"{cls.__name__}({argument}={value!r}) raised {type(err).__name__}: {err}")
    else:
        pytest.fail(f"{cls.__name__}({argument}={value!r}) was accepted")
