#!/usr/bin/env python3
"""A random-initialised checkpoint of Llama-3.2-1B's shape, for the scale benchmark.

hidden 2048, 16 layers, 32 query / 8 key-value heads of 64, SwiGLU 8192, vocabulary
128,256, Llama 3 scaled RoPE (theta 500000, factor 32), tied embeddings: 1.24 B parameters,
stored in bf16 and sharded as transformers saves it (about 2.5 GB). Weights are
transformers' own initialisation (`from_config`, seed 0): no hub, nothing pretrained.
A word-level tokenizer (`t0` … `t128255`) and a Llama-3-style chat template come with it,
so `reft train`, `reft generate --chat` and the bench run on the folder as on a real one.
Not committed (2.5 GB); `cargo bench --bench train -- step-llm DIR` reads it.

  ~/.cache/reft-ref/venv/bin/python tests/reference/llama_1b_shape.py ~/.cache/reft/bench/llama-1b-shape
"""
import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM

LLAMA3_TEMPLATE = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
        rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=True,
        bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=8192),
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, max_shard_size="1GB")
    (out / "generation_config.json").unlink(missing_ok=True)
    special = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128006: "<|start_header_id|>",
               128007: "<|end_header_id|>", 128008: "<|eom_id|>", 128009: "<|eot_id|>"}
    vocab = {special.get(i, f"t{i}"): i for i in range(config.vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(list(special.values()))
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_TEMPLATE}, indent=1))
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).expanduser())
