"""Storage: the driver and its one error-mapping seam, the pool, migrations, the store's named
operations and their SQL (``sql``), group commit, the LISTEN connection and the executor's
lease, the embedded server. The only layer that imports asyncpg."""
