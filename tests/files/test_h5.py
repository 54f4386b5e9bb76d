"""What every personamine HDF5 file shares: the atomic write (nothing on error, the rename on success, an OSError as
one line), the checked open (another kind of file, a newer version), checksummed datasets and strings, and reads
that name the dataset whose checksum failed."""

from __future__ import annotations

import errno

import h5py
import numpy as np
import pytest

from personamine.errors import PersonamineError
from personamine.files.h5 import (
    CheckedReader,
    atomic_h5,
    dataset,
    open_h5,
    packed_dataset,
    plain_attrs,
    read_strings,
    write_strings,
)


def entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_clean_write_is_renamed_into_place_with_its_header(tmp_path):
    path = tmp_path / "sub" / "out.h5"  # the directory is created
    with atomic_h5(path, "personamine.test", 3, {"model": "m", "layer": 2}) as f:
        dataset(f, "values", np.arange(10.0))
        assert not path.exists()  # nothing at the target until the file is closed
        assert [p.name.startswith(".out.h5.tmp-") for p in path.parent.iterdir()] == [True]
    assert entries(path.parent) == ["out.h5"]
    with h5py.File(path) as f:
        assert list(f.attrs) == ["model", "layer", "format", "format_version"]  # track_order: as written
        assert plain_attrs(f) == {"model": "m", "layer": 2, "format": "personamine.test", "format_version": 3}
        np.testing.assert_array_equal(f["values"][()], np.arange(10.0))


def test_an_error_leaves_nothing_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.h5"
    path.write_bytes(b"the previous output")
    with pytest.raises(ValueError, match="half-way"):  # not an OSError: raised as it is
        with atomic_h5(path, "personamine.test", 1, {}) as f:
            dataset(f, "a", np.ones(1000))
            raise ValueError("half-way")
    assert entries(tmp_path) == ["out.h5"] and path.read_bytes() == b"the previous output"
    with pytest.raises(KeyboardInterrupt):
        with atomic_h5(path, "personamine.test", 1, {}) as f:
            raise KeyboardInterrupt
    assert entries(tmp_path) == ["out.h5"] and path.read_bytes() == b"the previous output"


def test_an_os_error_while_writing_is_one_line(tmp_path):
    path = tmp_path / "out.h5"
    with pytest.raises(PersonamineError) as info:
        with atomic_h5(path, "personamine.test", 1, {}) as f:
            dataset(f, "a", np.ones(100))
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(info.value)
    assert message.startswith(f"cannot write {str(path)!r}: No space left on device after ")
    assert message.endswith(" bytes; the partial file was removed") and "\n" not in message
    assert entries(tmp_path) == []
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(PersonamineError, match=r"^cannot create the output directory .*/blocker' is a file, not a "
                                               r"directory$"):
        with atomic_h5(tmp_path / "blocker" / "x.h5", "personamine.test", 1, {}):
            pass
    assert entries(tmp_path) == ["blocker"]


def write(path, fmt="personamine.test", version=2, **attrs):
    with atomic_h5(path, fmt, version, attrs) as f:
        dataset(f, "numbers", np.arange(5000, dtype=np.int64))
    return path


def test_open_refuses_other_files_and_newer_versions_in_one_line(tmp_path):
    ok = write(tmp_path / "ok.h5")
    for reader_version in (2, 5):  # the same version, or an older file
        with open_h5(ok, "personamine.test", reader_version, "test") as f:
            assert f["numbers"][3] == 3
    with pytest.raises(PersonamineError) as info:
        with open_h5(ok, "personamine.test", 1, "test"):
            pass
    assert str(info.value) == f"{str(ok)!r} has format version 2; upgrade personamine to read it"
    with pytest.raises(PersonamineError) as info:
        with open_h5(ok, "personamine.other", 2, "other"):
            pass
    assert str(info.value) == f"{str(ok)!r} is not a personamine other file"
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    with pytest.raises(PersonamineError, match="is not a personamine test file$"):
        with open_h5(plain, "personamine.test", 2, "test"):
            pass
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    for opened_as, word in ((None, "test"), ("mining", "mining")):
        with pytest.raises(PersonamineError) as info:
            with open_h5(text, "personamine.test", 2, "test", opened_as=opened_as):
                pass
        assert str(info.value).startswith(f"cannot open {word} file {str(text)!r}: ")
    with pytest.raises(PersonamineError, match="^cannot open test file .*missing.h5"):
        with open_h5(tmp_path / "missing.h5", "personamine.test", 2, "test"):
            pass


