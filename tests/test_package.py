"""Packaging: every target built from a tiny trained run, verified, run by its real runtime
(the README's own Python example included), and tampered archives rejected with exit 8.

Two runs are trained once for the module: a CNN classifier (every target; the first
packages also prove that a missing artifact is exported on demand) and an MLP whose
``squareplus`` activation has no int8 kernel, exported with float fallback (refused for
``mcu``; also used for the failed-parity case).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlcli.recipe.loader import load_recipe
from dlcli.rundir import open_run, run_split
from dlcli.train import train

TRAIN = "train: {epochs: 6, batch_size: 32, optimizer: {name: adam, learning_rate: 0.01}, callbacks: {tensorboard: false}}"
CNN = f"""name: pkgcnn
seed: 3
data: {{source: synthetic, kind: image, samples: 400, shape: [8, 8, 1], num_classes: 3, noise: 0.3,
        normalize: standard, split: {{test: 0.25}}}}
model: {{architecture: cnn, filters: [8, 16], normalization: batch, dropout: 0.2}}
{TRAIN}
"""
# SQUARE has no int8 kernel: with float fallback the int8 TFLite keeps it (and QUANTIZE / DEQUANTIZE) in float
FALLBACK = f"""name: pkgfallback
seed: 3
data: {{source: synthetic, samples: 400, shape: [6], num_classes: 3, noise: 0.3, split: {{test: 0.25}}}}
model: {{layers: [{{type: Dense, units: 8, activation: squareplus}}, {{type: Dense, units: 3, activation: softmax}}]}}
export: {{int8_float_fallback: true}}
{TRAIN}
"""
MODEL_FILE = {"tflite": "model_float32.tflite", "tflite-int8": "model_int8.tflite", "onnx": "model.onnx",
              "onnx-int8": "model_int8.onnx",
              "saved_model": "saved_model", "mcu": "model_int8.tflite"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("package_runs")
    out = {}
    for name, text in (("cnn", CNN), ("fallback", FALLBACK)):
        (root / f"{name}.yaml").write_text(text)
        train(load_recipe(root / f"{name}.yaml"), root / name, progress="none")
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def pkg_cli():
    """The app with `package` registered exactly as dlcli/cli/main.py registers it."""
    import typer
    from typer.testing import CliRunner

    from dlcli.cli.cmd_package import package_app
    from dlcli.cli.main import app

    if "package" not in {g.name for g in app.registered_groups}:
        app = typer.Typer(context_settings={"help_option_names": ["-h", "--help"]})
        app.callback()(lambda: None)
        app.add_typer(package_app, name="package")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def packages(runs, pkg_cli, tmp_path_factory):
    """target -> archive of the CNN run, built once through the CLI (int8 first: it exports on demand)."""
    out_dir = tmp_path_factory.mktemp("packages")
    built = {}

    def get(target):
        if target not in built:
            out = out_dir / f"cnn-{target}.zip"
            r = pkg_cli("package", runs["cnn"], "--target", target, "--out", out, "--json")
            assert r.exit_code == 0, r.stderr
            built[target] = (out, json.loads(r.stdout))
        return built[target]

    return get


def _one_error(r, code):
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[-1]


def _readme_code(readme: str) -> str:
    return re.search(r"```python\n(.*?)```", readme, re.DOTALL).group(1)


@pytest.mark.parametrize("target", ["tflite-int8", "onnx", "onnx-int8", "saved_model", "tflite", "mcu"])
def test_every_target_builds_verifies_and_its_readme_example_runs(runs, packages, pkg_cli, target, tmp_path,
                                                                   monkeypatch, capsys):
    from dlcli.export.registry import format_of

    archive, info = packages(target)
    assert info["target"] == target and info["model"] == MODEL_FILE[target]
    assert info["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    r = pkg_cli("package", "verify", archive)
    assert r.exit_code == 0 and r.stdout.startswith("ok: "), r.stderr
    assert not list(archive.parent.glob(".*.tmp*"))  # atomic write: no temporary left behind

    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        readme = zf.read("README.md").decode()
        pre = json.loads(zf.read("preprocessing.json"))
        zf.extractall(tmp_path)  # verified above
    common = {"manifest.json", "README.md", "preprocessing.json", "labels.txt"}
    assert common <= names
    if target == "saved_model":
        assert "saved_model/saved_model.pb" in names
    else:
        assert MODEL_FILE[target] in names
    if target == "mcu":
        assert {"model_data.cc", "model_data.h", "ops.h"} <= names
    assert set(manifest["files"]) == names - {"manifest.json"}
    run = open_run(runs["cnn"])
    assert manifest["run"]["recipe_hash"] == run.env["recipe_hash"]
    assert manifest["versions"]["training"]["tensorflow"] and manifest["versions"]["packaging"]["numpy"]
    assert manifest["artifact"]["status"] == "passed" and manifest["artifact"]["checks"]["passed"]
    assert pre["normalize"]["method"] == "standard" and pre["input_shape"] == [8, 8, 1]
    int8 = target in ("tflite-int8", "mcu")
    assert ("quantization" in pre) is int8
    if int8:
        assert pre["quantization"]["input"]["dtype"] == "int8" and pre["quantization"]["input"]["scale"] > 0

    # the README's example runs as written, and agrees with the runtime that checked the artifact
    x, _ = run_split(run, "test")
    x = x[:40]
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__main__"}
    capsys.readouterr()
    exec(compile(_readme_code(readme), "README.md", "exec"), ns)  # noqa: S102 - our own generated example
    assert capsys.readouterr().out.split()[0] in ("0", "1", "2")  # prints the top-1 label
    got = np.stack([ns["predict"](xi) for xi in x])
    if target == "mcu":
        ref = _tflm_outputs(tmp_path / "model_int8.tflite", x, manifest["tensor_arena"]["recommended_bytes"])
        ref = (ref.astype(np.float32) - pre["quantization"]["output"]["zero_point"]) * pre["quantization"]["output"]["scale"]
        np.testing.assert_array_equal(got, ref)
    else:
        ref = format_of(tmp_path / MODEL_FILE[target]).load(tmp_path / MODEL_FILE[target]).predict(x)
        np.testing.assert_allclose(got, ref, atol=1e-6)
    raw = np.random.default_rng(0).normal(size=(8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(ns["normalize"](raw), run.preprocessor.normalize_array(raw[None])[0], rtol=1e-6)


def _tflm_outputs(model_path, x, arena):
    """int8 outputs of TFLite Micro's Python interpreter, one example at a time."""
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(model_path.read_bytes(), arena_size=arena)
    d = interp.get_input_details(0)
    scale, zp = float(d["quantization_parameters"]["scales"][0]), int(d["quantization_parameters"]["zero_points"][0])
    out = []
    for xi in x:
        interp.set_input(np.clip(np.round(xi / scale + zp), -128, 127).astype(np.int8)[None], 0)
        interp.invoke()
        out.append(interp.get_output(0)[0].copy())
    return np.stack(out)


