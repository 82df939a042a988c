"""The command line, run as a user would."""

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import varshift
import varshift.cli
from varshift.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env=None, cwd=None):
    """``python -m varshift ARGS`` with this checkout's package, from any folder."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "varshift", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path, **(env or {})}, timeout=600,
                          cwd=cwd)


def test_help_and_version():
    out = run("--help")
    assert out.returncode == 0 and "examples:" in out.stdout and "demo" in out.stdout
    assert run("--version").stdout.startswith("varshift ")
    assert run("frobnicate").returncode == 2


def test_demo_trains_on_a_subset(mnist_dir):
    out = run("demo", "--train-size", "1000", "--measure", "500", "--data-dir", str(mnist_dir))
    assert out.returncode == 0, out.stderr
    # stderr is a pipe, not a terminal: what it does, but no progress lines
    assert "Training the reference convnet" in out.stderr and "batches" not in out.stderr
    assert "test accuracy" in out.stdout and "epoch" in out.stdout
    assert "BatchNorm inputs" in out.stdout and "Diagnosis:" in out.stdout


def test_demo_without_data_explains_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ../shared/data/mnist from here
    monkeypatch.setenv("VARSHIFT_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["demo", "--data-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "MNIST files not found" in err and str(tmp_path / "none") in err


def _model_and_data(tmp_path):
    import numpy as np
    from helpers import blobs, dropout_before_bn, trained

    import varshift

    x, y = blobs(600)
    varshift.save(trained(dropout_before_bn(), (x, y), epochs=1), tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    return tmp_path / "m.npz", tmp_path / "x.npy", tmp_path / "d.npz"


def test_measure_diagnose_recalibrate_commands(tmp_path):
    import json

    model, npy, npz = _model_and_data(tmp_path)
    out = run("measure", str(model), str(npy), "--plot", str(tmp_path / "s.png"))
    assert out.returncode == 0, out.stderr
    assert "BatchNorm inputs" in out.stdout and (tmp_path / "s.png").stat().st_size > 1000
    out = run("measure", str(model), str(npz), "--json", "--batch-size", "100")
    assert json.loads(out.stdout)["bn"][1]["shift"] > 1.5
    out = run("diagnose", str(model), str(npy))
    assert out.returncode == 3 and "DROPOUT_BEFORE_BN" in out.stdout
    findings = json.loads(run("diagnose", str(model), str(npy), "--json").stdout)
    assert "DROPOUT_BEFORE_BN" in {f["code"] for f in findings}
    out = run("recalibrate", str(model), str(npy), "-o", str(tmp_path / "fixed.npz"))
    assert out.returncode == 0, out.stderr
    assert "shift before" in out.stdout
    after = json.loads(run("measure", str(tmp_path / "fixed.npz"), str(npy), "--json").stdout)
    assert abs(after["bn"][1]["shift"] - 1) < 1e-4


def test_command_errors_have_exit_code_2(tmp_path):
    model, npy, _ = _model_and_data(tmp_path)
    out = run("measure", str(tmp_path / "missing.npz"), str(npy))
    assert out.returncode == 2
    assert out.stderr == f"varshift: error: MODEL: no such file {str(tmp_path / 'missing.npz')!r}\n"
    out = run("measure", str(model), "cifar")
    assert out.returncode == 2 and "DATA must be 'mnist'" in out.stderr
    out = run("measure", str(npy), str(npy))
    assert out.returncode == 2 and "cannot read" in out.stderr
    out = run("measure", str(model), "mnist", "--data-dir", str(tmp_path), env={"VARSHIFT_DATA": str(tmp_path)},
              cwd=tmp_path)
    assert out.returncode == 2 and "MNIST files not found" in out.stderr
    out = run("recalibrate", str(model), str(npy))
    assert out.returncode == 2 and "-o/--output" in out.stderr


def test_measure_on_mnist_subset(tmp_path, mnist_dir):
    import varshift
    from varshift.models import reference_convnet

    varshift.save(reference_convnet(seed=0), tmp_path / "ref.npz")
    out = run("measure", str(tmp_path / "ref.npz"), "mnist", "--data-dir", str(mnist_dir),
              "--split", "test", "--limit", "500", "-q")
    assert out.returncode == 0, out.stderr
    assert "(32, 14, 14)" in out.stdout


def test_measure_on_mnist1d(tmp_path):
    import pytest

    pytest.importorskip("mnist1d")
    import varshift
    from varshift import nn

    model = nn.Sequential(nn.Conv1D(1, 4, 5, padding="same"), nn.BatchNorm(4), nn.ReLU(),
                          nn.GlobalAvgPool(), nn.Dense(4, 10), seed=0)
    varshift.save(model, tmp_path / "m1d.npz")
    out = run("measure", str(tmp_path / "m1d.npz"), "mnist1d", "--limit", "300", "-q", "--json")
    assert out.returncode == 0, out.stderr
    assert '"num_samples": 300' in out.stdout


# --------------------------------------------------------------- issue 21: the user's files
@pytest.fixture
def files(tmp_path):
    model, npy, _ = _model_and_data(tmp_path)
    return model, npy


def unwritable_folder(tmp_path):
    """A folder this process cannot write to (for root, which may write anywhere a
    mode allows, one the kernel refuses)."""
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    if os.access(folder, os.W_OK):
        folder = Path("/proc/self")
        if not folder.is_dir() or os.access(folder, os.W_OK):
            pytest.skip("no folder here is unwritable for this user")
    return folder


def made_folder(path):
    path.mkdir()
    return path


@pytest.mark.parametrize("target, message", [
    (lambda tmp, name: tmp / "missing" / name, "folder {parent!r} does not exist"),
    (lambda tmp, name: tmp / "x.npy" / name, "{parent!r} is not a folder"),
    (lambda tmp, name: made_folder(tmp / name), "it is a folder; give a file name"),
    (lambda tmp, name: tmp / ("n" * 252 + name[-4:]), "the file name is 256 bytes long, the "
                                                      "folder allows"),
    (lambda tmp, name: unwritable_folder(tmp) / name, "folder {parent!r} is not writable"),
])
@pytest.mark.parametrize("command, option, name", [
    (["recalibrate", "{model}", "{data}"], "-o", "out.npz"),
    (["measure", "{model}", "{data}"], "--plot", "out.png"),
    (["demo"], "-o", "out.npz"),
])
def test_output_paths_are_checked_before_anything_is_read(files, tmp_path, capsys, target,
                                                          message, command, option, name):
    _, npy = files
    path = target(tmp_path, name)
    missing = tmp_path / "no-model.npz"  # not read: the output is checked first
    argv = [a.format(model=missing, data=npy) for a in command] + [option, str(path)]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    shown = "-o/--output" if option == "-o" else option
    assert exit_.value.code == 2, err
    assert f"error: {shown}: cannot write {str(path)!r}: " in err
    assert message.format(parent=str(path.parent)) in err


def test_a_file_name_of_the_longest_allowed_length_is_written(files, tmp_path, capsys):
    model, npy = files
    name = "n" * 251 + ".npz"  # 255 bytes, the usual limit; the temporary file is shortened
    assert main(["recalibrate", str(model), str(npy), "-o", str(tmp_path / name), "-q"]) == 0
    assert (tmp_path / name).stat().st_size > 0
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", "x.npy", "d.npz", name])


SLOW_SAVE = """
import sys, time
from pathlib import Path

