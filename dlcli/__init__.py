"""dlcli: YAML recipes to trained, exported and verified Keras 3 models.

The package is a library first; :mod:`dlcli.cli` is a thin Typer layer over it.
Importing :mod:`dlcli` never imports TensorFlow or Keras: heavy modules are
imported inside the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
