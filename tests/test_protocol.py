"""The confirmatory run's locked protocol: declared from the pilot, locked by git,
refused when changed after its runs, judged only when every declared run exists."""

import inspect
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from varshift import tasks as _tasks
from varshift.reproduce import confirm, experiments, power, protocol
from varshift.reproduce.plan import network_task
from varshift.reproduce.results import confirmatory_markdown
from varshift.verdicts import VERDICTS

POWER = json.loads(open("figures/power/power.json").read())
PILOT = POWER["pilot"]
VERSION_2_FAMILY = ("A01", "A05", "A08", "A10", "A11", "A27", "A31", "A33", "A34", "A35", "A36",
                    "A37", "A40")


def test_the_committed_protocol_is_the_power_table_of_the_pilot():
    proto = protocol.load()
    rows = {r["text"]: r for r in PILOT["rows"]}
    full_run = {r["text"]: r for r in POWER["full run"]["rows"]}
    declared = {c.claim.text: c for c in proto.claims}
    assert list(declared) == [c.text for c in power.CLAIMS]  # every accuracy claim, in order
    for claim in power.CLAIMS:
        c, row = declared[claim.text], rows[claim.text]
        assert c.claim == claim  # same terms, direction, margin
        effect = row["paper"]
        ruled_out = effect is None or (claim.margin is None and (
            effect == 0 or (effect > 0) != (claim.direction > 0)))  # section 1's rule
        if c.status == "confirmatory":
            assert row["testable"] and c.seeds == min(power.BUDGET, row["seeds_upper"])
        elif c.status == "not testable at this regime":
            # the pilot's verdict, section 1's rule, or (not piloted) the full run's table
            assert (row["testable"] is False or ruled_out
                    or (row["testable"] is None and full_run[claim.text]["testable"] is False))
        else:  # awaiting its pilot: arms without pilot runs, and not ruled out in advance
            assert row["testable"] is None and not ruled_out
    assert len(proto.confirmatory) == 18 and proto.first_seed == 100
    # version 2's family, fixed; version 3's claims in a family of their own
    assert proto.families == (VERSION_2_FAMILY, ("A02", "A15", "A19", "A28", "A32"))
    assert not [c for c in proto.claims if c.status == "awaiting its pilot"]
    assert proto.settings.train_sequences == 1000 and proto.settings.epochs == 240


def test_runs_are_fresh_seeds_seed_major_and_as_many_as_the_claims_need():
    proto = protocol.load()
    runs = proto.tasks()
    seeds = [t.params["seed"] for t in runs]
    assert min(seeds) == 100 and seeds == sorted(seeds)
    assert len({t.key for t in runs}) == len(runs) == sum(proto.seeds().values())
    for c in proto.confirmatory:
        for arm in c.claim.arms:
            assert proto.seeds()[arm] >= c.seeds
    pilot = {t.key for t in runs if t.params["seed"] < 100}
    assert not pilot


def test_the_committed_v2_runs_keep_their_keys_and_parameters():
    """Version 2's runs were computed before ``widen`` existed: every committed run is still
    one of the protocol's tasks, with the same key and parameters, and train_network
    takes those parameters as they are (no ``widen``: the architecture's own network)."""
    committed = sorted(Path(confirm.CACHE).glob("network/*/*/seed*.json"))
    assert committed  # the run in progress has committed some
    tasks = {t.key: t for t in protocol.load().tasks()}
    for path in committed:
        record = json.loads(path.read_text())
        assert record["key"] == str(path.relative_to(confirm.CACHE))[:-len(".json")]
        assert tasks[record["key"]].params == record["params"] and "widen" not in record["params"]
        inspect.signature(experiments.train_network).bind(**record["params"])
    pinned = network_task(protocol.load().settings, "PreResNet", "a", 0.0, 100)
    assert pinned.key == "network/PreResNet/base/seed100-2ca16bcaac"


def test_bad_protocol_files_are_refused_with_the_field_named(tmp_path):
    doc = json.loads(protocol.PATH.read_text())
    bad = dict(doc, claims=[dict(doc["claims"][0], status="probably")])
    (tmp_path / "p.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="status must be one of"):
        protocol.load(tmp_path / "p.json")
    bad = dict(doc, claims=[dict(doc["claims"][0], seeds=None, status="confirmatory")])
    (tmp_path / "p.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="3 to 30 seeds"):
        protocol.load(tmp_path / "p.json")


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})


@pytest.fixture
def repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    path = tmp_path / "repo" / "confirmatory.json"
    path.parent.mkdir()
    shutil.copy(protocol.PATH, path)
    _git(path.parent, "init", "-q")
    return path


