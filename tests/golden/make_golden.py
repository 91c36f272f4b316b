#!/usr/bin/env python3
"""Golden fixtures for SmolLM2-135M-Instruct from Hugging Face transformers (the independent
reference the C++ engine is tested against).

Run on the GPU machine (torch + transformers there; the `gguf` wheel is carried):
    python3 tests/golden/make_golden.py --gguf /tmp/dspark-model/SmolLM2-135M-Instruct.Q4_1.gguf --out DIR

transformers dequantizes the GGUF (Q4_1 / Q8_0) to float and un-permutes Q/K itself, so the
reference shares no code with our engine. It runs in float64 with eager attention, so the
reference's own rounding is far below our float32 tolerance.

Writes:
  smollm2_logits.json  top-20 logits at every position of several prompts (plain, chat,
                       non-English, code), with the prompt ids
  smollm2_greedy.json  64-token greedy continuations of >= 20 prompts, with the top-2 logit gap at
                       every step (a test may accept either token where the gap is tiny)
"""
import argparse
import json
import os
import platform

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

LOGIT_PROMPTS = [
    ("plain_en", False, "The quick brown fox jumps over the lazy dog. Then it"),
    ("chat_en", True, "What is the capital of France? Answer briefly."),
    ("plain_fr_zh_ru", False, "Bonjour, je m'appelle Marie. 你好，世界！ Привет, как дела?"),
    ("code_python", False, "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n"),
    ("chat_math", True, "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell altogether?"),
    ("plain_emoji_numbers", False, "In 2024 the price rose 12.5% 📈 to $1,234.56 — wow! 🎉"),
]

GREEDY_PROMPTS = [
    (False, "Once upon a time, in a small village by the sea,"),
    (False, "The three primary colors are"),
    (False, "import numpy as np\n\ndef softmax(x):\n"),
    (False, "Water boils at 100 degrees Celsius because"),
    (False, "La tour Eiffel est"),
    (False, "1, 2, 3, 5, 8, 13,"),
    (False, "# A C++ function that reverses a string\n#include <string>\n"),
    (False, "The theory of relativity was developed by"),
    (False, "Dear hiring manager,\n\nI am writing to apply for"),
    (False, "Q: What is 12 times 7?\nA:"),
    (True, "Write a haiku about autumn leaves."),
    (True, "Explain what a hash table is in two sentences."),
    (True, "What is the capital of Japan?"),
    (True, "Give me three tips for staying focused while studying."),
    (True, "Translate 'good morning' into Spanish, French and German."),
    (True, "Write a Python function that checks whether a number is prime."),
    (True, "A train travels 60 km in 45 minutes. What is its average speed in km/h?"),
    (True, "Who wrote Pride and Prejudice?"),
    (True, "List the planets of the solar system in order from the Sun."),
    (True, "What does HTTP stand for?"),
    (True, "Summarise the plot of Romeo and Juliet in one sentence."),
    (True, "日本の首都はどこですか？"),
]

TOP_K = 20
GREEDY_TOKENS = 64


def chat_ids(tok, text):
    msgs = [{"role": "user", "content": text}]
    return tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)


def prompt_ids(tok, chat, text):
    if chat:
        ids = chat_ids(tok, text)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids), tok.apply_chat_template([{"role": "user", "content": text}],
                                                  add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"], text


@torch.no_grad()
def all_logits(model, ids, device):
    out = model(torch.tensor([ids], device=device))
    return out.logits[0].double().cpu()  # [n, vocab]


@torch.no_grad()
def greedy(model, ids, device, n):
    past = None
    cur = torch.tensor([ids], device=device)
    tokens, gaps, top2 = [], [], []
    for _ in range(n):
        out = model(cur, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1].double()
        v, i = torch.topk(logits, 2)
        tokens.append(int(i[0]))
        gaps.append(float(v[0] - v[1]))
        top2.append([int(i[0]), int(i[1])])
        cur = i[:1].view(1, 1)
    return tokens, gaps, top2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    d, f = os.path.split(os.path.abspath(args.gguf))
    dtype = getattr(torch, args.dtype)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=dtype,
                                                 attn_implementation="eager").to(device).eval()
    env = {"torch": torch.__version__, "transformers": transformers.__version__,
           "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
           "dtype": args.dtype, "model": f}

    logit_cases = []
    for name, chat, text in LOGIT_PROMPTS:
        ids, rendered = prompt_ids(tok, chat, text)
        lg = all_logits(model, ids, device)
        v, i = torch.topk(lg, TOP_K, dim=-1)
        logit_cases.append({"name": name, "chat": chat, "text": text, "rendered": rendered,
                            "input_ids": ids, "top_ids": i.tolist(),
                            "top_logits": [[round(x, 6) for x in row] for row in v.tolist()]})
    with open(os.path.join(args.out, "smollm2_logits.json"), "w") as fh:
        json.dump({"reference": env, "top_k": TOP_K, "cases": logit_cases}, fh)

    greedy_cases = []
    for chat, text in GREEDY_PROMPTS:
        ids, rendered = prompt_ids(tok, chat, text)
        tokens, gaps, top2 = greedy(model, ids, device, GREEDY_TOKENS)
        greedy_cases.append({"chat": chat, "text": text, "rendered": rendered, "input_ids": ids,
                             "output_ids": tokens, "top2_gap": [round(g, 6) for g in gaps],
                             "top2_ids": top2, "output_text": tok.decode(tokens)})
    with open(os.path.join(args.out, "smollm2_greedy.json"), "w") as fh:
        json.dump({"reference": env, "n_tokens": GREEDY_TOKENS, "cases": greedy_cases}, fh)
    print(json.dumps(env))
    for c in greedy_cases[:3] + greedy_cases[10:13]:
        print(repr(c["output_text"][:160]))


if __name__ == "__main__":
    main()
