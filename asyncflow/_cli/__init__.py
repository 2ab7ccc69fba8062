"""The ``asyncflow`` command line (``python -m asyncflow``)."""
