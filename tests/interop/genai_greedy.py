"""Greedy tokens from ONNX Runtime GenAI for a folder that `reft export --format genai` wrote.

    PYTHONPATH=<reft cache>/python python3 tests/interop/genai_greedy.py DIR < requests.jsonl

Each request line: {"prompt_ids": [...], "max_new_tokens": N, "text": optional raw prompt}.
Each answer line: {"token_ids": [...] (generated, the end token included when GenAI stops
on it), "encoded": GenAI's tokenizer on "text" (null without it), "decoded": the generated
text by GenAI's tokenizer}. tests/genai_export.rs compares them with `reft generate --json`.
"""
import json
import sys

import numpy as np
import onnxruntime_genai as og

model = og.Model(sys.argv[1])
tokenizer = og.Tokenizer(model)
for line in sys.stdin:
    req = json.loads(line)
    ids = np.array(req["prompt_ids"], dtype=np.int32)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + req["max_new_tokens"])
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    text = req.get("text")
    encoded = [int(i) for i in tokenizer.encode(text)] if text is not None else None
    decoded = tokenizer.decode(np.array(out, dtype=np.int32))
    print(json.dumps({"token_ids": out, "encoded": encoded, "decoded": decoded}), flush=True)
