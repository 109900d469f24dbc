#!/usr/bin/env python3
"""Reference renderings of chat templates by transformers' own `apply_chat_template`.

The templates are written in the styles the model families use (Llama 3's header tokens with
`| trim`, Mistral's [INST] with raise_exception and role alternation, Qwen2.5's ChatML with
`{%-` whitespace control and a default system prompt, Zephyr's line-based blocks that rely
on trim_blocks/lstrip_blocks, Llama 3.2's dated system header through `strftime_now`, and a
`.strip()`/`.items()` Python-method user). Each is
rendered for a few conversations, with and without the generation prompt; reft's minijinja
renderer must give the same strings (tests/chat_templates.rs).

  ~/.cache/reft-ref/venv/bin/python tests/reference/chat_templates.py   # writes tests/fixtures/chat_templates.json
"""
import json
from pathlib import Path

from datetime import datetime

import transformers
from tokenizers import Tokenizer, models
from transformers.utils import chat_template_utils
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
    # Llama 3.1/3.2's system header: today's date through transformers' `strftime_now`,
    # rendered here at a fixed moment (NOW) so the fixture does not depend on the day.
    "llama3.2_date": """{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
""",
    "python_methods": "{% for message in messages %}{{ message['role'].upper() }}: {{ message['content'].strip() }}{% if not loop.last %}\n{% endif %}{% endfor %}{% for k, v in {'a': 1}.items() %} [{{ k }}={{ v }}]{% endfor %}{% if add_generation_prompt %}\nASSISTANT:{% endif %}",
}

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Answer in emoji."}, {"role": "user", "content": "  How are you?  "}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name three colours."}],
]


# 2026-12-03 12:00 UTC: noon, so the date is the same in every time zone within ±11 h.
NOW = 1796299200


class FixedDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.fromtimestamp(NOW, tz)


def main():
    # transformers' strftime_now calls its module's `datetime.now()`.
    chat_template_utils.datetime = FixedDatetime
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
    OUT.write_text(json.dumps({"transformers": transformers.__version__, "bos_token": "<s>", "eos_token": "</s>", "now": NOW,
                               "templates": TEMPLATES, "cases": cases}, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases -> {OUT}")


if __name__ == "__main__":
    main()
