#!/usr/bin/env python3
"""Writes the tokenizer test fixtures under tests/tokenizer/data/, with Hugging Face as reference.

Why: our C++ byte-level BPE must give exactly the ids Hugging Face gives. This script asks HF
(`tokenizers` + `transformers`, no torch needed) and stores inputs and expected outputs as JSON;
the C++ tests (tests/tokenizer/) only read those files.

What it writes:
  pre_tokenizer_cases.json  pieces HF's pre-tokenizers cut: each Split behavior (with invert)
                      and the gpt2 / smollm / llama3 / qwen2 presets (byte-level spelled).
  smollm2_cases.json  ids of ~250 strings, decodes of odd id sequences, and chat renderings for
                      the default model. The HF tokenizer is built by transformers' own GGUF
                      converter (vocab, merges, control tokens) from the GGUF file, with the
                      pre-tokenizer SmolLM2's published tokenizer.json uses (transformers has no
                      "smollm" entry and would otherwise skip the digit split).
  gguf/*.gguf         the tiny_gpt2 vocabulary as GGUF metadata (pre "smollm"), so the GGUF
                      loader is checked against tiny_gpt2/cases.json without the real model, and
                      broken variants (missing keys, bad merges, ...) that must give format_error.
  tiny_*/tokenizer.json (+ tokenizer_config.json) and tiny_*/cases.json: small BPEs trained here
                      with `tokenizers` (a few hundred merges), so the tokenizer.json loader is
                      tested against HF too without committing multi-MB files. They cover the
                      string and the pair form of merges, Split(Regex) + ByteLevel, Digits,
                      ignore_merges and a BOS-adding TemplateProcessing post-processor.

Run: python3 scripts/make_tokenizer_fixtures.py [--model .models/SmolLM2-135M-Instruct.Q4_1.gguf]
Needs: pip install gguf transformers tokenizers jinja2
"""
import argparse
import json
import os
import random

