"""What the explainer and the scorers are asked, and how their answers are parsed (delphi's conventions).

Explanation: each example is one line of text where the tokens the feature fires on (above ``threshold`` x the
example's max) are wrapped ``<<like this>>`` (consecutive ones as one span), followed by an ``Activations:`` line
listing the marked tokens with their activation scaled to integers 0-10 against the explanation set's max; the
answer's last ``[EXPLANATION]:`` line is the explanation. Detection shows the explanation and unmarked texts;
fuzzing shows texts with marked tokens, correctly or wrongly marked. Both ask for one digit per text (``1``/``0``),
as a list ``[1,0,...]`` when one prompt holds several texts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

OPEN, CLOSE = "<<", ">>"
POSITIVE_WORDS = ("1", "yes")  # an answer token whose stripped, lowercased text is one of these means "fires"
NEGATIVE_WORDS = ("0", "no")
ANSWER_WORDS = POSITIVE_WORDS + NEGATIVE_WORDS

EXPLAIN_SYSTEM = (
    "You are an interpretability researcher studying one feature of a language model. The feature fires on some "
    "tokens of a text. You will see example texts where it fires. In each example the tokens it fires on are marked "
    f"{OPEN}like this{CLOSE} (consecutive firing tokens form one marked span), and the line after it lists the "
    "marked tokens with how strongly the feature fires on each, from 0 to 10. Work out what the marked tokens, and "
    "the context just before them, have in common. Describe the pattern in one short sentence (at most 20 words); "
    "do not list the examples. End your answer with one line of the form\n[EXPLANATION]: <your explanation>"
)
DETECTION_SYSTEM = (
    "You are checking an explanation of one feature of a language model. The feature fires on some tokens of a "
    "text, and the explanation says which. For each text you are shown, decide whether the feature, as the "
    "explanation describes it, fires anywhere in that text."
)
FUZZING_SYSTEM = (
    "You are checking an explanation of one feature of a language model. The feature fires on some tokens of a "
    f"text, and the explanation says which. In each text you are shown, some tokens are marked {OPEN}like "
    f"this{CLOSE}. Decide whether the marked tokens are the ones the feature fires on, as the explanation describes "
    "it."
)
_QUESTION = {"detection": "Does the feature fire in {it}?", "fuzzing": "Are the marked tokens in {it} the ones "
                                                                       "the feature fires on?"}


def shown_text(tokens: list[str]) -> str:
    """One line: newlines and tabs become visible escapes so each example stays on its line."""
    return "".join(tokens).replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def firing_mask(acts: np.ndarray, threshold: float) -> np.ndarray:
    """Tokens above ``threshold`` x the example's max (none for a window that never fires)."""
    top = float(acts.max()) if acts.size else 0.0
    return (acts > threshold * top) & (acts > 0) if top > 0 else np.zeros(acts.shape, bool)


def marked_text(tokens: list[str], mask: np.ndarray) -> str:
    out, inside = [], False
    for token, on in zip(tokens, mask.tolist(), strict=True):
        if on != inside:
            out.append(OPEN if on else CLOSE)
            inside = on
        out.append(token)
    if inside:
        out.append(CLOSE)
    return shown_text(out)


def scale_0_10(values: np.ndarray, top: float) -> list[int]:
    """Activations as integers 0-10 against ``top``; a firing token shows at least 1."""
    scaled = np.clip(np.rint(10.0 * np.asarray(values, np.float64) / top), 0, 10) if top > 0 else np.zeros(
        np.shape(values))
    return [max(int(s), 1 if v > 0 else 0) for s, v in zip(scaled.tolist(), np.asarray(values).tolist(), strict=True)]


@dataclass
class PersonaEvidence:
    """Matched persona/control prompt pairs with the feature's mean activation on each (from a discovery file)."""

    pairs: list[tuple[str, float, str | None, float | None]]  # persona text, value, control text, value


