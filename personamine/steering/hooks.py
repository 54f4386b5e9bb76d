"""Apply an intervention inside the full model's forward, at the SAE's layer and at its directions' layers, at chosen
positions.

A pre-hook on the input embedding sees each forward's token ids (so the positions to act on are known for prefill
and for every decoding step alike), a forward hook on the SAE's decoder layer rewrites that layer's output for the
feature terms, and a forward hook on each layer a direction term acts at (added by ``use``) rewrites that one's.
Special-token positions (BOS, role delimiters, padding, EOS) are never touched: their
residuals carry the massive, input-independent activations of an attention sink (arXiv:2402.17762), where SAE codes mean
nothing.

With no intervention set, or nothing to act on, the layer hook returns None and the forward is exactly the plain
model's. The change is computed in fp32 and the new residual is rounded once to the model's dtype, so a change of
exactly zero (alpha = 0) leaves every bit as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from personamine.model.generate import Generations, GenerationSettings, generate
from personamine.steering.interventions import DirectionTerm, Intervention
from personamine.steering.sae_access import SteerSae

PositionFn = Callable[[torch.Tensor], torch.Tensor]  # token ids [B, T] -> [B, T] bool: act here


class Plan:
    """One intervention as tensors: per term, the feature's column, a direction and a value."""

    def __init__(self, intervention: Intervention, sae: SteerSae) -> None:
        terms = intervention.terms
        dev = sae.decoder.device
        self.intervention = intervention
        self.cols = torch.tensor([sae.index(t.feature) for t in terms], dtype=torch.long, device=dev)
        rows = sae.decoder[self.cols]
        unit = rows / rows.norm(dim=-1, keepdim=True)
        is_add = torch.tensor([t.kind == "add" for t in terms], device=dev)
        self.is_ablate = torch.tensor([t.kind == "ablate" for t in terms], device=dev)
        self.is_clamp = torch.tensor([t.kind == "clamp" for t in terms], device=dev)
        self.clamp_all = torch.tensor([t.kind == "clamp" and t.where == "all" for t in terms], device=dev)
        self.directions = torch.where(is_add[:, None], unit, rows)  # [n_terms, D]
        self.values = torch.tensor([0.0 if t.kind == "ablate" else t.value for t in terms], dtype=torch.float32,
                                   device=dev)
        # What an ablated or clamped feature should read afterwards (NaN: no target, for add).
        self.targets = torch.where(self.is_clamp, self.values,
                                   torch.where(self.is_ablate, 0.0, torch.nan)).to(torch.float32)
        self.needs_codes = bool((self.is_ablate | self.is_clamp).any())

    def change(self, codes: torch.Tensor | None, n: int) -> torch.Tensor:
        """[N, n_terms] coefficients ``c``: the residual becomes ``x + c @ directions``."""
        c = self.values.expand(n, -1)
        if codes is None:
            return c
        a = codes[:, self.cols]
        fires = (a > 0) | self.clamp_all
        c = torch.where(self.is_clamp, (self.values - a) * fires, c)
        return torch.where(self.is_ablate, -a, c)


