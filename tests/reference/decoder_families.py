#!/usr/bin/env python3
"""Reference fixtures for the llama-family decoders reft computes, from transformers itself.

For each family (llama with Llama 3 RoPE scaling, mistral with a sliding window, qwen2 with
q/k/v biases stored in bf16, qwen3 with per-head q/k norms and an explicit head_dim, phi3
with fused qkv_proj and gate_up_proj), it
builds a tiny random model with `AutoModelForCausalLM.from_config` and a fixed seed (no hub),
gives every parameter (biases and norm weights included) random values so none is a no-op,
and writes into tests/fixtures/families/<family>/:

  config.json, model-0000N-of-0000M.safetensors + model.safetensors.index.json  (sharded,
      as transformers saves them; qwen2 in bf16)
  reference.safetensors   input_ids [1, S] (int64 as f32), logits [S, V], block_output of
                          layers 0 and 1 [S, D] (hidden_states[1], [2]), all f32
  reference.json          8 greedy tokens after the prompt, and the versions used
  tokenizer.json          a word-level tokenizer `t0` … `t127` (so `reft export`/`generate`
                          run on the folder: the prompt is "t3 t17 …")

Run with transformers 5.x (it writes `rope_parameters`, the 5.x config keys); name families
to rebuild only those (`... decoder_families.py phi3`):
  python3 -m venv ~/.cache/reft-ref/venv
  ~/.cache/reft-ref/venv/bin/pip install torch==2.15.0 transformers==5.23.0 safetensors numpy
  ~/.cache/reft-ref/venv/bin/python tests/reference/decoder_families.py
"""
import json
import sys
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "families"
PROMPT = [3, 17, 5, 9, 30, 12, 8, 1, 33, 21, 64, 100]
COMMON = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,  # hidden_states[1], [2] are then raw block outputs ([-1] is after the final norm)
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)

FAMILIES = {
    # Llama 3.x's scaled RoPE; original_max 32 puts this head_dim's frequencies in all three
    # bands (kept, interpolated, divided by the factor).
    "llama": dict(
        model_type="llama",
        tie_word_embeddings=False,
        rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=32),
    ),
    "mistral": dict(model_type="mistral", tie_word_embeddings=False, sliding_window=32, head_dim=16),
    "qwen2": dict(model_type="qwen2", tie_word_embeddings=True, use_sliding_window=False),
    "qwen3": dict(model_type="qwen3", tie_word_embeddings=True, head_dim=32, use_sliding_window=False),
    # Phi-3: the query/key/value and gate/up projections fused into one matrix each.
    "phi3": dict(model_type="phi3", tie_word_embeddings=False, sliding_window=48),
}
BF16 = {"qwen2"}


def build(family: str, overrides: dict):
    kwargs = dict(COMMON)
    kwargs.update({k: v for k, v in overrides.items() if k != "model_type"})
    config = AutoConfig.for_model(overrides["model_type"], **kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Random values everywhere (from_config zeroes biases and sets norms to 1).
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.2 * noise if "norm" in name else 0.15 * noise)
        if family in BF16:
            # Stored in bf16: the reference computes in f32 from the bf16-rounded values,
            # which is what reft does after loading them.
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    model.eval()
    return model


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    # Families named on the command line only (default: all), so adding one leaves the
    # others' committed fixtures as they are.
    wanted = sys.argv[1:] or list(FAMILIES)
    for family, overrides in FAMILIES.items():
        if family not in wanted:
            continue
        model = build(family, overrides)
        folder = OUT / family
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*"):
            old.unlink()
        ids = torch.tensor([PROMPT])
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
            greedy = model.generate(ids, max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(ids))
        tensors = {
            "input_ids": ids[0].to(torch.float32).contiguous(),
            "logits": out.logits[0].contiguous(),
            "block_output_0": out.hidden_states[1][0].contiguous(),
            "block_output_1": out.hidden_states[2][0].contiguous(),
        }
        save_file(tensors, str(folder / "reference.safetensors"))
        stored = model.to(torch.bfloat16) if family in BF16 else model
        # Sharded, as transformers writes a large model (at least two files).
        stored.save_pretrained(folder, max_shard_size="100KB", safe_serialization=True)
        vocab = {f"t{i}": i for i in range(COMMON["vocab_size"])}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
        tok.save(str(folder / "tokenizer.json"))
        for extra in ("generation_config.json",):
            (folder / extra).unlink(missing_ok=True)
        assert (folder / "model.safetensors.index.json").exists(), f"{family}: not sharded"
        meta = {
            "family": family,
            "greedy_tokens": greedy[0, len(PROMPT):].tolist(),
            "dtype": "bfloat16" if family in BF16 else "float32",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }
        (folder / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")
        shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
        print(f"{family}: {len(shards)} shards, greedy {meta['greedy_tokens']}", file=sys.stderr)


if __name__ == "__main__":
    main()
