"""`BertMeanPoolingEncoder`: a sentence-transformers BERT encoder with mean pooling (and
normalization), like all-MiniLM-L6-v2, run in numpy (float32, BLAS sgemm) on the model's own
weights (`model.safetensors`) and tokenizer (`tokenizer.json`, via `tokenizers`); the exact GELU
it needs (`gelu_`), and `is_plain_bert_mean_pooling`, which tells whether a model folder is one
it runs.

Why: every Dagster run is a new process, so a model load is paid per run, the sensor's micro-batch
runs included. `import sentence_transformers` alone costs about 8 s of CPU here (torch,
transformers and its training stack), and `import torch` alone 2-2.5 s, about as much as a
micro-batch's whole forward pass; this encoder costs about 0.25 s of CPU to load.
`tests/knowledge_base/test_resources.py` pins its vectors to sentence-transformers' (max abs
difference ~2e-7). Measured on the shared 2-core machine (load 3-5): a fresh process embedding 75
case texts took 3.2-3.4 s of CPU in all (3.7-5.7 s wall), against 5.0-5.4 s (6.3-8.1 s wall) with
the same forward pass in torch; on 527 KB chunks (bulk) both spent about 17 s of CPU, numpy on
one thread as fast as torch on two; one query embeds in ~12 ms (torch: ~20 ms).

BLAS runs on one thread while encoding: numpy's OpenBLAS workers busy-wait between calls
(unlike torch's OpenMP with `OMP_WAIT_POLICY=PASSIVE`, their timeout can only be set before
numpy's import), and a 2-thread sgemm waits for its descheduled half when other work holds
the cores. Two threads on the 75 texts: on a busy machine 1.5x the CPU and 2.5x the wall
time; on an idle one 1.4x the CPU for 0.7x the wall time. The cores are shared, so one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

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


# Abramowitz & Stegun 7.1.26: erfc(z) = t (a1 + a2 t + ... + a5 t^4) exp(-z^2), t = 1 / (1 + p z), z >= 0,
# |error| <= 1.5e-7. numpy has no erf, and `scipy.special` costs ~0.3 s to import. Coefficients from
# a5 down, halved for GELU's `/ 2`.
_ERF_P = np.float32(0.3275911 / np.sqrt(2.0))  # p z with z = |x| / sqrt(2)
_ERFC_HALF = tuple(np.float32(a / 2) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592))
_GELU_BLOCK = 1 << 16  # elements per block: the temporaries stay in the CPU cache


def gelu_(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, `x * Phi(x)`, in place on a C-contiguous float32 array; returns `x`.

    With `q = erfc(|x| / sqrt 2) / 2`, GELU is `x - x q` for `x >= 0` and `x q` below, i.e.
    `max(x, 0) - |x| q`: no branch (masked numpy ops are slow), and the small values of large
    negative `x` keep their accuracy.
    """
    flat = x.reshape(-1)
    for start in range(0, flat.size, _GELU_BLOCK):
        v = flat[start:start + _GELU_BLOCK]
        magnitude = np.abs(v)
        t = magnitude * _ERF_P
        t += 1
        np.reciprocal(t, out=t)
        q = t * _ERFC_HALF[0]
        for a in _ERFC_HALF[1:]:
            q += a
            q *= t
        e = np.square(v)
        e *= np.float32(-0.5)
        np.exp(e, out=e)  # exp(-z^2)
        q *= e
        q *= magnitude
        np.maximum(v, 0, out=v)
        v -= q
    return x