import numpy as np


def slow(f, **arrays):  # 4 MB written, then the signal comes
    f.write(b"PK" + bytes(4 << 20))
    f.flush()
    Path(sys.argv[1]).touch()
    time.sleep(120)


np.savez = slow
import varshift
from varshift.cli import main

sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_writing_removes_the_unfinished_file(files, tmp_path, signum):
    model, npy = files
    out, marker = tmp_path / "out" / "fixed.npz", tmp_path / "writing"
    out.parent.mkdir()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(marker), "recalibrate",
                             str(model), str(npy), "-o", str(out), "-q"],
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": path})
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "no write"
        assert [p.name for p in out.parent.iterdir()][0].endswith(".tmp")  # mid-write
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    assert f"varshift: stopped by {name}; files not completely written were removed" in err
    assert list(out.parent.iterdir()) == []


def test_the_signal_handlers_are_the_callers_again_afterwards(files, tmp_path, capsys):
    model, npy = files
    before = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)]
    assert main(["measure", str(model), str(npy), "-q"]) == 0
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)] == before


@pytest.mark.parametrize("argv, message", [
    (lambda m, x, tmp: ["measure", str(tmp / "x.npz"), x], "MODEL: no such file {tmp}/x.npz"),
    (lambda m, x, tmp: ["measure", str(tmp), x], "MODEL: {tmp} is a folder; give a file"),
    (lambda m, x, tmp: ["diagnose", m, str(tmp / "nope.npy")], "DATA: no such file {tmp}/nope.npy"),
    (lambda m, x, tmp: ["recalibrate", m, str(tmp / "dir.npy"), "-o", m],
     "DATA: {tmp}/dir.npy is a folder; give a file"),
    (lambda m, x, tmp: ["measure", m, str(tmp / "zero.npy")],
     "DATA: {tmp}/zero.npy is not a regular file"),
    (lambda m, x, tmp: ["measure", str(tmp / "zero.npz"), x],
     "MODEL: {tmp}/zero.npz is not a regular file"),
    (lambda m, x, tmp: ["inspect", str(tmp / "m.keras")], "MODEL: no such file {tmp}/m.keras"),
])
def test_unreadable_input_files_name_the_argument(files, tmp_path, capsys, argv, message):
    model, npy = files
    (tmp_path / "dir.npy").mkdir()
    for name in ("zero.npy", "zero.npz"):
        (tmp_path / name).symlink_to("/dev/zero")  # would be read until memory runs out
    assert main(argv(str(model), str(npy), tmp_path)) == 2
    err = capsys.readouterr().err
    assert err == "varshift: error: " + re.sub(r"(\{tmp\}\S*)", lambda m: repr(
        m.group(1).format(tmp=tmp_path)), message) + "\n"


