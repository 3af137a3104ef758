"""The pip requirements of the code-location image, from pyproject.toml (the one list of pins).

    python deploy/docker/requirements.py torch   # the torch pin, installed first from the CPU index
    python deploy/docker/requirements.py cpu     # every dependency as pinned (no vLLM)
    python deploy/docker/requirements.py gpu     # the same without torch, plus the `gpu` extra:
                                                 # vLLM brings the CUDA torch it was built with

Standard library only: it runs in the bare build stage.
"""

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
VARIANTS = ("torch", "cpu", "gpu")


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def requirements(variant: str, pyproject: Path = PYPROJECT) -> list[str]:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    project = tomllib.loads(pyproject.read_text())["project"]
    dependencies = list(project["dependencies"])
    if variant == "torch":
        return [d for d in dependencies if _name(d) == "torch"]
    if variant == "cpu":
        return dependencies
    return [d for d in dependencies if _name(d) != "torch"] + list(project["optional-dependencies"]["gpu"])


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1] if len(sys.argv) > 1 else "cpu")))
