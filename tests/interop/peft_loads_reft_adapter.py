"""Does HF PEFT load a LoRA adapter that reft wrote, and compute what reft computes?

Needs python3 with torch, transformers and peft (not part of CI: run it where they are).

    python3 tests/interop/peft_loads_reft_adapter.py REFT_BINARY ADAPTER_DIR MODEL_CONFIG_DIR

ADAPTER_DIR: a LoRA-only `reft train` run folder (it holds adapter_config.json and
adapter_model.safetensors in PEFT's layout). MODEL_CONFIG_DIR: a folder with the base model's
config.json and tokenizer.json; a random BertModel is built from the config (no weights need
to travel) and saved there as model.safetensors, so reft and PEFT run the same model. reft's
last hidden state (`reft collect --adapter`) is compared with PEFT's, adapter active and after
merge_and_unload(); exit status 0 when both agree within 1e-4.
"""
import os, subprocess, sys, tempfile, torch, peft, transformers
from safetensors.torch import save_file, load_file
reft_bin, adapter_dir, model_dir = (os.path.abspath(a) for a in sys.argv[1:4])
out = tempfile.mkdtemp()
print("peft", peft.__version__, "transformers", transformers.__version__, "torch", torch.__version__)
cfg = transformers.BertConfig.from_pretrained(model_dir)
torch.manual_seed(0)
base = transformers.BertModel(cfg, add_pooling_layer=True).eval()
sd = {k: v.contiguous() for k, v in base.state_dict().items() if v.is_floating_point()}
save_file(sd, os.path.join(model_dir, "model.safetensors"))
texts = ["A gripping, funny and moving film.", "Dull."]
caps = os.path.join(out, "ours.safetensors")
subprocess.run([reft_bin, "collect", "--adapter", adapter_dir, "--model",
                model_dir, "--hooks", "layers[5].block_output", "--text", texts[0], "--text", texts[1],
                "--out", caps], check=True)
ours = load_file(caps)
ids, mask = ours["input_ids"].long(), ours["attention_mask"].long()
model = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
lora_keys = [n for n, _ in model.named_parameters() if "lora_" in n]
print("PEFT wrapped", len(lora_keys) // 2, "modules; scaling", model.base_model.model.encoder.layer[0].attention.self.query.scaling)
with torch.no_grad():
    peft_out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    merged = model.merge_and_unload()
    merged_out = merged(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.manual_seed(0)
    plain = transformers.BertModel(cfg, add_pooling_layer=True).eval()(input_ids=ids, attention_mask=mask).last_hidden_state
m = mask.bool()
d = (peft_out - ours["layers[5].block_output"])[m].abs().max().item()
dm = (merged_out - ours["layers[5].block_output"])[m].abs().max().item()
moved = (plain - peft_out)[m].abs().max().item()
print(f"reft vs PEFT (adapter active): max |diff| {d:.2e}; reft vs PEFT merge_and_unload: {dm:.2e}; the adapter moves the output {moved:.3f}")
ok = d <= 1e-4 and dm <= 1e-4 and moved > 1e-3 and len(lora_keys) == 24
print("PEFT INTEROP", "OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
