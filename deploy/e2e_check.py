#!/usr/bin/env python3
"""End-to-end checks of a running compose stack through its HTTP gateway (deploy/e2e_podman.sh).

Every answer at temperature 0 must equal what the host's `dspark generate --chat --json` gives
for the same prompt and max tokens (the reference, computed here first): non-streaming, SSE
streaming, 4 requests at once (decoded in one batch), and with --drafter-container, a stream
during which that container is killed (the verifier falls back to plain decoding), a request
while it is down, and one after it is started again. Also /health, /v1/models, /metrics and, with --api-key, that requests without the key are
refused. Prints one line per check and the measured latencies; exits 1 on the first failure.

  e2e_check.py --dspark build-deploy/services/dspark --model .models/M.gguf --label edge \
      [--url http://127.0.0.1:8000] [--api-key KEY] [--drafter-container NAME] [--results FILE]

Python standard library only; no network beyond the URL given (loopback).
"""
import argparse
import concurrent.futures
import http.client
import json
import re
import statistics
import subprocess
import sys
import time
import urllib.parse

SHORT = ("Name three rivers in Europe.", 48)
LONG = ("Write a short story about a lighthouse keeper who finds a message in a bottle.", 160)
CONCURRENT = 4  # requests decoded together in one batch


class check_failed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise check_failed(what)


class gateway:
    def __init__(self, url, api_key):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        self.api_key = api_key

    def request(self, method, path, body=None, key=True, timeout=120):
        """(status, body text, seconds)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if key and self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        t0 = time.perf_counter()
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = conn.getresponse()
        text = r.read().decode("utf-8")
        conn.close()
        return r.status, text, time.perf_counter() - t0

    def stream(self, body, on_chunk=None, timeout=120):
        """Streams a chat completion: (content text, finish_reason, usage, ttft s, total s, chunks).
        on_chunk(n) runs after the n-th content chunk."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=json.dumps(dict(body, stream=True)), headers=headers)
        r = conn.getresponse()
        if r.status != 200:
            raise check_failed(f"stream: HTTP {r.status}: {r.read()[:300]!r}")
        expect(r.getheader("Content-Type", "").startswith("text/event-stream"),
               f"stream: Content-Type {r.getheader('Content-Type')}")
        text, finish, usage, ttft, n, done = "", None, None, None, 0, False
        while True:
            line = r.readline()
            if not line:
                break
            line = line.decode("utf-8").rstrip("\r\n")
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            expect("error" not in event, f"stream: error event {event}")
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices", []):
                content = choice.get("delta", {}).get("content")
                if content:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    text += content
                    n += 1
                    if on_chunk:
                        on_chunk(n)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        total = time.perf_counter() - t0
        conn.close()
        expect(done, "stream: no [DONE] at the end")
        return text, finish, usage, ttft, total, n


def reference(dspark, model, prompt, max_tokens):
    """The host build's answer: `dspark generate --chat --temperature 0 --json`."""
    out = subprocess.run([dspark, "generate", "--model", model, "--chat", "--prompt", prompt,
                          "--max-tokens", str(max_tokens), "--temperature", "0", "--json"],
                         check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout)


def chat_body(prompt, max_tokens):
    return {"model": "default", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0}


def finish_of(ref, max_tokens):
    return "length" if ref["stats"]["generated_tokens"] >= max_tokens else "stop"


