#!/usr/bin/env python3
"""GGUF copies of the tiny decoder fixtures, made by llama.cpp's own converter.

For each family in tests/fixtures/families/ (llama, mistral, qwen2, qwen3; see
decoder_families.py), runs llama.cpp's `convert_hf_to_gguf.py --outtype f32` on the HF folder
and writes

  tests/fixtures/families_gguf/<family>.gguf

(next to, not inside, the HF folder: a folder with config.json is read as an HF model). The
GGUF files are then checked against the HF folders they came from, with gguf-py's GGUFReader:
every HF tensor has exactly one GGUF tensor, equal to it bit for bit (f32; qwen2's bf16 widened
exactly) once llama.cpp's Q/K row permutation is undone for arch `llama`; `rope_freqs.weight`
(llama only, Llama 3 scaling) equals transformers' own llama3 inverse frequencies as
`base_inv_freq / rope_freqs`; and the metadata carries the config's sizes, eps and rope theta.
So the GGUF files compute the logits in tests/fixtures/families/<family>/reference.safetensors.

The converter is the one vendored in the llama-cpp-python 0.3.36 sdist on PyPI (llama.cpp
commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f, gguf-py 0.19.0): the sdist is downloaded
once into ~/.cache/reft-ref/ (sha256 checked) and only convert_hf_to_gguf.py, its
`conversion` package and gguf-py are unpacked, into ~/.cache/reft-ref/llama-cpp-python-0.3.36/.
That converter reads transformers 5.x's `rope_parameters` itself, so the folders are
converted in place, as they are (no config rewrite, no copy). Output is deterministic
(byte-identical across runs).

Patches, to the tokenizer step only (applied in the converter's process; no tensor, shape or
hyper-parameter goes through them). The fixtures' tokenizer is word-level (`t0` … `t127`,
whitespace split, no merges), which llama.cpp has no tokenizer type for, and the converter
stops on it three times:
  1. it probes SentencePiece first, importing `sentencepiece` before looking for
     tokenizer.model: without the package it stops there. Patched to raise the
     FileNotFoundError the original raises for a folder without tokenizer.model.
  2. it loads the tokenizer with transformers' AutoTokenizer, which in 5.x maps model_type
     qwen2/qwen3 to Qwen2Tokenizer: that rebuilds a BPE from the vocabulary (no merges; it
     encodes "t3 t17" as []) and appends `<|endoftext|>` as id 128 of a 128-row embedding,
     failing the converter's `max id < vocab_size` assert. Patched to load tokenizer.json as
     it is (PreTrainedTokenizerFast), which is what AutoTokenizer already returns for
     llama/mistral.
  3. it names the pre-tokenizer by hashing the ids of a test string; this one is unknown
     (NotImplementedError). Patched, for a word-level tokenizer only, to `default`.
The vocabulary written is `tokenizer.ggml.model = gpt2`, `tokenizer.ggml.pre = default`, the
128 tokens (all NORMAL), no merges key (the converter warns "no merges found"), no bos/eos
ids (the configs have none). Text cannot be tokenized from these GGUF files (not by llama.cpp,
nor by reft's GGUF tokenizer, which wants merges): feed token ids, as reference.safetensors
does. The sizes, rope and norm metadata and all tensors are the converter's, unmodified.

Run with the venv of decoder_families.py (torch, transformers 5.x, safetensors, numpy; the
converter also needs pyyaml and tqdm, which transformers installs):
  ~/.cache/reft-ref/venv/bin/python tests/reference/gguf_families.py
(--dump prints every metadata key and the tensor directory of each file.)
"""
import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "fixtures" / "families"
OUT = ROOT / "fixtures" / "families_gguf"
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")

