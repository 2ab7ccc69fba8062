"""The engine: what a launched app shares (runtime), the running workflow's context, the
journal, the runner (executions in the task group), recovery (supervisor) and queue dispatch."""
