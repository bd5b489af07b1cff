"""agents/demo_model."""