def test_lock_needs_the_file_committed_and_refuses_a_later_change(repo, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="must be committed"):
        protocol.lock(protocol.load(repo), cache)
    assert not (cache / protocol.LOCK).exists()
    _git(repo.parent, "add", repo.name)
    _git(repo.parent, "commit", "-q", "-m", "declare")
    record = protocol.lock(protocol.load(repo), cache)
    assert record["sha256"] == protocol.digest(repo) and len(record["commit"]) >= 7
    # a claim edited after its runs were computed: refused, whether committed or not
    doc = json.loads(repo.read_text())
    doc["claims"][0]["direction"] = -1
    repo.write_text(json.dumps(doc, indent=1))
    _git(repo.parent, "commit", "-q", "-am", "edit")
    with pytest.raises(protocol.ProtocolChanged, match="Bump 'version'"):
        protocol.check(protocol.load(repo), cache)
    with pytest.raises(protocol.ProtocolChanged):
        confirm.judge(protocol.load(repo), cache)
    # a new version is a new lock beside the old one
    doc["version"] += 1
    repo.write_text(json.dumps(doc, indent=1))
    _git(repo.parent, "commit", "-q", "-am", "version 2")
    assert protocol.lock(protocol.load(repo), cache)["sha256"] == protocol.digest(repo)
    assert len(json.loads((cache / protocol.LOCK).read_text())) == 2


def _fake_results(proto, cache, missing=0, ids=None):
    """Store made-up results for every declared run (of the claims ``ids``, default all;
    the last ``missing`` left out)."""
    rng = np.random.default_rng(0)
    runs = proto.tasks(ids)
    for task in runs[:len(runs) - missing]:
        p = task.params
        error = 3.0 + 2.0 * (p["rate"] > 0) * (p["placement"] == "a") + rng.normal(0, 0.3)
        result = {"test_error": error, "recalibrated": {"test_error": error - 0.5 * (p["rate"] > 0)},
                  "history": {"train_mode": [99.0], "eval_mode": [99.0 - (p["rate"] > 0)]}}
        _tasks._store(cache, task, result, 1.0)


def test_verdicts_wait_for_every_declared_run_then_come_holm_adjusted(tmp_path):
    proto = protocol.load()
    cache = tmp_path / "cache"
    first = proto.tasks(VERSION_2_FAMILY)
    _fake_results(proto, cache, missing=1, ids=VERSION_2_FAMILY)  # no family complete
    assert confirm.progress(proto, cache, VERSION_2_FAMILY) == (len(first) - 1, len(first))
    with pytest.raises(FileNotFoundError, match="wait"):
        confirm.judge(proto, cache)
    _fake_results(proto, cache)
    rows = confirm.judge(proto, cache)
    judged = [r for r in rows if r["status"] == "confirmatory"]
    by_id_all = {r["id"]: r for r in rows}
    assert len(rows) == len(proto.claims) and len(judged) == 18 and all("holm" in r for r in judged)
    by_id = {r["id"]: r for r in judged}
    assert by_id["A01"]["verdict"] == by_id["A01"]["holm"] == "holds"  # (a) 0.5 is 2 points worse
    assert by_id["A01"]["n"] == 11 and by_id["A35"]["n"] == 27
    assert all(r["holm"] in VERDICTS for r in judged)
    verdicts = json.loads(json.dumps(confirm.document(proto, {"commit": "abc1234"}, rows)))
    assert verdicts["first_seed"] == 100 and "1,000" in verdicts["regime"]
    text = "\n".join(confirmatory_markdown(verdicts))
    assert proto.sha256 in text and "abc1234" in text and "A40" in text
    assert "| A01 | PreResNet: drop 0.5 at (a) raises the test error | holds |" in text
    assert f"- **A12.** {by_id_all['A12']['why']}" in text  # a claim not judged, with why
    a01, a02 = (next(line for line in text.splitlines() if line.startswith(f"- **{i}.**"))
                for i in ("A01", "A02"))
    assert "; sized to detect " in a01  # a directional claim: the effect it was sized for
    assert "an equivalence claim (the interval must lie within +-0.5 points)" in a02
    assert "sized to detect" not in a02  # sized for a zero difference: nothing to detect


def _version_2_family_only():
    """The committed protocol with version 2's family as its only confirmatory claims."""
    doc = json.loads(protocol.PATH.read_text())
    doc["holm_families"] = [list(VERSION_2_FAMILY)]
    for entry in doc["claims"]:
        if entry["id"] not in VERSION_2_FAMILY and entry["status"] == "confirmatory":
            entry.update(status="awaiting its pilot", seeds=None)
    return doc


