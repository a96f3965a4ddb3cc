"""dlcli.data: every source, splits, normalization, labels, fingerprint, augmentation, errors.

Tiny data written into tmp_path by each test; no mocks. TensorFlow is used only to write
PNG / TFRecord inputs and by the code under test.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import textwrap

import numpy as np
import pytest

from dlcli.data import Preprocessor, load_data
from dlcli.data.pipeline import EpochData, build_augmenter
from dlcli.data.stream import ArraySplit
from dlcli.errors import DataError, RecipeError, ShapeMismatchError
from dlcli.recipe.data import AugmentSpec, PipelineSpec
from dlcli.recipe.loader import load_recipe, recipe_from_text


# ---------------------------------------------------------------- helpers
def make_recipe(tmp_path, data: str, task: str = "classification", seed: int = 3):
    model = "architecture: autoencoder" if task == "reconstruction" else "architecture: mlp"
    text = (
        f"version: 1\nname: t\nseed: {seed}\ntask: {task}\ndata:\n"
        + textwrap.indent(textwrap.dedent(data).strip("\n"), "  ")
        + f"\nmodel:\n  {model}\n"
    )
    return recipe_from_text(text, file="x.yaml", base_dir=tmp_path)


def write_csv(path, rows, header=None):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def write_png(path, pixels: np.ndarray):
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(pixels.astype(np.uint8)).numpy())


NO_SPLIT = "split: {validation: 0.0, test: 0.0}"


@pytest.fixture
def ids_npz(tmp_path):
    """60 examples whose single feature is their row id; labels 0/1/2 (20 each)."""
    x = np.arange(60, dtype=np.float32)[:, None]
    y = np.arange(60) % 3
    np.savez(tmp_path / "ids.npz", x=x, y=y)
    return tmp_path / "ids.npz"


@pytest.fixture
def image_folder(tmp_path):
    """3 classes x 3 PNGs of 6x5 RGB pixels."""
    rng = np.random.default_rng(0)
    images = {}
    for c in ("zebra", "cat", "dog"):
        for i in range(3):
            px = rng.integers(0, 256, (6, 5, 3))
            write_png(tmp_path / "img" / c / f"{c}{i}.png", px)
            images[f"{c}{i}"] = px
    return tmp_path / "img", images


# ---------------------------------------------------------------- csv
def test_csv_header_categorical_one_hot_and_string_labels(tmp_path):
    rows = [[1.5, "red", "yes"], [2.0, "green", "no"], [-1.0, "blue", "yes"], [0.5, "red", "no"]]
    write_csv(tmp_path / "t.csv", rows, header=["size", "color", "answer"])
    write_csv(tmp_path / "test.csv", [[3.0, "purple", "no"], [4.0, "blue", "yes"]], header=["size", "color", "answer"])
    b = load_data(make_recipe(tmp_path, """
        source: csv
        path: t.csv
        test_path: test.csv
        label_column: answer
        categorical_columns: [color]
        split: {validation: 0.0}
    """))
    f = b.preprocessor.featurizer
    assert f.feature_names() == ["size", "color=blue", "color=green", "color=red"]
    np.testing.assert_array_equal(b.train.x, np.array(
        [[1.5, 0, 0, 1], [2.0, 0, 1, 0], [-1.0, 1, 0, 0], [0.5, 0, 0, 1]], np.float32))
    assert b.preprocessor.labels == ["no", "yes"] and b.preprocessor.label_kind == "str"
    np.testing.assert_array_equal(b.train.y, [1, 0, 1, 0])
    # the vocabulary comes from training: an unseen category is all zeros
    np.testing.assert_array_equal(b.splits["test"].x, [[3.0, 0, 0, 0], [4.0, 1, 0, 0]])
    np.testing.assert_array_equal(b.splits["test"].y, [0, 1])
    assert b.num_classes == 2 and set(b.splits) == {"train", "test"}


@pytest.mark.parametrize("label_column", [2, -1])
def test_csv_headerless_gz_with_integer_label_column(tmp_path, label_column):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 2)).round(3)
    y = np.arange(12) % 2
    write_csv(tmp_path / "d.csv.gz", [[*r, int(c)] for r, c in zip(x, y, strict=True)])
    assert (tmp_path / "d.csv.gz").read_bytes()[:2] == b"\x1f\x8b"  # really gzip
    b = load_data(make_recipe(tmp_path, f"""
        source: csv
        path: d.csv.gz
        header: false
        label_column: {label_column}
        {NO_SPLIT}
    """))
    np.testing.assert_allclose(b.train.x, x.astype(np.float32))
    np.testing.assert_array_equal(b.train.y, y)
    assert b.preprocessor.label_kind == "int" and b.preprocessor.labels == ["0", "1"]


def test_csv_with_byte_order_mark(tmp_path):
    """Spreadsheet exports start with a UTF-8 BOM; the first column's name must not include it."""
    (tmp_path / "bom.csv").write_bytes("label,v\n1,2.5\n0,3.5\n".encode("utf-8-sig"))
    with gzip.open(tmp_path / "bom.csv.gz", "wb") as fh:
        fh.write("label,v\n1,2.5\n0,3.5\n".encode("utf-8-sig"))
    for name in ("bom.csv", "bom.csv.gz"):
        b = load_data(make_recipe(tmp_path, f"source: csv\npath: {name}\nlabel_column: label\n{NO_SPLIT}"))
        np.testing.assert_array_equal(b.train.x, [[2.5], [3.5]])
        np.testing.assert_array_equal(b.train.y, [1, 0])


