"""Test statistics: JUnit XML ingest (`junit`), per-run records and summaries (`runs`),
duration-balanced shards (`sharding`) and the HTML report (`report`)."""
