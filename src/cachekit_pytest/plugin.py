"""The pytest plugin (registered under pytest11)."""
