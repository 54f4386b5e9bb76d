"""`personamine.discover(...)`: which SAE features fire when a chat model is asked about itself.

Each prompt is rendered with the model's chat template as a user turn followed by the assistant's generation
prompt, so the model reads it as addressed to the Assistant. The residual stream after ``layer`` is
read at one of three positions, every SAE feature is encoded exactly, and every prompt's feature vector is kept.
Features are ranked by mean over the self-referential prompts minus mean over matched controls (the same
question forms about someone or something else): a raw mean favours features that fire on every prompt.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from personamine.config import DEFAULT_MODEL, MineConfig, at_least, field_help, knob, resolve_config
from personamine.errors import PersonamineError

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
POSITIONS = ("last", "assistant-header", "prompt-mean", "user")
MAX_RANKED = 1000  # a discovery file lists at most this many features (the rest score ~0 or below)


_MINE = field_help(MineConfig)  # the fields discover shares with mining, documented once


@dataclass
class DiscoverConfig:
    # model
    model: str = knob(DEFAULT_MODEL, _MINE["model"])
    layer: int | None = knob(None, _MINE["layer"])
    gguf_file: str | None = knob(None, _MINE["gguf_file"])
    revision: str | None = knob(None, _MINE["revision"])
    dtype: str = knob("auto", _MINE["dtype"])
    device: str = knob("auto", _MINE["device"])
    # SAE
    sae: str = knob("", _MINE["sae"])
    sae_trainer: int = knob(0, _MINE["sae_trainer"])
    allow_uncalibrated: bool = knob(False, _MINE["allow_uncalibrated"])
    # SAE layout and the pre-flight quality check (as MineConfig's; on the prompts' positions)
    sae_id: str | None = knob(None, "one SAE inside the SAE repo or directory, or a SAELens release's sae_id")
    sae_format: str = knob("auto", "SAE layout: auto, dictionary_learning, saelens, sparsify, goodfire, gemma_scope "
                                   "or llama_scope")
    preflight: bool = knob(True, "measure the SAE's variance explained and L0 on the prompts first")
    min_fve: float = knob(0.5, "pre-flight: refuse an SAE that explains less of the captured variance than this")
    allow_low_fve: bool = knob(False, "run even if the pre-flight quality check fails (it warns instead)")
    # prompts
    prompts: str | None = knob(None, "self-referential prompts: JSONL ({\"content\": ...} per line) or one per line "
                                     "(default: the 32 shipped ones)")
    controls: str | None = knob(None, "matched controls, line i pairing with prompt i, same formats (default: the "
                                      "32 shipped ones)")
    control: bool = knob(True, "rank by mean(persona) - mean(control); --no-control ranks by the raw persona mean "
                               "(the seed notebook's ranking)")
    system_prompt: str | None = knob(None, "a system turn before each prompt (default: none, so a template's own "
                                           "default system prompt applies)")
    date_string: str | None = knob("26 Jul 2024", "date passed to the chat template (Llama-3.1's prints today's "
                                                  "date otherwise)")
    position: str = knob("last", "where each prompt is read: last (the last generation-prompt token), "
                                 "assistant-header (mean over the generation prompt), prompt-mean (every token), "
                                 "or user (mean over the prompt's own tokens: what mining scores as score_roles "
                                 "user)")
    # output
    top: int = knob(100, "features whose per-prompt activations are stored (activations/persona, /control)")
    batch_size: int = knob(16, "prompts per forward pass")
    feature_chunk: int = knob(8192, _MINE["feature_chunk"])
    output: str = knob("personamine-out/discover.h5", "the HDF5 file to write")
    progress: bool = knob(True, _MINE["progress"])

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise PersonamineError(f"position must be one of {', '.join(POSITIONS)}, got {self.position!r}")
        at_least(self, 1, "top", "batch_size", "feature_chunk")
        at_least(self, 0, "sae_trainer")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- prompts


def builtin_prompts_path(kind: str) -> Path:
    """The shipped prompt sets: ``kind`` is "persona" or "control" (line i of each is a matched pair)."""
    return Path(str(resources.files("personamine") / "data" / f"{kind}_prompts.jsonl"))


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from a ``.jsonl``/``.json`` file (``{"content": ...}`` per line) or a text file (one per line)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PersonamineError(f"cannot read prompts file {str(path)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise PersonamineError(f"prompts file {str(path)!r} is not UTF-8 text") from exc
    prompts: list[str] = []
    as_json = path.suffix in (".jsonl", ".json")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not as_json:
            prompts.append(line.strip())
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PersonamineError(f"{str(path)!r} line {number} is not JSON: {exc.msg}") from exc
        content = row.get("content") if isinstance(row, dict) else None
        if not isinstance(content, str) or not content.strip():
            raise PersonamineError(f"{str(path)!r} line {number} has no non-empty string \"content\"")
        prompts.append(content)
    if not prompts:
        raise PersonamineError(f"prompts file {str(path)!r} holds no prompts")
    return prompts


@dataclass
class RenderedPrompt:
    text: str
    rendered: str  # exactly what was tokenized
    ids: list[int]
    positions: list[int]  # token indices whose SAE codes are averaged into the prompt's vector


def render_prompts(tokenizer, texts: list[str], config: DiscoverConfig) -> list[RenderedPrompt]:
    """Each prompt as one user turn with the assistant's generation prompt, rendered by the same code that renders a
    conversation corpus (``corpus.conversations.ChatRenderer``), so mining the prompts as a corpus sees the same
    tokens."""
    from personamine.corpus.conversations import BadConversation, ChatRenderer
    from personamine.roles import ROLE
    from personamine.shards.windows import sink_prefix_ids, special_token_ids

    prefix = sink_prefix_ids(tokenizer)
    special = set(special_token_ids(tokenizer, prefix).tolist())
    templated = getattr(tokenizer, "chat_template", None) is not None
    renderer = ChatRenderer(tokenizer, system_prompt=config.system_prompt, date_string=config.date_string,
                            generation_prompt=True) if templated else None
    out = []
    for text in texts:
        if renderer is not None:
            try:
                rendered = renderer.render([{"role": "user", "content": text}])
            except BadConversation as exc:
                raise PersonamineError(f"prompt {text!r}: {exc}") from None
            ids, roles = rendered.ids, rendered.roles.tolist()
            shown = rendered.text
        else:
            # No template (a base model): raw text behind the same sink prefix mining uses, so position 0 is
            # never a content token.
            ids = [*prefix, *_encode(tokenizer, text)]
            roles = [ROLE["prefix"]] * len(prefix) + [ROLE["text"]] * (len(ids) - len(prefix))
            shown = tokenizer.decode(prefix) + text
        out.append(RenderedPrompt(text, shown, ids, _positions(tokenizer, text, ids, roles, special, templated,
                                                               config)))
    return out


def _encode(tokenizer, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def _apply_template(tokenizer, text: str, config: DiscoverConfig, *, generation_prompt: bool) -> str:
    messages = [{"role": "user", "content": text}]
    if config.system_prompt is not None:
        messages.insert(0, {"role": "system", "content": config.system_prompt})
    kwargs = {"date_string": config.date_string} if config.date_string is not None else {}
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                             **kwargs)
    except Exception as exc:  # jinja raises its own types (e.g. a template that rejects system messages)
        raise PersonamineError(f"the chat template failed on prompt {text!r}: {exc}") from exc


def _positions(tokenizer, text: str, ids: list[int], roles: list[int], special: set[int], templated: bool,
               config: DiscoverConfig) -> list[int]:
    from personamine.roles import ROLE

    if config.position == "last":
        return [len(ids) - 1]
    if config.position == "user":  # the prompt's own tokens: what mining scores with score_roles=["user"]
        wanted = ROLE["user"] if templated else ROLE["text"]
        chosen = [i for i, r in enumerate(roles) if r == wanted and ids[i] not in special]
        if not chosen:
            raise PersonamineError(f"prompt {text!r} has no token of its own to read (position 'user')")
        return chosen
    if config.position == "prompt-mean":
        start = 0
    else:  # assistant-header: the tokens add_generation_prompt appends
        if not templated:
            raise PersonamineError("position 'assistant-header' needs a chat template; this tokenizer has none")
        without = _encode(tokenizer, _apply_template(tokenizer, text, config, generation_prompt=False))
        start = _generation_prompt_start(ids, without)
    # Special tokens (BOS, role delimiters) carry massive, input-independent activations (Sun et al. 2024,
    # "Massive Activations in Large Language Models", arXiv:2402.17762): SAE codes there mean nothing.
    chosen = [i for i in range(start, len(ids)) if ids[i] not in special]
    if not chosen:
        raise PersonamineError(f"prompt {text!r} has no non-special token at position {config.position!r}")
    return chosen


def _generation_prompt_start(ids: list[int], without: list[int]) -> int:
    """Index of the first generation-prompt token: ``ids`` must extend the rendering without it."""
    # A BOS added by render_prompts shifts ids by one relative to the plain rendering.
    for shift in (0, 1):
        if ids[shift: shift + len(without)] == without and len(ids) > shift + len(without):
            return shift + len(without)
    raise PersonamineError(
        "cannot locate the generation prompt: the template rendered with it does not extend the rendering "
        "without it token for token; use position 'last' or 'prompt-mean'"
    )


# ---------------------------------------------------------------- capture + encode


def _batches(prompts: list[RenderedPrompt], batch_size: int, pad_id: int, device: torch.device):
    import torch

    for lo in range(0, len(prompts), batch_size):
        group = prompts[lo: lo + batch_size]
        width = max(len(p.ids) for p in group)
        input_ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, p in enumerate(group):
            # Right padding: a causal model's real positions never see the pads, so batching changes nothing.
            input_ids[row, : len(p.ids)] = torch.tensor(p.ids)
            mask[row, : len(p.ids)] = 1
        yield group, input_ids.to(device), mask.to(device)


def prompt_vectors(loaded, encoder, prompts: list[RenderedPrompt], batch_size: int, bar=None) -> np.ndarray:
    """[len(prompts), n_features] float32: each prompt's SAE codes averaged over its positions."""
    import torch

    with torch.inference_mode():
        return _prompt_vectors(loaded, encoder, prompts, batch_size, bar)


