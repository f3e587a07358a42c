"""The plugin host and the lowering API: hook specs, the per-export plugin manager and registry,
the graph view a lowering reads, the context it writes through, and node-building helpers."""
