"""dlcli tune on a real Optuna study in SQLite: trials are run directories, the study resumes
after SIGKILL, parallel workers share it, bad spaces and stores are one-line errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_SYNTHETIC, one_line_error

SEARCH = TINY_SYNTHETIC + """
tune:
  trials: 3
  startup_trials: 2
  objectives: [accuracy, parameters]
  space:
    model.units.0: {type: int, low: 4, high: 32, step: 4}
    train.optimizer.learning_rate: {type: float, low: 0.003, high: 0.03, log: true}
    train.optimizer.name: {type: choice, values: [adam, sgd]}
    train.optimizer.momentum: {type: float, low: 0.0, high: 0.9, when: {train.optimizer.name: sgd}}
"""


def _study(out):
    import optuna

    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")


@pytest.mark.slow  # quick tier under 10 min: heavier cases run in make test-slow
def test_a_search_writes_run_directories_a_front_and_a_recipe_train_accepts(write_recipe, cli, tmp_path):
    from dlcli.recipe.loader import load_recipe

    out = tmp_path / "study"
    res = cli("tune", write_recipe(SEARCH), "--out", out, "--json")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["counts"]["complete"] == 3 and len(summary["trials"]) == 3
    study = _study(out)  # the real SQLite study, read back through Optuna
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    for t in summary["trials"]:  # every trial is an ordinary, completed run directory
        run = out / f"trial-{t['number']:04d}"
        assert json.loads((run / "env.json").read_text())["status"] == "completed"
        trained = load_recipe(run / "recipe.yaml")
        assert trained.model.units[0] == t["params"]["model.units.0"]
        assert trained.train.optimizer.name == t["params"]["train.optimizer.name"]
        # the conditional key is sampled only with sgd
        assert ("train.optimizer.momentum" in t["params"]) == (t["params"]["train.optimizer.name"] == "sgd")
        assert t["values"]["accuracy"] == pytest.approx(json.loads((run / "metrics.json").read_text())
                                                        ["validation"]["accuracy"])
        assert t["values"]["parameters"] == trained.model.units[0] * 6 + trained.model.units[0] + \
            (trained.model.units[0] + 1) * 3  # Dense(6 -> u) + Dense(u -> 3)
    front = {t.number for t in study.best_trials}
    assert set(summary["pareto_front"]) == front and summary["selected"] in front
    best = load_recipe(out / "best.yaml")
    chosen = next(t for t in summary["trials"] if t["number"] == summary["selected"])
    assert best.model.units[0] == chosen["params"]["model.units.0"] and best.tune is None
    again = cli("train", out / "best.yaml", "--run-dir", tmp_path / "best-run", "--json")
    assert again.exit_code == 0, again.stderr
    report = cli("report", out, "--json")  # the study's own page: history, front, importances, trials
    assert report.exit_code == 0, report.stderr
    page = json.loads(report.stdout)
    assert page["sections"] == ["summary", "history", "front", "importance", "trials"]
    assert all(Path(p).stat().st_size > 1000 for p in page["images"])
    # a second session with a larger budget continues the same study
    more = cli("tune", write_recipe(SEARCH), "--out", out, "--trials", "4", "--json")
    assert more.exit_code == 0 and len(json.loads(more.stdout)["trials"]) == 4
    assert len(_study(out).trials) == 4


@pytest.mark.parametrize("space, expected", [
    ("model.unitz.0: {type: int, low: 4, high: 8}",
     r"recipe.yaml:\d+:\d+ \(tune.space\): model.unitz: unknown key, did you mean 'units'"),
    ("model.units.0: {type: int, low: 8, high: 4}", r"recipe.yaml:\d+:\d+: tune.space.model.units.0: empty range"),
    ("train.optimizer.learning_rate: {type: float, low: -1, high: 0.1}",
     r"\(tune.space\): train.optimizer.learning_rate: input should be greater than 0"),
    ("train.batch_size: {type: choice, values: [16, 0]}", r"\(tune.space\): train.batch_size: input should be"),
])
def test_a_bad_search_space_is_a_usage_error_naming_its_line(write_recipe, cli, tmp_path, space, expected):
    import re

    path = write_recipe(TINY_SYNTHETIC + f"tune:\n  space:\n    {space}\n")
    for cmd in (("validate", path), ("tune", path, "--out", tmp_path / "s")):
        line = one_line_error(cli(*cmd), 2)
        assert re.search(expected, line), line
    assert not (tmp_path / "s").exists()  # nothing written


def test_bad_objectives_and_stores_are_one_line_errors(write_recipe, cli, tmp_path):
    path = write_recipe(SEARCH.replace("[accuracy, parameters]", "[acuracy]"))
    assert "did you mean 'accuracy'" in one_line_error(cli("tune", path, "--out", tmp_path / "a"), 2)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "study.db").write_bytes(b"this is not a SQLite database" * 100)
    line = one_line_error(cli("tune", write_recipe(SEARCH), "--out", corrupt), 11)
    assert "study.db: the study database cannot be used" in line
    assert (corrupt / "study.db").read_bytes().startswith(b"this is not")  # never replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert "not a dlcli tune folder" in one_line_error(cli("tune", write_recipe(SEARCH), "--out", foreign), 5)
    locked = tmp_path / "locked"
    ok = cli("tune", write_recipe(SEARCH), "--out", locked, "--trials", "1")
    assert ok.exit_code == 0, ok.stderr
    other = write_recipe(SEARCH.replace("units: [16]", "units: [16, 8]"), "other.yaml")
    assert "made from another recipe" in one_line_error(cli("tune", other, "--out", locked), 11)
    db = sqlite3.connect(locked / "study.db")
    db.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        os.environ["DLCLI_STUDY_LOCK_TIMEOUT"] = "1"
        line = one_line_error(cli("tune", write_recipe(SEARCH), "--out", locked, "--trials", "2"), 11)
    finally:
        os.environ.pop("DLCLI_STUDY_LOCK_TIMEOUT")
        db.rollback()
        db.close()
    assert "database is locked" in line


def test_a_diverging_trial_fails_and_the_search_goes_on(write_recipe, cli, tmp_path):
    recipe = write_recipe(SEARCH.replace("trials: 3", "trials: 2").replace(
        "train.optimizer.name: {type: choice, values: [adam, sgd]}",
        "train.optimizer.name: {type: choice, values: [sgd]}").replace(
        "{type: float, low: 0.003, high: 0.03, log: true}", "{type: choice, values: [1.0e+12, 0.01]}"))
    res = cli("tune", recipe, "--out", tmp_path / "s", "--json")
    assert res.exit_code == 0, res.stderr
    trials = json.loads(res.stdout)["trials"]
    states = {t["params"]["train.optimizer.learning_rate"]: t["state"] for t in trials}
    assert states.get(1e12, "fail") == "fail"
    for t in trials:
        if t["state"] == "fail":
            assert "NaN or inf" in t["attrs"]["error"]
            assert json.loads((tmp_path / "s" / f"trial-{t['number']:04d}" / "env.json").read_text())[
                "status"] == "diverged"


@pytest.mark.slow
def test_a_killed_search_resumes_its_cut_trial_from_the_checkpoint(write_recipe, tmp_path):
    from dlcli.train import resume as ckpt

    recipe = write_recipe(SEARCH.replace("epochs: 3", "epochs: 60").replace(
        "callbacks: {tensorboard: false}", "callbacks: {tensorboard: false, checkpoint: {min_interval_seconds: 0.2}}")
        + "  pruner: none\n")
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "dlcli", "tune", str(recipe), "--out", str(out), "--trials", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        found = ckpt.latest(out / "trial-0001" / "checkpoints") if (out / "trial-0001").exists() else None
        if found is not None and 2 <= found.epoch < 50:
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert found is not None, "killed before trial 1 wrote a checkpoint"
    study = _study(out)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "trial 1 (continued)" in done.stderr
    env = json.loads((out / "trial-0001" / "env.json").read_text())
    assert env["status"] == "completed" and env["resumed"][0]["epoch"] >= 2  # continued, not restarted
    assert [t.state.name for t in _study(out).trials] == ["COMPLETE", "COMPLETE"]


@pytest.mark.slow
@pytest.mark.distributed
def test_parallel_workers_share_one_study(write_recipe, cli, tmp_path):
    out = tmp_path / "study"
    res = cli("tune", write_recipe(SEARCH.replace("trials: 3", "trials: 4")), "--out", out, "--jobs", "2", "--json")
    assert res.exit_code == 0, res.stderr
    study = _study(out)
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2  # both workers ran trials
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 4  # and sampled differently
    assert (out / "worker-0.log").exists() and (out / "worker-1.log").exists()


@pytest.mark.slow
def test_the_median_pruner_stops_a_bad_trial_early(write_recipe, cli, tmp_path):
    text = SEARCH.replace("epochs: 3", "epochs: 6").replace("objectives: [accuracy, parameters]",
                                                             "objectives: [loss]\n  sampler: random")
    text = text.replace("startup_trials: 2", "startup_trials: 1").replace("trials: 3", "trials: 5").replace(
        "{type: float, low: 0.003, high: 0.03, log: true}", "{type: choice, values: [0.03, 1.0e-7]}")
    res = cli("tune", write_recipe(text), "--out", tmp_path / "s", "--json")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    pruned = [t for t in summary["trials"] if t["state"] == "pruned"]
    assert pruned, [(t["params"], t["state"]) for t in summary["trials"]]
    for t in pruned:
        assert t["params"]["train.optimizer.learning_rate"] == 1e-7
        history = (tmp_path / "s" / f"trial-{t['number']:04d}" / "history.csv").read_text().splitlines()
        assert len(history) - 1 == t["attrs"]["pruned_at_epoch"] < 6