def test_csv_reshape_and_feature_columns(tmp_path):
    rows = [[i, i + 1, i + 2, i + 3, 99, i % 2] for i in range(6)]
    write_csv(tmp_path / "d.csv", rows, header=["a", "b", "c", "d", "junk", "y"])
    b = load_data(make_recipe(tmp_path, f"""
        source: csv
        path: d.csv
        label_column: y
        feature_columns: [a, b, c, d]
        reshape: [2, 2, 1]
        {NO_SPLIT}
    """))
    assert b.train.x.shape == (6, 2, 2, 1)
    np.testing.assert_array_equal(b.train.x[3, :, :, 0], [[3, 4], [5, 6]])
    assert b.preprocessor.input_shape == [2, 2, 1]


# ---------------------------------------------------------------- numpy
def test_numpy_npz_with_custom_keys(tmp_path):
    x = np.random.default_rng(2).normal(size=(10, 3, 2)).astype(np.float32)
    y = np.arange(10) % 4
    np.savez(tmp_path / "d.npz", feats=x, targets=y)
    b = load_data(make_recipe(tmp_path, f"""
        source: numpy
        path: d.npz
        x_key: feats
        y_key: targets
        {NO_SPLIT}
    """))
    np.testing.assert_array_equal(b.train.x, x)
    np.testing.assert_array_equal(b.train.y, y)
    assert b.num_classes == 4 and b.preprocessor.input_shape == [3, 2]