def _litert_outputs(model_path, x, reference_kernels):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if reference_kernels else OpResolverType.AUTO
    interp = Interpreter(model_path=str(model_path), experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zp = inp["quantization"]
    out = []
    for xi in x:
        interp.set_tensor(inp["index"], np.clip(np.round(xi / scale + zp), -128, 127).astype(np.int8)[None])
        interp.invoke()
        out.append(interp.get_tensor(outp["index"])[0].copy())
    return np.stack(out)


def test_mcu_model_runs_in_tflite_micro_with_litert_outputs(runs, packages, tmp_path):
    archive, _info = packages("mcu")
    with zipfile.ZipFile(archive) as zf:
        model = zf.read("model_int8.tflite")
        cc, header, ops = (zf.read(n).decode() for n in ("model_data.cc", "model_data.h", "ops.h"))
        manifest = json.loads(zf.read("manifest.json"))
    (tmp_path / "m.tflite").write_bytes(model)
    x, _ = run_split(open_run(runs["cnn"]), "test")
    arena = manifest["tensor_arena"]
    micro = _tflm_outputs(tmp_path / "m.tflite", x, arena["recommended_bytes"])
    # TFLite Micro's kernels are LiteRT's reference kernels: equal int8 outputs, exactly
    np.testing.assert_array_equal(micro, _litert_outputs(tmp_path / "m.tflite", x, reference_kernels=True))
    # LiteRT's default XNNPACK delegate requantizes with its own rounding: at most 2 int8 steps apart
    xnnpack = _litert_outputs(tmp_path / "m.tflite", x, reference_kernels=False)
    assert np.abs(micro.astype(int) - xnnpack.astype(int)).max() <= 2

    # the C array is the model, the arena is the measured one, the ops are TFLite Micro's names
    body = cc.split("g_model_data[] = {", 1)[1].split("};", 1)[0]
    assert bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", body)) == model
    assert "alignas(16) const unsigned char g_model_data[]" in cc
    assert f"g_model_data_len = {len(model)};" in cc
    assert f"kTensorArenaSize = {arena['recommended_bytes']};" in header
    assert arena["method"] == "measured" and 0 < arena["measured_bytes"] < arena["recommended_bytes"]
    assert "tflite::MicroMutableOpResolver<kNumOps>" in ops
    registered = re.findall(r"resolver\.(Add\w+)\(\)", ops)
    assert {"AddConv2D", "AddFullyConnected", "AddSoftmax"} <= set(registered)
    assert f"kNumOps = {len(registered)};" in ops
    if shutil.which("g++"):  # the generated C++ compiles, links, is aligned and holds the model bytes
        (tmp_path / "model_data.cc").write_text(cc)
        (tmp_path / "model_data.h").write_text(header)
        (tmp_path / "main.cc").write_text(
            '#include <cstdint>\n#include <cstdio>\n#include "model_data.h"\nint main() {\n'
            "  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16) return 3;\n"
            "  fwrite(g_model_data, 1, g_model_data_len, stdout);\n  return 0;\n}\n")
        subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-o", str(tmp_path / "dump"),
                        str(tmp_path / "main.cc"), str(tmp_path / "model_data.cc")], check=True, timeout=120)
        assert subprocess.run([str(tmp_path / "dump")], capture_output=True, check=True).stdout == model


