#!/usr/bin/env python3
"""Reference renderings of chat templates by transformers' own `apply_chat_template`.

The templates are written in the styles the model families use (Llama 3's header tokens with
`| trim`, Mistral's [INST] with raise_exception and role alternation, Qwen2.5's ChatML with
`{%-` whitespace control and a default system prompt, Zephyr's line-based blocks that rely
on trim_blocks/lstrip_blocks, and a `.strip()`/`.items()` Python-method user). Each is
rendered for a few conversations, with and without the generation prompt; reft's minijinja
renderer must give the same strings (tests/chat_templates.rs).

  ~/.cache/reft-ref/venv/bin/python tests/reference/chat_templates.py   # writes tests/fixtures/chat_templates.json
"""
import json
from pathlib import Path

import transformers
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "chat_templates.json"

TEMPLATES = {
    "llama3": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    "mistral": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
    "qwen2.5": """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant") %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
""",
    "zephyr": """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}""",
    "python_methods": "{% for message in messages %}{{ message['role'].upper() }}: {{ message['content'].strip() }}{% if not loop.last %}\n{% endif %}{% endfor %}{% for k, v in {'a': 1}.items() %} [{{ k }}={{ v }}]{% endfor %}{% if add_generation_prompt %}\nASSISTANT:{% endif %}",
}

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Answer in emoji."}, {"role": "user", "content": "  How are you?  "}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name three colours."}],
]


def main():
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab={"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>")),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    cases = []
    for name, template in TEMPLATES.items():
        for messages in CONVERSATIONS:
            for gen in (True, False):
                try:
                    rendered = tok.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=gen)
                    error = None
                except Exception as e:  # raise_exception in the template
                    rendered, error = None, str(e)
                cases.append({"template": name, "messages": messages, "add_generation_prompt": gen,
                              "rendered": rendered, "error": error})
    OUT.write_text(json.dumps({"transformers": transformers.__version__, "bos_token": "<s>", "eos_token": "</s>",
                               "templates": TEMPLATES, "cases": cases}, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases -> {OUT}")


if __name__ == "__main__":
    main()