def test_numpy_npy_with_labels_path(tmp_path):
    x = np.random.default_rng(3).normal(size=(8, 4)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    b = load_data(make_recipe(tmp_path, f"""
        source: numpy
        path: x.npy
        labels_path: y.npy
        {NO_SPLIT}
    """))
    np.testing.assert_array_equal(b.train.x, x)
    np.testing.assert_array_equal(b.train.y, y)


def test_numpy_labels_path_does_not_label_a_separate_validation_npy(tmp_path):
    """labels_path belongs to `path`: a validation .npy would silently get the training labels."""
    np.save(tmp_path / "x.npy", np.zeros((8, 2), np.float32))
    np.save(tmp_path / "y.npy", np.arange(8) % 2)
    np.save(tmp_path / "vx.npy", np.ones((8, 2), np.float32))
    with pytest.raises(RecipeError, match="validation_path.*npz"):
        make_recipe(tmp_path, """
            source: numpy
            path: x.npy
            labels_path: y.npy
            validation_path: vx.npy
        """)


def test_integer_features_with_normalization_are_normalized(tmp_path):
    """uint8 pixels with normalize: rescale must become floats, not token ids."""
    x = np.random.default_rng(4).integers(0, 256, (10, 2, 2, 1)).astype(np.uint8)
    np.savez(tmp_path / "u8.npz", x=x, y=np.arange(10) % 2)
    b = load_data(make_recipe(tmp_path, f"""
        source: numpy
        path: u8.npz
        normalize: {{method: rescale, scale: 0.00392156862745098}}
        {NO_SPLIT}
    """))
    assert b.preprocessor.input_dtype == "float32" and b.train.x.dtype == np.float32
    np.testing.assert_allclose(b.train.x, x / 255.0, rtol=1e-6)
    # without normalization integer features stay token ids
    np.savez(tmp_path / "tok.npz", x=x.reshape(10, 4), y=np.arange(10) % 2)
    b = load_data(make_recipe(tmp_path, f"source: numpy\npath: tok.npz\n{NO_SPLIT}"))
    assert b.preprocessor.input_dtype == "int32" and b.train.x.dtype == np.int32


# ---------------------------------------------------------------- image folder
@pytest.mark.parametrize("color_mode, channels", [("rgb", 3), ("grayscale", 1)])
def test_image_folder_channels_resize_and_class_names(tmp_path, image_folder, color_mode, channels):
    import tensorflow as tf

    folder, images = image_folder
    b = load_data(make_recipe(tmp_path, f"""
        source: image_folder
        path: img
        image_size: [4, 3]
        color_mode: {color_mode}
        {NO_SPLIT}
    """))
    assert b.train.x.shape == (9, 4, 3, channels) and b.train.x.dtype == np.float32
    assert b.preprocessor.labels == ["cat", "dog", "zebra"]  # sorted folder names
    np.testing.assert_array_equal(b.train.y, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    # the first file is img/cat/cat0.png: decoded and resized exactly as TensorFlow does
    img = tf.io.decode_png(tf.io.read_file(str(folder / "cat" / "cat0.png")), channels=channels)
    want = tf.image.resize(tf.cast(img, tf.float32), (4, 3)).numpy()
    np.testing.assert_allclose(b.train.x[0], want, atol=1e-4)
    if channels == 3:  # no resize: the pixels themselves
        b2 = load_data(make_recipe(tmp_path, f"source: image_folder\npath: img\nimage_size: [6, 5]\n{NO_SPLIT}"))
        np.testing.assert_array_equal(b2.train.x[0], images["cat0"])


def test_image_folder_stratified_split_keeps_classes(tmp_path, image_folder):
    b = load_data(make_recipe(tmp_path, """
        source: image_folder
        path: img
        image_size: [4, 4]
        split: {validation: 0.34, test: 0.34, stratify: true}
    """))
    for name in ("train", "validation", "test"):
        assert sorted(b.splits[name].y.tolist()) == [0, 1, 2], name


# ---------------------------------------------------------------- text
def test_text_csv_token_ids_padding_oov_and_train_only_vocabulary(tmp_path):
    write_csv(tmp_path / "train.csv", [
        ["Good movie, good fun", "pos"], ["bad movie", "neg"], ["good plot", "pos"], ["Bad bad acting", "neg"],
    ], header=["text", "label"])
    # 'zebra' dominates the test file: it would rank first if the vocabulary saw it
    write_csv(tmp_path / "test.csv", [["zebra zebra zebra good", "pos"], ["zebra bad", "neg"]], header=["text", "label"])
    b = load_data(make_recipe(tmp_path, """
        source: text
        path: train.csv
        test_path: test.csv
        max_tokens: 6
        sequence_length: 5
        split: {validation: 0.0}
    """))
    f = b.preprocessor.featurizer
    # counts: bad 3, good 3, movie 2, acting/fun/plot 1 -> ties by name; 6 - 2 reserved ids
    assert f.vocabulary == ["bad", "good", "movie", "acting"]
    assert f.vocab_size == 6 and "zebra" not in f.vocabulary
    np.testing.assert_array_equal(b.train.x, [
        [3, 4, 3, 1, 0],  # 'fun' is out of vocabulary -> 1, then padding 0
        [2, 4, 0, 0, 0],
        [3, 1, 0, 0, 0],
        [2, 2, 5, 0, 0],
    ])
    np.testing.assert_array_equal(b.splits["test"].x, [[1, 1, 1, 3, 0], [1, 2, 0, 0, 0]])
    assert b.train.x.dtype == np.int32 and b.preprocessor.input_dtype == "int32"
    assert b.preprocessor.labels == ["neg", "pos"]
    np.testing.assert_array_equal(b.train.y, [1, 0, 1, 0])
    # token ids are never normalized
    n = load_data(make_recipe(tmp_path, "source: text\npath: train.csv\nmax_tokens: 6\nsequence_length: 5\n"
                                        "normalize: standard\nsplit: {validation: 0.0, test: 0.0}"))
    np.testing.assert_array_equal(n.train.x, b.train.x)
    assert n.preprocessor.input_dtype == "int32"


def test_text_folder_per_class(tmp_path):
    for label, texts in {"neg": ["awful awful", "not good at all"], "pos": ["great", "great fun, really great"]}.items():
        (tmp_path / "txt" / label).mkdir(parents=True)
        for i, t in enumerate(texts):
            (tmp_path / "txt" / label / f"{i}.txt").write_text(t)
    (tmp_path / "txt" / "pos" / "ignored.md").write_text("great great great")
    b = load_data(make_recipe(tmp_path, f"""
        source: text
        path: txt
        sequence_length: 3
        {NO_SPLIT}
    """))
    f = b.preprocessor.featurizer
    assert f.vocabulary[:2] == ["great", "awful"]  # great 3x, awful 2x
    assert b.train.x.shape == (4, 3)
    ids = {t: i + 2 for i, t in enumerate(f.vocabulary)}
    np.testing.assert_array_equal(b.train.x[3], [2, ids["fun"], ids["really"]])  # cut at 3 tokens
    np.testing.assert_array_equal(b.train.y, [0, 0, 1, 1])
    assert b.preprocessor.labels == ["neg", "pos"]


# ---------------------------------------------------------------- tfrecord
def _write_tfrecords(path, n, start=0, compression=None, string_label=False):
    import tensorflow as tf

    opts = tf.io.TFRecordOptions(compression_type=compression) if compression else None
    rows = []
    with tf.io.TFRecordWriter(str(path), options=opts) as w:
        for i in range(start, start + n):
            f = [i * 0.5, -i * 1.0, 2.0]
            g = [i, 10 * i]
            lab = ["ant", "bee"][i % 2] if string_label else i % 3
            feat = {
                "f": tf.train.Feature(float_list=tf.train.FloatList(value=f)),
                "g": tf.train.Feature(int64_list=tf.train.Int64List(value=g)),
                "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[lab.encode()]))
                if string_label else tf.train.Feature(int64_list=tf.train.Int64List(value=[lab])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
            rows.append((f + g, lab))
    return rows


def test_tfrecord_declared_feature_spec(tmp_path):
    rows = _write_tfrecords(tmp_path / "a.tfrecord", 6)
    b = load_data(make_recipe(tmp_path, f"""
        source: tfrecord
        path: a.tfrecord
        features:
          f: {{dtype: float32, shape: [3]}}
          g: {{dtype: int64, shape: [2]}}
          label: {{dtype: int64}}
        inputs: [f, g]
        label: label
        {NO_SPLIT}
    """))
    np.testing.assert_allclose(b.train.x, np.array([r[0] for r in rows], np.float32))
    np.testing.assert_array_equal(b.train.y, [r[1] for r in rows])
    assert b.preprocessor.input_shape == [5]


def test_tfrecord_gzip_glob_and_string_labels(tmp_path):
    rows = _write_tfrecords(tmp_path / "p0.tfrecord.gz", 4, compression="GZIP", string_label=True)
    rows += _write_tfrecords(tmp_path / "p1.tfrecord.gz", 4, start=4, compression="GZIP", string_label=True)
    b = load_data(make_recipe(tmp_path, f"""
        source: tfrecord
        path: "p*.tfrecord.gz"
        compression: gzip
        features:
          f: {{dtype: float32, shape: [3]}}
          label: {{dtype: string}}
        inputs: [f]
        label: label
        {NO_SPLIT}
    """))
    np.testing.assert_allclose(b.train.x, np.array([r[0][:3] for r in rows], np.float32))
    assert b.preprocessor.labels == ["ant", "bee"]
    np.testing.assert_array_equal(b.train.y, [0, 1] * 4)


def test_tfrecord_string_input_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="'s'.*string"):
        make_recipe(tmp_path, """
            source: tfrecord
            path: a.tfrecord
            features: {s: {dtype: string}, label: {dtype: int64}}
            inputs: [s]
            label: label
        """)


def test_tfrecord_wrong_declared_shape_is_data_error(tmp_path):
    _write_tfrecords(tmp_path / "a.tfrecord", 3)
    with pytest.raises(DataError, match="a.tfrecord"):
        load_data(make_recipe(tmp_path, f"""
            source: tfrecord
            path: a.tfrecord
            features: {{f: {{dtype: float32, shape: [4]}}, label: {{dtype: int64}}}}
            inputs: [f]
            label: label
            {NO_SPLIT}
        """))


# ---------------------------------------------------------------- synthetic
def test_synthetic_classification_regression_tokens(tmp_path):
    spec = "source: synthetic\nsamples: 40\nshape: [3, 2]\nnum_classes: 3\n" + NO_SPLIT
    b = load_data(make_recipe(tmp_path, spec))
    assert b.train.x.shape == (40, 3, 2) and b.train.x.dtype == np.float32
    assert set(b.train.y.tolist()) == {0, 1, 2} and b.num_classes == 3
    again = load_data(make_recipe(tmp_path, spec))
    np.testing.assert_array_equal(again.train.x, b.train.x)
    assert again.fingerprint == b.fingerprint
    other = load_data(make_recipe(tmp_path, spec, seed=4))
    assert not np.array_equal(other.train.x, b.train.x) and other.fingerprint != b.fingerprint

    r = load_data(make_recipe(tmp_path, "source: synthetic\nkind: regression\nsamples: 30\nshape: [4]\n" + NO_SPLIT,
                              task="regression"))
    assert r.train.x.shape == (30, 4) and r.train.y.shape == (30,) and r.train.y.dtype == np.float32
    assert r.class_weight is None and r.preprocessor.labels is None

    t = load_data(make_recipe(tmp_path, "source: synthetic\nkind: tokens\nsamples: 50\nshape: [7]\n"
                                        "vocab_size: 20\nnum_classes: 2\n" + NO_SPLIT))
    assert t.train.x.shape == (50, 7) and t.train.x.dtype == np.int32
    assert t.train.x.min() >= 2 and t.train.x.max() < 20  # 0/1 are padding/OOV
    assert t.preprocessor.input_dtype == "int32"


# ---------------------------------------------------------------- splits
def _ids(split):
    return split.x[:, 0].astype(int).tolist()


def test_fraction_split_reproducible_disjoint_covering(tmp_path, ids_npz):
    data = "source: numpy\npath: ids.npz\nsplit: {validation: 0.2, test: 0.1, stratify: false}"
    a, b = load_data(make_recipe(tmp_path, data)), load_data(make_recipe(tmp_path, data))
    ids = {k: _ids(v) for k, v in a.splits.items()}
    assert ids == {k: _ids(v) for k, v in b.splits.items()}
    assert a.sizes == {"train": 42, "validation": 12, "test": 6}
    assert sorted(ids["train"] + ids["validation"] + ids["test"]) == list(range(60))
    # labels travel with their rows
    for s in a.splits.values():
        np.testing.assert_array_equal(s.y, np.asarray(_ids(s)) % 3)
    c = load_data(make_recipe(tmp_path, data, seed=99))
    assert _ids(c.splits["validation"]) != ids["validation"]


def test_stratified_split_keeps_every_class(tmp_path):
    y = np.array([0] * 30 + [1] * 10 + [2] * 5)
    np.savez(tmp_path / "imb.npz", x=np.arange(45, dtype=np.float32)[:, None], y=y)
    b = load_data(make_recipe(tmp_path, "source: numpy\npath: imb.npz\nsplit: {validation: 0.2, test: 0.2}"))
    for name, s in b.splits.items():
        assert set(s.y.tolist()) == {0, 1, 2}, name
    np.testing.assert_array_equal(np.bincount(b.splits["validation"].y), [6, 2, 1])
    np.testing.assert_array_equal(np.bincount(b.train.y), [18, 6, 3])


def test_separate_validation_and_test_paths(tmp_path, ids_npz):
    np.savez(tmp_path / "val.npz", x=np.full((4, 1), 100, np.float32), y=np.array([0, 1, 2, 0]))
    np.savez(tmp_path / "tst.npz", x=np.full((3, 1), 200, np.float32), y=np.array([2, 2, 1]))
    b = load_data(make_recipe(tmp_path, """
        source: numpy
        path: ids.npz
        validation_path: val.npz
        test_path: tst.npz
        split: {validation: 0.5, test: 0.3}
    """))
    assert b.sizes == {"train": 60, "validation": 4, "test": 3}  # the fractions are not used
    assert _ids(b.train) == list(range(60))
    np.testing.assert_array_equal(b.splits["validation"].x, 100)
    np.testing.assert_array_equal(b.splits["test"].y, [2, 2, 1])


def test_validation_path_with_test_fraction(tmp_path, ids_npz):
    np.savez(tmp_path / "val.npz", x=np.full((4, 1), 100, np.float32), y=np.array([0, 1, 2, 0]))
    b = load_data(make_recipe(tmp_path, """
        source: numpy
        path: ids.npz
        validation_path: val.npz
        split: {validation: 0.5, test: 0.1}
    """))
    assert b.sizes == {"train": 54, "validation": 4, "test": 6}
    assert sorted(_ids(b.train) + _ids(b.splits["test"])) == list(range(60))


# ---------------------------------------------------------------- normalization
def test_normalization_fitted_on_training_split_only(tmp_path):
    rng = np.random.default_rng(5)
    train = rng.normal(0.0, 1.0, (20, 3)).astype(np.float32)
    test = rng.normal(50.0, 9.0, (10, 3)).astype(np.float32)
    np.savez(tmp_path / "tr.npz", x=train, y=np.arange(20) % 2)
    np.savez(tmp_path / "te.npz", x=test, y=np.arange(10) % 2)
    b = load_data(make_recipe(tmp_path, """
        source: numpy
        path: tr.npz
        test_path: te.npz
        normalize: standard
        split: {validation: 0.0}
    """))
    n = b.preprocessor.normalize
    np.testing.assert_allclose(n["mean"], train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(n["std"], train.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(b.splits["test"].x, (test - train.mean(0)) / train.std(0), rtol=1e-4)
    assert b.splits["test"].x.mean() > 20  # the test split is not re-centred


def test_normalization_with_fraction_split_uses_train_rows(tmp_path):
    x = np.arange(40, dtype=np.float32)[:, None] * np.array([[1.0, -2.0]], np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 2)
    b = load_data(make_recipe(tmp_path, """
        source: numpy
        path: d.npz
        normalize: {method: minmax}
        split: {validation: 0.25, test: 0.25, stratify: false}
    """))
    # recover the training rows' raw values: minmax is invertible
    n = b.preprocessor.normalize
    raw_train = b.train.x * np.asarray(n["range"]) + np.asarray(n["min"])
    np.testing.assert_allclose(n["min"], raw_train.min(axis=0), atol=1e-4)
    np.testing.assert_allclose(b.train.x.min(0), [0, 0], atol=1e-6)
    np.testing.assert_allclose(b.train.x.max(0), [1, 1], atol=1e-6)
    assert n["min"][0] > 0 or n["range"][0] < 39  # the full data (0..39) was not used


@pytest.mark.parametrize("axis, stat_shape, reduce", [
    ("feature", (2, 2, 3), (0,)),
    ("channel", (3,), (0, 1, 2)),
    ("global", (), None),
])
def test_standard_and_minmax_axes(tmp_path, axis, stat_shape, reduce):
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(16, 2, 2, 3)) * np.array([1.0, 10.0, 100.0]) + np.array([0.0, 5.0, -50.0])).astype(np.float32)
    np.savez(tmp_path / "img.npz", x=x, y=np.arange(16) % 2)
    b = load_data(make_recipe(tmp_path, f"""
        source: numpy
        path: img.npz
        normalize: {{method: standard, axis: {axis}}}
        {NO_SPLIT}
    """))
    n = b.preprocessor.normalize
    assert np.shape(n["mean"]) == stat_shape and np.shape(n["std"]) == stat_shape
    np.testing.assert_allclose(n["mean"], x.mean(axis=reduce), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b.train.x.mean(axis=reduce), 0.0, atol=1e-4)
    np.testing.assert_allclose(b.train.x.std(axis=reduce), 1.0, atol=1e-4)

    m = load_data(make_recipe(tmp_path, f"""
        source: numpy
        path: img.npz
        normalize: {{method: minmax, axis: {axis}}}
        {NO_SPLIT}
    """))
    assert np.shape(m.preprocessor.normalize["min"]) == stat_shape
    np.testing.assert_allclose(m.train.x.min(axis=reduce), 0.0, atol=1e-6)
    np.testing.assert_allclose(m.train.x.max(axis=reduce), 1.0, atol=1e-5)


def test_rescale_and_constant_feature(tmp_path):
    x = np.array([[0.0, 7.0], [8.0, 7.0], [16.0, 7.0], [4.0, 7.0]], np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]))
    b = load_data(make_recipe(tmp_path, f"source: numpy\npath: d.npz\n"
                                        f"normalize: {{method: rescale, scale: 0.0625, offset: -0.5}}\n{NO_SPLIT}"))
    np.testing.assert_allclose(b.train.x, x * 0.0625 - 0.5)
    s = load_data(make_recipe(tmp_path, f"source: numpy\npath: d.npz\nnormalize: standard\n{NO_SPLIT}"))
    assert s.preprocessor.normalize["std"][1] == 1.0  # a constant column is not divided by 0
    np.testing.assert_allclose(s.train.x[:, 1], 0.0)


# ---------------------------------------------------------------- labels and class weights
def test_class_weight_balanced_and_explicit(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 1), np.float32), y=np.array([0, 0, 0, 0, 0, 0, 1, 1]))
    b = load_data(make_recipe(tmp_path, f"source: numpy\npath: d.npz\nclass_weight: balanced\n{NO_SPLIT}"))
    assert b.class_weight == pytest.approx({0: 8 / (2 * 6), 1: 8 / (2 * 2)})
    c = load_data(make_recipe(tmp_path, f"source: numpy\npath: d.npz\nclass_weight: {{0: 1.0, 1: 3.0}}\n{NO_SPLIT}"))
    assert c.class_weight == {0: 1.0, 1: 3.0}
    assert load_data(make_recipe(tmp_path, f"source: numpy\npath: d.npz\n{NO_SPLIT}")).class_weight is None
    with pytest.raises(DataError, match=r"class_weight.*\[5\]"):
        load_data(make_recipe(tmp_path, f"source: numpy\npath: d.npz\nclass_weight: {{5: 1.0}}\n{NO_SPLIT}"))