def metric(text, name, labels=""):
    """The value of one sample of the Prometheus text; None when absent."""
    m = re.search(r"^" + re.escape(name + labels) + r" ([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def check_nonstream(gw, ref, prompt, max_tokens, label):
    status, text, secs = gw.request("POST", "/v1/chat/completions", chat_body(prompt, max_tokens))
    expect(status == 200, f"{label}: HTTP {status}: {text[:300]}")
    body = json.loads(text)
    choice = body["choices"][0]
    expect(body["object"] == "chat.completion" and choice["message"]["role"] == "assistant", f"{label}: shape {body}")
    expect(choice["message"]["content"] == ref["text"],
           f"{label}: answer differs from dspark generate:\n  got  {choice['message']['content']!r}\n  want {ref['text']!r}")
    expect(choice["finish_reason"] == finish_of(ref, max_tokens), f"{label}: finish_reason {choice['finish_reason']}")
    expect(body["usage"]["prompt_tokens"] == ref["stats"]["prompt_tokens"], f"{label}: usage {body['usage']}")
    expect(body["usage"]["completion_tokens"] == ref["stats"]["generated_tokens"], f"{label}: usage {body['usage']}")
    return secs


def check_stream(gw, ref, prompt, max_tokens, label, on_chunk=None):
    body = dict(chat_body(prompt, max_tokens), stream_options={"include_usage": True})
    text, finish, usage, ttft, total, n = gw.stream(body, on_chunk)
    expect(text == ref["text"], f"{label}: streamed answer differs from dspark generate:\n  got  {text!r}\n  want {ref['text']!r}")
    expect(finish == finish_of(ref, max_tokens), f"{label}: finish_reason {finish}")
    expect(usage and usage["completion_tokens"] == ref["stats"]["generated_tokens"], f"{label}: usage {usage}")
    return ttft, total, n


def wait_for(predicate, what, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return time.time() - t0
        time.sleep(0.5)
    raise check_failed(f"timed out after {timeout} s waiting for {what}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--dspark", required=True, help="the host build's dspark binary (references)")
    ap.add_argument("--model", required=True, help="the model file the stack serves (same file)")
    ap.add_argument("--label", required=True)
    ap.add_argument("--api-key", default="")
    ap.add_argument("--drafter-container", default="", help="kill this container mid-stream, then start it")
    ap.add_argument("--results", default="", help="append the measured numbers (JSON line) here")
    a = ap.parse_args()
    gw = gateway(a.url, a.api_key)
    results = {"stack": a.label}

    def ok(what):
        print(f"e2e[{a.label}] ok: {what}", flush=True)

    try:
        refs = {p: reference(a.dspark, a.model, p, n) for p, n in (SHORT, LONG)}
        short_ref, long_ref = refs[SHORT[0]], refs[LONG[0]]
        ok(f"references from dspark generate ({short_ref['stats']['generated_tokens']} and "
           f"{long_ref['stats']['generated_tokens']} tokens)")

        status, text, _ = gw.request("GET", "/health", key=False)
        expect(status == 200 and json.loads(text)["status"] == "ok", f"/health: {status} {text}")
        ok("/health 200 status ok")

        if a.api_key:
            status, _, _ = gw.request("GET", "/v1/models", key=False)
            expect(status == 401, f"/v1/models without the API key: HTTP {status}, want 401")
            status, _, _ = gw.request("POST", "/v1/chat/completions", chat_body("Hi", 4), key=False)
            expect(status == 401, f"/v1/chat/completions without the API key: HTTP {status}, want 401")
            ok("requests without the API key get 401")

        status, text, _ = gw.request("GET", "/v1/models")
        expect(status == 200, f"/v1/models: HTTP {status} {text}")
        models = json.loads(text)["data"]
        model_id = a.model.rsplit("/", 1)[-1]
        expect(len(models) == 1 and models[0]["id"] == model_id, f"/v1/models: {models}, want id {model_id}")
        ok(f"/v1/models: {model_id}, context {models[0].get('context_length')}, draft {models[0].get('draft')}")

        lat = [check_nonstream(gw, short_ref, *SHORT, "chat") for _ in range(3)]
        results["chat_48_tokens_s"] = [round(x, 3) for x in lat]
        ok(f"chat completion x3 equals dspark generate ({SHORT[1]} tokens; {', '.join(f'{x:.3f}' for x in lat)} s)")
        print(f"e2e[{a.label}] answer: {short_ref['text']!r}")

        ttft, total, n = check_stream(gw, short_ref, *SHORT, "stream")
        results["stream_48_ttft_s"], results["stream_48_total_s"] = round(ttft, 3), round(total, 3)
        ok(f"SSE stream equals dspark generate ({n} chunks, first token {ttft:.3f} s, total {total:.3f} s)")

        ttft, total, n = check_stream(gw, long_ref, *LONG, "long stream")
        results["stream_160_ttft_s"], results["stream_160_total_s"] = round(ttft, 3), round(total, 3)
        ok(f"long SSE stream equals dspark generate ({n} chunks, first token {ttft:.3f} s, total {total:.3f} s)")

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(CONCURRENT) as pool:
            jobs = [pool.submit(check_nonstream, gw, short_ref, *SHORT, f"concurrent chat {i}") for i in range(CONCURRENT)]
            lat = [j.result() for j in jobs]
        wall = time.perf_counter() - t0
        results["chat_48_x4_concurrent_wall_s"] = round(wall, 3)
        ok(f"{CONCURRENT} concurrent chat completions all equal dspark generate (wall {wall:.3f} s, "
           f"each {min(lat):.3f}-{max(lat):.3f} s)")

        status, text, _ = gw.request("GET", "/metrics")
        expect(status == 200, f"/metrics: HTTP {status}")
        done = metric(text, "dspark_requests_total", '{outcome="done"}')
        want = 5 + CONCURRENT
        expect(done is not None and done >= want, f"/metrics: dspark_requests_total done = {done}, want >= {want}")
        expect(metric(text, "dspark_completion_tokens_total") is not None, "/metrics: no completion tokens")
        expect("dspark_gateway_http_requests_total" in text, "/metrics: no gateway metrics")
        ok(f"/metrics: {int(done)} requests done, acceptance length {metric(text, 'dspark_acceptance_length')}")

        if a.drafter_container:
            drafter_checks(gw, a, short_ref, long_ref, results, ok)
    except (check_failed, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
        print(f"e2e[{a.label}] FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    print(f"e2e[{a.label}] results: {json.dumps(results)}")
    if a.results:
        with open(a.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(results) + "\n")
    return 0


def drafter_checks(gw, a, short_ref, long_ref, results, ok):
    def drafter_connected():
        status, text, _ = gw.request("GET", "/metrics")
        return status == 200 and re.search(r"^dspark_drafter_connected\{name=\"[^\"]+\"\} 1$", text, re.M) is not None

    expect(drafter_connected(), "/metrics: the drafter is not connected before the kill")
    killed = {}

    def kill_at(n):
        if n == 8 and not killed:
            subprocess.run(["podman", "kill", a.drafter_container], check=True, capture_output=True)
            killed["at"] = n

    ttft, total, n = check_stream(gw, long_ref, *LONG, "stream with the drafter killed", kill_at)
    expect(killed, "the stream ended before the drafter was killed")
    results["drafter_killed_stream_160_total_s"] = round(total, 3)
    ok(f"drafter killed after 8 of {n} chunks: the stream completed, equal to dspark generate ({total:.3f} s)")

    state = subprocess.run(["podman", "inspect", "-f", "{{.State.Status}}", a.drafter_container],
                           capture_output=True, text=True).stdout.strip()
    secs = check_nonstream(gw, short_ref, *SHORT, "chat without a drafter")
    results["chat_48_no_drafter_s"] = round(secs, 3)
    ok(f"drafter container {state}: chat completion equals dspark generate ({secs:.3f} s)")

    subprocess.run(["podman", "start", a.drafter_container], check=True, capture_output=True)
    secs = wait_for(drafter_connected, "the restarted drafter to connect", 60)
    _, text, _ = gw.request("GET", "/metrics")
    proposed = metric(text, "dspark_draft_tokens_proposed_total")
    check_nonstream(gw, long_ref, *LONG, "chat after the drafter restart")
    _, text, _ = gw.request("GET", "/metrics")
    proposed_after = metric(text, "dspark_draft_tokens_proposed_total")
    expect(proposed_after is not None and proposed is not None and proposed_after > proposed,
           f"the restarted drafter proposed nothing ({proposed} -> {proposed_after})")
    results["drafter_reconnect_s"] = round(secs, 1)
    ok(f"drafter started again: connected after {secs:.1f} s, drafts again "
       f"({int(proposed_after - proposed)} tokens proposed), answer equals dspark generate")


if __name__ == "__main__":
    sys.exit(main())
