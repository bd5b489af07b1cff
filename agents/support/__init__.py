"""agents/support."""