def test_integer_labels_are_class_ids_and_label_names(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1), np.float32), y=np.array([5, 0, 2, 5]))
    b = load_data(make_recipe(tmp_path, f"source: numpy\npath: d.npz\n{NO_SPLIT}"))
    assert b.preprocessor.label_kind == "int" and b.num_classes == 6
    np.testing.assert_array_equal(b.train.y, [5, 0, 2, 5])
    names = "[a, b, c, d, e, f, g]"
    n = load_data(make_recipe(tmp_path, f"source: numpy\npath: d.npz\nlabel_names: {names}\n{NO_SPLIT}"))
    assert n.preprocessor.labels == list("abcdefg") and n.num_classes == 7
    with pytest.raises(DataError, match="label_names"):
        load_data(make_recipe(tmp_path, f"source: numpy\npath: d.npz\nlabel_names: [a, b]\n{NO_SPLIT}"))


def test_class_ids_beyond_training_classes_are_rejected(tmp_path):
    np.savez(tmp_path / "tr.npz", x=np.zeros((6, 1), np.float32), y=np.array([0, 1, 2, 0, 1, 2]))
    np.savez(tmp_path / "te.npz", x=np.zeros((2, 1), np.float32), y=np.array([1, 7]))
    data = "source: numpy\npath: tr.npz\ntest_path: te.npz\nsplit: {validation: 0.0}"
    with pytest.raises(DataError, match=r"test split has class ids \[7\] outside 0..2"):
        load_data(make_recipe(tmp_path, data))
    names = "\nlabel_names: [a, b, c, d, e, f, g, h]"
    assert load_data(make_recipe(tmp_path, data + names)).splits["test"].y.tolist() == [1, 7]


