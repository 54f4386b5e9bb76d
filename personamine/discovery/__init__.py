"""Discovery: which SAE features fire when a chat model is asked about itself (``personamine.discover``).

Each prompt is rendered with the model's chat template as a user turn followed by the assistant's generation
prompt, so the model reads it as addressed to the Assistant. The residual stream after ``layer`` is
read at one of three positions, every SAE feature is encoded exactly, and every prompt's feature vector is kept.
Features are ranked by mean over the self-referential prompts minus mean over matched controls (the same
question forms about someone or something else): a raw mean favours features that fire on every prompt.

``run`` is the run; ``vectors`` encodes the prompts, ``rank`` ranks, ``preflight`` checks the SAE on the prompts,
``select`` picks a mining run's features from a discovery file. Prompt rendering is ``personamine.model.prompts``,
the file ``personamine.files.discover``.
"""