import gguf
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import AddedToken

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "tokenizer", "data")

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def test_strings():
    """The inputs: hand-picked cases plus generated runs of digits and whitespace."""
    s = [
        "", " ", "  ", "a", "Hello", "Hello world", " Hello world", "Hello world ", "hello  world",
        "The quick brown fox jumps over the lazy dog.",
        "What is the capital of France? Answer in one sentence.",
        "It was the best of times, it was the worst of times, it was the age of wisdom...",
        "I'm sure you're right; they've said we'd go, and I'll see if she's done. Don't!",
        "I'M SURE YOU'RE RIGHT, THEY'VE SAID WE'D GO AND I'LL SEE. DON'T",
        "rock 'n' roll, 'quoted', ''double'', 's 't 're",
        "Hello, world! How are you? (fine) [ok] {yes} <no>",
        "!!!???...,,,;;;:::", "--- *** ___ === +++ ### @@@ $$$ %%% ^^^ &&& ~~~ ```",
        "e.g. i.e. etc. Mr. Dr. U.S.A.", "a-b_c.d/e\\f|g", "email: someone@example.com, url: https://hf.co/x?y=1&z=2",
        "3.14159", "1,000,000", "-42", "+7", "1e-9", "0x1F 0b1010 0o17", "2024-01-31T12:34:56Z",
        "Version 1.2.3-rc.4", "$19.99 and €5,00 and £3", "100%", "a1b2c3d4", "abc123def456",
        "Call 555-123-4567 now", "The year 1999 and 2000.", " 1", " 12", "  123",
        "😀", "😀😃😄", "Hello 😀 world", "👍🏽", "👨‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "❤️", "🇫🇷🇩🇪",
        "日本語のテキストです。", "你好，世界！", "中文和English混合", "한국어 텍스트입니다", "ｆｕｌｌｗｉｄｔｈ",
        "مرحبا بالعالم", "שלום עולם", "Привет, мир! Как дела?", "Ελληνικά γράμματα", "हिन्दी पाठ",
        "ไทยภาษา", "Café, naïve, résumé, coöperate, Zürich, São Paulo, Kraków, Ångström",
        "e\u0301 (e + combining acute)", "Straße", "ǅ ǈ ǋ", "ﬁ ligature", "İstanbul ı",
        "def add(a, b):\n    return a + b\n",
        "for i in range(10):\n\tprint(i ** 2)  # squares\n",
        "#include <vector>\nint main() {\n  std::vector<int> v{1, 2, 3};\n  return v.size();\n}\n",
        "template <typename T> T max(T a, T b) { return a > b ? a : b; }",
        '{"name": "SmolLM", "params": 135000000, "tags": ["a", "b"], "ok": true, "x": null}',
        "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
        "<html><body><p class=\"x\">Hi</p></body></html>",
        "x = [i for i in range(3)]  ; y = {k: v for k, v in d.items()}",
        "    indented", "\tTabbed\tline", "line1\nline2", "line1\r\nline2\r\n", "\n", "\n\n", "\n\n\n",
        "\r\n", "\r", "a\n\nb", "trailing spaces   ", "   leading spaces", "mid   spaces", "tabs\t\t\tend",
        " \n ", "\n \n", "a \n b", "a\t \nb", "\u00a0nbsp\u00a0", "\u3000ideographic space", "\u2028\u2029",
        "<|im_start|>", "<|im_end|>", "<|endoftext|>",
        "<|im_start|>user\nHello<|im_end|>\n",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
        "text<|endoftext|>more text", "<|im_start|><|im_end|>", "<|im_start|> <|im_end|>",
        "a<|im_end|>b", " <|im_start|> ", "<|im_start", "im_start|>", "<|im_start|", "<|unknown|>",
        "<|endoftext|><|endoftext|>", "<repo_name>x<file_sep>y", "<<|im_start|>>",
        "\u0000", "nul\u0000byte", "\u0001\u0002\u0003", "\u007f", "\u00ff", "ÿþ", "Ġ", "Ċ", "ĠĠĠ",
        "\\x00\\xff", "\ufffd", "\ufeffBOM", "\u200b zero width", "\u200d", "a\u0300\u0301\u0302",
        "\U0001F600\U0001F601", "\U00010000", "\U0010FFFD", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "½ ¾ ² ³ ٣ ૫ Ⅻ",
        "a" * 100, "ab" * 60, " " * 40, "-" * 70, "=" * 33 + "\n", "😀" * 20,
        "Supercalifragilisticexpialidocious antidisestablishmentarianism",
        "pneumonoultramicroscopicsilicovolcanoconiosis",
        "HTTPServerError XMLHttpRequest camelCaseName snake_case_name SCREAMING_CASE",
        "What's the weather like in Paris today? I'd like to know before I leave.",
        "Q: What is 2+2?\nA: 4.", "1. First\n2. Second\n3. Third",
        "- bullet one\n- bullet two\n  - nested", "| a | b |\n|---|---|\n| 1 | 2 |",
        "**bold** _italic_ `code` [link](http://x.y)", "> quoted text\n>> nested quote",
        "$E = mc^2$ and \\frac{a}{b} + \\sqrt{x}", "α + β = γ; ∑ᵢ xᵢ ≤ ∞; ∀x ∈ ℝ",
        "The café’s “smart quotes” — and – dashes…", "‘single’ „low“ «guillemets» ‹single›",
        "Tab\tseparated\tvalues\n1\t2\t3", "Mixed\r\nline\rendings\n",
        "The SmolLM2 model was trained by Hugging Face.", "Hello 42<|im_end|>",
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    ]
    for n in (1, 2, 3, 4, 5, 7, 10, 16, 25, 40):
        s.append("".join(str((i * 7 + 3) % 10) for i in range(n)))
    for n in (1, 2, 3, 5, 8):
        s += [" " * n + "x", "x" + " " * n + "y", "\t" * n, "\n" * n + "end", "x" + "\r\n" * n]
    words = ["the", "of", "and", "model", "token", "Paris", "über", "数据", "🙂", "42", "can't", "\n", "  "]
    rng = random.Random(1234)
    for _ in range(40):
        s.append("".join(rng.choice(words) + rng.choice(["", " ", " ", ",", ".", "\t"]) for _ in range(rng.randint(1, 12))))
    assert len(s) >= 200, len(s)
    return s


