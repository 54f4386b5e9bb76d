"""Top-k buffers, mergeable stats, and the one HDF5 file (writer and reader)."""

from personamine.merge.entries import Entries
from personamine.merge.hdf5 import MineResults, read_results, write_results
from personamine.merge.stats import FeatureStats
from personamine.merge.topk import TopKBuffer

__all__ = ["Entries", "FeatureStats", "MineResults", "TopKBuffer", "read_results", "write_results"]
