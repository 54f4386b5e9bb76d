"""Execution backends. Each runs the same shard function (`personamine.shards.run.run_shard`)."""