def _prompt_vectors(loaded, encoder, prompts: list[RenderedPrompt], batch_size: int, bar) -> np.ndarray:
    import torch

    from personamine.model.capture import capture_residual
    from personamine.saes.base import all_finite

    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = np.zeros((len(prompts), encoder.n_features), dtype=np.float32)
    row0 = 0
    for group, input_ids, mask in _batches(prompts, batch_size, int(pad or 0), loaded.device):
        hidden = capture_residual(loaded.model, loaded.layer_module, input_ids, mask)
        rows = torch.tensor([r for r, p in enumerate(group) for _ in p.positions], device=hidden.device)
        cols = torch.tensor([c for p in group for c in p.positions], device=hidden.device)
        if not bool((mask[rows, cols] == 1).all()):
            raise RuntimeError("a prompt position fell on padding")
        picked = hidden[rows, cols]  # [n_positions, D]
        counts = torch.tensor([len(p.positions) for p in group], dtype=torch.float32, device=hidden.device)
        for start, end, acts in encoder.iter_encode(picked):
            if not all_finite(acts):  # one sum per block; the details only on failure
                _nonfinite(acts, start, encoder, group, rows, cols, loaded)
            summed = torch.zeros((len(group), end - start), dtype=torch.float32, device=hidden.device)
            summed.index_add_(0, rows, acts)
            out[row0: row0 + len(group), start:end] = (summed / counts[:, None]).cpu().numpy()
        row0 += len(group)
        if bar is not None:
            bar.update(len(group))
    return out


