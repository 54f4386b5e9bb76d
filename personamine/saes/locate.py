"""Where an SAE's files are: a local file or directory, a hub repo (and folder), or a SAELens release.

A :class:`Folder` is one SAE's directory, local or on the hub; hub files are fetched with ``hf_hub_download`` on
first use, so reading a format's config never fetches its weights.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from personamine.errors import PersonamineError
from personamine.model.loading import looks_like_path

FORMATS = ("dictionary_learning", "saelens", "sparsify", "goodfire", "gemma_scope", "llama_scope")


@dataclass(frozen=True)
class SaeSpec:
    """Which SAE: ``sae`` (a path, a hub repo id, or a SAELens release), and inside it ``sae_id`` (a folder or file
    of one SAE, or a SAELens release's id); a dictionary_learning release picks ``trainer`` at ``layer``."""

    sae: str
    sae_id: str | None = None
    trainer: int = 0
    layer: int | None = None
    format: str = "auto"
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.format not in ("auto", *FORMATS):
            raise PersonamineError(f"unknown SAE format {self.format!r}: use auto or one of {', '.join(FORMATS)}")
        if not self.sae:
            raise PersonamineError("no SAE given: pass a hub repo id, a directory or a file (--sae)")

    @property
    def label(self) -> str:
        """How files and tables name this SAE: ``sae[/sae_id]@trainer_T``."""
        return self.sae + (f"/{self.sae_id}" if self.sae_id else "") + f"@trainer_{self.trainer}"


class Folder:
    """One SAE's directory: local (``root``) or ``sub`` inside hub ``repo``; ``file`` names the weights file when
    the spec pointed at one."""

    def __init__(self, label: str, *, root: Path | None = None, repo: str | None = None, sub: str = "",
                 revision: str | None = None, file: str | None = None) -> None:
        self.label, self.root, self.repo, self.sub, self.revision, self.file = label, root, repo, sub, revision, file
        self._fetched: dict[str, Path | None] = {}

    @property
    def on_hub(self) -> bool:
        return self.repo is not None

    @property
    def name(self) -> str:
        """The folder's own name (a release layout encodes the layer and trainer in it)."""
        if self.root is not None:
            return self.root.name
        return PurePosixPath(self.sub).name if self.sub else (self.repo or "").split("/")[-1]

    @property
    def path_text(self) -> str:
        """Folder path as text, for layouts that encode facts in their path (Gemma Scope's layer_L/width_W)."""
        return str(self.root) if self.root is not None else f"{self.repo}/{self.sub}"

    def path(self, name: str) -> Path | None:
        """The file ``name`` (relative to the folder), fetching it from the hub once; None if absent."""
        if self.root is not None:
            found = self.root / name
            return found if found.is_file() else None
        if name not in self._fetched:
            from huggingface_hub import hf_hub_download

            filename = f"{self.sub}/{name}" if self.sub else name
            try:
                self._fetched[name] = Path(hf_hub_download(self.repo, filename, revision=self.revision))
            except Exception:  # the hub raises many unrelated types; all mean "not available"
                self._fetched[name] = None
        return self._fetched[name]

    def require(self, name: str, what: str) -> Path:
        found = self.path(name)
        if found is None:
            raise PersonamineError(f"SAE {self.label} has no {name} ({what})")
        return found

    def json(self, name: str) -> dict | None:
        found = self.path(name)
        if found is None:
            return None
        try:
            data = json.loads(found.read_text())
        except (OSError, ValueError) as exc:
            raise PersonamineError(f"SAE {self.label}: {name} is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise PersonamineError(f"SAE {self.label}: {name} is not a JSON object")
        return data

    def listing(self) -> list[str]:
        """What is there, for an error message (the hub lists only when online)."""
        if self.root is not None:
            if not self.root.is_dir():
                return []
            names = sorted(p.relative_to(self.root).as_posix() + ("/" if p.is_dir() else "")
                           for p in self.root.iterdir())
            return names
        try:
            from huggingface_hub import list_repo_files

            prefix = f"{self.sub}/" if self.sub else ""
            return sorted(f[len(prefix):] for f in list_repo_files(self.repo, revision=self.revision)
                          if f.startswith(prefix))
        except Exception:  # offline, or no such repo
            return []


def _listing_text(names: list[str], limit: int = 12) -> str:
    if not names:
        return "no files"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def unknown_layout(folder: Folder, tried: str) -> PersonamineError:
    found = folder.listing()
    where = "found " + _listing_text(found) if found or not folder.on_hub else \
        "cannot list the hub repo's files offline"
    return PersonamineError(f"no SAE layout recognised in {folder.label}: {where} (expected {tried})")


def release_subpath(layer: int, trainer: int) -> str:
    """dictionary_learning's release layout: ``resid_post_layer_{L}/trainer_{T}``."""
    return f"resid_post_layer_{layer}/trainer_{trainer}"


_RELEASE_LAYER = re.compile(r"^resid_post_layer_(\d+)$")


def release_layers(path: Path) -> list[int]:
    """The layers a local dictionary_learning release root holds (``resid_post_layer_L/`` folders), sorted."""
    return sorted(int(m.group(1)) for p in path.glob("resid_post_layer_*") if (m := _RELEASE_LAYER.match(p.name)))


def local_folders(spec: SaeSpec) -> list[Folder]:
    """Candidate folders for a local path, most specific first."""
    path = Path(spec.sae).expanduser()
    if spec.sae_id:
        path = path / spec.sae_id
    if path.is_file():
        parent = path.parent
        if path.name == "final.safetensors" and parent.name == "checkpoints":
            parent = parent.parent  # Llama Scope: <sae>/checkpoints/final.safetensors
        return [Folder(repr(str(path)), root=parent, file=path.name)]
    if not path.is_dir():
        raise PersonamineError(f"SAE path {str(path)!r} does not exist")
    folders = [Folder(repr(str(path)), root=path)]
    layer = spec.layer
    if layer is None:
        # A release root with a single layer folder declares its layer by that folder's name.
        layers = release_layers(path)
        if len(layers) == 1:
            layer = layers[0]
    if layer is not None:
        for sub in (release_subpath(layer, spec.trainer), f"layers.{layer}"):
            if (path / sub).is_dir():
                folders.append(Folder(repr(str(path / sub)), root=path / sub))
        present = sorted(f"{p.parent.name}/{p.name}" for p in path.glob("resid_post_layer_*/trainer_*") if p.is_dir())
        if len(folders) == 1 and present:
            raise PersonamineError(f"SAE release {str(path)!r} has no {release_subpath(layer, spec.trainer)}: it "
                                   f"holds {', '.join(present[:8])}{' ...' if len(present) > 8 else ''}")
    return folders


def hub_folders(spec: SaeSpec, repo: str, sub: str | None = None) -> list[Folder]:
    """Candidate folders of a hub repo; ``sub`` (or ``spec.sae_id``) may name a file inside it."""
    sub = sub if sub is not None else spec.sae_id
    if sub:
        path = PurePosixPath(sub)
        if path.suffix in (".pt", ".pth", ".safetensors", ".npz"):
            parent = path.parent
            if path.name == "final.safetensors" and parent.name == "checkpoints":
                parent = parent.parent
            folder = "" if str(parent) == "." else str(parent)
            return [Folder(f"{repo}/{sub}", repo=repo, sub=folder, revision=spec.revision, file=path.name)]
        return [Folder(f"{repo}/{sub}", repo=repo, sub=sub, revision=spec.revision)]
    folders = [Folder(repr(repo), repo=repo, revision=spec.revision)]
    if spec.layer is not None:
        for child in (release_subpath(spec.layer, spec.trainer), f"layers.{spec.layer}"):
            folders.append(Folder(f"{repo}/{child}", repo=repo, sub=child, revision=spec.revision))
    return folders


@dataclass
class ReleaseEntry:
    """A SAELens pretrained-directory entry, read from the installed sae-lens package's own directory."""

    repo: str
    path: str
    conversion: str | None
    neuronpedia: str | None


def saelens_release(release: str, sae_id: str | None) -> ReleaseEntry | None:
    """The entry for ``release``/``sae_id`` when sae-lens is installed and knows the release, else None."""
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    except ImportError:
        return None
    lookup = get_pretrained_saes_directory().get(release)
    if lookup is None:
        return None
    if sae_id is None or sae_id not in lookup.saes_map:
        ids = list(lookup.saes_map)
        shown = ", ".join(ids[:5]) + (f" ... ({len(ids)} ids)" if len(ids) > 5 else "")
        raise PersonamineError(f"SAELens release {release!r} needs a sae_id (--sae-id); it has {shown}")
    return ReleaseEntry(repo=lookup.repo_id, path=lookup.saes_map[sae_id], conversion=lookup.conversion_func,
                        neuronpedia=lookup.neuronpedia_id.get(sae_id))


# SAELens's conversion functions for the layouts personamine reads itself (the rest are refused by name).
RELEASE_FORMATS = {"dictionary_learning_1": "dictionary_learning", "gemma_2": "gemma_scope",
                   "gemma_3": "gemma_scope", "llama_scope": "llama_scope", "goodfire": "goodfire",
                   "sparsify": "sparsify", None: "saelens"}


def folders_for(spec: SaeSpec) -> tuple[list[Folder], str, str | None]:
    """(candidate folders, forced format or "auto", Neuronpedia id if the source says)."""
    if looks_like_path(spec.sae) or Path(spec.sae).expanduser().exists():
        return local_folders(spec), spec.format, None
    entry = saelens_release(spec.sae, spec.sae_id) if "/" not in spec.sae else None
    if entry is not None:
        fmt = RELEASE_FORMATS.get(entry.conversion)
        if fmt is None:
            raise PersonamineError(f"SAELens release {spec.sae!r} uses the {entry.conversion!r} conversion, a layout "
                                   f"personamine does not read (it reads {', '.join(FORMATS)})")
        return hub_folders(spec, entry.repo, entry.path), fmt, entry.neuronpedia
    if "/" not in spec.sae:
        raise PersonamineError(f"SAE {spec.sae!r} is neither a path, a hub repo id (org/name), nor a SAELens release "
                               "(install sae-lens to use release names)")
    return hub_folders(spec, spec.sae), spec.format, None
