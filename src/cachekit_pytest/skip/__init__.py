"""``--skip-passed``: selecting the tests that passed on the same code, on xdist workers
too, and recording this run's passes."""