def test_string_labels_map_to_sorted_names_and_unknown_test_label(tmp_path):
    write_csv(tmp_path / "tr.csv", [[1, "b"], [2, "c"], [3, "a"], [4, "b"]], header=["v", "y"])
    write_csv(tmp_path / "te.csv", [[1, "d"]], header=["v", "y"])
    b = load_data(make_recipe(tmp_path, f"source: csv\npath: tr.csv\nlabel_column: y\n{NO_SPLIT}"))
    assert b.preprocessor.labels == ["a", "b", "c"]
    np.testing.assert_array_equal(b.train.y, [1, 2, 0, 1])
    with pytest.raises(DataError, match=r"not seen in training: \['d'\]"):
        load_data(make_recipe(tmp_path, "source: csv\npath: tr.csv\ntest_path: te.csv\nlabel_column: y\n"
                                        "split: {validation: 0.0}"))


def test_regression_and_reconstruction_targets(tmp_path):
    write_csv(tmp_path / "r.csv", [[1, 2, 0.5], [3, 4, -1.25], [5, 6, 2.0]], header=["a", "b", "t"])
    r = load_data(make_recipe(tmp_path, f"source: csv\npath: r.csv\nlabel_column: t\n{NO_SPLIT}", task="regression"))
    np.testing.assert_array_equal(r.train.y, np.array([0.5, -1.25, 2.0], np.float32))
    assert r.output_shape() == ()
    a = load_data(make_recipe(tmp_path, f"source: csv\npath: r.csv\nlabel_column: t\nnormalize: standard\n{NO_SPLIT}",
                              task="reconstruction"))
    np.testing.assert_array_equal(a.train.y, a.train.x)