LCP_VERSION = "0.3.36"
SDIST = f"llama_cpp_python-{LCP_VERSION}.tar.gz"
SDIST_PATH = "ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/" + SDIST
SDIST_URLS = (f"https://pypi.org/packages/{SDIST_PATH}", f"https://files.pythonhosted.org/packages/{SDIST_PATH}")
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"  # PyPI's digest
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"  # the sdist's vendor/llama.cpp submodule
CACHE = Path.home() / ".cache" / "reft-ref"
CONVERTER = CACHE / f"llama-cpp-python-{LCP_VERSION}"
VENDOR = f"llama_cpp_python-{LCP_VERSION}/vendor/llama.cpp/"
WANTED = ("convert_hf_to_gguf.py", "LICENSE", "conversion/", "gguf-py/gguf/", "gguf-py/LICENSE")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_converter() -> Path:
    """Unpack the converter into CONVERTER (once), from the sdist (downloaded once)."""
    done = CONVERTER / ".complete"
    if done.exists():
        return CONVERTER
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / SDIST
    if not sdist.exists() or sha256(sdist) != SDIST_SHA256:
        tmp = sdist.with_suffix(".part")
        for url in SDIST_URLS:
            try:
                print(f"downloading {url}", file=sys.stderr)
                with urllib.request.urlopen(url, timeout=120) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f)
                break
            except OSError as e:
                print(f"  failed: {e}", file=sys.stderr)
        else:
            sys.exit("cannot download the llama-cpp-python sdist")
        if sha256(tmp) != SDIST_SHA256:
            tmp.unlink()
            sys.exit(f"{SDIST}: sha256 mismatch (want {SDIST_SHA256})")
        tmp.rename(sdist)
    shutil.rmtree(CONVERTER, ignore_errors=True)
    with tarfile.open(sdist, "r:gz") as tar:
        for m in tar:
            if not m.name.startswith(VENDOR) or not m.isfile():
                continue
            rel = m.name[len(VENDOR):]
            if not any(rel == w or (w.endswith("/") and rel.startswith(w)) for w in WANTED):
                continue
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                sys.exit(f"unsafe path in the sdist: {m.name}")
            dest = CONVERTER / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src, open(dest, "wb") as f:
                shutil.copyfileobj(src, f)
    done.write_text(f"llama-cpp-python {LCP_VERSION}, llama.cpp {LLAMA_CPP_COMMIT}\n")
    return CONVERTER


def import_gguf():
    sys.path.insert(0, str(CONVERTER / "gguf-py"))
    import gguf
    assert Path(gguf.__file__).resolve().is_relative_to(CONVERTER.resolve()), gguf.__file__
    return gguf


# ---------------------------------------------------------------------------------------------
# Conversion (in a child process per family: `--convert <hf folder> <out.gguf>`)
# ---------------------------------------------------------------------------------------------