def test_mcu_refuses_a_model_that_is_not_full_integer(runs, pkg_cli, tmp_path):
    out = tmp_path / "fallback-mcu.zip"
    line = _one_error(pkg_cli("package", runs["fallback"], "--target", "mcu", "--out", out), 2)
    assert "full-integer" in line and "dlcli validate RECIPE --target mcu" in line
    assert "Export without --int8-float-fallback" not in line  # advice that did not match what happened
    for op in ("SQUARE", "QUANTIZE", "DEQUANTIZE"):
        assert re.search(rf"\b{op} \(float32 tensors\)", line), line
    assert not out.exists()
    # the same model is fine as a LiteRT int8 package (float fallback is LiteRT's to run)
    r = pkg_cli("package", "build", runs["fallback"], "--target", "tflite-int8", "--out", tmp_path / "ok.zip")
    assert r.exit_code == 0, r.stderr


def test_failed_parity_gate_is_not_packaged(runs, pkg_cli, tmp_path):
    from dlcli.export import export_run
    from dlcli.recipe.schema import GateSpec

    run = tmp_path / "run"
    shutil.copytree(runs["fallback"], run, ignore=shutil.ignore_patterns("export"))
    result = export_run(run, ["onnx"], gate=GateSpec(max_abs_error=1e-15))
    assert result.failed
    out = tmp_path / "onnx.zip"
    line = _one_error(pkg_cli("package", run, "--target", "onnx", "--out", out), 6)
    assert "model.onnx failed its parity gate" in line and "max abs error" in line
    assert not out.exists()


