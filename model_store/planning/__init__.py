"""Decisions from facts and the catalog: the text and image planners, the fit search, lifecycle timings and scaling, the KV allocator, the performance model, edge limits. Never imports store/."""
