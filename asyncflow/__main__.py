"""``python -m asyncflow``: the command line (see :mod:`asyncflow._cli`)."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
