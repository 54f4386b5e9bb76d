"""The hub path, end to end, against a real HTTP server on 127.0.0.1 (``hub_server.FakeHub``): ``HfApi`` pins the
commit, `datasets`' rules pick the split's files (from the dataset card's ``configs`` or the default patterns),
``HfFileSystem`` reads footers and row groups with range requests, and mining it gives the same datasets as
mining the same files locally.

The hub client reads ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` when it is imported, and this test session is offline,
so each hub run is a subprocess with the endpoint pointed at the loopback server.
"""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
import sys
import textwrap
from pathlib import Path

import fixtures as fx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures import mine_kwargs
from hub_server import FakeHub
from ray_helpers import assert_identical_datasets

import personamine

TESTS = Path(__file__).resolve().parent.parent


def hub_run(hub: FakeHub, code: str, tmp_path: Path) -> dict:
    """Run ``code`` (which prints one JSON line) in a fresh process talking to ``hub``."""
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
           "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_XET": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    for var in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env.pop(var, None)
    script = "import json\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def carded_repo(tmp_path_factory) -> Path:
    """A dataset repo whose card declares two configurations; ``chat`` is not the default."""
    root = tmp_path_factory.mktemp("repo")
    fx.write_corpus_files(root / "prose", "parquet", n_files=2, rows_per_group=7)
    fx.write_corpus_files(root / "chat", "jsonl", n_files=1)
    (root / "README.md").write_text(textwrap.dedent("""\
        ---
        configs:
        - config_name: prose
          default: true
          data_files:
          - split: train
            path: prose/part-*.parquet
        - config_name: chat
          data_files:
          - split: train
            path: chat/*.jsonl
        ---
        # A test dataset
        """))
    return root


def test_the_card_picks_the_files_and_the_commit_is_pinned(carded_repo, tmp_path):
    with FakeHub("org/carded", carded_repo) as hub:
        got = hub_run(hub, """
            from personamine.corpus import CorpusSpec, open_manifest, unit_rows
            out = {}
            for config in (None, "chat"):
                m = open_manifest(CorpusSpec("org/carded", corpus_config=config))
                rows = [r for u in range(len(m)) for r in unit_rows(m.ref(u), "text")]
                out[str(config)] = {"revision": m.revision, "files": [f.url for f in m.files], "rows": rows,
                                    "units": [u.rows for u in m.units]}
            print(json.dumps(out))
            """, tmp_path)
    prose, chat = got["None"], got["chat"]
    base = f"hf://datasets/org/carded@{hub.commit}"
    assert prose["revision"] == chat["revision"] == hub.commit
    assert prose["files"] == [f"{base}/prose/part-00.parquet", f"{base}/prose/part-01.parquet"]
    assert prose["units"] == [7, 7, 7, 7, 2] * 2  # 30 rows per file in row groups of 7, from the footers
    assert prose["rows"] == chat["rows"] == fx.corpus_texts()
    assert chat["files"] == [f"{base}/chat/part-00.jsonl"]


def test_a_unit_is_read_with_range_requests_only(tmp_path):
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(4000)]
    texts = [" ".join(rng.choices(words, k=300)) for _ in range(1000)]
    (tmp_path / "repo" / "data").mkdir(parents=True)
    big = tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": texts}), big, row_group_size=100)
    with FakeHub("org/big", tmp_path / "repo") as hub:
        got = hub_run(hub, """
            from personamine.corpus import CorpusSpec, open_manifest, unit_rows
            m = open_manifest(CorpusSpec("org/big"))  # default split patterns: data/train-*
            print(json.dumps({"n": len(m), "rows": list(unit_rows(m.ref(7), "text"))}))
            """, tmp_path)
    assert got["n"] == 10 and got["rows"] == texts[700:800]
    reads = [r for method, path, r in hub.log if path.endswith(".parquet") and method == "GET"]
    fetched = sum(int(b) - int(a) + 1 for a, b in (r.removeprefix("bytes=").split("-") for r in reads))
    assert reads and all(r.startswith("bytes=") for r in reads)
    assert fetched < 0.6 * big.stat().st_size, (fetched, big.stat().st_size)  # the footer and one row group


def test_mining_a_hub_dataset_equals_mining_its_files(carded_repo, tiny_model_dir, tiny_sae_dir, tmp_path):
    kwargs = mine_kwargs(tiny_model_dir, str(tiny_sae_dir), "org/carded", tmp_path, n_shards=None)
    with FakeHub("org/carded", carded_repo) as hub:
        got = hub_run(hub, f"""
            import personamine
            path = personamine.mine(**{kwargs!r})
            res = personamine.read_results(path)
            print(json.dumps({{"path": str(path), "revision": res.attrs["corpus_revision"]}}))
            """, tmp_path)
    assert got["revision"] == hub.commit
    local = personamine.mine(**dict(kwargs, corpus=str(carded_repo / "prose"), output=str(tmp_path / "local.h5")))
    assert_identical_datasets(local, got["path"])
