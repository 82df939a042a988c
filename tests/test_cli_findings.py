"""Issue 23, as a user meets it: many findings grouped by code (``format_findings``,
``--verbose``), lined-up layer names, and other frameworks' model files named as such."""

import json
import os
import pickle
import re
import zipfile

import numpy as np
import pytest
from conftest import keras_on_torch

import varshift
from varshift import nn
from varshift.cli import main
from varshift.findings import CODES, Finding, format_findings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras' torch backend


def many_batchnorms(n, seed=0):
    """Dense -> BatchNorm -> ReLU ``n`` times, never trained (every BatchNorm's statistics
    are the initial 0/1), the blocks nested 0 to 9 deep: names from '1.1' to
    '4.0.0.0.0.0.0.0.0.0.1'."""
    blocks = []
    for i in range(n):
        block = nn.Sequential(nn.Dense(8, 8), nn.BatchNorm(8), nn.ReLU())
        for _ in range(i % 4 * 3):
            block = nn.Sequential(block)
        blocks.append(block)
    return nn.Sequential(nn.Dense(20, 8), *blocks, nn.Dense(8, 2), seed=seed)


@pytest.fixture
def untrained(tmp_path):
    n = 24
    varshift.save(many_batchnorms(n), tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((300, 20))
            .astype(np.float32))
    return n, str(tmp_path / "m.npz"), str(tmp_path / "x.npy")


