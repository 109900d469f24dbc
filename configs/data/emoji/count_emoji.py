#!/usr/bin/env python3
"""Count how many generated answers are written in emoji only: the measure of the emoji
demo (configs/smollm2_emoji_loreft.yaml, docs/causal_lm.md). Reads the JSON lines that
`reft generate --json` prints, on stdin or from the files named, and prints `N/M`.

    reft generate --adapter out/smollm2_emoji_loreft --prompts configs/data/emoji/heldout.jsonl \\
        --max-new-tokens 32 --json | python3 configs/data/emoji/count_emoji.py

An answer follows the style when it holds at least one emoji and every character other
than whitespace is an emoji or part of an emoji sequence (zero-width joiner, variation
selector, keycap, tag; skin tones are emoji code points). Letters, digits and ordinary
punctuation break it. Standard library only. `--self-test` checks the rule.
(A Python script rather than a cargo example: building an example flips the features of
the shared libreft_sdk.so that target/release/reft links; see docs/plugins.md.)
"""
import json
import sys

# Pictographic blocks Unicode's emoji data draws from, as inclusive code point ranges.
EMOJI = [
    (0x1F000, 0x1FAFF),  # mahjong .. symbols and pictographs extended-A, flags, emoticons
    (0x2600, 0x27BF),    # miscellaneous symbols, dingbats
    (0x2300, 0x23FF),    # miscellaneous technical
    (0x2B00, 0x2BFF),    # arrows and shapes (⬆ ⬇ ⭐)
    (0x2190, 0x21FF),    # arrows
    (0x25A0, 0x25FF),    # geometric shapes
    (0x2934, 0x2935), (0x3030, 0x3030), (0x303D, 0x303D), (0x3297, 0x3297), (0x3299, 0x3299),
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x203C), (0x2049, 0x2049), (0x2122, 0x2122),
    (0x2139, 0x2139), (0x24C2, 0x24C2),
]
# Code points that only join or modify emoji.
COMPONENTS = [(0x200D, 0x200D), (0xFE0E, 0xFE0F), (0x20E3, 0x20E3), (0xE0020, 0xE007F)]


def within(c, ranges):
    return any(lo <= ord(c) <= hi for lo, hi in ranges)


def emoji_only(text):
    chars = [c for c in text if not c.isspace()]
    return any(within(c, EMOJI) for c in chars) and all(within(c, EMOJI) or within(c, COMPONENTS) for c in chars)


def self_test():
    for yes in ["🤖💬🌐🧠", "🇫🇷 🗼 🥐", "🧙‍♂️✨", "☀️🌤️", "🐔➡️🛣️❓😂", "⭐\n🌙", "👍🏽"]:
        assert emoji_only(yes), yes
    for no in ["", "  ", "Hello 👋", "🙂.", "🍕 pizza", "2️⃣", "\ufe0f"]:
        assert not emoji_only(no), repr(no)
    print("ok")


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    text = "".join(open(f, encoding="utf-8").read() + "\n" for f in sys.argv[1:]) if sys.argv[1:] else sys.stdin.read()
    yes = total = 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            output = record["output"]
        except (ValueError, KeyError, TypeError):
            sys.exit(f"line {n}: not a `reft generate --json` record: {line[:80]}")
        ok = emoji_only(output)
        yes += ok
        total += 1
        print(f"{'yes' if ok else 'no '} {record.get('prompt', ''):<48} {output!r}", file=sys.stderr)
    print(f"emoji-only answers: {yes}/{total}")


if __name__ == "__main__":
    main()
