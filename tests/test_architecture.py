"""Import rules of the package, read from the source with `ast` (no import side effects).

- One-way layers: each package (a folder or a top-level module of `llm_assets/`) imports only the
  packages `LAYERS` puts below it, so the package graph has no cycle.

- Resources are clients of external systems: nothing under `llm_assets/resources/` imports a
  domain package (so a domain can never leak into the transport layer).
- `ingest/` stands below the sensors and the dev tooling: it imports neither.
- `domain/` (the domain pack model) is the bottom layer: it imports only `settings`.
- No module of the package imports Dagster internals (`dagster._...`).
- Only `settings.py` and `resources/environments.py` read the environment (dev tooling and the CLI
  aside), with one documented exception.
"""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[1] / "llm_assets"
DOMAINS = ("ingest", "curated", "knowledge_base", "enrichment", "evaluation", "monitoring", "models",
           "analytics", "sensors", "domain", "dev", "lib", "llm", "gate", "maintenance")


def imported_modules(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """Every module a file imports (absolute names; relative imports resolved against the file)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = path.relative_to(package.parent).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package_parts[: len(package_parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from llm_assets import enrichment` imports a package by name.
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def violations(folder: str, forbidden: tuple[str, ...], package: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted((package / folder).rglob("*.py")):
        for line, module in imported_modules(path, package):
            parts = module.split(".")
            if parts[0] == "llm_assets" and len(parts) > 1 and parts[1] in forbidden:
                out.append(f"{path.relative_to(package.parent)}:{line} imports {module}")
    return out


def test_imported_modules_sees_absolute_relative_and_package_imports(tmp_path):
    # The rule checker itself must see every import form, or the rules below could pass vacuously.
    package = tmp_path / "llm_assets"
    (package / "resources").mkdir(parents=True)
    sample = package / "resources" / "probe.py"
    sample.write_text("import llm_assets.ingest\nfrom llm_assets import enrichment\nfrom ..sensors import x\n"
                      "from llm_assets.settings import delta_root\n")
    modules = {m for _, m in imported_modules(sample, package)}
    assert {"llm_assets.ingest", "llm_assets.enrichment", "llm_assets.sensors.x"} <= modules
    flagged_lines = {v.split(" imports ")[0] for v in violations("resources", DOMAINS, package)}
    assert flagged_lines == {f"llm_assets/resources/probe.py:{n}" for n in (1, 2, 3)}


def test_resources_import_no_domain_code():
    assert violations("resources", DOMAINS) == []


def test_ingest_imports_neither_sensors_nor_dev_tooling():
    assert violations("ingest", ("sensors", "dev")) == []


def test_the_domain_pack_model_is_the_bottom_layer():
    others = tuple(d for d in DOMAINS if d != "domain") + ("resources", "storage", "definitions", "partitions",
                                                            "automation", "metadata", "execution")
    assert violations("domain", others) == []


# The declared order, bottom first: a package imports only packages listed before it. `encoders/` holds
# model maths in numpy (the BERT sentence encoder that `resources/embedder.py` runs), so it may import
# `settings` at most. `lib/` holds pure helpers shared by the domains (redaction, plots); `llm/` the LLM
# layer (prompts, parsing, the enricher, the pipeline) that both `enriched/cases` and the model lifecycle
# drive; `gate/` the embedding gate and its distillation; `enrichment/` (`enriched/cases`) stands on the
# model lifecycle, not below it.
LAYERS = (
    "settings", "encoders", "asset_keys", "storage", "metadata", "partitions", "automation", "failpoints",
    "policies", "execution", "domain",
    "resources",
    "lib",
    "ingest", "curated", "knowledge_base", "evaluation",
    "llm", "gate", "models", "monitoring", "enrichment", "maintenance",
    "analytics", "sensors",
    "definitions", "analytics_definitions",
    "dev", "cli",
)
ALLOWED = {name: set(LAYERS[:rank]) for rank, name in enumerate(LAYERS)}


def package_of(path: Path, package: Path = PACKAGE) -> str | None:
    """`enrichment` for `llm_assets/enrichment/assets.py`, `settings` for `llm_assets/settings.py`;
    None for `llm_assets/__init__.py`."""
    parts = path.relative_to(package).with_suffix("").parts
    return None if parts == ("__init__",) else parts[0]


def package_imports(package: Path = PACKAGE) -> dict[str, dict[str, list[str]]]:
    """importer package -> imported package -> the `file:line imports module` lines behind the edge."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(package.rglob("*.py")):
        importer = package_of(path, package)
        if importer is None:
            continue
        for line, module in imported_modules(path, package):
            parts = module.split(".")
            if parts[0] == "llm_assets" and len(parts) > 1 and parts[1] != importer:
                graph.setdefault(importer, {}).setdefault(parts[1], []).append(
                    f"{path.relative_to(package.parent)}:{line} imports {module}")
    return graph


def layer_violations(package: Path = PACKAGE, allowed: dict[str, set[str]] = ALLOWED) -> list[str]:
    out = []
    for importer, imported in sorted(package_imports(package).items()):
        if importer not in allowed:
            out.append(f"{importer}: not declared in LAYERS")
            continue
        for name, lines in sorted(imported.items()):
            if name not in allowed[importer]:
                out += [f"{where} ({name} is not below {importer})" for where in lines]
    return out


def package_cycles(package: Path = PACKAGE) -> list[list[str]]:
    """Every cycle of the package graph, found once each (depth-first, from each package in turn)."""
    graph = {importer: set(imported) for importer, imported in package_imports(package).items()}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                cycles.append(path + [nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle from its smallest name only
                visit(nxt, path + [nxt])

    for start in sorted(graph):
        visit(start, [start])
    return cycles


def test_layer_checker_flags_a_planted_violation_and_cycle(tmp_path):
    # The checker must see a wrong-way import and a cycle, or the two rules below could pass vacuously.
    package = tmp_path / "llm_assets"
    for folder in ("lib", "enrichment", "models"):
        (package / folder).mkdir(parents=True)
    (package / "lib" / "probe.py").write_text("from llm_assets.enrichment import assets\n")
    (package / "enrichment" / "assets.py").write_text("from llm_assets.lib import probe\nfrom ..models import x\n")
    (package / "models" / "x.py").write_text("import llm_assets.enrichment.assets\n")
    flagged = layer_violations(package)
    assert flagged == ["llm_assets/lib/probe.py:1 imports llm_assets.enrichment (enrichment is not below lib)",
                       "llm_assets/lib/probe.py:1 imports llm_assets.enrichment.assets (enrichment is not below lib)",
                       "llm_assets/models/x.py:1 imports llm_assets.enrichment.assets (enrichment is not below models)"]
    assert package_cycles(package) == [["enrichment", "lib", "enrichment"], ["enrichment", "models", "enrichment"]]


def test_every_package_is_declared_in_the_layers():
    found = {package_of(p) for p in PACKAGE.rglob("*.py")} - {None}
    assert found - set(LAYERS) == set(), "add the new package to LAYERS, above everything it imports"


def test_imports_follow_the_declared_layers():
    assert layer_violations() == []


def test_the_package_graph_has_no_cycle():
    assert package_cycles() == []


# The one documented exception. Dagster 1.13 records a check result of a partition-range run without a
# partition; the only way to report one evaluation per date, tied to that date's materialization (what
# the UI and `all_deps_blocking_checks_passed()` read), is `AssetCheckEvaluation(partition=...,
# target_materialization_data=...)`, whose data class Dagster does not re-export. Kept in one module.
ALLOWED_INTERNALS = {
    "partitions.py": {"dagster._core.definitions.asset_checks.asset_check_evaluation",
                      "dagster._core.definitions.asset_checks.asset_check_evaluation."
                      "AssetCheckEvaluationTargetMaterializationData"},
    # The run launcher API a health check implements (run monitoring calls it); Dagster exports the
    # launcher classes but not the result types (ARCHITECTURE section 9).
    "dev/run_launcher.py": {"dagster._core.launcher", "dagster._core.launcher.CheckRunHealthResult",
                            "dagster._core.launcher.WorkerStatus"},
}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_dagster_internals(path):
    allowed = ALLOWED_INTERNALS.get(str(path.relative_to(PACKAGE)), set())
    internal = [f"{line}: {m}" for line, m in imported_modules(path) if m.startswith("dagster._") and m not in allowed]
    assert internal == []


def test_the_allowed_internal_is_still_not_public():
    # When Dagster exports it, import it from `dagster` and drop the exception above.
    import dagster as dg

    assert not hasattr(dg, "AssetCheckEvaluationTargetMaterializationData")
    assert not hasattr(dg, "CheckRunHealthResult") and not hasattr(dg, "WorkerStatus")


# Who may read the process environment: settings.py (a function per variable), the resources table per
# LLM_ASSETS_ENV, and tooling that runs beside the code location (dev/, which sets it for the processes it
# starts, and the CLI).
ENVIRONMENT_READERS = ("settings.py", "resources/environments.py", "cli.py", "dev/")
# The one documented exception: pymilvus reads MILVUS_URI at import and rejects a Milvus Lite file path,
# so this function hides the variable for that import and puts it back (its docstring says why).
ENVIRONMENT_EXCEPTIONS = {("resources/milvus.py", "_import_pymilvus")}
ENVIRONMENT_NAMES = {"environ", "environb", "getenv", "getenvb"}


def environment_reads(path: Path) -> list[tuple[int, str | None]]:
    """`(line, enclosing function)` of every `os.environ` (`.get`, `[...]`, `setdefault`...), `os.getenv`
    and `from os import environ / getenv`, whatever `os` is imported as."""
    tree = ast.parse(path.read_text(), filename=str(path))
    os_names = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names if alias.name == "os"}
    found: list[tuple[int, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if (isinstance(node, ast.Attribute) and node.attr in ENVIRONMENT_NAMES
                and isinstance(node.value, ast.Name) and node.value.id in os_names):
            found.append((node.lineno, function))
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and not node.level and any(
                alias.name in ENVIRONMENT_NAMES for alias in node.names):
            found.append((node.lineno, function))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, None)
    return found


def test_environment_reads_sees_every_form(tmp_path):
    # The checker must see each way of reading the environment, or the rule below could pass vacuously.
    sample = tmp_path / "probe.py"
    sample.write_text("import os\nimport os as o\nfrom os import getenv\n"
                      "A = os.environ.get('A')\nB = os.getenv('B')\n"
                      "def f(env=os.environ):\n    return o.environ['C']\n"
                      "P = os.path.join('a', 'b')\n")
    assert environment_reads(sample) == [(3, None), (4, None), (5, None), (6, "f"), (7, "f")]


def test_only_settings_and_the_environments_table_read_the_environment():
    reads = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name in ENVIRONMENT_READERS or name.startswith(tuple(r for r in ENVIRONMENT_READERS if r.endswith("/"))):
            continue
        reads += [f"llm_assets/{name}:{line} ({function or 'module level'})" for line, function in environment_reads(path)
                  if (name, function) not in ENVIRONMENT_EXCEPTIONS]
    assert reads == [], "read the variable through a function of llm_assets/settings.py"
