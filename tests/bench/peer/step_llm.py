#!/usr/bin/env python3
"""The peer of `cargo bench --bench train -- step-llm`: one pyreft training step on a
Llama-3.2-1B-shaped model, the same shape as reft's bench.

LoReFT rank 4 at the block output of layers 3, 7, 11, 15, on the first and last 5 prompt
tokens (positions f5+l5); batch 4 x 256 random tokens, the first 192 the prompt, the
causal-LM loss on the last 64 (labels -100 elsewhere, as pyreft's causal-LM data collator
writes them); backward; AdamW. Median over the measured steps after warm-up.

The model folder is the one tests/reference/llama_1b_shape.py writes (transformers 5.x
keys); transformers 4.45 (pinned by pyreft 0.1.0) reads `rope_theta`/`rope_scaling`, so the
config is rebuilt here with the same values in 4.x keys before the weights load.

  PY=~/.cache/reft-peer/venv/bin/python     # ../shared/peer's venv: pyreft 0.1.0, torch 2.15
  /usr/bin/time -f "%M KB" $PY tests/bench/peer/step_llm.py ~/.cache/reft/bench/llama-1b-shape
  $PY tests/bench/peer/step_llm.py DIR --autocast bf16     # the forward under torch.autocast(cpu, bf16)
"""
import argparse
import contextlib
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

LAYERS = [3, 7, 11, 15]
BATCH, SEQ, PROMPT, RANK = 4, 256, 192, 4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--autocast", choices=["none", "bf16"], default="none")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import pyreft
    from transformers import LlamaConfig, LlamaForCausalLM

    c = json.load(open(os.path.join(args.model, "config.json")))
    rope = dict(c["rope_parameters"])
    theta = rope.pop("rope_theta")
    config = LlamaConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c["num_key_value_heads"], head_dim=c.get("head_dim"),
        max_position_embeddings=c["max_position_embeddings"], rms_norm_eps=c["rms_norm_eps"],
        tie_word_embeddings=c["tie_word_embeddings"], rope_theta=theta, rope_scaling=rope,
    )
    model = LlamaForCausalLM.from_pretrained(args.model, config=config, torch_dtype=torch.float32)
    model.eval()
    reps = [{"layer": l, "component": "block_output", "low_rank_dimension": RANK,
             "intervention": pyreft.LoreftIntervention(embed_dim=config.hidden_size, low_rank_dimension=RANK, dtype=torch.float32)}
            for l in LAYERS]
    reft_model = pyreft.get_reft_model(model, pyreft.ReftConfig(representations=reps))
    params = [p for p in reft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, config.vocab_size - 1000, (BATCH, SEQ), generator=g)
    labels = ids.clone()
    labels[:, :PROMPT] = -100
    positions = list(range(5)) + list(range(PROMPT - 5, PROMPT))
    locs = [[positions for _ in range(BATCH)] for _ in LAYERS]
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if args.autocast == "bf16" else contextlib.nullcontext()

    def step():
        with amp:
            _, cf = reft_model({"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                               unit_locations={"sources->base": (None, locs)}, labels=labels)
        cf.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(cf.loss)

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"step_median_s": statistics.median(times), "steps": times, "loss": loss,
                      "autocast": args.autocast, "torch": torch.__version__, "pyreft": pyreft.__version__ if hasattr(pyreft, "__version__") else "0.1.0",
                      "threads": args.threads}))


if __name__ == "__main__":
    main()
