"""A hub dataset's data files for one configuration and split, pinned to a commit.

The commit comes from ``HfApi.dataset_info`` (recorded in the output, so a run is reproducible even if the dataset
moves on); which files hold the split is decided by `datasets`' own rules (the dataset card's ``configs`` with their
``data_files``, else its default split patterns), resolved over ``HfFileSystem`` at that commit. Nothing is
downloaded here: units are later read from these ``hf://`` urls with range requests (parquet footers, row groups).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from personamine.corpus.manifest import CorpusFile
from personamine.corpus.readers import SUFFIXES
from personamine.errors import PersonamineError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _split_patterns(base: str, config: str | None, split: str) -> list[str]:
    import huggingface_hub
    from datasets.data_files import get_data_patterns, sanitize_patterns
    from datasets.utils.metadata import MetadataConfigs

    fs = huggingface_hub.HfFileSystem()
    card = f"{base}/README.md"
    configs = MetadataConfigs()
    if fs.exists(card):
        with fs.open(card, "r", encoding="utf-8") as handle:
            card_data = huggingface_hub.DatasetCard(handle.read()).data
        configs = MetadataConfigs.from_dataset_card_data(card_data)
    if configs:
        name = config or configs.get_default_config_name() or next(iter(configs))
        if name not in configs:
            raise PersonamineError(f"hub dataset has no configuration {name!r} (configurations: "
                                   f"{', '.join(sorted(configs))}); set corpus_config")
        data_files = configs[name].get("data_files")
        if data_files is not None:
            patterns = sanitize_patterns(data_files)
            if split not in patterns:
                raise PersonamineError(f"configuration {name!r} has no split {split!r} (splits: "
                                       f"{', '.join(patterns)}); set split")
            return patterns[split]
    patterns = get_data_patterns(base)
    if split not in patterns:
        raise PersonamineError(f"no data files for split {split!r} (splits found: {', '.join(patterns)}); set split")
    return patterns[split]


def hub_files(repo: str, config: str | None, split: str, revision: str | None) -> tuple[list[CorpusFile], str]:
    import huggingface_hub
    from datasets.data_files import DataFilesList

    api = huggingface_hub.HfApi()
    try:
        info = api.dataset_info(repo, revision=revision, files_metadata=True)
    except Exception as exc:  # offline mode, missing repo, network: all mean "cannot resolve this dataset"
        raise PersonamineError(f"corpus {repo!r} is not a local path, and the hub dataset cannot be resolved: "
                               f"{_first_line(exc)}") from exc
    base = f"hf://datasets/{repo}@{info.sha}"
    try:
        urls = list(DataFilesList.from_patterns(_split_patterns(base, config, split), base_path=base))
    except PersonamineError:
        raise
    except Exception as exc:  # datasets raises FileNotFoundError/EmptyDatasetError for patterns that match nothing
        raise PersonamineError(f"hub dataset {repo!r}: cannot list the data files of split {split!r}: "
                               f"{_first_line(exc)}") from exc
    siblings = {s.rfilename: s for s in info.siblings or []}
    files = []
    for url in sorted(urls):
        path = url.split("@", 1)[1].split("/", 1)[1]
        fmt = SUFFIXES.get(PurePosixPath(path).suffix.lower())
        if fmt is None:
            raise PersonamineError(f"hub dataset {repo!r}: data file {path!r} is not a supported corpus format")
        sib = siblings.get(path)
        size = int(sib.size) if sib is not None and sib.size is not None else 0
        version = (sib.lfs.sha256 if sib is not None and sib.lfs else None) or (sib.blob_id if sib else None) or ""
        files.append(CorpusFile(f"{base}/{path}", fmt, size, str(version)))
    if not files:
        raise PersonamineError(f"hub dataset {repo!r} has no data files for split {split!r}")
    return files, info.sha