class Record:
    """Each term's feature before and after the intervention, over the positions it acted on: over all of them
    (``n_positions``, ``before_mean``, ``after_mean``, ``after_max``), and over those where the feature fired before
    (``n_fired``, ``*_fired_mean``, ``target_error``: where ablation and clamping have a target to reach). In a
    combination another term can make the feature fire where it had not: ``after_max`` counts it, the rest do not."""

    def __init__(self, plan: Plan) -> None:
        n, dev = plan.cols.numel(), plan.cols.device
        self.plan = plan
        self.positions = torch.zeros((), dtype=torch.long, device=dev)
        self.sums = torch.zeros((5, n), dtype=torch.float64, device=dev)  # fired, before, after, fired before/after
        self.after_max = torch.zeros(n, dtype=torch.float32, device=dev)
        # max |a_f(h') - target| where f fired before (ablate: 0; clamp: the value)
        self.target_error = torch.zeros(n, dtype=torch.float32, device=dev)

    def add(self, before: torch.Tensor, after: torch.Tensor) -> None:
        b, a = before[:, self.plan.cols], after[:, self.plan.cols]
        fired = b > 0
        self.positions += b.shape[0]
        self.sums += torch.stack([fired.sum(0), b.sum(0), a.sum(0), (b * fired).sum(0), (a * fired).sum(0)]).double()
        self.after_max = torch.maximum(self.after_max, a.amax(0))
        err = ((a - self.plan.targets).abs() * fired).nan_to_num(0.0)
        self.target_error = torch.maximum(self.target_error, err.amax(0))

    def summary(self) -> dict[str, np.ndarray]:
        n = self.plan.cols.numel()
        fired, before, after, before_fired, after_fired = self.sums.cpu().numpy()
        positions = int(self.positions)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"n_positions": np.full(n, positions, dtype=np.int64), "n_fired": fired.astype(np.int64),
                    "before_mean": before / max(positions, 1), "after_mean": after / max(positions, 1),
                    "before_fired_mean": np.where(fired > 0, before_fired / fired, np.nan),
                    "after_fired_mean": np.where(fired > 0, after_fired / fired, np.nan),
                    "after_max": self.after_max.cpu().numpy().astype(np.float64),
                    "target_error": np.where(np.isnan(self.plan.targets.cpu().numpy()) | (fired == 0), np.nan,
                                             self.target_error.cpu().numpy().astype(np.float64))}


