"""PII recall and precision of `redact` on an independent corpus, and its speed.

The corpus comes from `tests/support/pii_corpus.py` (written apart from the sample generator):
2,700 planted values in 2,400 operational sentences (phones in national and international
formats of a dozen countries, cards of nine brands in several spacings, IBANs of every SEPA
country with and without spaces and in lower case, emails, national ids of eight countries)
and 2,000 PII-free sentences full of look-alikes (amounts, ids, timestamps, versions, IPs).

A planted value is recalled when none of its letters or digits survive in clear; precision is
the share of redactions that hit a planted value (every redaction in a PII-free sentence is a
false one). Goals: recall >= 99.5% for every kind, precision >= 97%.

Speed: `redact` over the corpus sentences and over the sample generator's case texts (what
`enriched/cases` redacts), best of `rounds`, in cases/s.

Reference: Microsoft Presidio's analyzer with its pattern recognizers only (`NoOpNlpEngine`, no
spaCy model), when `presidio-analyzer` is installed in the venv (it is not a dependency of the
project: `.venv/bin/pip install presidio-analyzer` to compare); skipped with a message otherwise.

Run: `.venv/bin/python benchmarks/pii_recall.py [rounds=3]`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from llm_assets.lib.redaction import redact  # noqa: E402
from llm_assets.domain.packs.payments_ops.sample_data.generator import generate_messages  # noqa: E402
from tests.support.pii_corpus import KINDS, Score, clean_sentences, pii_sentences, score  # noqa: E402

RECALL_GOAL, PRECISION_GOAL = 0.995, 0.97


def _report(name: str, s: Score, show: int = 8) -> None:
    print(f"\n== {name}")
    for kind in KINDS:
        ok = "ok" if s.recall(kind) >= RECALL_GOAL else "BELOW GOAL"
        print(f"  recall {kind:<12} {s.recall(kind):7.2%}  ({s.recalled[kind]}/{s.planted[kind]})  {ok}")
    total_planted, total_recalled = sum(s.planted.values()), sum(s.recalled.values())
    print(f"  recall {'all':<12} {total_recalled / total_planted:7.2%}  ({total_recalled}/{total_planted})")
    ok = "ok" if s.precision >= PRECISION_GOAL else "BELOW GOAL"
    print(f"  precision           {s.precision:7.2%}  ({s.true_redactions} true, {s.false_redactions} false "
          f"redactions; {s.clean_changed} of the PII-free sentences changed)  {ok}")
    if s.misaligned:
        print(f"  {s.misaligned} outputs changed more than placeholders")
    weak = sorted((s.recalled_by_format[f] / n, f) for f, n in s.planted_by_format.items()
                  if s.recalled_by_format[f] < n)
    if weak:
        print(f"  format classes below 100% ({len(weak)} of {len(s.planted_by_format)}): "
              + ", ".join(f"{f} {r:.0%}" for r, f in weak[:24]))
    for fmt, value, redacted in s.leaks[:show]:
        print(f"    leak {fmt}: {value!r} -> {redacted!r}")
    for piece, text in s.false_positives[:show]:
        print(f"    false {piece!r} in {text!r}")


def _speed(fn: Callable[[str], object], texts: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for t in texts:
            fn(t)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def _presidio() -> Callable[[str], str] | None:
    """Presidio's pattern recognizers for our kinds, on the no-op NLP engine (no model download)."""
    # Presidio's email recognizer asks tldextract, which would fetch the public suffix list from
    # the internet on first use; the snapshot it ships is enough here.
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    try:
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer, DeTaxIdRecognizer, EmailRecognizer, EsNieRecognizer, EsNifRecognizer,
            IbanRecognizer, InAadhaarRecognizer, ItFiscalCodeRecognizer, PhoneRecognizer, UkNinoRecognizer,
            UsItinRecognizer, UsSsnRecognizer)
    except ImportError as exc:
        print(f"\n== Presidio reference skipped: presidio-analyzer is not installed ({exc.name}); "
              "`.venv/bin/pip install presidio-analyzer` to compare (not a project dependency).")
        return None
    kinds = {"EMAIL_ADDRESS": "email", "CREDIT_CARD": "card", "PHONE_NUMBER": "phone", "IBAN_CODE": "iban"}
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.add_recognizer(EmailRecognizer())
    registry.add_recognizer(CreditCardRecognizer())
    registry.add_recognizer(IbanRecognizer())
    # The regions our redactor reads national formats for (Presidio's default has no FR).
    registry.add_recognizer(PhoneRecognizer(supported_regions=("US", "CA", "GB", "DE", "FR", "IN", "BR")))
    for cls in (UsSsnRecognizer, UsItinRecognizer, UkNinoRecognizer, InAadhaarRecognizer, EsNifRecognizer,
                EsNieRecognizer, ItFiscalCodeRecognizer, DeTaxIdRecognizer):
        recognizer = cls(supported_language="en")
        registry.add_recognizer(recognizer)
        kinds.update({e: "national_id" for e in recognizer.supported_entities})
    no_model = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    engine = AnalyzerEngine(registry=registry, nlp_engine=no_model, supported_languages=["en"])

    def redact_with_presidio(text: str) -> str:
        results = engine.analyze(text, language="en", entities=list(kinds))
        spans = sorted((r.start, r.end, kinds[r.entity_type]) for r in results)
        merged: list[list] = []
        for start, end, kind in spans:  # overlapping results become one redaction
            if merged and start < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end, kind])
        for start, end, kind in reversed(merged):
            text = text[:start] + f"<{kind.upper()}>" + text[end:]
        return text

    return redact_with_presidio