def _nonfinite(acts, start: int, encoder, group: list[RenderedPrompt], rows, cols, loaded) -> None:
    import torch

    from personamine.saes.base import overflow_hint

    bad = ~torch.isfinite(acts)
    p, f = (int(i) for i in bad.nonzero()[0])
    prompt, position = group[int(rows[p])], int(cols[p])
    token = loaded.tokenizer.decode([prompt.ids[position]])
    hint = overflow_hint(getattr(loaded.model, "dtype", None))
    raise PersonamineError(
        f"feature {int(encoder.features[start + f])} is {float(acts[p, f])} on prompt {prompt.text!r}, token "
        f"{position} ({token!r}); {int(bad.sum()):,} of the batch's {bad.numel():,} activations are not finite: the "
        f"model's activations or the SAE's encoding overflowed{hint}")


# ---------------------------------------------------------------- ranking


@dataclass
class Ranking:
    feature_ids: np.ndarray  # best first
    score: np.ndarray
    persona_mean: np.ndarray
    control_mean: np.ndarray  # NaN without controls
    persona_firing: np.ndarray  # fraction of persona prompts where the feature's value is > 0
    control_firing: np.ndarray


def rank_features(persona: np.ndarray, control: np.ndarray | None, limit: int = MAX_RANKED) -> Ranking:
    """Score = mean(persona) - mean(control), or the raw persona mean without controls.

    Features with a zero score are dropped; ties are broken by feature id so the order is reproducible.
    """
    p_mean = persona.astype(np.float64).mean(0)
    p_fire = (persona > 0).mean(0)
    if control is not None:
        c_mean = control.astype(np.float64).mean(0)
        c_fire = (control > 0).mean(0)
        score = p_mean - c_mean
    else:
        c_mean = np.full_like(p_mean, np.nan)
        c_fire = np.full_like(p_fire, np.nan)
        score = p_mean
    ids = np.arange(score.size)
    order = np.lexsort((ids, -score))
    order = order[score[order] != 0][:limit]
    return Ranking(feature_ids=order.astype(np.int64), score=score[order], persona_mean=p_mean[order],
                   control_mean=c_mean[order], persona_firing=p_fire[order], control_firing=c_fire[order])


