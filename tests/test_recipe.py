"""Recipe loading: safe YAML, positions in errors, suggestions, overrides, schema."""

from __future__ import annotations

import json

import pytest

from dlcli.errors import RecipeError, UsageError
from dlcli.recipe.loader import load_recipe, parse_override, recipe_from_text

GOOD = """\
version: 1
name: ok
data:
  source: synthetic
  shape: [4]
model:
  architecture: mlp
  units: [8]
train:
  epochs: 2
  optimizer:
    name: adam
    learning_rate: 0.01
"""


def load(text: str, overrides=None):
    return recipe_from_text(text, "r.yaml", overrides)


def error_of(text: str, overrides=None) -> str:
    with pytest.raises(RecipeError) as info:
        load(text, overrides)
    return str(info.value)


def test_good_recipe_fills_defaults():
    r = load(GOOD)
    assert r.name == "ok" and r.train.epochs == 2 and r.train.batch_size == 32
    assert r.model.units == [8] and r.train.optimizer.learning_rate == 0.01
    assert r.data.split.validation == 0.1


def test_yaml_syntax_error_names_line_and_column():
    msg = error_of("name: x\ndata:\n  source: [csv\n  path: a\n")
    assert msg.startswith("r.yaml:")
    line, col = msg.split(":")[1:3]
    assert int(line) >= 3 and int(col) >= 1
    assert "YAML syntax error" in msg


def test_unknown_key_suggests_the_nearest_with_line():
    text = GOOD.replace("    learning_rate: 0.01", "    lerning_rate: 0.01")
    msg = error_of(text)
    assert msg.startswith("r.yaml:13:5: train.optimizer.lerning_rate: unknown key")
    assert "did you mean 'learning_rate'" in msg


def test_wrong_type_names_key_expected_and_received():
    msg = error_of(GOOD.replace("epochs: 2", "epochs: ten"))
    assert msg.startswith("r.yaml:10:11: train.epochs:")
    assert "integer" in msg and "'ten'" in msg


def test_out_of_range_value():
    msg = error_of(GOOD.replace("epochs: 2", "epochs: 0"))
    assert "train.epochs" in msg and "greater than or equal to 1" in msg


def test_unknown_discriminator_value_suggests():
    msg = error_of(GOOD.replace("source: synthetic", "source: synthetik"))
    assert "data.source: unknown value 'synthetik', did you mean 'synthetic'?" in msg
    msg = error_of(GOOD.replace("architecture: mlp", "architecture: cnnn"))
    assert "model.architecture" in msg and "'cnn'" in msg


def test_architecture_param_typo_is_reported_under_model():
    msg = error_of(GOOD.replace("units: [8]", "unitz: [8]"))
    assert "r.yaml:8:3: model.unitz: unknown key, did you mean 'units'?" in msg


def test_model_needs_exactly_one_kind():
    msg = error_of(GOOD.replace("  architecture: mlp\n  units: [8]\n", "  units: [8]\n"))
    assert "model" in msg and "exactly one of" in msg


def test_unknown_layer_type_suggests():
    text = GOOD.replace("  architecture: mlp\n  units: [8]\n", "  layers:\n    - {type: Dense, units: 4}\n    - {type: Conv2d}\n")
    msg = error_of(text)
    assert "model.layers.1.type" in msg and "did you mean 'Conv2D'" in msg


def test_cross_field_checks():
    msg = error_of(GOOD.replace("    name: adam", "    name: adam\n    momentum: 0.9"))
    assert "train.optimizer" in msg and "momentum applies to sgd and rmsprop" in msg
    assert "needs task: reconstruction" in error_of(GOOD.replace("architecture: mlp", "architecture: autoencoder"))


def test_duplicate_keys_are_errors():
    msg = error_of(GOOD.replace("  epochs: 2\n", "  epochs: 2\n  epochs: 3\n"))
    assert "train.epochs: duplicate key" in msg


def test_unsafe_yaml_tags_are_rejected():
    msg = error_of(GOOD + "description: !!python/object/apply:os.system ['echo pwned']\n")
    assert "YAML" in msg  # the safe loader refuses python tags; nothing runs


def test_empty_and_non_mapping_recipes():
    assert "empty" in error_of("")
    assert "expected a mapping" in error_of("- a\n- b\n")


def test_unsupported_version():
    assert "unsupported recipe version 2" in error_of(GOOD.replace("version: 1", "version: 2"))


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_overrides_are_typed_yaml_scalars_and_validated():
    r = load(GOOD, ["train.epochs=5", "train.optimizer.learning_rate=3e-4", "model.units=[4, 2]",
                    "data.normalize=standard", "train.optimizer.name=sgd", "train.optimizer.momentum=0.9"])
    assert r.train.epochs == 5 and r.train.optimizer.learning_rate == pytest.approx(3e-4)
    assert r.model.units == [4, 2] and r.data.normalize.method == "standard"
    assert r.train.optimizer.momentum == 0.9
    msg = error_of(GOOD, ["train.epochs=many"])
    assert "(--set train.epochs=many)" in msg and "train.epochs" in msg
    assert "did you mean 'epochs'" in error_of(GOOD, ["train.epoch=3"])


def test_override_values_are_never_evaluated():
    r = load(GOOD, ["description=__import__('os').system('false')"])
    assert r.description == "__import__('os').system('false')"


def test_override_list_index_and_bad_syntax():
    r = load(GOOD, ["model.units.0=16"])
    assert r.model.units == [16]
    with pytest.raises(UsageError):
        parse_override("train.epochs")
    with pytest.raises(UsageError):
        load(GOOD, ["model.units.5=1"])


def test_relative_paths_resolve_against_the_recipe_file(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "r.yaml"
    p.write_text(GOOD.replace("source: synthetic\n  shape: [4]", "source: csv\n  path: ../d.csv\n  label_column: y"))
    r = load_recipe(p)
    assert r.data.path == str((tmp_path / "d.csv").resolve())


def test_json_schema_is_valid_json_and_closed():
    from dlcli.recipe.schema import json_schema_text

    schema = json.loads(json_schema_text())
    assert schema["title"].startswith("dlcli recipe")
    assert "data" in schema["properties"] and "train" in schema["required"] or "train" in schema["properties"]
    assert schema["additionalProperties"] is False


def test_xla_with_determinism_is_refused():
    msg = error_of(GOOD.replace("  epochs: 2\n", "  epochs: 2\n  jit_compile: true\n"))
    assert "deterministic: false" in msg
