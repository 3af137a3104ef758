"""Instruction-like text in untrusted input: cases that try to talk to the model.

A case text (or field) is data; the prompt says so and defuses its delimiters (`prompts`). This module
flags the cases that try anyway: text that addresses the model (ignore / disregard the instructions,
"you are now", "as the assistant"), opens a role or a chat-template turn (`system:`, `<|im_start|>`,
`[INST]`), forges a delimiter (`<case>`, `</case>`), or dictates the answer (set the label / the
confidence to ...). A flagged case is still enriched (and its row says `injection_suspected`), but it
never becomes a training example for the gate. Language-generic on purpose: no domain words.
"""

from __future__ import annotations

import re

_PATTERNS = [
    r"\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(previous|above|prior|earlier|all|these|your|the)\b"
    r"[^.\n]{0,20}\b(instructions?|rules?|prompts?|labels?|guidelines?)\b",
    r"\byou are (now|no longer)\b",
    r"\b(act|answer|respond|reply) as (the |an? )?(assistant|system|model|administrator)\b",
    r"(^|\n)\s*(system|assistant|developer)\s*:",
    r"<\|?\s*(im_start|im_end|system|assistant|endoftext)\s*\|?>",
    r"\[/?INST\]",
    r"<\s*/?\s*case\s*>",
    r"\b(set|change|make|put)\s+(the\s+)?(label|confidence|severity|classification|actions?)\s+(to|=|as)\b",
    r"\b(answer|respond|reply|output|return|classify (it|this|the case)?\s*as)\s+with\s+(the\s+)?label\b",
    r"\b(label|classify) (this|the|it)( case)? as\b",
    r"\bnew instructions?\s*:",
]
_INJECTION = re.compile("|".join(f"(?:{p})" for p in _PATTERNS), re.IGNORECASE)


def injection_suspected(*texts: str | None) -> bool:
    """True when any of the texts carries an instruction-like pattern."""
    return any(text and _INJECTION.search(text) for text in texts)


def matched(text: str) -> str | None:
    """The first instruction-like span in `text` (for a reason to show), or None."""
    found = _INJECTION.search(text or "")
    return found.group(0) if found else None
