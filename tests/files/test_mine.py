"""The results reader: reading only some features gives exactly those rows of a whole read."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import synthetic_results

import personamine
from personamine.errors import FeatureNotInFile, PersonamineError

PER_FEATURE = ("score", "token_ids", "activations", "document", "window_start", "length", "active_tokens",
               "activation_sum", "max", "histogram")


def test_reading_some_features_equals_those_rows_of_the_whole_file(tmp_path):
    path = synthetic_results(tmp_path / "r.h5", 30, windows_per_feature=30)
    whole = personamine.read_results(path)
    wanted = [int(whole.feature_ids[i]) for i in (17, 2, 29, 2)]  # any order, a repeat: read in the file's order
    part = personamine.read_results(path, features=wanted)
    rows = [2, 17, 29]
    assert part.feature_ids.tolist() == whole.feature_ids[rows].tolist()
    for name in PER_FEATURE:
        np.testing.assert_array_equal(getattr(part, name), getattr(whole, name)[rows], err_msg=name)
    for name in ("promoted_ids", "promoted_values", "suppressed_ids", "suppressed_values"):
        np.testing.assert_array_equal(getattr(part.logit_lens, name), getattr(whole.logit_lens, name)[rows])
    assert part.tokens_scored == whole.tokens_scored and part.counters == whole.counters
    for fid in wanted:
        assert part.examples(fid) and all(
            a["document"] == b["document"] and np.array_equal(a["activations"], b["activations"])
            for a, b in zip(part.examples(fid), whole.examples(fid), strict=True))
        mine, theirs = part.interval_samples(fid), whole.interval_samples(fid)
        assert mine.keys() == theirs.keys() and len(mine) > 0
        for interval in mine:
            assert [(s["document"], s["window_start"], s["token_ids"].tolist(), s["activations"].tolist())
                    for s in mine[interval]] == [(s["document"], s["window_start"], s["token_ids"].tolist(),
                                                   s["activations"].tolist()) for s in theirs[interval]]
    assert len(part.samples) < len(whole.samples)


def test_reading_a_feature_the_file_lacks_is_a_clear_error(tmp_path):
    path = synthetic_results(tmp_path / "r.h5", 5, windows_per_feature=10)
    with pytest.raises(FeatureNotInFile, match="^feature 4 is not in"):  # not reported as a damaged file
        personamine.read_results(path, features=[3, 4])
    with pytest.raises(PersonamineError, match="no features"):
        personamine.read_results(path, features=[])


def _corrupt_chunk(path, dataset: str, n: int = 64) -> None:
    """Flip ``n`` bytes inside the first stored chunk of ``dataset``, as a torn or rotten write would."""
    import h5py

    with h5py.File(path) as f:
        info = f[dataset].id.get_chunk_info(0)
        offset, size = info.byte_offset, info.size
    data = bytearray(path.read_bytes())
    for i in range(offset + size // 3, offset + size // 3 + min(n, size // 2)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("dataset", ["samples/document", "top/score", "top/activations", "stats/histogram",
                                     "tokens/text_utf8", "feature_ids"])
def test_a_damaged_dataset_is_a_clear_error_everywhere(tmp_path, capsys, dataset):
    from personamine.jobs.cli import main

    path = synthetic_results(tmp_path / "r.h5", 12, windows_per_feature=12)
    personamine.read_results(path)  # intact: reads
    _corrupt_chunk(path, dataset)
    with pytest.raises(PersonamineError, match=f"is damaged: dataset '{dataset}' failed its checksum"):
        personamine.read_results(path)
    for argv in (["show", str(path)], ["report", str(path), "-o", str(tmp_path / "r.html")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"dataset '{dataset}' failed its checksum" in err[0], err
    assert not (tmp_path / "r.html").exists()


def test_random_bytes_in_the_middle_of_a_file_are_caught(tmp_path):
    path = synthetic_results(tmp_path / "r.h5", 200, windows_per_feature=20)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64 * 1024] = np.random.default_rng(0).integers(0, 256, 64 * 1024, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(PersonamineError, match="is damaged"):
        personamine.read_results(path)


def test_every_array_dataset_is_checksummed(tmp_path):
    import h5py

    path = synthetic_results(tmp_path / "r.h5", 5, windows_per_feature=10)
    unfiltered = []
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: unfiltered.append(name) if isinstance(obj, h5py.Dataset) and obj.shape != ()
                     and not obj.fletcher32 else None)
    assert unfiltered == []
