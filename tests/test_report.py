"""`dlcli report`: real tiny runs (classification with an export and a benchmark.json,
regression without a validation split, reconstruction), every embedded PNG decoded,
and the command through a local Typer app (the lead registers it in main.py)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import struct
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, TINY_SYNTHETIC

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRAIN = "train: {epochs: 3, batch_size: 16, optimizer: {name: adam, learning_rate: 0.01}, callbacks: {tensorboard: false}}"
RECIPES = {
    "classification": textwrap.dedent(TINY_SYNTHETIC).replace("name: tiny", "name: cls").replace(
        "  noise: 0.3\n", "  noise: 0.3\n  label_names: [cat, dog, bird]\n"),
    "regression": "name: reg\nseed: 3\ntask: regression\n"
                  "data: {source: synthetic, kind: regression, samples: 160, shape: [5], split: {validation: 0.0, test: 0.25}}\n"
                  f"model: {{architecture: mlp, units: [16]}}\n{TRAIN}\n",
    "reconstruction": "name: ae\nseed: 3\ntask: reconstruction\n"
                      "data: {source: synthetic, kind: image, samples: 160, shape: [6, 6, 1], num_classes: 2, "
                      "normalize: minmax, split: {test: 0.25, stratify: false}}\n"
                      f"model: {{architecture: autoencoder, units: [8], latent_dim: 4, output_activation: sigmoid}}\n{TRAIN}\n",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train each tiny run once for the module."""
    from dlcli.recipe.loader import load_recipe
    from dlcli.train import train

    root = tmp_path_factory.mktemp("report_runs")
    cache = {}

    def get(name):
        if name not in cache:
            (root / f"{name}.yaml").write_text(RECIPES[name])
            train(load_recipe(root / f"{name}.yaml"), root / name, progress="none")
            cache[name] = root / name
        return cache[name]

    return get


@pytest.fixture
def report_cli():
    """report(...) registered on a local Typer app, invoked in-process."""
    import typer
    from typer.testing import CliRunner

    from dlcli.cli.cmd_report import report

    app = typer.Typer()
    app.command("report")(report)
    app.callback()(lambda: None)
    return lambda *args: CliRunner().invoke(app, ["report", *map(str, args)], catch_exceptions=False)


def check_png(data: bytes) -> tuple[int, int]:
    """A complete PNG of a sensible size: signature, IHDR, and PIL decodes every pixel."""
    from PIL import Image

    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 200 <= width <= 2400 and 150 <= height <= 2400, (width, height)
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.size == (width, height)
    return width, height


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def assert_self_contained(html: str) -> None:
    assert "<script" not in html.lower()
    assert not re.search(r"(src|href)=\"(?!data:)", html), "a resource outside the file"
    assert "http://" not in html and "https://" not in html and "@import" not in html


def test_classification_report_with_export_and_benchmark(runs, tmp_path):
    from dlcli.export import export_run
    from dlcli.report import build_report

    run = runs("classification")
    export_run(run, formats=["tflite"], quantize="dynamic")
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    sizes = {a["name"]: a["size_bytes"] for a in manifest["artifacts"]}
    bench = {  # docs/benchmark-format.md
        "format": "dlcli-benchmark/1", "run_dir": str(run.resolve()), "created": "2026-11-24T10:00:00+0000",
        "batch_size": 32, "runs": 100,
        "results": [
            {"name": "keras", "format": "keras", "quantization": "none", "runtime": "keras", "path": "model.keras",
             "size_bytes": (run / "model.keras").stat().st_size, "load_seconds": 0.41,
             "latency_ms": {"p50": 0.31, "p95": 0.45, "mean": 0.33}, "throughput_samples_per_s": 15234.0,
             "peak_memory_bytes": 52428800, "metric": {"name": "accuracy", "value": 0.9926}},
            {"name": "model_dynamic.tflite", "format": "tflite", "quantization": "dynamic", "runtime": "ai_edge_litert",
             "path": "export/model_dynamic.tflite", "size_bytes": sizes["model_dynamic.tflite"], "load_seconds": 0.01,
             "latency_ms": {"p50": 0.0427, "p95": 0.06, "mean": 0.05}, "throughput_samples_per_s": 40000.0,
             "peak_memory_bytes": 1048576, "metric": {"name": "accuracy", "value": 0.9811},
             "native": {"tool": "litert CompiledModel", "threads": 1, "warmup": 10, "runs": 100,
                        "latency_ms": {"p50": 0.0173, "p95": 0.02, "mean": 0.018}, "accelerator": "XNNPACK (CPU)",
                        "fully_accelerated": False, "fallback_ops": ["SOFTMAX"]},
             "python_overhead_ms": 0.0254},
        ],
        "thresholds": {"fail_under": {"accuracy": 0.95}, "max_latency_ms": 5.0}, "passed": True, "failures": [],
    }
    (run / "benchmark.json").write_text(json.dumps(bench))

    res = build_report(run)
    assert res.html == run / "report.html"
    names = [p.name for p in res.images]
    for expected in ("history_loss.png", "history_accuracy.png", "confusion_matrix.png", "export_artifacts.png",
                     "benchmark.png"):
        assert expected in names
    assert all(p.parent == run / "report_files" for p in res.images)
    assert res.sections == ["summary", "history", "test", "export", "benchmark"]
    html = res.html.read_text()
    assert_self_contained(html)
    pngs = embedded_pngs(html)
    assert pngs == [p.read_bytes() for p in res.images]  # the same images, in order, in the folder
    for data in pngs:
        check_png(data)
    assert 'alt="confusion matrix' in html and 'alt="loss per epoch' in html
    for text in ("cat", "dog", "bird", "precision", "recall", "model_dynamic.tflite", "0.0427", "15,234.0", "passed",
                 "native p50 ms", "0.0173", "0.0254", "partial: SOFTMAX on plain kernels"):
        assert text in html, text
    exported = manifest["artifacts"][-1]["delegation"]  # what export recorded for the dynamic-range file
    assert isinstance(exported["fully_accelerated"], bool)
    assert "data_fingerprint" in html and "tensorflow" in html  # environment header