def table_rows(text, header):
    """The lines of the table whose header line starts with ``header``, header first."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(header))
    rows = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("    ") or not line.strip():
            break
        rows.append(line)
    return rows


# ------------------------------------------------------------------- 9: volume
def test_diagnose_groups_many_findings_by_code(untrained, capsys):
    n, model, x = untrained
    assert main(["diagnose", model, x, "--json"]) == 3
    findings = json.loads(capsys.readouterr().out)
    assert [f["code"] for f in findings] == ["STATS_AT_INIT"] * n
    explanation, fix = findings[0]["explanation"], findings[0]["fix"]

    assert main(["diagnose", model, x]) == 3
    out = capsys.readouterr().out
    assert out.count(explanation) == 1 and out.count(fix) == 1
    assert out.count("STATS_AT_INIT") == 1
    assert out.startswith(f"{n} findings ({n} errors) of 1 code:\n\n"
                          f"[error] STATS_AT_INIT at {n} layers\n")
    assert "evidence at every layer: num_batches_tracked=0" in out
    rows = table_rows(out, "layer ")
    assert [row.split()[0] for row in rows[1:]] == [f["layer"] for f in findings]
    assert rows[0].split() == ["layer", "train_mean_abs", "train_var", "shift"]
    assert len(out.splitlines()) <= n + 10  # was 5 lines a finding
    assert out.rstrip().endswith("(--verbose: every finding in full)")

    assert main(["diagnose", model, x, "--verbose"]) == 3
    out = capsys.readouterr().out
    assert out.count(explanation) == n and out.count("[error] STATS_AT_INIT at layer ") == n
    assert len(out.splitlines()) == 5 * n - 1 and "--verbose" not in out  # blank between


def test_long_and_short_layer_names_line_up(untrained, capsys):
    n, model, x = untrained
    assert main(["diagnose", model, x]) == 3
    rows = table_rows(capsys.readouterr().out, "layer ")
    names = [row.split()[0] for row in rows[1:]]
    assert min(map(len, names)) == 3 and max(map(len, names)) == 22  # '1.1', '4.0....0.1'
    # every column right-aligned at the same place: equal lengths, equal column ends
    assert len({len(row) for row in rows}) == 1
    ends = {tuple(m.end() for m in re.finditer(r"\S+", row))[1:] for row in rows}
    assert len(ends) == 1


def test_one_finding_reads_as_before(tmp_path):
    f = Finding("EVAL_BATCH_DEPENDENT", "", "error", {"relative_output_change": 0.25},
                "Outputs depend on the batch.", "Use running statistics.")
    assert format_findings([f]) == str(f) == format_findings([f], verbose=True)
    assert format_findings([]) == ""


def finding(layer, rate, frozen=False, severity="warning", dropout="drop"):
    """DROPOUT_BEFORE_BN as diagnose words it: numbers and a dropout's name in the text,
    another wording for a frozen layer."""
    evidence = {"dropout_layers": f"{dropout} (Dropout p={rate})",
                "dropout_shift": 1 / (1 - rate), "layer_shift": 1 / (1 - rate) + 0.01}
    found = f"Dropout-like noise ({dropout}) reaches this BatchNorm with no BatchNorm in between."
    if frozen:
        return Finding("DROPOUT_BEFORE_BN", layer, "info", evidence,
                       f"{found} The layer is frozen: it normalises with fixed statistics "
                       f"and records nothing, so the noise does not shift them.",
                       "Nothing for the statistics.")
    return Finding("DROPOUT_BEFORE_BN", layer, severity, evidence,
                   f"{found} In training the noise inflates the input variance; the layer "
                   f"divides by a variance {1 / (1 - rate):.3g}x too large.",
                   "Move Dropout after the last BatchNorm.")


def test_wordings_with_other_numbers_share_a_block_other_wordings_do_not():
    model_level = Finding("EVAL_BATCH_DEPENDENT", "", "error", {"relative_output_change": 0.3},
                          "Outputs depend on the batch.", "Use running statistics.")
    findings = [finding("block.bn", 0.5, severity="error", dropout="block.drop"),
                finding("head.bn_with_a_much_longer_name", 0.2, dropout="d"),
                finding("frozen1.bn", 0.5, frozen=True), finding("frozen2.bn", 0.5, frozen=True),
                model_level]
    text = format_findings(findings)
    blocks = text.split("\n\n")
    assert blocks[0] == "5 findings (2 errors, 1 warning, 2 info) of 2 codes:"
    active, frozen, model = blocks[1:]
    assert active.startswith("[error] DROPOUT_BEFORE_BN at 2 layers (1 error, 1 warning)\n")
    assert active.count("In training the noise") == 1 and "2x too large" in active
    assert "(worded for layer 'block.bn'; the other layers' numbers and names differ" in active
    rows = table_rows(active, "layer ")
    assert rows[0].split() == ["layer", "severity", "dropout_shift", "layer_shift",
                               "dropout_layers"]  # numbers first, the long text last
    assert rows[1].split()[:4] == ["block.bn", "error", "2", "2.01"]
    assert rows[2].split()[:4] == ["head.bn_with_a_much_longer_name", "warning", "1.25", "1.26"]
    assert len({row.index("dropout_layers") for row in rows[:1]} |
               {row.index(" block.drop") + 1 for row in rows[1:2]}) == 1
    assert frozen.startswith("[info] DROPOUT_BEFORE_BN at 2 more layers\n")
    assert "worded for" not in frozen  # identical texts
    assert "evidence at every layer: dropout_layers=drop (Dropout p=0.5), dropout_shift=2, " \
           "layer_shift=2.01" in frozen  # in the evidence's order
    assert "  layers: frozen1.bn, frozen2.bn" in frozen
    assert model == str(model_level)  # a code found once is shown in full
    assert format_findings(findings, verbose=True) == "\n\n".join(map(str, findings))


def test_most_severe_code_first_whatever_the_order_given():
    info = [Finding("SUSPICIOUS_MOMENTUM", f"bn{i}", "info", {"momentum": 0.999}, "Slow.",
                    "Fine.") for i in range(3)]
    error = [Finding("STATS_AT_INIT", f"bn{i}", "error", {}, "At init.", "Train.")
             for i in range(2)]
    text = format_findings(info + error)
    assert text.index("STATS_AT_INIT") < text.index("SUSPICIOUS_MOMENTUM")
    assert "  layers: bn0, bn1\n" in text and text.endswith("  layers: bn0, bn1, bn2")
    assert set(CODES) >= {"STATS_AT_INIT", "SUSPICIOUS_MOMENTUM"}


def test_torch_model_with_many_batchnorms_at_init_gives_one_group():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(3, 4, 3, padding=1)]
    for _ in range(15):
        layers += [torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1)]
    model = torch.nn.Sequential(*layers).eval()
    x = np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)
    findings = varshift.diagnose(model, x)
    assert [f.code for f in findings] == ["STATS_AT_INIT"] * 15
    text = format_findings(findings)
    assert text.count(findings[0].explanation) == 1
    assert len(text.splitlines()) == 1 + 1 + 1 + 2 + 1 + 1 + 15  # count, header, texts, same, table
    assert format_findings(findings, verbose=True).count(findings[0].explanation) == 15


@pytest.fixture
def keras():
    return keras_on_torch()


def test_inspect_groups_findings_and_keeps_the_tables(keras, tmp_path, capsys):
    pytest.importorskip("h5py")
    layers = [keras.Input((6,))]
    for i in range(10):
        name = f"bn{i}" if i % 3 else f"batch_normalization_of_block_{'x' * 40}{i}"
        layers += [keras.layers.Dense(4 + i), keras.layers.BatchNormalization(name=name)]
    keras.Sequential(layers).save(tmp_path / "m.keras")
    path = str(tmp_path / "m.keras")
    result = varshift.inspect(path)
    assert [f.code for f in result.findings] == ["STATS_AT_INIT"] * 10

    assert main(["inspect", path]) == 3
    out = capsys.readouterr().out
    assert out.startswith("Keras model ") and "BatchNormalization (moving statistics" in out
    explanation = result.findings[0].explanation
    assert out.count(explanation) == 1 and out.count("Findings:") == 1
    assert "Findings:\n10 findings (10 errors) of 1 code:\n\n[error] STATS_AT_INIT at 10 " \
           "layers\n" in out
    rows = table_rows(out.split("Findings:")[1], "layer ")
    assert len(rows) == 11 and len({len(row) for row in rows}) == 1  # lined up
    assert [row.split()[0] for row in rows[1:]] == [f.layer for f in result.findings]

    assert main(["inspect", path, "--verbose"]) == 3
    out = capsys.readouterr().out
    assert out.count(explanation) == 10 and out.rstrip().endswith(str(result.findings[-1]))
    assert out == result.summary() + "\n"


# ----------------------------------------------------- 11: other frameworks' files
class Trap:
    """Unpickling it makes a folder: proof that a file was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def torch_zip(path, payload):
    """torch.save's zip layout ('<name>/data.pkl', ...) holding ``payload`` as data.pkl."""
    stem = path.stem
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{stem}/data.pkl", payload)
        zf.writestr(f"{stem}/byteorder", "little")
        zf.writestr(f"{stem}/version", "3\n")
    return path


