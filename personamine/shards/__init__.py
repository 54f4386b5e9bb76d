"""Corpus → deterministic shards → token windows, and the one function that runs a shard."""
