"""The documentation names only things that exist: every `llm-assets` / `python -m llm_assets.cli`
command and `make` target in README.md and docs/*.md is one the CLI or the Makefile has, and every
asset key or internal table written as `prefix/name` is one the code declares."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import dagster as dg
import pytest

from llm_assets import asset_keys
from llm_assets.cli import build_parser

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PREFIXES = ("raw", "curated", "enriched", "kb", "models", "evaluation", "monitoring", "analytics", "features",
            "signals", "enrichment")
KEY = re.compile(rf"`((?:{'|'.join(PREFIXES)})/[a-z_]+)(?:\[[^\]]*\])?`")
# A command as written in code: at the start of a code span or of a line (not "llm-assets in production").
COMMAND = re.compile(r"(?:^|`)\s*(?:[A-Z_]+=\S+ )*(?:llm-assets|python -m llm_assets\.cli) "
                     r"([a-z-]+(?: (?:list|add-partition|promote|rollback))?)", re.M)
MAKE = re.compile(r"`make ([a-z-]+)`")


def _declared_keys() -> set[str]:
    from llm_assets.analytics_definitions import defs as analytics
    from llm_assets.definitions import defs

    keys = {k.to_user_string() for d in (defs, analytics)
            for k in d.resolve_asset_graph().get_all_asset_keys()}
    return keys | {v.to_user_string() for v in vars(asset_keys).values() if isinstance(v, dg.AssetKey)}


def _is_command(words: str) -> bool:
    """Whether `llm-assets <words> --help` is accepted (exit 0) by the CLI's own parser."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args([*words.split(), "--help"])
        except SystemExit as exc:
            return exc.code == 0
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_declared_asset_keys_commands_and_make_targets(doc):
    text = doc.read_text()
    declared = _declared_keys()
    unknown_keys = sorted({k for k in KEY.findall(text) if k not in declared})
    assert unknown_keys == [], f"{doc.name} names asset keys the code does not declare"
    unknown_commands = sorted({c for c in COMMAND.findall(text) if not _is_command(c)})
    assert unknown_commands == [], f"{doc.name} names commands the CLI does not have"
    targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    assert sorted(set(MAKE.findall(text)) - targets) == [], f"{doc.name} names make targets the Makefile lacks"
