"""The width protocol (``protocols/width.json``): declared claims that match the networks'
layers and the paper's ResNeXt rows, tasks keyed like the committed runs, locked by git,
refused when changed, judged per Holm family only when every declared run exists."""

import dataclasses
import json
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from varshift import tasks as _tasks
from varshift.reproduce import experiments, power, protocol, width
from varshift.reproduce.plan import network_task
from varshift.theory import weight_cos2
from varshift.verdicts import VERDICTS


def test_the_committed_width_protocol_declares_its_claims():
    proto = width.load()
    ids = [c.id for c in proto.claims]
    assert ids == ["W01", "W02", "W03", "W04", "W05", "F01", "F02", "R01",
                   "X01", "X02", "X03", "X04", "X05", "X06", "X07"]
    assert proto.families == (("W01", "W02", "W03", "W04", "W05"), ("F01", "F02"), ("R01",))
    assert proto.settings == protocol.load().settings  # the confirmatory run's regime
    # fresh seeds: not the pilot's (0-29) nor the confirmatory run's (100-129)
    assert proto.first_seed == 200 and all(c.seeds == 10 for c in proto.confirmatory)
    assert proto.pilot_arch == "ResNeXt" and proto.pilot_seeds == tuple(range(10))
    assert set(proto.pilot_arms) == {power.BASE, power.A5, power.B5}


def test_resnext_claims_are_the_other_architectures_claims_with_the_papers_resnext_rows():
    proto = width.load()
    mine = [c for c in proto.claims if c.id.startswith("X")]
    expected = [c for c in power.accuracy_claims(("ResNeXt",))
                if {arm for _, arm in c.arms} <= set(proto.pilot_arms)]
    assert [c.accuracy_claim() for c in mine] == expected
    for declared, claim in zip(mine, expected):
        effect, source = power.paper_effect(claim)
        assert declared.paper_source == source
        if effect is None:  # Fig. 5 has no ResNeXt panel
            assert declared.status == "not testable at this regime"
        else:
            assert declared.paper_effect == pytest.approx(effect)
            assert np.sign(effect) == claim.direction and declared.status == "awaiting its pilot"
    # Table 3 / Table 4, C10 ResNeXt
    assert power.PAPER[("ResNeXt", power.A5, "test")][0] == 4.43
    assert power.PAPER[("ResNeXt", power.BASE, "test")][0] == 3.77


def _rows_after_noise(model):
    """Index, among the BatchNorm layers in walk order, of the first BatchNorm after each
    noise layer."""
    order = [layer for _, layer in model.walk() if layer.kind in ("dropout", "batchnorm")]
    bns = [layer for layer in order if layer.kind == "batchnorm"]
    return [bns.index(next(b for b in order[i:] if b.kind == "batchnorm"))
            for i, layer in enumerate(order) if layer.kind == "dropout"]


@pytest.mark.parametrize("widen", [1, 8])
def test_declared_rows_are_the_positions_the_claims_name(widen):
    proto = width.load()
    by_id = {c.id: c for c in proto.claims}
    b = experiments.network("PreResNet", "b", 0.5, widen=widen)
    a = experiments.network("PreResNet", "a", 0.5, widen=widen)
    assert _rows_after_noise(b) == [2, 4, 6] == list(by_id["W04"].slope.layers)
    assert all(t.layers == (row,) for i, row in zip((1, 2, 3), (2, 4, 6))
               for t in by_id[f"W0{i}"].terms)
    assert _rows_after_noise(a) == [1, 3, 5] and by_id["W05"].terms[0].layers == (1, 3, 5)
    # the direct predecessor of rows 1, 3, 5 under (a) is the Dropout itself
    walk = [layer for _, layer in a.walk() if layer.kind in ("dropout", "batchnorm", "conv")]
    assert [walk[i - 1].kind for i, layer in enumerate(walk) if layer.kind == "batchnorm"
            and i and walk[i - 1].kind == "dropout"] == ["dropout"] * 3
    rows = weight_cos2(experiments.network("PreResNet", "a", 0.0, widen=widen))
    assert [r.d for r in rows] == [5] + [48 * widen] * 6 + [16 * widen]
    assert list(by_id["F01"].slope.layers) == [1, 2, 3, 4, 5, 6]
    resnext = experiments.network("ResNeXt", "a", 0.5)
    n_bn = sum(layer.kind == "batchnorm" for _, layer in resnext.walk())
    assert n_bn == 10 and by_id["R01"].terms[0].layers == tuple(range(10))


