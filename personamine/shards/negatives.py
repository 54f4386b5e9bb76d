"""Gathering non-activating examples on the device, batch by batch (the buffer: ``personamine.merge.negatives``).

Nearly every window is a negative of nearly every feature, so nothing dense ever reaches the host: per batch and
feature chunk, the batch's candidate windows (``batch_candidates``: by sampling key, one per distinct content) are
tested on the device against each feature's key limit (the largest key its buffer keeps once full), and only the
first ``m`` that pass per feature are copied: at most m x features entries in the first batch, then ever fewer, as
the limits fall towards the corpus's m smallest keys.
"""

from __future__ import annotations

import numpy as np
import torch

from personamine.merge.entries import Entries, WindowTable
from personamine.merge.negatives import KEY_NONE, NegativeBuffer, batch_candidates, negative_entries


class NegativeGatherer:
    def __init__(self, n_features: int, per_feature: int, dedupe: bool, device: torch.device, span: int,
                 before: int) -> None:
        self.per_feature, self.dedupe, self.span, self.before = per_feature, dedupe, span, before
        self.limit = torch.full((n_features,), KEY_NONE, dtype=torch.int64, device=device)
        self._batch: tuple[WindowTable, torch.Tensor, torch.Tensor, np.ndarray] | None = None

    def _candidates(self, windows: WindowTable, scored_window: torch.Tensor,
                    scored_position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(rows, keys) of the batch's candidates on the device, and each window's last scored position, computed
        once per batch (the first chunk)."""
        if self._batch is None or self._batch[0] is not windows:
            rows, keys = batch_candidates(windows, self.dedupe)
            dev = self.limit.device
            rows_t, keys_t = torch.from_numpy(rows).to(dev), torch.from_numpy(keys).to(dev)
            # A window with no scored token (all special or norm-filtered) shows nothing a feature could fire on.
            last = torch.full((len(windows),), -1, dtype=torch.int64, device=dev)
            last.scatter_reduce_(0, scored_window, scored_position, "amax")
            keep = last[rows_t] >= 0
            self._batch = (windows, rows_t[keep], keys_t[keep], last.cpu().numpy())
        return self._batch[1], self._batch[2], self._batch[3]

    def gather(self, windows: WindowTable, scored_window: torch.Tensor, scored_position: torch.Tensor, start: int,
               end: int, scores: torch.Tensor) -> Entries | None:
        """scores: [W, F_chunk], each window's max over its scored tokens for features start..end. A negative is
        kept as a display span placed as a top window's is around its peak, here around its last scored token (a
        conversation's span then ends in the scored turn, with what led to it before)."""
        rows, keys, last = self._candidates(windows, scored_window, scored_position)
        if rows.numel() == 0:
            return None
        ok = (scores[rows] == 0) & (keys[:, None] <= self.limit[None, start:end])  # [candidates, F_chunk]
        ok &= ok.cumsum(0, dtype=torch.int32) <= self.per_feature  # candidates are by key: the first m per feature
        c, f = ok.nonzero(as_tuple=True)
        if c.numel() == 0:
            return None
        window, table = rows[c].cpu().numpy(), windows
        if self.span < windows.token_ids.shape[1]:
            window, table, _ = windows.around(window, last[window], self.span, self.before)
        return negative_entries(table, window, f.cpu().numpy().astype(np.int64) + start)

    def update_limits(self, buffer: NegativeBuffer) -> None:
        self.limit = torch.from_numpy(buffer.limits(self.limit.numel())).to(self.limit.device)
