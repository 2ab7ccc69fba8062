"""The process-level core under everything that touches the database: the waiter registry
and the one wait primitive, health monitors, OpenTelemetry plumbing, process identity."""