def test_width_tasks_keep_the_committed_keys_at_widen_1_and_add_widen_otherwise():
    proto = width.load()
    settings = proto.settings
    for arch, arm in (("PreResNet", power.B5), ("ResNeXt", power.A5)):
        assert width.run_task(settings, arch, 1, arm, 3).key == network_task(settings, arch, *arm[:2], 3,
                                                                              arm[2]).key
    wide = width.run_task(settings, "PreResNet", 4, power.B5, 200)
    plain = network_task(settings, "PreResNet", "b", 0.5, 200)
    assert wide.params == {**plain.params, "widen": 4} and wide.key.startswith("network/PreResNet-w4/")
    assert "widen" not in plain.params
    keys = [t.key for t in proto.tasks() + proto.pilot_tasks()]
    assert len(keys) == len(set(keys)) == 120 + 30
    assert not set(keys) & {t.key for t in protocol.load().tasks()}  # no run shared with v2


def test_bad_width_protocols_are_refused_with_the_field_named(tmp_path):
    doc = json.loads(width.PATH.read_text())
    path = tmp_path / "w.json"
    cases = [
        (dict(doc["claims"][0], terms=[dict(doc["claims"][0]["terms"][0], layers=None)]), "'layers'"),
        (dict(doc["claims"][0], terms=[dict(doc["claims"][0]["terms"][0], widen=0)]), "widen must be"),
        (dict(doc["claims"][3], slope=dict(doc["claims"][3]["slope"], widens=[1, 2])), "at least 3"),
        (dict(doc["claims"][3], slope=dict(doc["claims"][3]["slope"], minus="initialisation")),
         "minus must be"),
        (dict(doc["claims"][0], statistic="slope"), "statistic 'difference'"),
        (dict(doc["claims"][0], seeds=None), "3 to 30 seeds"),
    ]
    for claim, match in cases:
        path.write_text(json.dumps(dict(doc, claims=[claim, *doc["claims"][1:]])))
        with pytest.raises(ValueError, match=match):
            width.load(path)
    path.write_text(json.dumps(dict(doc, holm_families=[["W01"]])))
    with pytest.raises(ValueError, match="holm_families"):
        width.load(path)


# ------------------------------------------------------------------ a tiny run, end to end
TINY = SimpleNamespace(epochs=1, num_samples=250, train_sequences=100)
"""Settings of the smoke test: one epoch on 100 random sequences (plan.network_task reads
these three fields)."""


def _tiny_data(num_samples):
    rng = np.random.default_rng(num_samples)
    x = rng.standard_normal((num_samples, 1, 40)).astype(np.float32)
    y = rng.integers(0, 10, num_samples)
    return x[:200], y[:200], x[200:], y[200:]


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})


def _small(doc):
    """``doc`` with 3 seeds per claim and per pilot, widths 1, 2, 3 instead of 1-8."""
    text = json.dumps(doc).replace('"widen": 8', '"widen": 2').replace("[1, 2, 4, 8]", "[1, 2, 3]")
    small = json.loads(text)
    small["pilot"]["seeds"] = [0, 3]
    for c in small["claims"]:
        if c["status"] == "confirmatory":
            c["seeds"] = 3
    return small


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    monkeypatch.setattr(experiments, "mnist1d", _tiny_data)
    path = tmp_path / "repo" / "width.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_small(json.loads(width.PATH.read_text())), indent=1))
    _git(path.parent, "init", "-q")
    _git(path.parent, "add", path.name)
    _git(path.parent, "commit", "-q", "-m", "declare")
    return path


LOAD = width.load  # the test replaces width.load for the command line


def _load_tiny(path):
    return dataclasses.replace(LOAD(path), settings=TINY)