def main(rounds: int = 3) -> None:
    sentences, clean = pii_sentences(), clean_sentences()
    print(f"corpus: {sum(len(s.planted) for s in sentences)} planted values in {len(sentences)} sentences, "
          f"{len(clean)} PII-free sentences")
    ours = score(lambda t: redact(t).text, sentences, clean)
    _report("llm_assets.lib.redaction.redact", ours)

    corpus_texts = [s.text for s in sentences] + clean
    cases = [json.loads(m.value)["payload_raw"] for m in generate_messages(3000) if m.kind == "valid"]
    corpus_rate = _speed(redact, corpus_texts, rounds)
    cases_rate = _speed(redact, cases, rounds)
    mean = {name: sum(map(len, texts)) / len(texts) for name, texts in (("corpus", corpus_texts), ("cases", cases))}
    print(f"\nspeed of redact: {corpus_rate:,.0f} corpus sentences/s (mean {mean['corpus']:.0f} chars); "
          f"{cases_rate:,.0f} sample cases/s (mean {mean['cases']:.0f} chars)")

    # Worst cases for the regular expressions and the phone windows: 16 KB payloads (the ingest
    # limit) of digit groups, separators, long tokens.
    worst = {"spaced digits": "1 " * 8000, "dashed pairs": "12-" * 5300, "dotted domain": "x@" + "a." * 8000,
             "long token and an @": "a" * 16000 + " x@y.com", "phone list": "(212) 555-0134 / " * 940}
    slowest = max((_speed(redact, [t], 1) ** -1, name) for name, t in worst.items())
    print(f"slowest 16 KB payload: {slowest[0] * 1000:.0f} ms ({slowest[1]})")

    presidio = _presidio()
    if presidio is not None:
        _report("Presidio analyzer, pattern recognizers only (reference)", score(presidio, sentences, clean))
        print(f"\nspeed of Presidio: {_speed(presidio, corpus_texts[:1000], 1):,.0f} corpus sentences/s")

    failed = [k for k in KINDS if ours.recall(k) < RECALL_GOAL]
    failed += ["precision"] if ours.precision < PRECISION_GOAL else []
    print(f"\ngoals (recall >= {RECALL_GOAL:.1%} per kind, precision >= {PRECISION_GOAL:.0%}): "
          + ("met" if not failed else "NOT met: " + ", ".join(failed)))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
