"""``python -m asyncflow``: the command line (see :mod:`asyncflow._cli.main`)."""

from ._cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
