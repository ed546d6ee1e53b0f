"""The core's committed benchmarks; see README.md. Not part of the installed package."""