def test_missing_artifacts_are_exported_and_the_export_manifest_keeps_every_one(runs, packages):
    for target in ("tflite-int8", "onnx", "onnx-int8", "saved_model"):  # each export writes its own artifacts only
        packages(target)
    manifest = json.loads((runs["cnn"] / "export" / "manifest.json").read_text())
    names = sorted(a["name"] for a in manifest["artifacts"])
    assert names == ["model.onnx", "model_float32.tflite", "model_int8.onnx", "model_int8.tflite", "saved_model"]
    assert manifest["passed"] and all(a["status"] == "passed" for a in manifest["artifacts"])


def test_bad_target_and_out_are_usage_errors(runs, pkg_cli, tmp_path):
    line = _one_error(pkg_cli("package", runs["cnn"], "--target", "tflite_int8", "--out", tmp_path / "a.zip"), 2)
    assert "did you mean 'tflite-int8'" in line
    line = _one_error(pkg_cli("package", runs["cnn"], "--target", "onnx", "--out", tmp_path / "a.tar.gz"), 2)
    assert ".zip" in line
    _one_error(pkg_cli("package", tmp_path / "nope", "--target", "onnx", "--out", tmp_path / "a.zip"), 5)
    r = pkg_cli("package", "--help")
    assert r.exit_code == 0 and "verify" in r.stdout and "build" in r.stdout


