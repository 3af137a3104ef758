"""The code is the layer, the domain pack is the domain: read from the source with `ast`.

- No label or action verb of the payments pack is a string in `llm_assets/` outside the pack
  folder (`llm_assets/domain/packs/`): labels not even inside a longer string (they are
  snake_case words no prose needs), verbs not as a string of their own (they are English words).
- The sample generator is dev and test tooling: no production module imports it.
"""

import ast
from pathlib import Path

import pytest

from llm_assets.domain.pack import DEFAULT_PACK, PACKS_DIR, load_pack
from tests.test_architecture import PACKAGE, imported_modules

pytestmark = pytest.mark.unit

PAYMENTS = load_pack(PACKS_DIR / DEFAULT_PACK)
GENERATOR = "llm_assets.domain.packs.payments_ops.sample_data"
# Dev and test tooling may use the generator: `make dev` and `make demo` produce its events.
TOOLING = ("dev",)


def _code_files() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if PACKS_DIR not in p.parents]


def _strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def payments_words_in(files: list[Path]) -> list[str]:
    found = []
    for path in files:
        for line, text in _strings(path):
            labels = [label for label in PAYMENTS.labels if label in text and label != PAYMENTS.fallback_label]
            exact = [word for word in (*PAYMENTS.labels, *PAYMENTS.action_verbs)
                     if text == word]
            if labels or exact:
                where = path.relative_to(PACKAGE.parent) if PACKAGE.parent in path.parents else path.name
                found.append(f"{where}:{line}: {sorted(set(labels + exact))}")
    return found


def test_the_checker_finds_a_payments_label_or_verb(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('RULES = {"fraud_suspected": 1}\nVERB = "escalate"\nDOC = "we escalate when needed"\n')
    assert sorted(f.split(": ", 1)[1] for f in payments_words_in([probe])) == ["['escalate']", "['fraud_suspected']"]


def test_no_payments_label_or_verb_in_code_outside_the_pack():
    assert payments_words_in(_code_files()) == []


def test_no_production_module_imports_the_sample_generator():
    offenders = []
    for path in _code_files():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in TOOLING:
            continue
        for line, module in imported_modules(path):
            if module == GENERATOR or module.startswith(GENERATOR + ".") or module.endswith(".sample_data"):
                offenders.append(f"{relative}:{line} imports {module}")
    assert offenders == []