# ---------------------------------------------------------------- fingerprint
def test_fingerprint_stable_and_sensitive_to_one_byte(tmp_path):
    write_csv(tmp_path / "d.csv", [[i, i % 2] for i in range(10)], header=["v", "y"])
    r = make_recipe(tmp_path, "source: csv\npath: d.csv\nlabel_column: y\nsplit: {validation: 0.2, test: 0.2}")
    fp = load_data(r).fingerprint
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert load_data(r).fingerprint == fp
    data = bytearray((tmp_path / "d.csv").read_bytes())
    i = data.index(b"7")
    data[i : i + 1] = b"8"
    (tmp_path / "d.csv").write_bytes(bytes(data))
    assert load_data(r).fingerprint != fp


def test_fingerprint_covers_labels_file_and_class_folders(tmp_path, image_folder):
    np.save(tmp_path / "x.npy", np.zeros((6, 2), np.float32))
    np.save(tmp_path / "y.npy", np.array([0, 1, 0, 1, 0, 1]))
    r = make_recipe(tmp_path, f"source: numpy\npath: x.npy\nlabels_path: y.npy\n{NO_SPLIT}")
    fp = load_data(r).fingerprint
    np.save(tmp_path / "y.npy", np.array([1, 1, 0, 1, 0, 1]))
    assert load_data(r).fingerprint != fp

    # moving the last cat image into dog/ relabels it; sorted order of files stays the same
    r = make_recipe(tmp_path, f"source: image_folder\npath: img\nimage_size: [4, 4]\n{NO_SPLIT}")
    before = load_data(r)
    shutil.move(tmp_path / "img" / "cat" / "cat2.png", tmp_path / "img" / "dog" / "cat2.png")
    after = load_data(r)
    assert before.train.y.tolist() != after.train.y.tolist()
    assert after.fingerprint != before.fingerprint