def convert_in_process(folder: str, out: str):
    os.environ.pop("NO_LOCAL_GGUF", None)  # use the vendored gguf-py, not an installed one
    sys.path.insert(0, str(CONVERTER))  # the `conversion` package
    spec = importlib.util.spec_from_file_location("convert_hf_to_gguf", CONVERTER / "convert_hf_to_gguf.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # imports gguf (from gguf-py) and conversion
    import conversion.base as base

    word_level = json.loads((Path(folder) / "tokenizer.json").read_text())["model"]["type"] == "WordLevel"
    original_pre = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return original_pre(self, tokenizer)
        except NotImplementedError:
            if not word_level:
                raise
            base.logger.warning("word-level tokenizer with no known pre-tokenizer hash: tokenizer.ggml.pre = default")
            return "default"

    original_spm = base.TextModel._create_vocab_sentencepiece

    def create_vocab_sentencepiece(self):
        if not (self.dir_model / "tokenizer.model").is_file():
            raise FileNotFoundError(f"File not found: {self.dir_model / 'tokenizer.model'}")
        return original_spm(self)

    # transformers 5's AutoTokenizer maps model_type qwen2/qwen3 to Qwen2Tokenizer, which
    # rebuilds a BPE from the vocabulary (no merges) and appends <|endoftext|> (id 128 of a
    # 128-token model: the converter's `max id < vocab_size` assert fails). The converter is
    # given the tokenizer.json as it is instead (what AutoTokenizer already gives for llama).
    import transformers
    original_auto = transformers.AutoTokenizer.from_pretrained

    def auto_tokenizer(path, *args, **kwargs):
        if word_level and Path(path).resolve() == Path(folder).resolve():
            return transformers.PreTrainedTokenizerFast(tokenizer_file=str(Path(path) / "tokenizer.json"))
        return original_auto(path, *args, **kwargs)

    transformers.AutoTokenizer.from_pretrained = auto_tokenizer
    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    base.TextModel._create_vocab_sentencepiece = create_vocab_sentencepiece
    sys.argv = ["convert_hf_to_gguf.py", "--outtype", "f32", "--outfile", out, folder]
    script.main()


def convert(family: str) -> Path:
    out = OUT / f"{family}.gguf"
    out.unlink(missing_ok=True)
    subprocess.run([sys.executable, __file__, "--convert", str(SRC / family), str(out)], check=True)
    return out


# ---------------------------------------------------------------------------------------------
# Checks against the HF folder
# ---------------------------------------------------------------------------------------------

HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")  # model.layers.N.<module...>.(weight|bias)
    assert parts[:2] == ["model", "layers"], hf
    return f"blk.{parts[2]}.{HF_TO_GGUF['.'.join(parts[3:-1])]}.{parts[-1]}"


def unpermute(w, n_head: int):
    """Inverse of llama.cpp's LlamaModel.permute (HF rotate-half rows -> interleaved pairs)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def field_value(gguf, field):
    t = field.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        if sub == gguf.GGUFValueType.STRING:
            vals = [bytes(field.parts[i]).decode() for i in field.data]
        else:
            vals = [field.parts[i].tolist()[0] for i in field.data]
        return f"{sub.name}[{len(vals)}]", vals
    if t == gguf.GGUFValueType.STRING:
        return t.name, bytes(field.parts[field.data[0]]).decode()
    return t.name, field.parts[field.data[0]].tolist()[0]


def check(gguf, family: str, path: Path, dump: bool):
    import numpy as np
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    folder = SRC / family
    cfg = json.loads((folder / "config.json").read_text())
    reader = gguf.GGUFReader(path)
    meta = {k: field_value(gguf, f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: t for t in reader.tensors}
    arch = meta["general.architecture"][1]
    if dump:
        print(f"== {family}: {path.relative_to(ROOT.parent)} ({path.stat().st_size} bytes), arch {arch}")
        for k, (ty, v) in meta.items():
            if isinstance(v, list) and len(v) > 8:
                v = f"{v[:4]} … {v[-2:]}"
            print(f"  {k}: {ty} = {v}")
        for t in reader.tensors:
            print(f"  tensor {t.name}: {t.tensor_type.name} ne={list(map(int, t.shape))}")

    def m(key):
        return meta[f"{arch}.{key}"][1]

    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    assert m("embedding_length") == cfg["hidden_size"] and m("feed_forward_length") == cfg["intermediate_size"]
    assert m("block_count") == cfg["num_hidden_layers"] and m("context_length") == cfg["max_position_embeddings"]
    assert m("attention.head_count") == cfg["num_attention_heads"]
    assert m("attention.head_count_kv") == cfg["num_key_value_heads"]
    assert math.isclose(m("attention.layer_norm_rms_epsilon"), cfg["rms_norm_eps"], rel_tol=1e-6)
    assert m("rope.freq_base") == cfg["rope_parameters"]["rope_theta"]
    if f"{arch}.rope.dimension_count" in meta:
        assert m("rope.dimension_count") == head_dim
    if f"{arch}.attention.key_length" in meta:
        assert m("attention.key_length") == head_dim == m("attention.value_length")

    hf = {}
    for shard in sorted(folder.glob("model-*.safetensors")):
        hf.update(load_file(str(shard)))
    seen = set()
    permuted = []
    for name, value in sorted(hf.items()):
        g = gguf_name(name)
        t = tensors[g]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, (g, t.tensor_type)
        assert list(map(int, t.shape)) == list(value.shape)[::-1], (g, t.shape, value.shape)
        want = value.to(torch.float32).numpy()  # bf16 -> f32 is exact
        got = np.asarray(t.data).reshape(want.shape)
        if arch == "llama" and (".attn_q." in g or ".attn_k." in g):
            heads = cfg["num_attention_heads"] if ".attn_q." in g else cfg["num_key_value_heads"]
            assert not np.array_equal(got, want), f"{g}: expected llama.cpp's Q/K row permutation"
            got = unpermute(got, heads)
            permuted.append(g)
        assert np.array_equal(got, want), f"{family}: {g} != {name} (max diff {np.abs(got - want).max()})"
        seen.add(g)
    extra = sorted(set(tensors) - seen)
    rope = cfg["rope_parameters"]
    if rope.get("rope_type") == "llama3":
        assert extra == ["rope_freqs.weight"], extra
        ff = np.asarray(tensors["rope_freqs.weight"].data, dtype=np.float64)
        base_inv = 1.0 / (rope["rope_theta"] ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
        hf_inv, _ = ROPE_INIT_FUNCTIONS["llama3"](AutoConfig.from_pretrained(folder), "cpu")
        hf_inv = hf_inv.double().numpy()
        rel = np.abs((base_inv / ff - hf_inv) / hf_inv).max()  # f32 rounding: ~1e-7
        assert rel < 1e-6, f"rope_freqs: llama.cpp's inv_freq / rope_freqs differs from HF's by {rel}"
        print(f"  {family}: rope_freqs = {ff.tolist()}; base_inv_freq / rope_freqs == HF llama3 inv_freq "
              f"(max rel diff {rel:.1e})", file=sys.stderr)
    else:
        assert not extra, extra
    tied = "output.weight" not in tensors
    print(f"  {family}: arch {arch}, {len(seen)} tensors equal to the HF ones"
          f"{f' (after undoing the Q/K permutation of {len(permuted)})' if permuted else ''}"
          f"{', tied (no output.weight)' if tied else ''}; {path.stat().st_size} bytes", file=sys.stderr)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--convert":
        fetch_converter()
        convert_in_process(sys.argv[2], sys.argv[3])
        return
    dump = "--dump" in sys.argv[1:]
    fetch_converter()
    OUT.mkdir(parents=True, exist_ok=True)
    outs = {family: convert(family) for family in FAMILIES}
    gguf = import_gguf()
    for family, path in outs.items():
        check(gguf, family, path, dump)


if __name__ == "__main__":
    main()