@pytest.fixture
def data(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((8, 6), np.float32))
    return str(tmp_path / "x.npy")


COMMANDS = [["measure"], ["diagnose"], ["recalibrate", "-o", "{tmp}/out.npz"]]


def run_on(command, model, data, tmp_path, capsys):
    argv = [command[0], str(model), data] + [a.format(tmp=tmp_path) for a in command[1:]]
    code = main(argv)
    return code, capsys.readouterr()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("suffix, kind", [(".keras", "a Keras model file (.keras archive)"),
                                          (".h5", "an HDF5 file, the format of Keras' legacy "
                                                  ".h5 models")])
def test_a_keras_file_points_to_inspect_and_the_python_api(keras, tmp_path, data, capsys,
                                                           command, suffix, kind):
    model = tmp_path / f"model{suffix}"
    keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
                      keras.layers.BatchNormalization()]).save(model)
    code, out = run_on(command, model, data, tmp_path, capsys)
    name = command[0]
    assert code == 2 and out.out == ""
    assert out.err == (
        f"varshift: error: MODEL: {str(model)!r} is {kind}, not a varshift model. "
        + ("If it holds a whole Keras model, " if suffix == ".h5" else "")
        + f"`varshift inspect {model}` reads it without data; to {name} it on data, load it "
        f"in Python (keras.saving.load_model) and pass the model to varshift.{name}(model, "
        f"data).\n")
    assert not (tmp_path / "out.npz").exists()
    if suffix == ".keras":  # and inspect does read it
        assert main(["inspect", str(model)]) == 3
        assert "STATS_AT_INIT" in capsys.readouterr().out