# ---------------------------------------------------------------- augmentation and pipelines
def _collect(ds):
    xs, ys = zip(*ds.as_numpy_iterator(), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _epoch(x, y, batch, *, aug_spec=None, seed=1, pipeline=None):
    """The trainer's pipeline (EpochData) over in-memory arrays, with ``aug_spec``'s augmenter."""
    make = None
    if aug_spec is not None:
        make = lambda s: build_augmenter(aug_spec, x.shape[1:], (0.0, 1.0), s)
    return EpochData(ArraySplit(x, y), batch, pipeline=pipeline or PipelineSpec(), seed=seed, make_augment=make)


def test_augmentation_changes_training_batches_only(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, (12, 4, 4, 3)).astype(np.float32)
    y = np.arange(12, dtype=np.int64)
    spec = AugmentSpec(flip="both", rotation=0.1, noise=0.05)
    assert build_augmenter(spec, x.shape[1:], (0.0, 1.0), seed=1) is not None
    train = _epoch(x, y, 4, aug_spec=spec)
    tx, ty = _collect(train.dataset(0))
    assert sorted(ty.tolist()) == list(range(12))
    assert tx.shape == x.shape and tx.dtype == np.float32
    for xi, yi in zip(tx, ty, strict=True):
        assert not np.allclose(xi, x[yi], atol=1e-3)  # every training example is changed
    tx2, ty2 = _collect(train.dataset(1))  # the next epoch draws new augmentations
    assert not np.allclose(tx2[np.argsort(ty2)], tx[np.argsort(ty)])
    # validation / test batches: no shuffle, no augmentation, exactly the inputs
    vx, vy = _collect(ArraySplit(x, y).dataset(5))
    np.testing.assert_array_equal(vx, x)
    np.testing.assert_array_equal(vy, y)
    # training without augmentation: a permutation of the inputs
    px, py = _collect(_epoch(x, y, 4).dataset(0))
    np.testing.assert_array_equal(px, x[py])


def test_augmentation_noise_on_features_and_refusals(tmp_path):
    assert build_augmenter(AugmentSpec(), (4,), (0.0, 1.0), 0) is None
    x = np.zeros((6, 4), np.float32)
    noise = AugmentSpec(noise=0.5)
    tx, _ = _collect(_epoch(x, np.zeros(6, np.int64), 3, aug_spec=noise).dataset(0))
    assert tx.shape == (6, 4) and tx.std() > 0.1
    with pytest.raises(DataError, match=r"need images.*\(4,\)"):
        build_augmenter(AugmentSpec(flip="horizontal"), (4,), (0.0, 1.0), 0)
    with pytest.raises(DataError, match="integers"):
        _epoch(np.ones((4, 5), np.int32), np.zeros(4, np.int64), 2, aug_spec=noise)


def test_recipe_augment_on_non_image_data_raises(tmp_path, write_recipe):
    path = write_recipe("""
        name: t
        data: {source: synthetic, samples: 20, shape: [5], augment: {zoom: 0.2}}
        model: {architecture: mlp}
    """)
    recipe = load_recipe(path)
    b = load_data(recipe)
    with pytest.raises(DataError, match="data.augment"):
        build_augmenter(recipe.data.augment, tuple(b.preprocessor.input_shape), (0.0, 1.0), recipe.seed)


def test_shuffle_is_seeded_and_can_be_disabled(tmp_path):
    x = np.arange(20, dtype=np.float32)[:, None]
    y = np.arange(20)
    a = _collect(_epoch(x, y, 5, seed=3).dataset(0))[1]
    b = _collect(_epoch(x, y, 5, seed=3).dataset(0))[1]
    np.testing.assert_array_equal(a, b)
    assert a.tolist() != list(range(20))
    c = _collect(_epoch(x, y, 5, pipeline=PipelineSpec(shuffle_buffer=0)).dataset(0))[1]
    assert c.tolist() == list(range(20))


# ---------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: data file not found"):
        load_data(make_recipe(tmp_path, "source: csv\npath: nope.csv\nlabel_column: y"))
    with pytest.raises(DataError, match="nofolder"):
        load_data(make_recipe(tmp_path, "source: image_folder\npath: nofolder\nimage_size: [4, 4]"))


def test_empty_and_header_only_csv(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        load_data(make_recipe(tmp_path, "source: csv\npath: empty.csv\nlabel_column: y"))
    (tmp_path / "head.csv").write_text("a,y\n")
    with pytest.raises(DataError, match=r"head\.csv: no data rows"):
        load_data(make_recipe(tmp_path, "source: csv\npath: head.csv\nlabel_column: y"))


def test_non_numeric_value_names_column_and_file_row(tmp_path):
    rows = [[i, i * 2, i % 2] for i in range(20)]
    rows[14][1] = "oops"  # data row 15, line 16 of the file
    write_csv(tmp_path / "bad.csv", rows, header=["a", "b", "y"])
    with pytest.raises(DataError) as e:
        load_data(make_recipe(tmp_path, "source: csv\npath: bad.csv\nlabel_column: y"))
    msg = str(e.value)
    assert "bad.csv" in msg and "column 'b'" in msg and "row 15" in msg and "line 16" in msg and "'oops'" in msg
    # the same column listed as categorical is one-hot encoded instead
    b = load_data(make_recipe(tmp_path, f"source: csv\npath: bad.csv\nlabel_column: y\n"
                                        f"categorical_columns: [b]\n{NO_SPLIT}"))
    assert b.train.x.shape == (20, 1 + 20)


def test_ragged_csv_row(tmp_path):
    (tmp_path / "r.csv").write_text("a,b,y\n1,2,0\n3,1\n")
    with pytest.raises(DataError, match=r"r\.csv: line 3: 2 fields, expected 3"):
        load_data(make_recipe(tmp_path, "source: csv\npath: r.csv\nlabel_column: y"))


def test_missing_label_column(tmp_path):
    write_csv(tmp_path / "d.csv", [[1, 0]], header=["a", "target"])
    with pytest.raises(DataError, match=r"d\.csv: label column 'label' not found"):
        load_data(make_recipe(tmp_path, "source: csv\npath: d.csv\nlabel_column: label"))
    with pytest.raises(DataError, match=r"d\.csv: column 'text' not found"):
        load_data(make_recipe(tmp_path, "source: text\npath: d.csv"))
    write_csv(tmp_path / "h.csv", [[1, 0]])
    with pytest.raises(DataError, match="label column '7' not found"):
        load_data(make_recipe(tmp_path, "source: csv\npath: h.csv\nheader: false\nlabel_column: 7"))
    with pytest.raises(DataError, match="label column '-5' not found"):
        load_data(make_recipe(tmp_path, "source: csv\npath: h.csv\nheader: false\nlabel_column: -5"))


def test_empty_split(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 1), np.float32), y=np.arange(10) % 2)
    with pytest.raises(DataError, match=r"validation split is empty \(10 examples in .*d\.npz; raise data.split.validation"):
        load_data(make_recipe(tmp_path, "source: numpy\npath: d.npz\nsplit: {validation: 0.01, test: 0.3}"))
    np.savez(tmp_path / "two.npz", x=np.zeros((2, 1), np.float32), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"training split is empty \(2 examples"):
        load_data(make_recipe(tmp_path, "source: numpy\npath: two.npz\n"
                                        "split: {validation: 0.3, test: 0.45, stratify: false}"))
    np.savez(tmp_path / "none.npz", x=np.zeros((0, 1), np.float32), y=np.zeros(0))
    with pytest.raises(DataError, match=r"none\.npz: the validation data set is empty"):
        load_data(make_recipe(tmp_path, "source: numpy\npath: d.npz\nvalidation_path: none.npz"))


