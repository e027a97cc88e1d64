"""``python -m missive``: the same as the ``missive`` command."""

from missive.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