def torch_files(torch, tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4))
    torch.save(module.state_dict(), tmp_path / "state.pt")
    torch.save(module, tmp_path / "module.pth")
    torch.save(module.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    return {"state_dict": tmp_path / "state.pt", "module": tmp_path / "module.pth",
            "legacy": tmp_path / "legacy.pt"}


@pytest.mark.parametrize("command", COMMANDS + [["inspect"]], ids=lambda c: c[0])
@pytest.mark.parametrize("which", ["state_dict", "module", "legacy"])
def test_a_torch_checkpoint_points_to_the_python_api(tmp_path, data, capsys, command, which):
    torch = pytest.importorskip("torch")
    model = torch_files(torch, tmp_path)[which]
    if command == ["inspect"]:
        code, out = main(["inspect", str(model)]), capsys.readouterr()
        python = "varshift.measure or varshift.diagnose(model, data)"
    else:
        code, out = run_on(command, model, data, tmp_path, capsys)
        python = f"varshift.{command[0]}(model, data)"
    legacy = ", legacy format" if which == "legacy" else ""
    assert code == 2 and out.out == ""
    assert out.err.startswith(f"varshift: error: MODEL: {str(model)!r} is a PyTorch checkpoint "
                              f"(torch.save{legacy}), not a varshift model, and varshift "
                              f"never unpickles files")
    assert "module.load_state_dict(torch.load(path))" in out.err
    assert out.err.endswith(f"pass the module to {python}.\n")
    assert ("`varshift inspect` reads Keras model files only" in out.err) == (
        command == ["inspect"])


@pytest.mark.parametrize("command", COMMANDS + [["inspect"]], ids=lambda c: c[0])
@pytest.mark.parametrize("layout", ["pickle", "torch zip"])
def test_a_pickle_is_named_and_never_unpickled(tmp_path, data, capsys, command, layout):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Trap(marker), protocol=4)
    if layout == "pickle":
        model = tmp_path / "model.pkl"
        model.write_bytes(payload)
        kind = "a Python pickle"
    else:
        model = torch_zip(tmp_path / "model.pt", payload)
        kind = "a PyTorch checkpoint (torch.save)"
    if command == ["inspect"]:
        code, err = main(["inspect", str(model)]), capsys.readouterr().err
    else:
        code, out = run_on(command, model, data, tmp_path, capsys)
        err = out.err
    assert code == 2 and f"MODEL: {str(model)!r} is {kind}, not a varshift model" in err
    assert not marker.exists()
    pickle.loads(payload)  # the trap works
    assert marker.is_dir()


def test_pickle_messages(tmp_path, data, capsys):
    marker = tmp_path / "unpickled"
    model = tmp_path / "model.pkl"
    model.write_bytes(pickle.dumps(Trap(marker), protocol=4))
    assert main(["diagnose", str(model), data]) == 2
    assert capsys.readouterr().err == (
        f"varshift: error: MODEL: {str(model)!r} is a Python pickle, not a varshift model, "
        f"and varshift never unpickles files. If it holds a model, load it in Python and "
        f"pass the model to varshift.diagnose(model, data).\n")
    assert not marker.exists()


def test_inspect_on_a_varshift_model_points_to_measure_and_diagnose(untrained, capsys):
    _, model, _ = untrained
    assert main(["inspect", model]) == 2
    assert capsys.readouterr().err == (
        f"varshift: error: MODEL: {model!r} is a varshift model (varshift.save), not a Keras "
        f"file; `varshift diagnose {model} DATA` and `varshift measure {model} DATA` examine "
        f"it on data.\n")


def test_a_damaged_file_keeps_the_reading_error(tmp_path, data, capsys):
    model = tmp_path / "model.keras"
    model.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["measure", str(model), data]) == 2
    err = capsys.readouterr().err
    assert err.startswith("varshift: error: load: cannot read a varshift model: ")
    assert str(model) in err


def test_a_safetensors_file_is_named(tmp_path, data, capsys):
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    model = tmp_path / "model.safetensors"
    model.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    assert main(["measure", str(model), data]) == 2
    assert capsys.readouterr().err == (
        f"varshift: error: MODEL: {str(model)!r} is a safetensors file (weights only), not a "
        f"varshift model. Build the model in Python, load the weights into it and pass it to "
        f"varshift.measure(model, data).\n")
