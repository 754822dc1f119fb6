"""The core: no Lightning, no YAML. Registries, atomic file output, shared types."""
