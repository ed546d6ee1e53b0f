"""``--skip-passed``: selecting the tests that passed on the same code, on xdist workers
too, and recording this run's passes (the feature is described in `run`).

- `run`: the pytest process or xdist controller (`configure`, `SkipRun`): reads the
  records once, watches the reports, records the passes;
- `collect`: the collection hooks (`Collecting`), fed a `CollectPlan`;
- `selection`: pure decisions (`Decision`, `SkipSelection`, `select`, whole-file rules);
- `keys`: the test files' keys (`Keys`, what else enters them);
- `wire` and `worker`: what the controller sends an xdist worker, and the worker side;
- `store`: the records in the store, through the run's `cachekit.session.Session`;
- `summary`: what the run prints.

Nothing here is imported unless the feature is on (`cachekit_pytest.plugin`).
"""
