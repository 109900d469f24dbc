#!/usr/bin/env python3
"""Independent reference for reft's llama decoder on SmolLM2-135M-Instruct (Q4_1 GGUF).

Nothing here comes from reft or candle: the GGUF file is read and dequantised by the `gguf`
package (llama.cpp's own Python reader), tokenised by a byte-level BPE written below from
the file's metadata, and run through a llama forward pass in numpy float64, with
llama.cpp's *interleaved* RoPE on the query/key rows exactly as the file stores them (reft
un-permutes them and uses half-rotation RoPE instead: agreeing checks that too).

Writes, for three prompts, the token ids and the last position's logits (all 49,152) to
tests/fixtures/llama_reference.safetensors, and a readable summary (prompts, ids, top-10)
to tests/fixtures/llama_reference.json. tests/llama_parity.rs compares reft against them.

    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install gguf numpy regex
    /tmp/refvenv/bin/python tests/reference/llama_reference.py ~/.cache/reft/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import importlib.metadata
import json
import struct
import sys
from pathlib import Path

import gguf
import numpy as np
import regex

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
    "Café déjà vu: naïve coöperation in 2024 ☕ costs €3.50",
]


def field(r, key):
    return r.fields[key].contents()


# ---- tokenizer: GPT-2 byte-level BPE, SmolLM pre-tokenizer (digits one by one) ----------

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


class Bpe:
    def __init__(self, tokens, merges, types):
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
        self.specials = [t for t, ty in zip(tokens, types) if ty == 3]  # control tokens
        self.byte_map = bytes_to_unicode()

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
        return parts

    def encode(self, text):
        out = []
        special = regex.compile("(" + "|".join(regex.escape(s) for s in self.specials) + ")")
        for chunk in special.split(text):
            if not chunk:
                continue
            if chunk in self.specials:
                out.append(self.ids[chunk])
                continue
            for piece in regex.split(r"(\p{N})", chunk):  # digits isolated, one each
                for word in GPT2_SPLIT.findall(piece):
                    mapped = "".join(self.byte_map[b] for b in word.encode("utf-8"))
                    out.extend(self.ids[p] for p in self.bpe(mapped))
        return out


# ---- model ------------------------------------------------------------------------------

def load_weights(r):
    w = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        w[t.name] = np.asarray(a, dtype=np.float64).reshape([int(d) for d in reversed(t.shape)])
    return w


def rms_norm(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def rope_interleaved(x, base):
    """llama.cpp's LLAMA_ROPE_TYPE_NORM: rotate adjacent pairs (2i, 2i+1). x: [heads, s, hd]."""
    _, s, hd = x.shape
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(s, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def forward(w, cfg, ids):
    n_layers, n_head, n_kv, eps, base = cfg
    x = w["token_embd.weight"][ids]  # [s, d]
    s, d = x.shape
    hd = d // n_head
    rep = n_head // n_kv
    causal = np.triu(np.full((s, s), -np.inf), k=1)
    for l in range(n_layers):
        p = f"blk.{l}."
        h = rms_norm(x, w[p + "attn_norm.weight"], eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(s, n_head, hd).transpose(1, 0, 2)
        k = (h @ w[p + "attn_k.weight"].T).reshape(s, n_kv, hd).transpose(1, 0, 2)
        v = (h @ w[p + "attn_v.weight"].T).reshape(s, n_kv, hd).transpose(1, 0, 2)
        q, k = rope_interleaved(q, base), rope_interleaved(k, base)
        k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(s, n_head * hd)
        x = x + ctx @ w[p + "attn_output.weight"].T
        h = rms_norm(x, w[p + "ffn_norm.weight"], eps)
        g = h @ w[p + "ffn_gate.weight"].T
        u = h @ w[p + "ffn_up.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "ffn_down.weight"].T
    x = rms_norm(x, w["output_norm.weight"], eps)
    head = w.get("output.weight", w["token_embd.weight"])  # tied embeddings
    return x[-1] @ head.T


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dt = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}[a.dtype]
        b = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    path = Path(sys.argv[1]).expanduser()
    out = Path(__file__).resolve().parent.parent / "fixtures"
    r = gguf.GGUFReader(str(path))
    tok = Bpe(field(r, "tokenizer.ggml.tokens"), field(r, "tokenizer.ggml.merges"), field(r, "tokenizer.ggml.token_type"))
    cfg = (
        int(field(r, "llama.block_count")),
        int(field(r, "llama.attention.head_count")),
        int(field(r, "llama.attention.head_count_kv")),
        float(field(r, "llama.attention.layer_norm_rms_epsilon")),
        float(field(r, "llama.rope.freq_base")),
    )
    w = load_weights(r)
    tensors, summary = {}, []
    for i, text in enumerate(PROMPTS):
        ids = tok.encode(text)
        logits = forward(w, cfg, np.array(ids))
        top = np.argsort(-logits)[:10]
        tensors[f"ids_{i}"] = np.array(ids, dtype=np.int64)
        tensors[f"logits_{i}"] = logits.astype(np.float32)
        summary.append({"prompt": text, "ids": ids, "top10_ids": top.tolist(), "top10_logits": [round(float(logits[t]), 4) for t in top]})
        print(f"{text!r}: {len(ids)} tokens, next = {top[0]} ({logits[top[0]]:.3f})")
    write_safetensors(out / "llama_reference.safetensors", tensors)
    meta = {
        "fixture": "llama_reference",
        "model": path.name,
        "made_by": "tests/reference/llama_reference.py",
        "gguf": importlib.metadata.version("gguf"),
        "numpy": np.__version__,
        "precision": "float64 forward, logits stored as float32",
        "rope": "interleaved pairs on the GGUF rows as stored (llama.cpp convention)",
        "prompts": summary,
    }
    (out / "llama_reference.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
