"""The front: launch and shutdown, the decorators, the module-level functions, ``AsyncFlow``
and ``Client``. Everything the public namespace re-exports comes from here or from the values
at the package root."""