# ---------------------------------------------------------------- the job


def discover(config: DiscoverConfig | None = None, /, **overrides: Any) -> Path:
    """Rank SAE features by how much more they fire on self-referential prompts than on controls.

    ``config`` is a :class:`DiscoverConfig` or None (then keyword arguments are its fields); keyword arguments
    override a given config. Writes one HDF5 file (see :func:`read_discovery`) and returns its path.
    """
    from personamine.atomic import check_writable
    from personamine.model.loading import find_decoder_layers, load_config, load_model, load_tokenizer, pick_device
    from personamine.saes import load_checked, prepare_sae, sae_spec

    cfg = resolve_config(DiscoverConfig, config, overrides, "discover")
    # Everything cheap is checked before the model loads, so bad input fails fast and writes nothing.
    check_writable(cfg.output, "output")
    pick_device(cfg.device)
    persona_texts = load_prompts(cfg.prompts or builtin_prompts_path("persona"))
    control_texts = load_prompts(cfg.controls or builtin_prompts_path("control")) if cfg.control else []
    model_config = load_config(cfg.model, cfg.gguf_file, cfg.revision)
    meta, layer = prepare_sae(sae_spec(cfg), hidden_size=int(model_config.hidden_size),
                              num_layers=int(model_config.num_hidden_layers), model=cfg.model,
                              allow_uncalibrated=cfg.allow_uncalibrated, announce=cfg.progress)
    cfg = dataclasses.replace(cfg, layer=layer)

    tokenizer = load_tokenizer(cfg.model, cfg.gguf_file, cfg.revision)
    persona = render_prompts(tokenizer, persona_texts, cfg)
    control = render_prompts(tokenizer, control_texts, cfg)

    # One layer more than the capture needs, for the pre-flight's look at layer + 1 (the capture stops at layer).
    loaded = load_model(cfg.model, min(layer + 1, int(model_config.num_hidden_layers) - 1) if cfg.preflight else layer,
                        dtype=cfg.dtype, device=cfg.device, gguf_file=cfg.gguf_file, revision=cfg.revision)
    loaded = dataclasses.replace(loaded, layer=layer, layer_module=find_decoder_layers(loaded.model)[layer])
    sae = load_checked(sae_spec(cfg), hidden_size=loaded.hidden_size, layer=layer,
                       allow_uncalibrated=cfg.allow_uncalibrated)
    checked = _preflight(loaded, sae, persona + control, cfg) if cfg.preflight else None
    # Every feature: exact for TopK SAEs too (all pre-activations are computed anyway).
    encoder = sae.encoder(None, device=loaded.device, chunk_size=cfg.feature_chunk)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(persona) + len(control), unit="prompt", desc="discover", dynamic_ncols=True)
    try:
        persona_acts = prompt_vectors(loaded, encoder, persona, cfg.batch_size, bar)
        control_acts = prompt_vectors(loaded, encoder, control, cfg.batch_size, bar) if control else None
    finally:
        if bar is not None:
            bar.close()
    ranking = rank_features(persona_acts, control_acts)
    if ranking.feature_ids.size == 0:
        raise PersonamineError("no SAE feature scores above zero on these prompts: nothing to rank")
    top = ranking.feature_ids[: cfg.top]
    extra = {**sae.meta.attrs(), **(checked.attrs() if checked is not None else {})}
    return _write(Path(cfg.output), cfg, extra, ranking, persona, control, persona_acts[:, top],
                  control_acts[:, top] if control_acts is not None else np.zeros((0, top.size), np.float32))