class DirectionPlan:
    """The direction terms acting at one layer, in the order they apply: (row in the intervention's directions,
    kind, unit vector, value)."""

    def __init__(self, rows: list[int], terms: list[DirectionTerm], device: torch.device) -> None:
        self.rows = rows
        self.kinds = [t.kind for t in terms]
        self.units = torch.stack([torch.from_numpy(np.asarray(t.unit, np.float32)) for t in terms]).to(device)
        self.values = [float(t.value) for t in terms]

    def apply(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the new residuals [N, D] in fp32, whether each cap or floor acted [N, k])."""
        acted = torch.zeros((x.shape[0], len(self.kinds)), dtype=torch.bool, device=x.device)
        for j, (kind, value) in enumerate(zip(self.kinds, self.values, strict=True)):
            u = self.units[j]
            if kind == "add":
                x = x + value * u
                continue
            p = x @ u
            if kind == "ablate":
                x = x - p[:, None] * u
            elif kind == "cap":
                excess = (p - value).clamp(min=0.0)
                acted[:, j] = excess > 0
                x = x - excess[:, None] * u
            else:  # floor
                lack = (value - p).clamp(min=0.0)
                acted[:, j] = lack > 0
                x = x + lack[:, None] * u
        return x, acted


class DirectionRecord:
    """Each direction term's projection ``h . v_hat`` at its layer, over the positions it acted on: before (the
    layer's output as the direction terms receive it, after the feature terms at the SAE's layer) and after (the
    layer's output once every direction term there has acted), and how often a cap or floor changed anything."""

    def __init__(self, n_terms: int, device: torch.device) -> None:
        self.positions = torch.zeros(n_terms, dtype=torch.long, device=device)
        self.sums = torch.zeros((3, n_terms), dtype=torch.float64, device=device)  # before, after, active
        self.after_max = torch.full((n_terms,), -torch.inf, dtype=torch.float32, device=device)
        self.after_min = torch.full((n_terms,), torch.inf, dtype=torch.float32, device=device)

    def add(self, plan: DirectionPlan, before: torch.Tensor, after: torch.Tensor, acted: torch.Tensor) -> None:
        rows = torch.tensor(plan.rows, dtype=torch.long, device=before.device)
        self.positions[rows] += before.shape[0]
        self.sums[:, rows] += torch.stack([before.sum(0), after.sum(0), acted.sum(0)]).double()
        self.after_max[rows] = torch.maximum(self.after_max[rows], after.amax(0))
        self.after_min[rows] = torch.minimum(self.after_min[rows], after.amin(0))

    def summary(self) -> dict[str, np.ndarray]:
        positions = self.positions.cpu().numpy()
        before, after, active = self.sums.cpu().numpy()
        n = np.maximum(positions, 1)
        empty = positions == 0
        return {"n_positions": positions.astype(np.int64), "before_mean": np.where(empty, np.nan, before / n),
                "after_mean": np.where(empty, np.nan, after / n), "n_active": active.astype(np.int64),
                "active_fraction": np.where(empty, np.nan, active / n),
                "after_max": np.where(empty, np.nan, self.after_max.cpu().numpy().astype(np.float64)),
                "after_min": np.where(empty, np.nan, self.after_min.cpu().numpy().astype(np.float64))}


class Observation:
    """The unsteered model at chosen positions: each feature's max and mean, and the residual norms."""

    def __init__(self, n_features: int, device: torch.device) -> None:
        self.max = torch.zeros(n_features, dtype=torch.float32, device=device)
        self.sum = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.positions = 0
        self.norms: list[torch.Tensor] = []

    def add(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        self.max = torch.maximum(self.max, codes.amax(0))
        self.sum += codes.sum(0, dtype=torch.float64)
        self.positions += x.shape[0]
        self.norms.append(x.norm(dim=-1))


class Steering:
    """The hooks on one model; ``use(intervention)`` and ``positions(fn)`` say what to do in the next forwards."""

    def __init__(self, model: nn.Module, layer_module: nn.Module, sae: SteerSae, special_ids: Iterable[int],
                 layers: Sequence[nn.Module] = ()) -> None:
        """``layers``: the model's decoder layers, where direction terms act (their index is the term's layer)."""
        embedding = model.get_input_embeddings()
        dev = sae.decoder.device
        special = np.asarray(sorted(set(special_ids)), dtype=np.int64)
        self.special = torch.zeros(embedding.num_embeddings, dtype=torch.bool, device=dev)
        self.special[torch.from_numpy(special[special < embedding.num_embeddings]).to(dev)] = True
        self.sae = sae
        self._plan: Plan | None = None
        self._positions: PositionFn | None = None
        self._mask: torch.Tensor | None = None
        self.record: Record | None = None
        self.direction_record: DirectionRecord | None = None
        self.observation: Observation | None = None
        self.layers = list(layers)
        self._direction_plans: dict[int, DirectionPlan] = {}
        self._direction_handles: list = []
        self._handles = [embedding.register_forward_pre_hook(self._on_ids),
                         layer_module.register_forward_hook(self._on_output)]

    def close(self) -> None:
        for handle in self._handles + self._direction_handles:
            handle.remove()
        self._handles, self._direction_handles = [], []

    def use(self, intervention: Intervention | None, record: bool = False) -> None:
        """Act with ``intervention`` from now on (None or no terms: leave the model alone)."""
        self._plan = Plan(intervention, self.sae) if intervention is not None and intervention.terms else None
        self.record = Record(self._plan) if record and self._plan is not None else None
        for handle in self._direction_handles:
            handle.remove()
        self._direction_handles, self._direction_plans = [], {}
        directions = intervention.directions if intervention is not None else ()
        self.direction_record = DirectionRecord(len(directions), self.sae.decoder.device) if record else None
        by_layer: dict[int, list[int]] = {}
        for row, term in enumerate(directions):
            by_layer.setdefault(term.layer, []).append(row)
        for layer, rows in by_layer.items():
            if not 0 <= layer < len(self.layers):
                raise RuntimeError(f"a direction term acts at layer {layer}, but steering holds {len(self.layers)} "
                                   "decoder layers")
            self._direction_plans[layer] = DirectionPlan(rows, [directions[r] for r in rows], self.sae.decoder.device)
            # Registered after the feature hook, so at the SAE's layer the direction terms act last.
            self._direction_handles.append(self.layers[layer].register_forward_hook(self._on_direction_layer(layer)))

    @contextmanager
    def positions(self, fn: PositionFn) -> Iterator[None]:
        self._positions = fn
        try:
            yield
        finally:
            self._positions, self._mask = None, None

    def _on_ids(self, _module: nn.Module, args: tuple) -> None:
        if self._positions is None:
            self._mask = None
            return
        if not args:
            raise RuntimeError("steering needs the token ids: call the model with input_ids")
        ids = args[0]
        self._mask = self._positions(ids) & ~self.special[ids]

    def _on_output(self, _module: nn.Module, _args: tuple, output: object):
        mask = self._mask
        if mask is None or (self._plan is None and self.observation is None) or not bool(mask.any()):
            return None
        h = output[0] if isinstance(output, tuple) else output
        x = h[mask].float()
        plan = self._plan
        if plan is None:
            self.observation.add(x, self.sae.encode(x))
            return None
        codes = self.sae.encode(x) if plan.needs_codes or self.record is not None else None
        new = x + plan.change(codes, x.shape[0]) @ plan.directions
        if self.record is not None:
            self.record.add(codes, self.sae.encode(new))
        out = h.clone()
        out[mask] = new.to(h.dtype)
        return (out, *output[1:]) if isinstance(output, tuple) else out


    def _on_direction_layer(self, layer: int) -> Callable:
        def hook(_module: nn.Module, _args: tuple, output: object):
            mask, plan = self._mask, self._direction_plans.get(layer)
            if mask is None or plan is None or not bool(mask.any()):
                return None
            h = output[0] if isinstance(output, tuple) else output
            x = h[mask].float()
            new, acted = plan.apply(x)
            new = new.to(h.dtype)  # rounded once: what the next layer reads, and what the record measures
            if self.direction_record is not None:
                self.direction_record.add(plan, x @ plan.units.T, new.float() @ plan.units.T, acted)
            out = h.clone()
            out[mask] = new
            return (out, *output[1:]) if isinstance(output, tuple) else out
        return hook


def fixed_positions(mask: torch.Tensor) -> PositionFn:
    """Act where ``mask`` [B, T] is set, in a single forward over whole sequences."""
    def at(ids: torch.Tensor) -> torch.Tensor:
        if ids.shape != mask.shape:
            raise RuntimeError(f"positions for shape {tuple(mask.shape)} used on a forward of {tuple(ids.shape)}")
        return mask
    return at


def generation_positions(prompt_real: torch.Tensor, mode: str) -> PositionFn:
    """Positions of a generation from left-padded prompts [B, W]: the prefill covers columns 0..W-1 (the prompt),
    each decoding step the next column (a generated token). Forwards are counted as they come."""
    seen = 0

    def at(ids: torch.Tensor) -> torch.Tensor:
        nonlocal seen
        width = prompt_real.shape[1]
        cols = torch.arange(seen, seen + ids.shape[1], device=ids.device)
        seen += ids.shape[1]
        in_prompt = cols < width
        prompt = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
        prompt[:, in_prompt] = prompt_real[:, cols[in_prompt]]
        if mode == "prompt":
            return prompt
        generated = (~in_prompt).expand(ids.shape[0], -1)
        return generated if mode == "generated" else prompt | generated
    return at


def generate_steered(model: nn.Module, tokenizer, steering: Steering, prompts: list[list[int]], mode: str,
                     settings: GenerationSettings) -> Generations:
    """Responses to ``prompts`` with ``steering``'s intervention acting at ``mode`` positions."""
    return generate(model, tokenizer, prompts, settings,
                    around_batch=lambda mask: steering.positions(generation_positions(mask.bool(), mode)))