def flip_chunk(path, name):
    with h5py.File(path) as f:
        info = f[name].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    for i in range(info.byte_offset + 8, info.byte_offset + 40):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_failed_checksum_names_the_dataset(tmp_path):
    path = tmp_path / "f.h5"
    with atomic_h5(path, "personamine.test", 1, {}) as f:
        g = f.create_group("group")
        dataset(g, "good", np.arange(3000, dtype=np.float32))
        dataset(g, "bad", np.arange(3000, dtype=np.float32))
    flip_chunk(path, "group/bad")
    with open_h5(path, "personamine.test", 1, "test") as f:
        read = CheckedReader(path, f)
        np.testing.assert_array_equal(read(f["group/good"]), np.arange(3000, dtype=np.float32))
        np.testing.assert_array_equal(read(f["group/good"], np.s_[5:8]), [5, 6, 7])
        with pytest.raises(PersonamineError) as info:
            read(f["group/bad"], np.s_[:10])
    message = str(info.value)
    assert message.startswith(f"{str(path)!r} is damaged: dataset 'group/bad' failed its checksum or could not be "
                              "read (") and "\n" not in message
    with h5py.File(path) as f, pytest.raises(OSError):  # without the reader: HDF5's own multi-line error
        f["group/bad"][()]


def test_every_dataset_is_chunked_and_checksummed_and_packed_is_compressed(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        plain = dataset(f, "plain", np.ones((4, 3), np.float32))
        empty = dataset(f, "empty", shape=(0, 7), dtype=np.int32)
        packed = packed_dataset(f, "packed", (100,), np.int64)
        packed[:] = np.arange(100)
        assert plain.fletcher32 and plain.chunks is not None and plain.compression is None
        assert empty.shape == (0, 7) and empty.dtype == np.int32 and empty.fletcher32
        assert packed.fletcher32 and packed.compression == "gzip" and packed.shuffle
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["packed"][()], np.arange(100))


def test_strings_round_trip_as_checksummed_bytes(tmp_path):
    values = ["", "plain", "ünïcödé ✓", "line\nbreak", "nul\x00inside", "🙂" * 50]
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        write_strings(f, "names", values)
        write_strings(f, "none", [])
        f.create_dataset("old", data=["a", "bé"], dtype=h5py.string_dtype("utf-8"))  # versions 1 and 2
    with h5py.File(path) as f:
        read = CheckedReader(path, f)
        assert read_strings(f, "names", read) == values
        assert read_strings(f, "none", read) == []
        assert read_strings(f, "old", read) == ["a", "bé"]
        assert f["names_utf8"].fletcher32 and f["names_offsets"][()].tolist()[:3] == [0, 0, 5]


def test_plain_attrs_unwraps_numpy_scalars(tmp_path):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update({"i": np.int64(3), "x": np.float32(0.5), "b": np.bool_(True), "s": "text",
                        "arr": np.array([1, 2])})
    with h5py.File(path) as f:
        attrs = plain_attrs(f)
    assert type(attrs["i"]) is int and attrs["i"] == 3
    assert type(attrs["x"]) is float and attrs["x"] == 0.5
    assert attrs["b"] is True and attrs["s"] == "text"
    assert isinstance(attrs["arr"], np.ndarray) and attrs["arr"].tolist() == [1, 2]  # arrays stay arrays