def _preflight(loaded, sae, prompts: list[RenderedPrompt], cfg: DiscoverConfig):
    """The SAE's quality check on the prompts: every non-special token but the first of each (the attention sink),
    minus norm outliers (10x the prompt's median norm, mining's rule), at the layer and its two neighbours; refuses
    (or, with allow_low_fve, warns) before anything is ranked. ``loaded`` holds one layer past ``loaded.layer``."""
    import sys
    from contextlib import ExitStack

    import torch

    from personamine.model.capture import capture_residual, record_output
    from personamine.model.loading import find_decoder_layers
    from personamine.saes import preflight
    from personamine.shards.windows import sink_prefix_ids, special_token_ids

    tok, layer = loaded.tokenizer, loaded.layer
    special = set(special_token_ids(tok, sink_prefix_ids(tok)).tolist())
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    layers = find_decoder_layers(loaded.model)
    wanted = [i for i in (layer - 1, layer, layer + 1) if 0 <= i < len(layers)]
    hidden: dict[int, list] = {i: [] for i in wanted}
    with torch.inference_mode():
        for group, input_ids, mask in _batches(prompts, cfg.batch_size, int(pad or 0), loaded.device):
            with ExitStack() as stack:
                seen = {i: stack.enter_context(record_output(layers[i])) for i in wanted[:-1]}
                out = {wanted[-1]: capture_residual(loaded.model, layers[wanted[-1]], input_ids, mask)}
            out.update({i: found[0] for i, found in seen.items()})
            for row, p in enumerate(group):
                cols = torch.tensor([c for c in range(1, len(p.ids)) if p.ids[c] not in special],
                                    dtype=torch.long, device=out[layer].device)
                norms = out[layer][row, cols].float().norm(dim=-1)
                cols = cols[norms <= 10 * norms.median()] if cols.numel() else cols
                for i in wanted:
                    hidden[i].append(out[i][row, cols].float())
    rows = {i: torch.cat(parts) for i, parts in hidden.items()}
    result = preflight(sae, rows.pop(layer), layer=layer, neighbours=rows, min_fve=cfg.min_fve,
                       chunk_size=cfg.feature_chunk)
    if cfg.progress:
        print(f"personamine: {result.summary()}", file=sys.stderr)
    result.check(cfg.allow_low_fve)
    return result


def _write(path: Path, cfg: DiscoverConfig, extra: dict, ranking: Ranking, persona: list[RenderedPrompt],
           control: list[RenderedPrompt], persona_top: np.ndarray, control_top: np.ndarray) -> Path:
    import h5py

    from personamine import __version__
    from personamine.jobs.features import DISCOVERY_FORMAT
    from personamine.merge.hdf5 import atomic_h5

    utf8 = h5py.string_dtype("utf-8")

    attrs = {**extra, "model": cfg.model, "layer": cfg.layer,
             "sae": cfg.sae + (f"/{cfg.sae_id}" if cfg.sae_id else "") + f"@trainer_{cfg.sae_trainer}",
             "position": cfg.position, "controls": cfg.control, "config": json.dumps(cfg.to_dict(), sort_keys=True),
             "personamine_version": __version__}
    with atomic_h5(path, DISCOVERY_FORMAT, FORMAT_VERSION, attrs) as f:
        rank = f.create_group("ranking")
        for name in ("feature_ids", "score", "persona_mean", "control_mean", "persona_firing", "control_firing"):
            value = getattr(ranking, name)
            rank.create_dataset(name, data=value.astype(np.int64 if name == "feature_ids" else np.float64))
        prompts = f.create_group("prompts")
        for kind, items in (("persona", persona), ("control", control)):
            prompts.create_dataset(f"{kind}_text", data=[p.text for p in items], dtype=utf8)
            prompts.create_dataset(f"{kind}_rendered", data=[p.rendered for p in items], dtype=utf8)
            prompts.create_dataset(f"{kind}_n_positions", data=np.array([len(p.positions) for p in items],
                                                                        dtype=np.int64))
        acts = f.create_group("activations")
        acts.attrs["feature_ids"] = ranking.feature_ids[: persona_top.shape[1]]
        acts.create_dataset("persona", data=persona_top.astype(np.float32))
        acts.create_dataset("control", data=control_top.astype(np.float32))
    return path


