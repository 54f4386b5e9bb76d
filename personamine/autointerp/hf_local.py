"""Explainer backend: a Hugging Face chat model in process (transformers ``generate``, batched), no server, offline.

Prompts are rendered with the model's chat template and generated in batches of requests that share their
generation settings, shortest prompts together (left padding). Log-probabilities come from the raw logits of every
generated step: the top alternatives plus every token that spells one of the request's ``watch`` words, so a small
model's P("1") vs P("0") is read exactly even when neither is among its top choices.
"""

from __future__ import annotations

from personamine.autointerp.backend import OnDone, Request, Response
from personamine.errors import PersonamineError
from personamine.model.loading import pick_device, pick_dtype, resolve_model_source


class LocalBackend:
    """Loads the model on the first request, so a run answered wholly from the cache loads nothing."""

    def __init__(self, model: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 revision: str | None = None) -> None:
        self.model, self.batch_size = model, max(1, batch_size)
        self._options = (device, dtype, revision)
        self.lm = None
        self._pieces: dict[int, str] = {}
        self._watch: dict = {}

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device, dtype, revision = self._options
        self.device = pick_device(device)
        source = resolve_model_source(self.model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
            lm = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=pick_dtype(dtype, self.device))
        except (OSError, ValueError) as exc:
            raise PersonamineError(f"cannot load explainer model {self.model!r}: {str(exc).splitlines()[0]}") from exc
        if not getattr(self.tokenizer, "chat_template", None):
            raise PersonamineError(f"explainer model {self.model!r} has no chat template: use an instruct/chat model")
        self.lm = lm.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.lm.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else []) | (
            {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set())
        self._torch = torch

    def _piece(self, token_id: int) -> str:
        if (piece := self._pieces.get(token_id)) is None:
            piece = self._pieces[token_id] = self.tokenizer.decode([token_id])
        return piece

    def _watch_ids(self, words: tuple[str, ...]):
        if words not in self._watch:
            wanted = {w.strip().lower() for w in words}
            ids = [i for i in range(len(self.tokenizer)) if self._piece(i).strip().lower() in wanted]
            self._watch[words] = self._torch.tensor(ids, dtype=self._torch.long)
        return self._watch[words]

    def complete(self, requests: list[Request], on_done: OnDone | None = None) -> list[Response]:
        if requests and self.lm is None:
            self._load()
        prompts = [self.tokenizer.apply_chat_template(r.message_dicts(), add_generation_prompt=True, tokenize=False)
                   for r in requests]
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        setting = [(r.max_tokens, r.temperature, r.top_logprobs, r.watch) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: (setting[i], lengths[i]))
        out: list[Response | None] = [None] * len(requests)
        batch: list[int] = []
        for pos, i in enumerate(order):
            batch.append(i)
            if len(batch) == self.batch_size or pos + 1 == len(order) or setting[order[pos + 1]] != setting[i]:
                for j, response in zip(batch, self._generate([prompts[j] for j in batch], requests[i]), strict=True):
                    out[j] = response
                    if on_done is not None:
                        on_done(j, response)
                batch = []
        return out  # type: ignore[return-value]

    def _generate(self, prompts: list[str], like: Request) -> list[Response]:
        torch = self._torch
        enc = self.tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(self.device)
        config = self.lm.generation_config.__class__.from_dict({
            **self.lm.generation_config.to_dict(), "max_new_tokens": like.max_tokens,
            "do_sample": like.temperature > 0, "temperature": like.temperature if like.temperature > 0 else None,
            "top_p": None, "top_k": None, "pad_token_id": self.tokenizer.pad_token_id,
            "output_logits": like.top_logprobs > 0, "return_dict_in_generate": True})
        with torch.inference_mode():
            gen = self.lm.generate(**enc, generation_config=config)
        new = gen.sequences[:, enc["input_ids"].shape[1]:].tolist()
        watch = self._watch_ids(like.watch) if like.watch else None
        responses = []
        for row, ids in enumerate(new):
            n = next((k for k, t in enumerate(ids) if t in self.eos), len(ids))
            ids = ids[:n]
            response = Response(text=self.tokenizer.decode(ids, skip_special_tokens=True),
                                tokens=[self._piece(t) for t in ids])
            if like.top_logprobs > 0:
                response.logprobs = [self._alternatives(gen.logits[step][row], like.top_logprobs, watch)
                                     for step in range(n)]
            responses.append(response)
        return responses

    def _alternatives(self, logits, k: int, watch) -> list[tuple[str, float]]:
        torch = self._torch
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        ids = torch.topk(logprobs, min(k, logprobs.numel())).indices
        if watch is not None and watch.numel():
            ids = torch.cat([ids, watch[~torch.isin(watch, ids)]])
        return [(self._piece(int(i)), float(logprobs[i])) for i in ids.tolist()]
