"""Operations over many workflows, built on the engine and the primitives: queues and debounce,
schedules and deadlines, history replay and the export format, adoption of stranded
workflows, retention, and the administrative operations shared by the app and the Client."""
