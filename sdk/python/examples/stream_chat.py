#!/usr/bin/env python3
"""Streams one chat answer from a DSpark server, then prints the request's stats.

    python3 sdk/python/examples/stream_chat.py --endpoint tcp://127.0.0.1:5555 "Tell me a joke"
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from dspark_client import Client, DSparkError  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("message", nargs="?", default="Write a haiku about the sea.")
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    ap.add_argument("--server-key", default=None, help="the server's CURVE public key (Z85)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0)
    args = ap.parse_args()
    try:
        with Client(args.endpoint, server_public_key=args.server_key) as client:
            request = client.submit(messages=[{"role": "user", "content": args.message}],
                                    max_tokens=args.max_tokens, temperature=args.temperature)
            for piece in request.text_stream():
                print(piece, end="", flush=True)
            done = request.result()
            s = done["stats"]
            print(f"\n[{done['finish_reason']}] {s['prompt_tokens']} prompt + {s['completion_tokens']} completion "
                  f"tokens, ttft {s['ttft_s']:.3f} s, {s['tokens_per_s']:.1f} tok/s")
    except DSparkError as e:
        print(f"stream_chat: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
