"""The Python SDK and the HTTP gateway against a real `dspark serve` (CPU, default model).

The reference is offline generation: `dspark generate --chat --json` with the same prompt and
max tokens, at temperature 0. Skipped, by name, when the dspark binary or the model is absent
(DSPARK_BUILD and DSPARK_MODEL are set by `make test-python`).
"""
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from dspark_client import Client, DSparkError

BUILD = os.environ.get("DSPARK_BUILD", os.path.join(os.path.dirname(__file__), "../../../build"))
DSPARK = os.path.join(BUILD, "services", "dspark")
MODEL = os.environ.get("DSPARK_MODEL", "")
QUESTION = "Name three rivers in Europe."
MAX_TOKENS = 12

pytestmark = pytest.mark.skipif(not (os.path.isfile(DSPARK) and os.path.isfile(MODEL)),
                                reason="needs the built dspark binary and DSPARK_MODEL")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    zmq_port, http_port = free_port(), free_port()
    proc = subprocess.Popen([DSPARK, "serve", "--model", MODEL, "--device", "cpu", "--threads", "2",
                             "--zmq", f"tcp://127.0.0.1:{zmq_port}", "--http", f"127.0.0.1:{http_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    endpoint = f"tcp://127.0.0.1:{zmq_port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(endpoint, timeout=2) as c:
                if c.health()["status"] == "ok":
                    break
        except DSparkError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("dspark serve did not come up: " + proc.stderr.read().decode(errors="replace")[-2000:])
        time.sleep(0.5)
    yield endpoint, f"http://127.0.0.1:{http_port}"
    proc.terminate()
    assert proc.wait(timeout=60) == 0  # SIGTERM drains and exits 0


@pytest.fixture(scope="module")
def offline():
    out = subprocess.run([DSPARK, "generate", "--model", MODEL, "--device", "cpu", "--threads", "2", "--chat",
                          "--prompt", QUESTION, "--max-tokens", str(MAX_TOKENS), "--json"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_sdk_stream_equals_offline_generation(server, offline):
    endpoint, _ = server
    with Client(endpoint, timeout=60) as c:
        req = c.submit(messages=[{"role": "user", "content": QUESTION}], max_tokens=MAX_TOKENS, temperature=0)
        pieces = list(req.text_stream())
        done = req.result()
    assert done["token_ids"] == offline["token_ids"]
    assert "".join(pieces) == done["text"] == offline["text"]
    assert done["finish_reason"] in ("length", "stop")


def test_sdk_cancel_and_metrics(server):
    endpoint, _ = server
    with Client(endpoint, timeout=60) as c:
        req = c.submit(prompt="Once upon a time", max_tokens=200, temperature=0)
        for event in req:
            if event["type"] == "tokens":
                req.cancel()
                break
        assert req.result()["finish_reason"] == "cancelled"
        assert c.health()["active_requests"] == 0
        text = c.metrics()
        assert "dspark_" in text  # Prometheus text from the server
        with pytest.raises(DSparkError):
            c.submit(prompt="x", max_tokens=0)


def post(url, body, timeout=60):
    req = urllib.request.Request(url, data=body if isinstance(body, bytes) else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=timeout)


def test_gateway_chat_completion_equals_offline(server, offline):
    _, http = server
    body = {"model": "default", "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": MAX_TOKENS, "temperature": 0}
    reply = json.loads(post(http + "/v1/chat/completions", body).read())
    assert reply["choices"][0]["message"]["content"] == offline["text"]
    # SSE: the content deltas concatenate to the same text, ending with [DONE].
    body["stream"] = True
    lines = post(http + "/v1/chat/completions", body).read().decode().splitlines()
    data = [l[len("data: "):] for l in lines if l.startswith("data: ")]
    assert data[-1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content", "") for d in data[:-1]
                   if json.loads(d).get("choices"))
    assert text == offline["text"]


def test_gateway_rejects_bad_json_and_keeps_serving(server):
    _, http = server
    with pytest.raises(urllib.error.HTTPError) as e:
        post(http + "/v1/chat/completions", b"{not json")
    assert e.value.code == 400
    with urllib.request.urlopen(http + "/health", timeout=30) as r:
        assert r.status == 200
    models = json.loads(urllib.request.urlopen(http + "/v1/models", timeout=30).read())
    assert models["data"]