# random data: some inputs of the theory points are constant, so their correlation is NaN
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_a_tiny_width_protocol_runs_locks_and_reports(tiny, tmp_path, monkeypatch, capsys):
    proto = _load_tiny(tiny)
    cache = tmp_path / "cache"
    record = protocol.lock(proto, cache)
    assert record["sha256"] == protocol.digest(tiny)
    runs = proto.pilot_tasks() + proto.tasks()
    assert len(runs) == 9 + 3 * 10  # pilot; PreResNet b5 x3, a5 x2, base x3 widths; ResNeXt a5, b5
    first = [t for t in runs if t.params["seed"] != 202]  # all but the last confirmatory seed
    _tasks.run(first, cache)
    assert {r["family"] for r in width.judge(proto, cache)} == set()  # no verdict before every seed
    assert width.progress(proto, cache)[0] == (10, 15) and width.pilot_table(proto, cache) is not None
    _tasks.run(runs, cache)
    rows = width.judge(proto, cache)
    assert [r["id"] for r in rows] == ["W01", "W02", "W03", "W04", "W05", "F01", "F02", "R01"]
    assert all(r["n"] == 3 and r["verdict"] in VERDICTS and r["holm"] in VERDICTS for r in rows)
    # F01's statistic is the trained slope minus the initial networks' slope, by seed
    f01 = next(c for c in proto.claims if c.id == "F01")
    stored = width._stored(proto.tasks({"F01"}), cache)
    start = {w: experiments.initial_weights("PreResNet", 200, None if w == 1 else w) for w in (1, 2, 3)}
    logs = lambda rows: [np.log(np.mean([r["d_cos2"] for r in rows[1:7]])) for rows in rows]  # noqa: E731
    x = np.log([48, 96, 144])
    trained = np.polyfit(x, logs([stored[("PreResNet", w, power.BASE)][200]["weights"] for w in (1, 2, 3)]), 1)[0]
    init = np.polyfit(x, logs([start[w] for w in (1, 2, 3)]), 1)[0]
    assert width.statistic(f01, stored, 200) == pytest.approx(trained - init)
    text = width.markdown(proto, record, rows, width.progress(proto, cache))
    assert proto.sha256 in text and "R01" in text and "Holm-adjusted" in text
    # the command line: the report from the cache, written where REPORT points
    monkeypatch.setattr(width, "load", lambda path: proto)
    monkeypatch.chdir(tmp_path)
    width.main(["--report", "--cache", str(cache)])
    written = json.loads((tmp_path / width.REPORT).read_text())
    assert written["sha256"] == proto.sha256 and len(written["claims"]) == 8
    assert len(written["pilot"]) == 7
    width.main(["--cache", str(cache)])  # the runner: locked already, every run cached
    assert "version 1" in capsys.readouterr().out and len(list(cache.rglob("seed*.json"))) == len(runs)
    # a claim edited after its runs: the report refuses until the version is bumped
    doc = json.loads(tiny.read_text())
    doc["claims"][0]["direction"] = 1
    tiny.write_text(json.dumps(doc, indent=1))
    _git(tiny.parent, "commit", "-q", "-am", "edit")
    changed = _load_tiny(tiny)
    with pytest.raises(protocol.ProtocolChanged, match="Bump 'version'"):
        width.judge(changed, cache)
    monkeypatch.setattr(width, "load", lambda path: changed)
    with pytest.raises(protocol.ProtocolChanged):
        width.main(["--report", "--cache", str(cache)])


def test_the_pilot_table_renders_a_claim_whose_differences_do_not_vary():
    from varshift.reproduce import pilot

    claim = power.accuracy_claims(("ResNeXt",))[0]  # (a) 0.5 against the baseline
    runs = {("ResNeXt", power.BASE): {s: {"test_error": 3.0} for s in range(4)},
            ("ResNeXt", power.A5): {s: {"test_error": 4.0} for s in range(4)}}
    rows = power.analyse([claim], runs)
    assert rows[0]["sd"] == 0 and rows[0]["testable"] is False
    assert pilot.markdown(rows).splitlines()[-1].endswith("| **not testable**: sd 0 |")