def _evidence_block(evidence: PersonaEvidence) -> str:
    values = [v for _, p, _, c in evidence.pairs for v in (p, c) if v is not None]
    top = max(values, default=0.0)
    lines = ["The feature was also measured on chat prompts where a user talks to the assistant about itself "
             "(persona prompts), each matched with a control prompt about something else. Its mean activation "
             "over each prompt, scaled 0-10 against the highest shown here:"]
    for persona, p, control, c in evidence.pairs:
        line = f"persona ({scale_0_10(np.array([p]), top)[0]}): {json.dumps(persona, ensure_ascii=False)}"
        if control is not None and c is not None:
            line += f" | control ({scale_0_10(np.array([c]), top)[0]}): {json.dumps(control, ensure_ascii=False)}"
        lines.append(line)
    return "\n".join(lines)


def explanation_messages(examples: list, threshold: float, evidence: PersonaEvidence | None = None) -> list[dict]:
    """``examples``: ``personamine.autointerp.examples.Example`` objects, best first."""
    top = max((e.score for e in examples), default=0.0)
    blocks = []
    for i, e in enumerate(examples, 1):
        mask = firing_mask(e.acts, threshold)
        listed = ", ".join(f"({json.dumps(shown_text([e.tokens[j]]), ensure_ascii=False)} : {v})"
                           for j, v in zip(np.nonzero(mask)[0].tolist(), scale_0_10(e.acts[mask], top), strict=True))
        blocks.append(f"Example {i}: {marked_text(e.tokens, mask)}\nActivations: {listed}")
    user = "\n\n".join(blocks)
    if evidence is not None and evidence.pairs:
        user += "\n\n" + _evidence_block(evidence)
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": user}]


_EXPLANATION = re.compile(r"\[?\s*explanation\s*\]?\s*:", re.IGNORECASE)


def parse_explanation(text: str) -> tuple[str, bool]:
    """(explanation, whether the answer followed the format). What follows the last ``[EXPLANATION]:`` (its first
    non-empty line) wins; an answer without one gives its first non-empty line (at most 300 characters), flagged
    as not parsed."""
    for match in reversed(list(_EXPLANATION.finditer(text))):
        lines = [line.strip().strip('"').strip() for line in text[match.end():].splitlines()]
        if found := next((line for line in lines if line), None):
            return found[:300], True
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0][:300] if lines else ""), False


def judge_messages(scorer: str, explanation: str, texts: list[str]) -> list[dict]:
    """Messages for ``scorer`` ("detection" or "fuzzing") on ``texts`` (already marked for fuzzing)."""
    system = DETECTION_SYSTEM if scorer == "detection" else FUZZING_SYSTEM
    if len(texts) == 1:
        body = f"Text: {texts[0]}"
        ask = (_QUESTION[scorer].format(it="this text") +
               " Answer with one digit: 1 for yes, 0 for no.")
    else:
        body = "\n".join(f"Text {i}: {t}" for i, t in enumerate(texts, 1))
        ask = (_QUESTION[scorer].format(it="each text") + f" Answer with a list of {len(texts)} digits, one per "
               "text in order, 1 for yes and 0 for no, like [" + ",".join("1" if i % 2 else "0"
                                                                        for i in range(len(texts))) + "].")
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Explanation: {explanation}\n\n{body}\n\n{ask}"}]


_LIST = re.compile(r"\[([^\[\]]*)\]")
_WORD = re.compile(r"[a-z0-9]+")


def parse_answers(text: str, n: int) -> list[int] | None:
    """One 0/1 per text from the answer's text, or None. One text: the first answer word (1/0/yes/no); several:
    the last bracketed list of exactly n digits."""
    if n == 1:
        for word in _WORD.findall(text.lower()):
            if word in ANSWER_WORDS:
                return [1 if word in POSITIVE_WORDS else 0]
        return None
    for inside in reversed(_LIST.findall(text)):
        items = [s.strip() for s in inside.split(",")]
        if len(items) == n and all(s in ("0", "1") for s in items):
            return [int(s) for s in items]
    return None
