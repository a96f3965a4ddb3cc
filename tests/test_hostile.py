"""Hostile and careless input: YAML bombs, devices and pipes, never a hang or a traceback."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

BOMB = """name: bomb
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
data: {source: synthetic}
model: {architecture: mlp}
"""


def _error_line(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("text, expected", [
    (BOMB, "expands to more than 100,000 values"),
    ("name: r\ndata: &x {source: synthetic, more: [*x]}\n", "refers to a value that holds it"),
    ("name: deep\nmodel: " + "[" * 5000 + "]" * 5000 + "\n", "nest"),  # libyaml's own limit, or ours
    ("name: nul\x00\n", "YAML"),
])
def test_yaml_bombs_and_oddities_are_refused_quickly(cli, tmp_path, text, expected):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    start = time.perf_counter()
    line = _error_line(cli("validate", path), 2)
    assert expected in line and str(path) in line, line
    assert time.perf_counter() - start < 10


def test_a_set_value_bomb_is_refused(cli, tiny_recipe):
    value = "[" + ",".join(["&a [1,2,3,4,5,6,7,8,9,10]"] + ["*a"] * 9) + "]"
    bomb = "{a: &a [1,2,3,4,5,6,7,8,9], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]," \
           " d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], f: [*e,*e,*e,*e,*e,*e]}"
    assert cli("validate", tiny_recipe, "--set", f"description={value}").exit_code == 2  # a list: wrong type
    line = _error_line(cli("validate", tiny_recipe, "--set", f"description={bomb}"), 2)
    assert "--set description" in line and "expands to more than" in line


def test_a_huge_recipe_is_refused(cli, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n" + "# padding\n" * 120_000)
    line = _error_line(cli("validate", path), 2)
    assert "larger than 1024 KiB" in line


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_devices_and_pipes_are_refused_not_read(cli, tmp_path, write_recipe):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    for recipe in (fifo, "/dev/zero"):
        line = _error_line(cli("validate", recipe), 2)
        assert "not a regular file" in line
    for i, data in enumerate((fifo, "/dev/zero")):
        path = write_recipe(f"name: d\ndata: {{source: csv, path: {data}, label_column: y}}\n"
                            "model: {architecture: mlp}\n")
        line = _error_line(cli("train", path, "--run-dir", tmp_path / f"run{i}"), 3)
        assert "not a regular file" in line and str(data) in line
        assert not (tmp_path / f"run{i}" / "model.keras").exists()


def test_nan_and_infinity_in_data_are_found_when_reading(cli, tmp_path, write_recipe):
    import numpy as np

    rows = ["a,b,y"] + [f"{i % 7}.5,{i % 3},{i % 2}" for i in range(40)]
    rows[23] = "1.0,inf,1"  # file line 24
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    x[17, 2] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 2)
    for data, expected in (("{source: csv, path: d.csv, label_column: y}", "column 'b', row 23 (line 24): 'inf'"),
                           ("{source: numpy, path: d.npz}", "example 17 holds NaN or infinity")):
        path = write_recipe(f"name: n\ndata: {data}\nmodel: {{architecture: mlp}}\n")
        line = _error_line(cli("train", path, "--run-dir", tmp_path / f"run-{len(data)}"), 3)
        assert expected in line, line


def test_bad_predict_inputs_are_data_errors(cli, tiny_recipe, tmp_path):
    import numpy as np

    run = tmp_path / "run"
    assert cli("train", tiny_recipe, "--run-dir", run, "--quiet").exit_code == 0
    good = np.zeros((2, 6), np.float32)
    nan = good.copy()
    nan[1, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "text.npy", np.asarray([["a"] * 6]))
    np.save(tmp_path / "empty.npy", np.zeros((0, 6), np.float32))
    np.savez(tmp_path / "none.npz")
    huge = tmp_path / "huge.npy"  # a header claiming 10^12 rows over 48 bytes of data
    header = np.lib.format.header_data_from_array_1_0(good)
    header["shape"] = (10**12, 6)
    with open(huge, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(good.tobytes())
    for name, expected in (("nan.npy", "example 2 holds NaN or infinity"), ("text.npy", "takes numbers"),
                           ("empty.npy", "holds no examples"), ("none.npz", "holds no arrays"),
                           ("huge.npy", "cannot read NumPy input")):
        line = _error_line(cli("predict", run, tmp_path / name), 3)
        assert expected in line and name in line, line
    np.save(tmp_path / "good.npy", good)  # --out keeps every output whole
    assert cli("predict", run, tmp_path / "good.npy", "--out", tmp_path / "p.npz").exit_code == 0
    with np.load(tmp_path / "p.npz") as saved:
        assert saved["outputs"].shape == (2, 3) and list(saved["inputs"]) == ["good.npy[0]", "good.npy[1]"]
    _error_line(cli("predict", run, tmp_path / "good.npy", "--out", tmp_path / "p.txt"), 2)


def test_a_killed_exports_temporary_files_are_swept_and_nothing_else(tmp_path):
    import subprocess
    import sys

    from dlcli.export import sweep_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=False)
    pid = int(dead.stdout)
    (tmp_path / f".model.onnx.tmp-{pid}.onnx").write_bytes(b"half")
    (tmp_path / f".saved_model.tmp-{pid}").mkdir()
    (tmp_path / f".model_int8.tflite.tmp-{os.getpid()}.tflite").write_bytes(b"mine, in progress")
    (tmp_path / ".notes.tmp-draft").write_text("not dlcli's")
    (tmp_path / "model.onnx").write_bytes(b"done")
    removed = sweep_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".model.onnx.tmp-{pid}.onnx", f".saved_model.tmp-{pid}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".model_int8.tflite.tmp-{os.getpid()}.tflite", ".notes.tmp-draft", "model.onnx"])


def test_epoch_lines_fit_the_terminal_without_cutting_a_number():
    from dlcli.train.callbacks import _fmt

    logs = {"accuracy": 0.98765, "loss": 0.0312345, "val_accuracy": 0.97, "val_loss": 0.0456}
    whole = _fmt(logs)
    assert whole == "accuracy 0.9877  loss 0.0312  val_accuracy 0.9700  val_loss 0.0456"
    assert _fmt(logs, len(whole)) == whole
    assert _fmt(logs, 40) == "loss 0.0312  val_loss 0.0456"  # other metrics go first
    assert _fmt(logs, 27) == "loss 0.0312"
    assert _fmt(logs, 5) == ""  # too narrow for any: nothing, not a cut number


@pytest.mark.parametrize("command", [("schema", "--out"), ("init", "cnn")])
def test_outputs_that_cannot_be_written_are_exit_5(cli, tmp_path, command):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    for out, expected in ((folder, "is a folder"), (tmp_path / "file" / "x.yaml", "cannot write here")):
        (tmp_path / "file").write_text("a file where a folder should be")
        args = [*command, out] + (["--force"] if command[0] == "init" else [])
        line = _error_line(cli(*args), 5)
        assert expected in line and str(out) in line, line
    assert list(folder.iterdir()) == []


def test_a_full_disk_while_writing_is_exit_5_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from dlcli.atomic import write_bytes
    from dlcli.errors import OutputError

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputError, match="No space left on device"):
        write_bytes(tmp_path / "model.bin", b"x" * 10)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_export_out_that_is_a_file_or_unmakeable_is_exit_5(cli, tiny_recipe, tmp_path):
    run = tmp_path / "run"
    assert cli("train", tiny_recipe, "--run-dir", run, "--quiet").exit_code == 0
    (tmp_path / "a-file").write_text("mine")
    for out, expected in ((tmp_path / "a-file", "exists and is not a folder"),
                          (tmp_path / "a-file" / "sub", "cannot make the export folder")):
        line = _error_line(cli("export", run, "--onnx", "--out", out), 5)
        assert expected in line, line
    assert (tmp_path / "a-file").read_text() == "mine"


@pytest.mark.parametrize("tamper", [
    {"input_shape": "six"}, {"input_dtype": "float64"}, {"labels": 5},
    {"normalize": {"method": "standard", "axis": "feature", "mean": ["a"] * 6, "std": [1.0] * 6}},
    {"normalize": {"method": "standard", "axis": "feature", "mean": [0.0] * 6, "std": [0.0] * 6}},
])
def test_a_tampered_preprocessing_json_is_exit_3(cli, tiny_recipe, tmp_path, tamper):
    import json

    import numpy as np

    run = tmp_path / "run"
    assert cli("train", tiny_recipe, "--run-dir", run, "--quiet").exit_code == 0
    doc = json.loads((run / "preprocessing.json").read_text())
    (run / "preprocessing.json").write_text(json.dumps({**doc, **tamper}))
    np.save(tmp_path / "x.npy", np.zeros((2, 6), np.float32))
    line = _error_line(cli("predict", run, tmp_path / "x.npy"), 3)
    assert "preprocessing.json: cannot read preprocessing" in line, line
