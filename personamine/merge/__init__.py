"""Per-shard buffers and their associative merge: top-k windows, interval samples, non-activating examples and
statistics, all plain numpy. The file they are written to is ``personamine.files.mine``."""

from personamine.merge.entries import Entries
from personamine.merge.stats import FeatureStats
from personamine.merge.topk import TopKBuffer

__all__ = ["Entries", "FeatureStats", "TopKBuffer"]
