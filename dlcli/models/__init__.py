"""Build a Keras model from the recipe's ``model:`` section and check it fits the data."""

from __future__ import annotations

from dlcli.models.builder import build_model, check_model_fits_data, context_from_data

__all__ = ["build_model", "check_model_fits_data", "context_from_data"]