class BertMeanPoolingEncoder:
    """A sentence-transformers BERT + mean pooling model run directly in numpy (module docstring).

    Tokenization, truncation (`max_seq_length`), the encoder in eval mode (no dropout), mean
    pooling over the attention mask and the optional L2 normalization are those of
    sentence-transformers, in float32 on CPU; only torch is avoided.
    """

    def __init__(self, path: Path):
        from safetensors.numpy import load_file
        from threadpoolctl import ThreadpoolController
        from tokenizers import Tokenizer

        self._thread_pools = ThreadpoolController()  # numpy's BLAS, found once (~2 ms)

        config = json.loads((path / "config.json").read_text())
        self.heads, self.eps = int(config["num_attention_heads"]), np.float32(config["layer_norm_eps"])
        self.layers = int(config["num_hidden_layers"])
        self.dim = int(config["hidden_size"])
        sbert = path / "sentence_bert_config.json"
        max_len = json.loads(sbert.read_text()).get("max_seq_length") if sbert.is_file() else None
        max_len = min(int(max_len or config["max_position_embeddings"]), int(config["max_position_embeddings"]))
        self.normalize = len(json.loads((path / "modules.json").read_text())) == 3
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_len)
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))  # to the longest of a batch
        weights = load_file(str(path / "model.safetensors"))
        self.w = w = {k.removeprefix("bert."): v.astype(np.float32, copy=False) for k, v in weights.items()}
        # Linear weights transposed once to (in, out), contiguous, so every `x @ W` is one BLAS sgemm;
        # query, key and value fused into one (dim, 3 dim) product.
        self._linear_weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for i in range(self.layers):
            at = f"encoder.layer.{i}.attention"
            qkv = [f"{at}.self.{name}" for name in ("query", "key", "value")]
            self._linear_weights[f"{at}.self.qkv"] = (
                np.ascontiguousarray(np.concatenate([w[f"{n}.weight"] for n in qkv]).T),
                np.concatenate([w[f"{n}.bias"] for n in qkv]))
            for name in (f"{at}.output.dense", f"encoder.layer.{i}.intermediate.dense",
                         f"encoder.layer.{i}.output.dense"):
                self._linear_weights[name] = (np.ascontiguousarray(w[f"{name}.weight"].T), w[f"{name}.bias"])

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def _layer_norm(self, x: np.ndarray, name: str) -> np.ndarray:
        centered = x - x.mean(axis=-1, keepdims=True)
        variance = np.mean(np.square(centered), axis=-1, keepdims=True)
        centered *= 1 / np.sqrt(variance + self.eps)
        centered *= self.w[f"{name}.weight"]
        centered += self.w[f"{name}.bias"]
        return centered

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        weight, bias = self._linear_weights[name]
        out = np.matmul(x, weight)
        out += bias
        return out

    def _forward(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n, length = ids.shape
        w, dim, heads = self.w, self.dim, self.heads
        head_dim = dim // heads
        x = w["embeddings.word_embeddings.weight"][ids]
        x += w["embeddings.position_embeddings.weight"][:length]
        x += w["embeddings.token_type_embeddings.weight"][types]
        x = self._layer_norm(x.reshape(n * length, dim), "embeddings.LayerNorm")  # (tokens, dim) from here on
        # Attend to real tokens only: padded keys get -inf before the softmax (each text has [CLS]).
        padding = np.where(mask[:, None, None, :] > 0, np.float32(0), np.float32(-np.inf))
        scale = np.float32(1 / np.sqrt(head_dim))
        for i in range(self.layers):
            at = f"encoder.layer.{i}.attention"
            qkv = self._linear(x, f"{at}.self.qkv").reshape(n, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0] * scale, qkv[1], qkv[2]  # (n, heads, length, head_dim) each
            scores = np.matmul(q, k.transpose(0, 1, 3, 2))
            scores += padding
            scores -= scores.max(axis=-1, keepdims=True)  # numerically stable softmax
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = np.matmul(scores, v).transpose(0, 2, 1, 3).reshape(n * length, dim)
            attended = self._linear(context, f"{at}.output.dense")
            attended += x
            x = self._layer_norm(attended, f"{at}.output.LayerNorm")
            hidden = gelu_(self._linear(x, f"encoder.layer.{i}.intermediate.dense"))
            out = self._linear(hidden, f"encoder.layer.{i}.output.dense")
            out += x
            x = self._layer_norm(out, f"encoder.layer.{i}.output.LayerNorm")
        weights = mask.astype(np.float32)
        pooled = np.matmul(weights[:, None, :], x.reshape(n, length, dim))[:, 0, :]
        pooled /= np.maximum(weights.sum(axis=1, keepdims=True), np.float32(1e-9))
        return _l2_normalize(pooled) if self.normalize else pooled

    def encode(self, sentences: Sequence[str], batch_size: int = 32, normalize_embeddings: bool = False,
               **_ignored: Any) -> np.ndarray:
        """`(n, dimension)` float32 vectors, in the order of `sentences` (longest first in batches, as
        sentence-transformers does, so padding stays small)."""
        texts = [str(s).strip() for s in sentences]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # One BLAS thread: idle OpenBLAS workers spin between calls (the pthreads build has no
        # passive wait policy settable after numpy's import), and on busy cores a 2-thread sgemm
        # waits for its descheduled half; module docstring for the numbers.
        with self._thread_pools.limit(limits=1, user_api="blas"):
            for start in range(0, len(order), batch_size):
                part = order[start:start + batch_size]
                encoded = self.tokenizer.encode_batch([texts[i] for i in part])
                ids, types, mask = (np.array([getattr(e, attr) for e in encoded], dtype=np.int64)
                                    for attr in ("ids", "type_ids", "attention_mask"))
                vectors = self._forward(ids, types, mask)
                out[part] = _l2_normalize(vectors) if normalize_embeddings else vectors
        return out


def _l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as `torch.nn.functional.normalize` (eps 1e-12)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.float32(1e-12))
