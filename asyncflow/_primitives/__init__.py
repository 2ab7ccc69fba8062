"""The primitives a workflow calls: steps, messages, events, streams, timers, results and
handles, wait_first, continue_as_new, attributes, patch. One home per primitive, with its
workflow, step and outside variants side by side."""
