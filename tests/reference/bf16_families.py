#!/usr/bin/env python3
"""Reference logits of the tiny decoder fixtures run by transformers in bf16.

For each family in tests/fixtures/families/ (written by decoder_families.py), loads the
folder with `dtype=torch.bfloat16` and eager attention (no hub), runs the reference prompt
(the `input_ids` of reference.safetensors) and writes

  tests/fixtures/families/<family>/reference_bf16.safetensors   logits [S, V] as f32

so tests/mixed_precision.rs can hold reft's bf16 base to what transformers computes in bf16,
next to the f32 reference: how far bf16 is from f32 is bf16's own rounding, and a bf16 base
should be about as far from transformers' bf16 run as two bf16 implementations can be.

Run with the venv of decoder_families.py:
  ~/.cache/reft-ref/venv/bin/python tests/reference/bf16_families.py
"""
import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

FAMILIES = Path(__file__).resolve().parent.parent / "fixtures" / "families"


def main() -> None:
    for family in ["llama", "mistral", "qwen2", "qwen3"]:
        folder = FAMILIES / family
        ids = load_file(str(folder / "reference.safetensors"))["input_ids"].long().reshape(1, -1)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="eager").eval()
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float().contiguous()
        f32 = load_file(str(folder / "reference.safetensors"))["logits"]
        rel = ((logits - f32).abs().max() / f32.abs().max()).item()
        save_file({"logits": logits}, str(folder / "reference_bf16.safetensors"))
        print(f"{family}: transformers bf16 vs f32, max |logit diff| / scale = {rel:.2e}")
    print(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