def test_an_unreadable_model_file_names_the_argument(files, capsys):
    model, npy = files
    model.chmod(0)
    if os.access(model, os.R_OK):
        pytest.skip("this user reads files whatever their mode")
    assert main(["measure", str(model), str(npy)]) == 2
    assert capsys.readouterr().err == f"varshift: error: MODEL: permission denied: cannot read {str(model)!r}\n"


def _npy_declaring(path, shape):
    """An .npy file whose header declares ``shape`` but holds 16 bytes of data."""
    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
                     + bytes(16))
    return path


@pytest.mark.parametrize("make, message", [
    (lambda tmp: _npy_declaring(tmp / "huge.npy", (2**20, 2**20)),
     "declares an array of shape (1048576, 1048576)"),
    (lambda tmp: _npy_declaring(tmp / "short.npy", (100, 20)), "truncated or damaged"),
    (lambda tmp: (tmp / "bad.npz").write_bytes(b"PK\x03\x04 not a zip") and tmp / "bad.npz",
     "bad.npz"),
])
def test_damaged_or_hostile_data_files_give_a_clear_error(files, tmp_path, capsys, make,
                                                         message):
    model, _ = files
    data = make(tmp_path)
    assert main(["measure", str(model), str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"varshift: error: cannot read DATA {str(data)!r}: ") and message in err


def test_only_the_inputs_of_a_data_archive_are_read(files, tmp_path, capsys, monkeypatch):
    import numpy as np

    model, npy = files
    x = np.load(npy)
    np.savez(tmp_path / "d.npz", labels=np.zeros(len(x)), x_train=x)
    from varshift import _safe_read

    read, original = [], _safe_read._read_npy

    def spy(f, available, where):
        read.append(where)
        return original(f, available, where)

    monkeypatch.setattr(_safe_read, "_read_npy", spy)
    assert main(["measure", str(model), str(tmp_path / "d.npz"), "-q"]) == 0
    data = [where for where in read if "d.npz" in where]  # (the model file is read too)
    assert len(data) == 1 and "x_train" in data[0]
    np.savez(tmp_path / "none.npz", labels=np.zeros(3))
    assert main(["measure", str(model), str(tmp_path / "none.npz")]) == 2
    assert "expected an array named 'x', 'x_train' or 'inputs'" in capsys.readouterr().err


@pytest.mark.parametrize("make", [
    lambda tmp: os.mkfifo(tmp / "out.npz") or tmp / "out.npz",
    lambda tmp: (tmp / "out.npz").symlink_to("/dev/null") or tmp / "out.npz",
    lambda tmp: Path("/dev/null"),
], ids=["fifo", "link to a device", "device"])
def test_an_output_that_is_not_a_regular_file_is_never_replaced(files, tmp_path, capsys, make):
    model, npy = files
    out = make(tmp_path)
    kind = os.stat(out).st_mode
    with pytest.raises(SystemExit) as exit_:
        main(["recalibrate", str(model), str(npy), "-q", "-o", str(out)])
    assert exit_.value.code == 2
    assert f"error: -o/--output: cannot write {str(out)!r}: it exists and is not a regular " \
        "file" in capsys.readouterr().err
    assert os.stat(out).st_mode == kind and not os.path.isfile(out)
    with pytest.raises(FileExistsError, match="save: cannot write"):
        varshift.save(varshift.load(model), out)
    assert os.stat(out).st_mode == kind


def test_an_output_link_to_a_regular_file_writes_that_file(files, tmp_path):
    model, npy = files
    (tmp_path / "real.npz").write_bytes(b"old")
    (tmp_path / "link.npz").symlink_to(tmp_path / "real.npz")
    assert main(["recalibrate", str(model), str(npy), "-q", "-o", str(tmp_path / "link.npz")]) == 0
    assert (tmp_path / "link.npz").is_symlink() and varshift.load(tmp_path / "real.npz")


def test_an_empty_output_name_is_refused_before_computing(files, tmp_path, capsys):
    _, npy = files
    with pytest.raises(SystemExit) as exit_:
        main(["recalibrate", str(tmp_path / "no-model.npz"), str(npy), "-q", "-o", ""])
    assert exit_.value.code == 2  # before the (missing) model is read
    assert "error: -o/--output: cannot write '': no file name given" in capsys.readouterr().err


# --------------------------------------------------------------- issue 27: a new user's first hour
def _subcommands():
    parser = varshift.cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def _example_commands(epilog):
    """The command lines of a help's examples, without their closing shell redirection
    (``> report.json``, ``2> log.txt``)."""
    commands = []
    for line in epilog.splitlines():
        if line.startswith("  varshift "):
            words = shlex.split(line)[1:]
            redirect = next((i for i, w in enumerate(words) if re.match(r"\d?>", w)), None)
            commands.append(words[:redirect])
    return commands


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_subcommand_help_has_a_description_and_examples_that_parse(name):
    sub = _subcommands()[name]
    help_text = sub.format_help()
    assert sub.description and sub.description.split()[0] in help_text
    assert "examples:" in help_text
    commands = _example_commands(sub.epilog)
    assert len(commands) >= 2, help_text
    for command in commands:
        args = varshift.cli.build_parser().parse_args(command)  # SystemExit(2) if refused
        assert args.command == name


def test_diagnose_draws_the_measurement_with_plot(files, tmp_path):
    model, npy = files
    out = run("diagnose", str(model), str(npy), "--plot", str(tmp_path / "d.png"))
    assert out.returncode == 3, out.stderr  # DROPOUT_BEFORE_BN is a warning
    assert "DROPOUT_BEFORE_BN" in out.stdout
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = run("diagnose", str(model), str(npy), "--json", "--plot-kind", "channels",
              "--plot", str(tmp_path / "c.svg"))
    assert out.returncode == 3, out.stderr
    assert "DROPOUT_BEFORE_BN" in {f["code"] for f in json.loads(out.stdout)}
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()[:500]


def test_diagnose_plot_kind_needs_plot(files, capsys):
    model, npy = files
    with pytest.raises(SystemExit) as stop:
        main(["diagnose", str(model), str(npy), "--plot-kind", "layers"])
    assert stop.value.code == 2 and "--plot-kind needs --plot FILE" in capsys.readouterr().err


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A folder to run from where only --data-dir can find MNIST: no ../shared, no
    VARSHIFT_DATA, an empty user cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VARSHIFT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def _mnist_copy(mnist_dir, folder):
    """Links to the four MNIST files in ``folder`` (created)."""
    from varshift.datasets import MNIST_FILES

    folder.mkdir(parents=True)
    for stem in MNIST_FILES:
        (folder / f"{stem}.gz").symlink_to(mnist_dir / f"{stem}.gz")
    return folder


@pytest.mark.parametrize("given", ["mnist", "parent"])
def test_data_dir_is_the_mnist_folder_or_the_folder_that_holds_it(given, elsewhere, mnist_dir,
                                                                   capsys):
    from varshift.models import reference_convnet

    data = _mnist_copy(mnist_dir, elsewhere / "data" / "mnist")
    varshift.save(reference_convnet(seed=0), elsewhere / "ref.npz")
    folder = data if given == "mnist" else data.parent
    assert main(["measure", str(elsewhere / "ref.npz"), "mnist", "--data-dir", str(folder),
                 "--limit", "300", "--json"]) == 0, capsys.readouterr().err
    assert '"num_samples": 300' in capsys.readouterr().out


def test_a_wrong_data_dir_says_which_folder_was_meant(elsewhere, mnist_dir, capsys):
    from varshift.models import reference_convnet

    raw = _mnist_copy(mnist_dir, elsewhere / "data" / "MNIST" / "raw")  # torchvision's layout
    varshift.save(reference_convnet(seed=0), elsewhere / "ref.npz")
    for given in (elsewhere / "data", elsewhere / "MNIST-typo"):
        assert main(["measure", str(elsewhere / "ref.npz"), "mnist", "--data-dir",
                     str(given)]) == 2
        err = capsys.readouterr().err
        assert f"MNIST files not found: --data-dir {str(given)!r}" in err
        assert err.rstrip().endswith(f"Did you mean --data-dir {raw}?"), err
    (elsewhere / "empty").mkdir()
    assert main(["measure", str(elsewhere / "ref.npz"), "mnist", "--data-dir",
                 str(elsewhere / "empty")]) == 2
    err = capsys.readouterr().err
    assert "holds neither the MNIST files nor an 'mnist' folder" in err
    assert "Did you mean" not in err  # nothing below it: no hint


def test_progress_in_a_log_only_when_asked_for(files):
    model, npy = files
    out = run("measure", str(model), str(npy), "--progress")  # stderr is a pipe
    assert out.returncode == 0, out.stderr
    assert re.search(r"done, \d+ batches", out.stderr), out.stderr


def test_progress_on_a_terminal_by_default(files, capsys, monkeypatch):
    model, npy = files
    monkeypatch.setattr(varshift.cli.sys.stderr, "isatty", lambda: True)
    assert varshift.cli._progress(main_args(["measure", str(model), str(npy)]))
    assert not varshift.cli._progress(main_args(["measure", str(model), str(npy), "-q"]))
    monkeypatch.setattr(varshift.cli.sys.stderr, "isatty", lambda: False)
    for command in (["measure", str(model), str(npy)], ["demo"], ["reproduce"],
                    ["case", "stale-running-stats"]):
        assert not varshift.cli._progress(main_args(command))
        assert varshift.cli._progress(main_args([*command, "--progress"]))


def main_args(argv):
    return varshift.cli.build_parser().parse_args(argv)


def test_reproduce_names_what_it_will_skip_before_it_starts(tmp_path):
    env = {"VARSHIFT_DATA": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    out = run("reproduce", "--only", "width", "--out", str(tmp_path / "out"), env=env,
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("will skip 1: width. MNIST files not found in "), out.stderr
    assert "skipped width" in out.stdout  # and again in the summary at the end
    out = run("reproduce", "--only", "width", "--out", str(tmp_path / "out"), "--progress",
              env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines[0].startswith("will skip 1: width.") and lines[1] == "[1/1] width ..."


def _square(x):
    return {"square": x * x}


def test_runs_answered_from_the_cache_collapse_into_one_line(tmp_path, capsys):
    from varshift import tasks

    todo = [tasks.Task(f"square/{x}", "test_cli:_square", {"x": x}) for x in range(3)]
    with tasks.cache_summary() as tally:
        first, _ = tasks.run(todo, tmp_path, progress=True)
        for _ in range(80):
            again, _ = tasks.run(todo, tmp_path, progress=True)
    assert again == first and tally == {"runs": 80, "tasks": 240}
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "tasks: 3 in all, 0 cached, 3 to compute" and len(err) == 5
    assert err[-1] == "tasks: 80 look-up(s) answered from the cache alone (240 task results read)"
    tasks.run(todo, tmp_path, progress=True)  # outside the block: its own line again
    assert capsys.readouterr().err == "tasks: 3 in all, 3 cached, 0 to compute\n"