def test_reshape_that_does_not_fit(tmp_path):
    write_csv(tmp_path / "d.csv", [[1, 2, 3, 0], [4, 5, 6, 1]], header=["a", "b", "c", "y"])
    with pytest.raises(ShapeMismatchError, match=r"reshape.*\(3,\).*\(2, 2\)"):
        load_data(make_recipe(tmp_path, f"source: csv\npath: d.csv\nlabel_column: y\nreshape: [2, 2]\n{NO_SPLIT}"))


def test_numpy_errors_name_the_file(tmp_path):
    np.savez(tmp_path / "d.npz", data=np.zeros((3, 1)))
    with pytest.raises(DataError, match=r"d\.npz: no array 'x' \(has: data\)"):
        load_data(make_recipe(tmp_path, "source: numpy\npath: d.npz"))
    np.save(tmp_path / "x.npy", np.zeros((5, 2)))
    np.save(tmp_path / "y.npy", np.zeros(4))
    with pytest.raises(DataError, match=r"x\.npy: 5 examples but 4 labels"):
        load_data(make_recipe(tmp_path, "source: numpy\npath: x.npy\nlabels_path: y.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"junk\.npy: cannot read NumPy data"):
        load_data(make_recipe(tmp_path, "source: numpy\npath: junk.npy"))


def test_undecodable_image(tmp_path, image_folder):
    (tmp_path / "img" / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png: cannot decode image"):
        load_data(make_recipe(tmp_path, f"source: image_folder\npath: img\nimage_size: [4, 4]\n{NO_SPLIT}"))


# ---------------------------------------------------------------- Preprocessor round trip
def _roundtrip(pre: Preprocessor) -> Preprocessor:
    return Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))


def test_preprocessor_roundtrip_tabular_and_text(tmp_path):
    rows = [[i * 1.5, ["x", "y", "z"][i % 3], ["lo", "hi"][i % 2]] for i in range(12)]
    write_csv(tmp_path / "d.csv", rows, header=["n", "cat", "y"])
    b = load_data(make_recipe(tmp_path, "source: csv\npath: d.csv\nlabel_column: y\ncategorical_columns: [cat]\n"
                                        "normalize: standard\nsplit: {validation: 0.25, test: 0.0}"))
    p2 = _roundtrip(b.preprocessor)
    raw = {"n": ["0", "3.5", "-2"], "cat": ["z", "x", "w"]}
    np.testing.assert_array_equal(p2.transform_x(raw), b.preprocessor.transform_x(raw))
    np.testing.assert_array_equal(p2.encode_y(np.array(["hi", "lo"], object), "test"), [0, 1])
    assert p2.to_dict() == json.loads(json.dumps(b.preprocessor.to_dict()))

    write_csv(tmp_path / "t.csv", [["a b c", "p"], ["b c d e", "q"], ["c", "p"]], header=["text", "label"])
    t = load_data(make_recipe(tmp_path, f"source: text\npath: t.csv\nsequence_length: 4\n{NO_SPLIT}"))
    t.preprocessor.save(tmp_path / "pre.json")
    t2 = Preprocessor.load(tmp_path / "pre.json")
    texts = ["c c unknown a", "e"]
    np.testing.assert_array_equal(t2.transform_x(texts), t.preprocessor.transform_x(texts))
    assert t2.transform_x(texts).dtype == np.int32


def test_preprocessor_roundtrip_image_and_channel_norm(tmp_path, image_folder):
    b = load_data(make_recipe(tmp_path, "source: image_folder\npath: img\nimage_size: [3, 3]\n"
                                        "normalize: {method: standard, axis: channel}\n" + NO_SPLIT))
    p2 = _roundtrip(b.preprocessor)
    files = [str(tmp_path / "img" / "dog" / "dog1.png"), str(tmp_path / "img" / "cat" / "cat0.png")]
    np.testing.assert_array_equal(p2.transform_x(files), b.preprocessor.transform_x(files))
    assert p2.labels == ["cat", "dog", "zebra"] and p2.input_shape == [3, 3, 3]
    with pytest.raises(DataError, match="cannot read preprocessing"):
        (tmp_path / "bad.json").write_text("{}")
        Preprocessor.load(tmp_path / "bad.json")


def test_transform_rejects_examples_of_another_shape(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3), np.float32), y=np.arange(4) % 2)
    b = load_data(make_recipe(tmp_path, f"source: numpy\npath: d.npz\n{NO_SPLIT}"))
    with pytest.raises(ShapeMismatchError, match=r"\(5,\).*\(3,\)"):
        _roundtrip(b.preprocessor).transform_x(np.zeros((2, 5), np.float32))
