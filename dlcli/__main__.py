"""``python -m dlcli`` entry point."""

from dlcli.cli.main import run

if __name__ == "__main__":  # pragma: no cover
    run()