def test_report_cli_json_and_out(runs, report_cli, tmp_path):
    run = runs("classification")
    out = tmp_path / "elsewhere" / "digits.html"
    r = report_cli(run, "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["html"] == str(out) and out.exists()
    assert obj["images"] and all(p.startswith(str(tmp_path / "elsewhere" / "digits_files")) for p in obj["images"])
    for p in obj["images"]:
        with open(p, "rb") as fh:
            check_png(fh.read())
    r = report_cli(run, "--out", out)
    assert r.exit_code == 0 and r.stdout.startswith(f"report: {out}")


def test_regression_without_validation(runs):
    from dlcli.report import build_report

    res = build_report(runs("regression"))
    names = [p.name for p in res.images]
    assert "predicted_vs_true.png" in names and "history_loss.png" in names and "confusion_matrix.png" not in names
    assert any("no validation split" in n for n in res.notes)
    html = res.html.read_text()
    assert "R²" in html and "RMSE" in html and "val_loss" not in html
    assert "No export/manifest.json" in html and "No benchmark.json" in html
    for data in embedded_pngs(html):
        check_png(data)


def test_reconstruction_report(runs):
    from dlcli.report import build_report

    res = build_report(runs("reconstruction"))
    names = [p.name for p in res.images]
    assert "reconstruction_error.png" in names and "reconstruction_examples.png" in names
    for p in res.images:
        check_png(p.read_bytes())


def test_missing_and_broken_optional_files(runs, tmp_path):
    from dlcli.report import build_report

    run = tmp_path / "partial"
    shutil.copytree(runs("regression"), run)
    for name in ("history.csv", "env.json", "metrics.json", "report.html"):
        (run / name).unlink(missing_ok=True)
    shutil.rmtree(run / "report_files", ignore_errors=True)
    (run / "benchmark.json").write_text("{not json")
    (run / "export").mkdir()
    (run / "export" / "manifest.json").write_text(json.dumps({"format": "dlcli-export-manifest/1"}))
    res = build_report(run)
    notes = " | ".join(res.notes)
    for text in ("history.csv not found", "env.json not found", "metrics.json", "benchmark.json cannot be read",
                 "manifest.json has no artifacts"):
        assert text in notes, text
    assert [p.name for p in res.images] == ["predicted_vs_true.png"]
    (run / "model.keras").unlink()
    res = build_report(run)
    assert res.images == [] and any("model.keras not found" in n for n in res.notes)
    assert not list((run / "report_files").glob("*.png"))  # stale PNGs of the previous report are removed


def test_user_errors_are_one_line(report_cli, tmp_path):
    for target in (tmp_path / "absent", tmp_path):
        r = report_cli(target)
        assert r.exit_code == 5
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr


def test_report_help_imports_neither_tensorflow_nor_matplotlib():
    probe = textwrap.dedent("""
        import sys, typer
        from dlcli.cli.cmd_report import report
        app = typer.Typer()
        app.command("report")(report)
        app.callback()(lambda: None)
        try:
            app(["report", "--help"])
        except SystemExit:
            pass
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "matplotlib", "PIL"))
        print("HEAVY=" + ",".join(heavy[:5]))
    """)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert "Usage" in proc.stdout and "--json" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout
