#!/usr/bin/env python3
"""Reference fixtures for RoBERTa-family encoders (roberta, xlm-roberta), from transformers itself.

RoBERTa has BERT's weights and layers but numbers positions differently: a token's position id
is pad_token_id + 1 + (how many non-pad tokens come up to and including it), and a pad token's
is pad_token_id (`create_position_ids_from_input_ids`). Run as BERT, a RoBERTa checkpoint is
off at every layer, so reft computes this exactly and these fixtures check it.

It builds a tiny random `roberta` model with `AutoModel.from_config` and a fixed
seed (no hub), gives every parameter random values so none is a no-op (norm scales, biases,
the position rows below pad_token_id), and writes into tests/fixtures/encoders/roberta/:

  config.json, model.safetensors   as transformers saves them
  tokenizer.json                   word-level `w4` … `w99`, with <s>=0 <pad>=1 </s>=2 <unk>=3
                                   and RoBERTa's `<s> … </s>` template (so `reft` runs on it)
  reference.safetensors            input_ids [2, S] (as f32; row 1 right-padded with <pad>),
                                   attention_mask [2, S], hidden_states [L+1, 2, S, D]
                                   (embeddings, then each layer's output), pooler [2, D]

Run with transformers 5.x:
  ~/.cache/reft-ref/venv/bin/pip install torch==2.15.0 transformers==5.23.0 safetensors numpy
  ~/.cache/reft-ref/venv/bin/python tests/reference/roberta.py

`xlm-roberta` (and `camembert`) are RoBERTa's code under another name in transformers; the
script asserts that XLMRobertaModel with the same weights gives the same states, so
tests/encoder_families.rs checks reft's xlm-roberta against this one fixture.
"""
import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoConfig, AutoModel

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "encoders"
VOCAB = 100
PAD = 1
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
# Row 0 is full length; row 1 is shorter and right-padded, so its pads take position PAD.
ROWS = [[0, 17, 5, 9, 30, 12, 8, 33, 21, 64, 2], [0, 40, 41, 77, 2]]


def tokenizer_json() -> str:
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), VOCAB)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.enable_padding(pad_id=PAD, pad_token="<pad>")
    return tok.to_str()


def main() -> None:
    for model_type in ["roberta"]:
        torch.manual_seed(7)
        config = AutoConfig.for_model(
            model_type,
            vocab_size=VOCAB,
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=96,
            max_position_embeddings=40,  # pad + 1 + 38 tokens, as roberta-base's 514 = 1 + 1 + 512
            type_vocab_size=1,
            layer_norm_eps=1e-5,
            pad_token_id=PAD,
            bos_token_id=0,
            eos_token_id=2,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            attn_implementation="eager",
        )
        model = AutoModel.from_config(config).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p) * 0.5)
        dest = OUT / model_type
        dest.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(dest)
        (dest / "tokenizer.json").write_text(tokenizer_json())

        s = max(len(r) for r in ROWS)
        ids = torch.tensor([r + [PAD] * (s - len(r)) for r in ROWS])
        mask = (ids != PAD).long()
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        twin_config = AutoConfig.for_model("xlm-roberta", **{k: v for k, v in config.to_dict().items() if k != "model_type"})
        twin_config._attn_implementation = "eager"
        twin = AutoModel.from_config(twin_config).eval()
        twin.load_state_dict(model.state_dict())
        with torch.no_grad():
            twin_out = twin(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        assert type(twin).__name__ == "XLMRobertaModel"
        assert all(torch.equal(a, b) for a, b in zip(out.hidden_states, twin_out.hidden_states)), "xlm-roberta differs"
        save_file(
            {
                "input_ids": ids.float(),
                "attention_mask": mask.float(),
                "hidden_states": torch.stack(out.hidden_states).contiguous(),
                "pooler": out.pooler_output.contiguous(),
            },
            str(dest / "reference.safetensors"),
        )
        (dest / "reference.json").write_text(
            json.dumps({"transformers": transformers.__version__, "torch": torch.__version__}, indent=1) + "\n"
        )
        print(f"{model_type}: wrote {dest}")


if __name__ == "__main__":
    main()
