"""The Typer CLI: a thin layer that parses, calls one library function and renders."""
