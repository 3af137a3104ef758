"""The dbt project beside the package, its manifest, and the `dbt` executable that builds it.

dagster-dbt reads the graph from `dbt_project/target/manifest.json`, which is git-ignored: a
clean checkout (or an image built without it) has none. `ensure_manifest` runs `dbt parse`
at load time when the manifest is missing or older than a file of the project, with the
venv's `dbt` (dagster-dbt and `DbtProject.prepare_if_dev()` look it up on PATH, which an
un-activated venv lacks). No Dagster import here beyond `DbtProject`.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dagster_dbt import DbtProject

from llm_assets import settings

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
# What `dbt parse` reads: a change to any of them makes the manifest stale.
PROJECT_FILE_PATTERNS = ("dbt_project.yml", "models/**/*", "tests/**/*", "macros/**/*")


def dbt_executable() -> str:
    """The `dbt` beside the running interpreter (the venv's bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "dbt"
    if beside.is_file():
        return str(beside)
    found = shutil.which("dbt")
    if found is None:
        raise FileNotFoundError(f"no dbt executable in {beside.parent} nor on PATH: install dbt-core and dbt-duckdb")
    return found


def manifest_is_stale(project_dir: Path, manifest_path: Path) -> bool:
    """True when the manifest is missing or older than a file that `dbt parse` reads."""
    if not manifest_path.exists():
        return True
    built_at = manifest_path.stat().st_mtime
    return any(path.is_file() and path.stat().st_mtime > built_at
               for pattern in PROJECT_FILE_PATTERNS for path in project_dir.glob(pattern))


def parse_manifest(project: DbtProject, executable: str) -> Path:
    """`dbt parse` into a private folder, then an atomic rename onto the manifest's path:
    processes loading the code location at once (run workers) never read a half-written file."""
    target = project.project_dir / project.target_path
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="parse-", dir=target) as scratch:
        done = subprocess.run(
            [executable, "parse", "--quiet", "--project-dir", str(project.project_dir),
             "--profiles-dir", str(project.profiles_dir), "--target-path", scratch, "--log-path", scratch],
            capture_output=True, text=True, cwd=project.project_dir,
            env={**settings.environment(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        )
        if done.returncode != 0:
            raise RuntimeError(f"`dbt parse` of {project.project_dir} failed:\n{done.stdout}{done.stderr}")
        os.replace(Path(scratch) / "manifest.json", project.manifest_path)
    return project.manifest_path


def _writable(folder: Path) -> bool:
    while not folder.exists():
        folder = folder.parent
    return os.access(folder, os.W_OK)


def ensure_manifest(project: DbtProject, executable: str) -> Path:
    """The project's manifest, parsed first when missing or stale.

    A read-only checkout (an image run as another user) keeps the manifest it was built with;
    without one it cannot load: the image build runs `dbt parse` (see the README).
    """
    if not manifest_is_stale(project.project_dir, project.manifest_path):
        return project.manifest_path
    if not _writable(project.project_dir / project.target_path):
        if project.manifest_path.exists():
            return project.manifest_path
        raise RuntimeError(f"{project.manifest_path} is missing and its folder is read-only: run `dbt parse` "
                           "in dbt_project/ when building the image")
    return parse_manifest(project, executable)


analytics_project = DbtProject(project_dir=DBT_PROJECT_DIR)
