"""Shared session fixtures: a tiny random Llama + tokenizer, a calibrated SAE release, a pre-filled
offline hub cache, a small corpus, and one headless Chromium for the report tests. All built locally from
``fixtures.py``; nothing is downloaded.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# The hub/datasets/transformers libraries read these at import time, so they must be set before any
# test module (or this conftest) imports them. HF_HOME points at a throwaway dir so ~/.cache is never
# read or written and a pre-filled hub cache is the only thing offline loads can see.
HF_HOME = Path(tempfile.mkdtemp(prefix="personamine-hf-home-"))
atexit.register(shutil.rmtree, HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = str(HF_HOME)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
# These would override the HF_HOME-derived locations, so drop any inherited values.
_CACHE_OVERRIDES = (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "TRANSFORMERS_CACHE",
    "HF_XET_CACHE",
)
for _var in _CACHE_OVERRIDES:
    os.environ.pop(_var, None)

if "huggingface_hub" in sys.modules:  # imported early (e.g. by a plugin): patch the cached constants
    from huggingface_hub import constants as _hub_constants

    _hub_constants.HF_HOME = str(HF_HOME)
    _hub_constants.HF_HUB_CACHE = str(HF_HOME / "hub")
    _hub_constants.HF_HUB_OFFLINE = True

# tests/ is not a package; make ``import fixtures`` work no matter how pytest was invoked.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fixtures as fx  # noqa: E402
import pytest  # noqa: E402

from personamine.jobs.train_sae import dictionary_learning_trainers  # noqa: E402

# CI installs dictionary-learning with --no-deps (README "Install"), where its package __init__ cannot import
# nnsight: register it the way train-sae does, so `from dictionary_learning.trainers import BatchTopKSAE` works.
dictionary_learning_trainers()


@pytest.fixture(scope="session")
def hf_home() -> Path:
    """The session's private HF_HOME (hub cache lives in ``hf_home / "hub"``)."""
    return HF_HOME


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random 4-layer, 64-wide ``LlamaForCausalLM`` + byte-level BPE tokenizer that prepends ``<s>``."""
    return fx.make_tiny_model(tmp_path_factory.mktemp("tiny-model"), add_bos=True)


@pytest.fixture(scope="session")
def tiny_model_dir_nobos(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same weights as ``tiny_model_dir``; tokenizer defines ``<s>`` but never adds it (SmolLM2-like)."""
    out = tmp_path_factory.mktemp("tiny-model-nobos")
    return fx.make_tiny_model_variant(tiny_model_dir, out, add_bos=False)


@pytest.fixture(scope="session")
def tiny_sae_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release root with ``resid_post_layer_2/trainer_0/{ae.pt,config.json}`` tuned to the tiny model."""
    root = tmp_path_factory.mktemp("tiny-sae")
    fx.make_calibrated_sae_release(root, tiny_model_dir, layer=fx.SAE_LAYER)
    return root


@pytest.fixture(scope="session")
def tied_sae_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_sae_dir``'s encoder with the decoder left tied to it (encoder rows = decoder directions)."""
    root = tmp_path_factory.mktemp("tied-sae")
    fx.make_calibrated_sae_release(root, tiny_model_dir, layer=fx.SAE_LAYER, fit=False)
    return root


@pytest.fixture(scope="session")
def multi_layer_sae_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release with a calibrated SAE at layers 1, 2 and 3 (trainer 0), and a second one at layer 2 (trainer 1)."""
    root = tmp_path_factory.mktemp("multi-layer-sae")
    for layer in (1, 2, 3):
        fx.make_calibrated_sae_release(root, tiny_model_dir, layer=layer)
    fx.make_calibrated_sae_release(root, tiny_model_dir, layer=2, seed=11, trainer=1)
    return root


@pytest.fixture(scope="session")
def tiny_sae_repo(tiny_sae_dir: Path, hf_home: Path) -> str:
    """Repo id whose files are served from the offline hub cache by ``hf_hub_download``."""
    fx.populate_hub_cache(fx.TINY_SAE_REPO_ID, tiny_sae_dir, hub_cache=hf_home / "hub")
    return fx.TINY_SAE_REPO_ID


@pytest.fixture(scope="session")
def tiny_corpus_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 valid docs (short, long, one duplicated pair) + a ``null`` and an integer ``text`` row."""
    return fx.write_corpus_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl")


@pytest.fixture(scope="session")
def tiny_corpus_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The jsonl corpus minus its two malformed rows, as parquet."""
    return fx.write_corpus_parquet(tmp_path_factory.mktemp("corpus-parquet") / "corpus.parquet")


@pytest.fixture(scope="session")
def tiny_mining_file(tiny_model_dir: Path, tiny_sae_dir: Path, tiny_corpus_jsonl: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mining file of 10 features of the tiny SAE with top windows, interval samples and negatives."""
    import personamine

    return personamine.mine(model=str(tiny_model_dir), layer=fx.SAE_LAYER, sae=str(tiny_sae_dir),
                            corpus=str(tiny_corpus_jsonl), features=list(range(0, 40, 4)), ctx_len=16, top_k=8,
                            samples_per_interval=3, negatives_per_feature=6, n_shards=1, progress=False,
                            output=str(tmp_path_factory.mktemp("tiny-mined") / "mine.h5"))


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium (Debian's ``chromium`` + ``chromium-driver``, via selenium) for the whole session.

    Every test that uses it loads its own page first (``fixtures.open_report``), so nothing one test leaves in the
    window reaches the next."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("the report tests need Chromium: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.TemporaryDirectory(prefix="personamine-chromium-")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={profile.name}", "--window-size=1280,1600"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()
    profile.cleanup()


# --- the feature browser (tests/serve/) ----------------------------------------------------------


@pytest.fixture(scope="session")
def big_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 131,072-feature mining file (``fixtures.big_results``), built once."""
    return fx.big_results(tmp_path_factory.mktemp("big") / "big.h5")


@pytest.fixture(scope="session")
def big_explanations(big_results: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Explanations of every feature of ``big_results``."""
    import numpy as np

    return fx.synthetic_explanations(tmp_path_factory.mktemp("big-ex") / "ex.h5", np.arange(fx.BIG_FEATURES))


@pytest.fixture(scope="session")
def big_server(big_results: Path, big_explanations: Path):
    """``personamine.serve`` on the 131,072-feature file and its explanations, on a free loopback port, for the
    session (no live inspection: the synthetic file's model does not exist)."""
    import personamine

    running = personamine.serve(big_results, explanations=big_explanations, port=0, inspect=False, quiet=True)
    yield running
    running.stop()
