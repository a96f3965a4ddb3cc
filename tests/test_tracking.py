"""Tracking against a real MLflow server (SQLite backend store on 127.0.0.1, started and
stopped here); what arrived is read back through MLflow's client API. The server takes ~10 s
to start: the whole module is in the slow tier (make test-slow)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import TINY_SYNTHETIC, one_line_error

pytestmark = pytest.mark.slow

TRACKED = TINY_SYNTHETIC + """
tracking:
  backend: mlflow
  experiment: dlcli-tests
  tags: {team: edge}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` with a SQLite store and served artifacts; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    exe = Path(sys.executable).parent / "mlflow"
    cmd = [str(exe) if exe.exists() else shutil.which("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
           "--workers", "1"]
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start: " + (root / "server.log").read_text()[-2000:])
    yield uri
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)
    log.close()


@pytest.fixture
def client(mlflow_server, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return MlflowClient(mlflow_server)


def _runs(client, experiment: str = "dlcli-tests"):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_a_run_logs_params_epochs_metrics_model_export_and_benchmark(write_recipe, cli, client, tmp_path):
    run_dir = tmp_path / "run"
    res = cli("train", write_recipe(TRACKED), "--run-dir", run_dir, "--json")
    assert res.exit_code == 0, res.stderr
    run_id = json.loads((run_dir / "env.json").read_text())["tracking"]["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model.units"] == "[16]" and run.data.params["train.optimizer.name"] == "adam"
    env = json.loads((run_dir / "env.json").read_text())
    assert run.data.tags["team"] == "edge" and run.data.params["data_fingerprint"] == env["data_fingerprint"]
    assert run.data.params["tensorflow"] == env["tensorflow"]
    history = client.get_metric_history(run_id, "val_accuracy")
    csv_rows = (run_dir / "history.csv").read_text().splitlines()[1:]
    assert [m.step for m in history] == list(range(1, len(csv_rows) + 1))  # every epoch, from the loop
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert {"model/model.keras", "recipe.yaml", "history.csv", "env.json"} <= _artifacts(client, run_id)
    assert cli("export", run_dir, "--tflite", "--json").exit_code == 0
    assert cli("benchmark", run_dir, "--runs", "5", "--no-native", "--json").exit_code == 0
    logged = _artifacts(client, run_id)
    assert {"export/manifest.json", "export/model_float32.tflite", "benchmark.json"} <= logged


def test_an_unreachable_server_warns_and_track_logs_the_run_later(write_recipe, cli, client, tmp_path, monkeypatch):
    dead = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    run_dir = tmp_path / "run"
    res = cli("train", write_recipe(TRACKED), "--run-dir", run_dir)
    assert res.exit_code == 0, res.stderr
    assert "warning: tracking: the MLflow server at" in res.stderr and "cannot be reached" in res.stderr
    assert json.loads((run_dir / "env.json").read_text())["tracking"]["status"] == "unreachable"
    assert (run_dir / "model.keras").exists()  # nothing lost
    required = cli("train", write_recipe(TRACKED), "--run-dir", tmp_path / "strict", "--require-tracking")
    assert "cannot be reached" in one_line_error(required, 11)
    assert not (tmp_path / "strict").exists()  # refused before anything was written
    assert "cannot be reached" in one_line_error(cli("track", run_dir), 11)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    res = cli("track", run_dir, "--json")
    assert res.exit_code == 0, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    assert json.loads((run_dir / "env.json").read_text())["tracking"]["run_id"] == run_id
    epochs = len((run_dir / "history.csv").read_text().splitlines()) - 1
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(1, epochs + 1))
    assert client.get_run(run_id).info.status == "FINISHED"
    again = cli("track", run_dir, "--json")  # already logged: the same run, nothing duplicated
    assert json.loads(again.stdout)["run_id"] == run_id
    assert len(client.get_metric_history(run_id, "loss")) == epochs


def test_tune_trials_are_nested_runs_of_the_study(write_recipe, cli, client, tmp_path):
    from test_tune import SEARCH

    text = SEARCH.replace("name: tiny", "name: tiny-tracked") + """
tracking:
  backend: mlflow
  experiment: dlcli-tune-tests
"""
    res = cli("tune", write_recipe(text), "--out", tmp_path / "study", "--trials", "2", "--json")
    assert res.exit_code == 0, res.stderr
    runs = _runs(client, "dlcli-tune-tests")
    parents = [r for r in runs if r.data.tags.get("dlcli.stage") == "tune"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.info.run_name for r in children) == ["trial-0000", "trial-0001"]
    assert {"tune.json", "best.yaml"} <= _artifacts(client, parents[0].info.run_id)


def test_a_resumed_run_continues_its_mlflow_run(write_recipe, client, tmp_path):
    from dlcli.train import resume as ckpt

    epochs = 150
    text = TRACKED.replace("epochs: 3", f"epochs: {epochs}").replace(
        "callbacks: {tensorboard: false}", "callbacks: {tensorboard: false, checkpoint: {min_interval_seconds: 0.2}}")
    recipe, run_dir = write_recipe(text), tmp_path / "run"
    cmd = [sys.executable, "-m", "dlcli", "train", str(recipe), "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, found = time.time() + 120, None
    while time.time() < deadline and (found is None or not 2 <= found.epoch < epochs - 20):
        time.sleep(0.05)
        found = ckpt.latest(run_dir / "checkpoints")
    proc.kill()
    proc.wait(timeout=60)
    assert found is not None and found.epoch < epochs - 20, "killed too late"
    run_id = json.loads((run_dir / "env.json").read_text())["tracking"]["run_id"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "env.json").read_text())["tracking"]["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert sorted(set(steps)) == list(range(1, epochs + 1))  # every epoch, in the one run
