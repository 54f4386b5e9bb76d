"""Automated interpretability for mined features: an LLM explains each feature from its marked contexts, then the
explanation is scored by detection and fuzzing on held-out windows (delphi's method, github.com/EleutherAI/delphi).

``examples``: which windows the explainer and the scorers see; ``prompts``: what they are asked and how answers
are parsed; ``scoring``: the arithmetic; ``backend``: one interface for every explainer model, with ``openai_http``
(any OpenAI-compatible server) and ``hf_local`` (transformers in process) behind it and ``cache`` in front;
``store``: the output file. The run itself is ``personamine.explain(...)`` (``personamine.jobs.explain``).
"""