def chat_conversations():
    return [
        ([{"role": "user", "content": "Hi"}], True),
        ([{"role": "user", "content": "Hi"}], False),
        ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there!"}], True),
        ([{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
          {"role": "user", "content": "And 3+3? 😀"}], True),
        ([{"role": "system", "content": "Speak French."}, {"role": "user", "content": "Bonjour, ça va ?"},
          {"role": "assistant", "content": "Oui, très bien."}], False),
        ([{"role": "user", "content": "multi\nline\n\ncontent  "}], True),
    ]


def odd_decodes(vocab_id, extra_specials):
    """Id sequences whose bytes are not valid UTF-8 on their own (HF decodes them lossily)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    b2u = bytes_to_unicode()
    byte_id = lambda b: vocab_id.get(b2u[b])
    seqs = [
        [byte_id(0xE6)], [byte_id(0xE6), byte_id(0x97)], [byte_id(0xFF)], [byte_id(0x80)],
        [byte_id(0x41), byte_id(0xE6), byte_id(0x41)], [byte_id(0xF0), byte_id(0x9F), byte_id(0x98)],
        [byte_id(0xC0), byte_id(0xAF)], [byte_id(0xED), byte_id(0xA0), byte_id(0x80)],
        [byte_id(0xF4), byte_id(0x90), byte_id(0x80), byte_id(0x80)], [byte_id(0xE6), byte_id(0x20)],
    ]
    # Bytes that never occur in UTF-8 (0xC0, 0xFF, ...) may have no token at all: leave those out.
    seqs = [q for q in seqs if all(i is not None for i in q)]
    seqs += [[i] for i in extra_specials]
    return seqs


def encode_cases(tok, strings, add_special=False):
    return [{"text": t, "ids": tok.encode(t, add_special_tokens=add_special).ids} for t in strings]


def smollm2_fixture(model_path):
    from transformers.integrations.gguf.gguf_tokenizer_mapping import add_gguf_special_tokens, byte_level_tokenizer
    r = gguf.GGUFReader(model_path)
    get = lambda k: r.fields[k].contents()
    td = {"tokenizer_type": get("tokenizer.ggml.model"), "tokens": get("tokenizer.ggml.tokens"),
          "merges": get("tokenizer.ggml.merges"), "token_type": get("tokenizer.ggml.token_type")}
    assert td["tokenizer_type"] == "gpt2" and get("tokenizer.ggml.pre") == "smollm"
    hf = add_gguf_special_tokens(byte_level_tokenizer(td), td)
    # SmolLM2's own tokenizer.json: digits one by one, then the GPT-2 regex.
    hf.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    hf.chat_template = get("tokenizer.chat_template")
    backend = hf.backend_tokenizer
    strings = test_strings()
    cases = encode_cases(backend, strings)
    for c in cases:  # HF itself must round-trip, or the string is a bad test input
        assert backend.decode(c["ids"], skip_special_tokens=False) == c["text"], c["text"]
    # parse_special=false: HF's encode_special_tokens makes control tokens plain text.
    backend.encode_special_tokens = True
    no_special = [{"text": t, "ids": backend.encode(t, add_special_tokens=False).ids}
                  for t in strings if "<" in t and ">" in t]
    backend.encode_special_tokens = False
    vocab = backend.get_vocab()
    decodes = [{"ids": ids, "text": backend.decode(ids, skip_special_tokens=False)}
               for ids in odd_decodes(vocab, [0, 1, 2])]
    chats = []
    for msgs, gen in chat_conversations():
        text = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        chats.append({"messages": msgs, "add_generation_prompt": gen, "text": text,
                      "ids": backend.encode(text, add_special_tokens=False).ids})
    return {"source": "transformers GGUF converter + SmolLM2 pre-tokenizer, tokenizers "
                      + __import__("tokenizers").__version__,
            "model": os.path.basename(model_path), "n_vocab": backend.get_vocab_size(),
            "chat_template": get("tokenizer.chat_template"),
            "encode": cases, "encode_no_special": no_special, "decode": decodes, "chat": chats}


def corpus():
    rng = random.Random(7)
    base = test_strings()
    lines = []
    for _ in range(400):
        lines.append(" ".join(rng.choice(base) for _ in range(3)))
    return lines


def train_tiny(pre, specials, added_plain, vocab_size, ignore_merges=False):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges) if ignore_merges else models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    if added_plain:
        tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in added_plain])
    return tok


TINY_SYSTEM_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Tiny, a test model. Be brief.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
TINY_NOSYS_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message['role'] != 'system' %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def write_tiny(name, tok, merges_as_strings, config, chat=True):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    j = json.loads(tok.to_str())
    if merges_as_strings:
        j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    else:
        j["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in j["model"]["merges"]]
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=1)
    # Reload what we wrote, so the expected ids come from the committed file itself.
    ref = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    fixture = {"source": "tokenizers " + __import__("tokenizers").__version__,
               "encode": encode_cases(ref, test_strings(), add_special=True)}
    for c in fixture["encode"]:
        c["decoded"] = ref.decode(c["ids"], skip_special_tokens=False)
    if config is not None:
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
        if chat:
            from transformers import PreTrainedTokenizerFast
            hf = PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"), **{
                k: v for k, v in config.items() if k in ("bos_token", "eos_token", "chat_template")})
            fixture["chat"] = []
            for msgs, gen in chat_conversations():
                text = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
                fixture["chat"].append({"messages": msgs, "add_generation_prompt": gen, "text": text,
                                        "ids": ref.encode(text, add_special_tokens=False).ids})
    with open(os.path.join(d, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=0)


def tiny_fixtures():
    chatml = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    # 1. SmolLM2-like: Digits + ByteLevel(use_regex), merges as "a b" strings, one plain added token.
    t = train_tiny(pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
                   chatml, ["<think>"], 600)
    write_tiny("tiny_gpt2", t, True, {"bos_token": None, "eos_token": "<|im_end|>", "add_bos_token": False,
                                      "chat_template": TINY_SYSTEM_TEMPLATE})
    # 2. Qwen2-like: Split(Regex, isolated) + ByteLevel(no regex), merges as [a, b] pairs.
    t = train_tiny(pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                                            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
                   chatml, [], 500)
    write_tiny("tiny_qwen2", t, False, {"bos_token": None, "eos_token": "<|im_end|>",
                                        "chat_template": TINY_NOSYS_TEMPLATE})
    # 3. Llama3-like: the Llama 3 split, ignore_merges, and a post-processor that adds BOS.
    t = train_tiny(pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
                   ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], [], 500, ignore_merges=True)
    t.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[
        ("<|begin_of_text|>", t.token_to_id("<|begin_of_text|>"))])
    write_tiny("tiny_llama3", t, False, None)


def pre_tokenizer_fixture():
    """Pieces HF's pre-tokenizers cut: every Split behavior, and the named presets."""
    behaviors = ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"]
    patterns = [(r"-", False), (r"\s+", True), (r"\p{N}", True), (r"ab", False)]
    texts = ["the--final-countdown-", "-lead and trail-", "  two  spaces  ", "a1b22c333", "abab cab",
             "", "no delimiters", "日本 語-😀"]
    split = []
    for pattern, is_regex in patterns:
        for b in behaviors:
            for inv in (False, True):
                p = pre_tokenizers.Split(Regex(pattern) if is_regex else pattern, behavior=b, invert=inv)
                for t in texts:
                    split.append({"pattern": pattern, "regex": is_regex, "behavior": b, "invert": inv, "text": t,
                                  "pieces": [x[0] for x in p.pre_tokenize_str(t)]})
    def seq(*steps):
        return pre_tokenizers.Sequence(list(steps))
    no_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    presets = {
        "gpt2": pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        "smollm": seq(pre_tokenizers.Digits(individual_digits=True),
                      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)),
        "llama3": seq(pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"), no_regex),
        "qwen2": seq(pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"), no_regex),
    }
    strings = test_strings()[::3]
    return {"source": "tokenizers " + __import__("tokenizers").__version__, "split": split,
            "presets": {name: [{"text": t, "pieces": [x[0] for x in p.pre_tokenize_str(t)]} for t in strings]
                        for name, p in presets.items()}}


def write_gguf(path, tokens, types, merges, model="gpt2", pre="smollm", extra=None):
    w = gguf.GGUFWriter(path, "llama")
    if model is not None:
        w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    if tokens is not None:
        w.add_token_list(tokens)
    if types is not None:
        w.add_token_types(types)
    if merges is not None:
        w.add_token_merges(merges)
    for key, value in (extra or {}).items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_string(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_fixtures():
    """tiny_gpt2 as GGUF (control/user-defined types as llama.cpp's converter assigns them)."""
    j = json.load(open(os.path.join(OUT, "tiny_gpt2", "tokenizer.json"), encoding="utf-8"))
    n = max(max(j["model"]["vocab"].values()), max(a["id"] for a in j["added_tokens"])) + 1
    tokens, types = [""] * n, [1] * n
    for t, i in j["model"]["vocab"].items():
        tokens[i] = t
    for a in j["added_tokens"]:
        tokens[a["id"]], types[a["id"]] = a["content"], 3 if a["special"] else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    d = os.path.join(OUT, "gguf")
    os.makedirs(d, exist_ok=True)
    ids = {"tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
           "tokenizer.ggml.add_bos_token": False, "tokenizer.chat_template": TINY_SYSTEM_TEMPLATE}
    write_gguf(os.path.join(d, "tiny_smollm.gguf"), tokens, types, merges, extra=ids)
    bad = {
        "missing_tokens": dict(tokens=None),
        "missing_merges": dict(merges=None),
        "missing_model": dict(model=None),
        "wrong_model": dict(model="llama"),
        "unknown_pre": dict(pre="no-such-pre"),
        "merge_without_space": dict(merges=merges[:10] + ["ab"] + merges[10:]),
        "merge_unknown_token": dict(merges=merges[:10] + ["\u0101zz \u0102qq"] + merges[10:]),
        "short_token_types": dict(types=types[:-5]),
        "bad_token_type": dict(types=types[:-1] + [9]),
        "bos_out_of_range": dict(extra={"tokenizer.ggml.bos_token_id": n + 7}),
        "tokens_not_strings": dict(tokens=None, extra={"tokenizer.ggml.tokens": "not an array"}),
    }
    for name, over in bad.items():
        args = dict(tokens=tokens, types=types, merges=merges, extra=ids)
        args.update(over)
        if name == "bos_out_of_range":
            args["extra"] = dict(ids, **over["extra"])
        write_gguf(os.path.join(d, name + ".gguf"), args["tokens"], args["types"], args["merges"],
                   model=args.get("model", "gpt2"), pre=args.get("pre", "smollm"), extra=args["extra"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, ".models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "smollm2_cases.json"), "w", encoding="utf-8") as f:
        json.dump(smollm2_fixture(args.model), f, ensure_ascii=False, indent=0)
    with open(os.path.join(OUT, "pre_tokenizer_cases.json"), "w", encoding="utf-8") as f:
        json.dump(pre_tokenizer_fixture(), f, ensure_ascii=False, separators=(",", ":"))
    tiny_fixtures()
    gguf_fixtures()
    for root, _, files in os.walk(OUT):
        for n in sorted(files):
            p = os.path.join(root, n)
            print(f"{os.path.relpath(p, ROOT)}: {os.path.getsize(p)} bytes")


if __name__ == "__main__":
    main()
