"""asyncflow's benchmark suite: ``python -m benchmarks`` (also ``asyncflow bench``).

Every run first measures the floor (plain asyncpg on the same server), then runs each scenario
in a fresh database of its own, prints a table of figures with their targets and their ratio to
the floor, and writes a JSON file of results. See ``docs/readme_benchmarks.md``.
"""

RESULTS_FORMAT = 2