def test_archives_are_reproducible(runs, packages, pkg_cli, tmp_path):
    _archive, info = packages("tflite")
    r = pkg_cli("package", runs["cnn"], "--target", "tflite", "--out", tmp_path / "again.zip", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["sha256"] == info["sha256"]


# ------------------------------------------------------------------ tampering
def _rewrite(src, dst, change=None, add=()):
    """Copy a zip entry by entry; change(info, data) -> (info, data) or None to drop; add (ZipInfo, data)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            item = (info, zin.read(info))
            if change:
                item = change(*item)
            if item:
                zout.writestr(*item)
        for item in add:
            zout.writestr(*item)


def _symlink(name, target, system=3):
    info = zipfile.ZipInfo(name)
    info.create_system = system
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


def _fifo(name):
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    return info, ""


def _unicode_path(info, data):
    """labels.txt renamed to the model file for extractors honouring Info-ZIP's 0x7075 field."""
    if info.filename == "labels.txt":
        import struct
        import zlib

        new = b"model_int8.tflite"
        info.extra = struct.pack("<HHBI", 0x7075, 5 + len(new), 1, zlib.crc32(b"labels.txt")) + new
    return info, data


def _flip(info, data):
    if info.filename == "model_int8.tflite":
        data = data[:100] + bytes([data[100] ^ 0x01]) + data[101:]
    return info, data


def _replace_labels_with_link(info, data):
    return _symlink("labels.txt", "/etc/passwd") if info.filename == "labels.txt" else (info, data)


TAMPERING = {  # case -> (_rewrite arguments, expected in the error line)
    "changed byte": ({"change": _flip}, "model_int8.tflite changed"),
    "dotdot entry": ({"add": [(zipfile.ZipInfo("../evil-dlcli.txt"), "x")]}, "'..' component"),
    "absolute entry": ({"add": [(zipfile.ZipInfo("/tmp/evil-dlcli-abs.txt"), "x")]}, "absolute path"),
    "symlink outside": ({"add": [_symlink("docs/link", "../../../etc/passwd")]},
                        "symbolic link to '../../../etc/passwd' (outside the archive)"),
    "symlink replacing a file": ({"change": _replace_labels_with_link},
                                 "'labels.txt' is a symbolic link to '/etc/passwd' (outside the archive)"),
    "symlink inside": ({"add": [_symlink("alias.txt", "labels.txt")]}, "links are not allowed"),
    **{f"symlink made on system {n}": ({"add": [_symlink("docs/link", "/etc/passwd", n)]},
                                       "symbolic link to '/etc/passwd'") for n in (0, 5, 16, 30)},
    "unicode path field": ({"change": _unicode_path}, "Unicode path field (0x7075)"),
    "fifo entry": ({"add": [_fifo("pipe")]}, "'pipe' is a special file"),
    "missing file": ({"change": lambda i, d: None if i.filename == "labels.txt" else (i, d)}, "labels.txt is missing"),
    "extra file": ({"add": [(zipfile.ZipInfo("notes.txt"), "hello")]}, "extra file 'notes.txt'"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_verify_rejects_tampered_archives(packages, pkg_cli, tmp_path, monkeypatch, case):
    archive, _ = packages("tflite-int8")
    kwargs, expected = TAMPERING[case]
    bad = tmp_path / "bad.zip"
    _rewrite(archive, bad, **kwargs)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    line = _one_error(pkg_cli("package", "verify", bad), 8)
    assert expected in line, line
    r = pkg_cli("package", "verify", bad, "--json")
    assert r.exit_code == 8 and json.loads(r.stdout)["valid"] is False
    assert not list(work.iterdir()) and not (tmp_path / "evil-dlcli.txt").exists()  # nothing extracted
    assert not Path("/tmp/evil-dlcli-abs.txt").exists()


@pytest.mark.parametrize("tamper", ["dotdot path", "dotdot name", "absolute path", "link out"])
def test_package_refuses_a_manifest_or_artifact_that_leads_outside_the_run(runs, packages, pkg_cli, tmp_path,
                                                                            tamper):
    import shutil

    packages("tflite")  # the float32 TFLite is exported
    run = tmp_path / "run"
    shutil.copytree(runs["cnn"], run)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not yours")
    manifest_path = run / "export" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(a for a in manifest["artifacts"] if a["name"] == "model_float32.tflite")
    if tamper == "link out":
        (run / "export" / entry["path"]).unlink()
        (run / "export" / entry["path"]).symlink_to(secret)
    else:
        key, value = {"dotdot path": ("path", "../../secret.bin"), "dotdot name": ("name", "../evil.tflite"),
                      "absolute path": ("path", str(secret))}[tamper]
        entry[key] = value
    manifest_path.write_text(json.dumps(manifest))
    out = tmp_path / "p.zip"
    line = _one_error(pkg_cli("package", run, "--target", "tflite", "--out", out), 5)
    assert "export again" in line, line
    assert not out.exists()


def test_verify_rejects_a_local_header_that_names_another_file(packages, pkg_cli, tmp_path):
    archive, _ = packages("tflite-int8")
    data = archive.read_bytes()
    at = data.index(b"labels.txt")  # the first occurrence is the local header's name
    bad = tmp_path / "bad.zip"
    bad.write_bytes(data[:at] + b"labels.sh_" + data[at + 10:])
    line = _one_error(pkg_cli("package", "verify", bad), 8)
    assert "'labels.txt' is named 'labels.sh_' in its local header" in line, line


def test_verify_rejects_damaged_and_foreign_files(packages, pkg_cli, tmp_path):
    archive, _ = packages("tflite-int8")
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("model_int8.tflite")
    off = info.header_offset
    start = off + 30 + int.from_bytes(data[off + 26:off + 28], "little") + int.from_bytes(data[off + 28:off + 30], "little")
    data[start + info.compress_size // 2] ^= 0xFF  # inside the model's deflate stream
    (tmp_path / "damaged.zip").write_bytes(bytes(data))
    line = _one_error(pkg_cli("package", "verify", tmp_path / "damaged.zip"), 8)
    assert "model_int8.tflite" in line
    (tmp_path / "x.tar.gz").write_bytes(b"\x1f\x8b not a zip")
    assert "not a readable zip" in _one_error(pkg_cli("package", "verify", tmp_path / "x.tar.gz"), 8)
    _rewrite(archive, tmp_path / "nomanifest.zip", change=lambda i, d: None if i.filename == "manifest.json" else (i, d))
    assert "manifest.json is missing" in _one_error(pkg_cli("package", "verify", tmp_path / "nomanifest.zip"), 8)