def test_each_holm_family_is_judged_once_all_its_runs_exist(tmp_path):
    """A later version adds a family of its own: the first family's verdicts are judged
    (and adjusted over that family alone) while the second's runs are missing."""
    doc = _version_2_family_only()
    second = []
    for entry in doc["claims"]:
        if entry["id"] in ("A02", "A13"):  # a made-up second family
            entry.update(status="confirmatory", seeds=4, why="made up for the test")
            second.append(entry["id"])
    doc["holm_families"].append(second)
    path = tmp_path / "confirmatory.json"
    path.write_text(json.dumps(doc))
    proto = protocol.load(path)
    first = proto.families[0]
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="all of a family's runs"):
        confirm.judge(proto, cache)
    _fake_results(proto, cache, ids=first)
    assert [p[1:] for p in confirm.family_progress(proto, cache)] == [
        (len(proto.tasks(first)), len(proto.tasks(first))),
        (len({t.key for t in proto.tasks(second)} & {t.key for t in proto.tasks(first)}),
         len(proto.tasks(second)))]  # the baselines the first family ran
    rows = {r["id"]: r for r in confirm.judge(proto, cache)}
    alone_path = tmp_path / "family1.json"
    alone_path.write_text(json.dumps(_version_2_family_only()))
    alone = {r["id"]: r for r in confirm.judge(protocol.load(alone_path), cache)}  # family 1 alone
    for i in first:
        assert rows[i]["family"] == 1 and rows[i]["holm"] == alone[i]["holm"]
        assert rows[i]["estimate"] == alone[i]["estimate"]
    done, declared = rows["A02"]["runs"]
    assert "holm" not in rows["A02"] and rows["A02"]["family"] == 2 and done < declared
    earlier = {"1": {"commit": "aaa1111", "sha256": "1"}, "2": {"commit": "bbb2222", "sha256": "2"},
               str(proto.version): {"commit": "abc1234", "sha256": proto.sha256}}
    verdicts = json.loads(json.dumps(confirm.document(proto, {"commit": "abc1234"},
                                                      list(rows.values()), earlier)))
    text = "\n".join(confirmatory_markdown(verdicts))
    assert "within each of the protocol's 2 Holm families" in text and "family 1, 13 claims" in text
    assert "locked in commit abc1234 (earlier versions locked in aaa1111 (version 1), bbb2222 " \
           "(version 2);" in text  # each family's runs were locked by its own version
    assert f"| A02 | {rows['A02']['text']} | confirmatory (family 2): {done} of its family's " \
           f"{declared} runs done |" in text
    assert "2 confirmatory, awaiting their runs; " in text
    _fake_results(proto, cache, ids=second)
    rows = {r["id"]: r for r in confirm.judge(proto, cache)}
    assert rows["A02"]["family"] == 2 and rows["A02"]["n"] == 4 and rows["A13"]["holm"] in VERDICTS


def test_the_reestimation_protocol_reruns_the_confirmatory_networks_with_two_more_estimates():
    proto = protocol.load(protocol.REESTIMATION)
    tasks = proto.tasks()
    assert proto.task_options == {"reestimate": True} and len(tasks) == 46
    assert {t.params["arch"] for t in tasks} == {"PreResNet", "DenseNet"}
    assert all(t.params["reestimate"] and t.params["placement"] == "a" and t.params["rate"] == 0.5
               for t in tasks)
    assert sorted({t.params["seed"] for t in tasks}) == list(range(100, 123))
    # without the option, the same seed and arm is the confirmatory run's task: same network
    confirmatory = {t.key: t for t in protocol.load().tasks()}
    for task in tasks:
        p = {k: v for k, v in task.params.items() if k != "reestimate"}
        twin = network_task(proto.settings, p["arch"], "a", 0.5, p["seed"])
        assert twin.key in confirmatory and twin.params == p
    assert [c.id for c in proto.confirmatory] == [f"R0{i}" for i in range(1, 7)]
    assert proto.families == (tuple(f"R0{i}" for i in range(1, 7)),)


def test_task_options_are_limited_to_what_train_network_takes(tmp_path):
    doc = json.loads(protocol.REESTIMATION.read_text())
    doc["task_options"] = {"widen": 2}
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="task_options may set only"):
        protocol.load(bad)


def test_reestimation_verdicts_need_the_same_networks_as_the_confirmatory_runs(tmp_path):
    proto = protocol.load(protocol.REESTIMATION)
    cache, twins = tmp_path / "cache", tmp_path / "twins"
    rng = np.random.default_rng(1)
    for task in proto.tasks():
        p = task.params
        error = 4.0 + rng.normal(0, 0.3)
        result = {"test_error": error, "recalibrated": {"test_error": error + 1.0},
                  "reestimated": {"dropout_on": error + 0.05, "unused": error + 0.9}}
        _tasks._store(cache, task, result, 1.0)
        twin = network_task(proto.settings, p["arch"], "a", 0.5, p["seed"])
        _tasks._store(twins, twin, {k: result[k] for k in ("test_error", "recalibrated")}, 1.0)
    rows = {r["id"]: r for r in confirm.judge(proto, cache, twins=twins)}
    assert rows["R01"]["holm"] == "holds"  # Dropout on: +0.05 against Adjust's +1.0
    assert rows["R03"]["holm"] == "holds" and rows["R05"]["holm"] == "holds"  # 0.9 vs 1.0
    # a twin whose numbers differ is not the same network: no verdict
    twin = network_task(proto.settings, "DenseNet", "a", 0.5, 100)
    _tasks._store(twins, twin, {"test_error": 0.0, "recalibrated": {"test_error": 1.0}}, 1.0)
    with pytest.raises(RuntimeError, match="not the same"):
        confirm.judge(proto, cache, twins=twins)


def test_power_reads_the_other_reestimates():
    result = {"test_error": 3.0, "recalibrated": {"test_error": 4.0},
              "reestimated": {"dropout_on": 3.1, "unused": 3.9}}
    assert [power.accuracy(result, q) for q in
            ("test", "adjusted", "adjusted_dropout_on", "adjusted_unused")] == [3.0, 4.0, 3.1, 3.9]
