"""pipelines/runtime."""
