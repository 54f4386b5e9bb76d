"""Prompt formats (marking, 0-10 scaling, the persona block) and answer parsing."""

from __future__ import annotations

import numpy as np

from personamine.autointerp.examples import Example
from personamine.autointerp.prompts import (
    EXPLAIN_SYSTEM,
    PersonaEvidence,
    explanation_messages,
    firing_mask,
    judge_messages,
    marked_text,
    parse_answers,
    parse_explanation,
    scale_0_10,
)


def test_marking_and_scaling():
    tokens = ["a", " b", " c", "\n", " d"]
    assert marked_text(tokens, np.array([0, 1, 1, 0, 0], bool)) == "a<< b c>>\\n d"
    assert marked_text(tokens, np.array([1, 0, 0, 0, 1], bool)) == "<<a>> b c\\n<< d>>"
    assert firing_mask(np.float32([0, 0.2, 0.31, 1.0, 0.3]), 0.3).tolist() == [False, False, True, True, False]
    assert not firing_mask(np.zeros(3, np.float32), 0.3).any()
    assert scale_0_10(np.array([0, 0.04, 0.5, 1.0]), 1.0) == [0, 1, 5, 10]  # a firing token shows at least 1
    assert scale_0_10(np.array([0.5, 1.0, 4.0]), 2.0) == [2, 5, 10]  # rint(2.5) = 2; clipped at 10


def _ex(tokens, acts, score):
    return Example(tokens, np.float32(acts), score, 0, 0, "top")


def test_explanation_prompt_format():
    examples = [_ex(["The", " cat", " sat"], [0, 2.0, 0.4], 2.0), _ex(["A", " dog", "!"], [0.1, 1.0, 0], 1.0)]
    evidence = PersonaEvidence([("Who are you?", 0.5, "Who is he?", 0.0), ("Are you an AI?", 0.25, None, None)])
    system, user = explanation_messages(examples, 0.3, evidence)
    assert system == {"role": "system", "content": EXPLAIN_SYSTEM}
    assert user["content"] == (
        'Example 1: The<< cat>> sat\nActivations: (" cat" : 10)\n\n'
        'Example 2: A<< dog>>!\nActivations: (" dog" : 5)\n\n'  # scaled against the set's max, 2.0
        "The feature was also measured on chat prompts where a user talks to the assistant about itself (persona "
        "prompts), each matched with a control prompt about something else. Its mean activation over each prompt, "
        "scaled 0-10 against the highest shown here:\n"
        'persona (10): "Who are you?" | control (0): "Who is he?"\npersona (5): "Are you an AI?"')
    assert "[EXPLANATION]:" in system["content"]


def test_judge_prompts():
    one = judge_messages("detection", "cats", ["the cat"])[1]["content"]
    assert one == ("Explanation: cats\n\nText: the cat\n\nDoes the feature fire in this text? Answer with one digit: "
                   "1 for yes, 0 for no.")
    three = judge_messages("fuzzing", "cats", ["<<a>>", "b", "c"])
    assert "marked" in three[0]["content"]
    assert "Text 1: <<a>>\nText 2: b\nText 3: c" in three[1]["content"] and "list of 3 digits" in three[1]["content"]


def test_parse_answers():
    assert parse_answers("1", 1) == [1] and parse_answers("Yes, it does.", 1) == [1]
    assert parse_answers("No.", 1) == [0] and parse_answers("The answer is 0", 1) == [0]
    assert parse_answers("nothing notable", 1) is None and parse_answers("", 1) is None
    assert parse_answers("[1, 0,1]", 3) == [1, 0, 1]
    assert parse_answers("first [1,0] then [0,0,1]", 3) == [0, 0, 1]
    assert parse_answers("[1,2,0]", 3) is None and parse_answers("1 0 1", 3) is None


def test_parse_explanation():
    assert parse_explanation("thinking...\n[EXPLANATION]: cats and dogs") == ("cats and dogs", True)
    assert parse_explanation("[EXPLANATION]:\n  \"Tokens about the sea.\"\n") == ("Tokens about the sea.", True)
    assert parse_explanation("Explanation: x\n[EXPLANATION]: y\nmore") == ("y", True)
    assert parse_explanation("no format here\nsecond") == ("no format here", False)
    assert parse_explanation("") == ("", False)


DETECTION_SYSTEM_TEXT = (
    "You are checking an explanation of one feature of a language model. The feature fires on some tokens of a "
    "text, and the explanation says which. For each text you are shown, decide whether the feature, as the "
    "explanation describes it, fires anywhere in that text.")
FUZZING_SYSTEM_TEXT = (
    "You are checking an explanation of one feature of a language model. The feature fires on some tokens of a "
    "text, and the explanation says which. In each text you are shown, some tokens are marked <<like this>>. Decide "
    "whether the marked tokens are the ones the feature fires on, as the explanation describes it.")


def test_detection_and_fuzzing_prompts_word_for_word():
    """Both scorers' prompts exactly as the docs print them: they share the user message's layout and differ in the
    system prompt and the question (detection: "Does the feature fire in ...?"; fuzzing: "Are the marked tokens in
    ... the ones the feature fires on?")."""
    one_answer = " Answer with one digit: 1 for yes, 0 for no."
    five_answers = (" Answer with a list of 5 digits, one per text in order, 1 for yes and 0 for no, like "
                    "[0,1,0,1,0].")
    texts = ["t1", "<<t2>>", "t3", "t4", "t5"]
    listed = "Text 1: t1\nText 2: <<t2>>\nText 3: t3\nText 4: t4\nText 5: t5"
    cases = {
        ("detection", 1): (DETECTION_SYSTEM_TEXT, "Text: t1", "Does the feature fire in this text?" + one_answer),
        ("detection", 5): (DETECTION_SYSTEM_TEXT, listed, "Does the feature fire in each text?" + five_answers),
        ("fuzzing", 1): (FUZZING_SYSTEM_TEXT, "Text: t1",
                         "Are the marked tokens in this text the ones the feature fires on?" + one_answer),
        ("fuzzing", 5): (FUZZING_SYSTEM_TEXT, listed,
                         "Are the marked tokens in each text the ones the feature fires on?" + five_answers),
    }
    for (scorer, n), (system, body, question) in cases.items():
        assert judge_messages(scorer, "cat words", texts[:n]) == [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Explanation: cat words\n\n{body}\n\n{question}"}], (scorer, n)
