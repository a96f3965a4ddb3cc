"""`dlcli predict` on every kind of INPUT: image file, image folder, .txt, .csv, .npz."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlcli.recipe.loader import load_recipe
from dlcli.train import train


def _png(path, value: int):
    import tensorflow as tf

    img = np.full((12, 12, 3), value, np.uint8)
    img[::2] = 255 - value
    path.write_bytes(tf.io.encode_png(img).numpy())


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("img")
    for k, (cls, value) in enumerate((("cat", 20), ("dog", 200))):
        (root / "images" / cls).mkdir(parents=True)
        for i in range(12):
            _png(root / "images" / cls / f"{i}.png", value + i)
    (root / "r.yaml").write_text(
        "name: img\nseed: 1\ndata: {source: image_folder, path: images, image_size: [8, 8], "
        "normalize: {method: rescale, scale: 0.00392}, split: {validation: 0.2, test: 0.2}}\n"
        "model: {architecture: cnn, filters: [4]}\n"
        "train: {epochs: 3, batch_size: 8, optimizer: {name: adam, learning_rate: 0.02}, callbacks: {tensorboard: false}}\n")
    train(load_recipe(root / "r.yaml"), root / "run", progress="none")
    return root


def test_predict_image_file_and_folder(image_run, cli):
    r = cli("predict", image_run / "run", image_run / "images" / "dog" / "3.png", "--json")
    assert r.exit_code == 0, r.stderr
    preds = json.loads(r.stdout)["predictions"]
    assert len(preds) == 1 and preds[0]["label"] in ("cat", "dog")
    r = cli("predict", image_run / "run", image_run / "images" / "cat", "--json", "--top-k", "2")
    preds = json.loads(r.stdout)["predictions"]
    assert len(preds) == 12 and all({t["label"] for t in p["top"]} == {"cat", "dog"} for p in preds)


def test_predict_text_lines_and_csv(tmp_path, cli):
    rows = ["text,label"] + [f"{'good great fine' if i % 2 else 'bad awful poor'} movie {i},{'pos' if i % 2 else 'neg'}"
                             for i in range(60)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "r.yaml").write_text(
        "name: txt\nseed: 1\ndata: {source: text, path: t.csv, max_tokens: 30, sequence_length: 6}\n"
        "model: {layers: [{type: Embedding, input_dim: 30, output_dim: 4}, {type: GlobalAveragePooling1D}, "
        "{type: Dense, units: 2, activation: softmax}]}\n"
        "train: {epochs: 8, batch_size: 8, optimizer: {name: adam, learning_rate: 0.05}, callbacks: {tensorboard: false}}\n")
    train(load_recipe(tmp_path / "r.yaml"), tmp_path / "run", progress="none")
    (tmp_path / "in.txt").write_text("a great good film\n\nawful bad\n")
    r = cli("predict", tmp_path / "run", tmp_path / "in.txt", "--json")
    assert r.exit_code == 0, r.stderr
    labels = [p["label"] for p in json.loads(r.stdout)["predictions"]]
    assert labels == ["pos", "neg"]
    r = cli("predict", tmp_path / "run", tmp_path / "t.csv", "--json")
    assert len(json.loads(r.stdout)["predictions"]) == 60


def test_predict_npz_and_wrong_shape(tiny_recipe, tmp_path, cli):
    train(load_recipe(tiny_recipe), tmp_path / "run", progress="none")
    np.savez(tmp_path / "x.npz", x=np.zeros((3, 6), np.float32))
    r = cli("predict", tmp_path / "run", tmp_path / "x.npz", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)["predictions"]) == 3
    np.save(tmp_path / "bad.npy", np.zeros((2, 5), np.float32))
    r = cli("predict", tmp_path / "run", tmp_path / "bad.npy")
    assert r.exit_code == 3 and "(5,)" in r.stderr and "(6,)" in r.stderr