# ---------------------------------------------------------------- reading


@dataclass
class DiscoveryResults:
    """A discovery file as plain numpy. ``persona_acts[:, j]`` is feature ``feature_ids[j]`` on every prompt."""

    path: Path
    attrs: dict
    config: dict
    feature_ids: np.ndarray
    score: np.ndarray
    persona_mean: np.ndarray
    control_mean: np.ndarray
    persona_firing: np.ndarray
    control_firing: np.ndarray
    persona_text: list[str]
    control_text: list[str]
    persona_rendered: list[str]
    control_rendered: list[str]
    persona_acts: np.ndarray  # [n_persona, n_top]
    control_acts: np.ndarray  # [n_control, n_top]

    @property
    def has_controls(self) -> bool:
        return bool(self.attrs.get("controls", True)) and len(self.control_text) > 0

    def summary(self) -> str:
        """One line: the prompt sets, how many features are ranked and how many of them score above zero."""
        positive = int((self.score > 0).sum())
        against = f" vs {len(self.control_text)} controls" if self.has_controls else " (no controls)"
        return (f"{len(self.persona_text)} persona prompts{against}, {self.feature_ids.size} features ranked, "
                f"{positive} scoring above zero")

    def table(self, n: int = 20) -> str:
        """The top ``n`` features as an aligned text table."""
        controls = self.has_controls
        head = f"{'rank':>4} {'feature':>8} {'score':>9} {'persona mean':>13}"
        if controls:
            head += f" {'control mean':>13} {'fires (persona)':>16} {'fires (control)':>16}"
        else:
            head += f" {'fires':>7}"
        lines = [head]
        for r in range(min(n, self.feature_ids.size)):
            line = f"{r + 1:>4} {int(self.feature_ids[r]):>8} {self.score[r]:>9.4g} {self.persona_mean[r]:>13.4g}"
            if controls:
                line += (f" {self.control_mean[r]:>13.4g} {self.persona_firing[r]:>16.0%}"
                         f" {self.control_firing[r]:>16.0%}")
            else:
                line += f" {self.persona_firing[r]:>7.0%}"
            lines.append(line)
        return "\n".join(lines)


def read_discovery(path: str | Path) -> DiscoveryResults:
    """Read a file written by :func:`discover`."""
    from personamine.jobs.features import DISCOVERY_FORMAT
    from personamine.merge.hdf5 import open_h5, plain_attrs

    path = Path(path)
    with open_h5(path, DISCOVERY_FORMAT, FORMAT_VERSION, "discovery") as f:
        attrs = plain_attrs(f)
        rank, prompts, acts = f["ranking"], f["prompts"], f["activations"]

        def texts(name: str) -> list[str]:
            return [str(s) for s in prompts[name].asstr()[()]]

        return DiscoveryResults(
            path=path, attrs=attrs, config=json.loads(attrs.get("config", "{}")),
            feature_ids=rank["feature_ids"][()], score=rank["score"][()], persona_mean=rank["persona_mean"][()],
            control_mean=rank["control_mean"][()], persona_firing=rank["persona_firing"][()],
            control_firing=rank["control_firing"][()], persona_text=texts("persona_text"),
            control_text=texts("control_text"), persona_rendered=texts("persona_rendered"),
            control_rendered=texts("control_rendered"), persona_acts=acts["persona"][()],
            control_acts=acts["control"][()],
        )
