"""Docs that are generated or promised stay true."""

from __future__ import annotations

from conftest import REPO


def test_recipe_reference_is_current():
    from dlcli.recipe.docs import recipe_reference

    current = (REPO / "docs" / "recipes.md").read_text()
    assert current == recipe_reference(), "docs/recipes.md is stale: run `make docs`"


def test_every_schema_key_is_documented():
    from dlcli.recipe.schema import Recipe

    text = (REPO / "docs" / "recipes.md").read_text()
    for name in Recipe.model_fields:
        assert f"| `{name}` |" in text


def test_readme_names_the_two_setup_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci


def test_shipped_data_has_license_notes():
    for folder in ("digits", "breast_cancer"):
        assert (REPO / "data" / folder / "LICENSE.md").read_text().count("CC BY 4.0") >= 1
