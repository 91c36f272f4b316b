"""The Python SDK against a scripted ROUTER server: the frames it sends are the protocol's,
replies reach the right request, and errors, cancellation and timeouts surface as documented."""
import json
import threading

import pytest
import zmq

from dspark_client import Client, DSparkError, RequestTimeout


class ScriptedServer:
    """Binds a loopback ROUTER; `handler(message) -> [reply dicts]`; keeps every frame received."""

    def __init__(self, handler):
        self.handler = handler
        self.received = []
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            if not self.sock.poll(10):
                continue
            ident, frame = self.sock.recv_multipart()
            message = json.loads(frame)
            self.received.append(message)
            for reply in self.handler(message):
                self.sock.send_multipart([ident, json.dumps(dict(v=1, **reply)).encode()])

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()
        self.ctx.term()


def words(message):
    t = message["type"]
    if t == "submit":
        rid = message["id"]
        if message.get("prompt") == "busy":
            return [dict(type="error", id=rid, code="overloaded", message="queue full")]
        stats = dict(prompt_tokens=3, completion_tokens=2, ttft_s=0.01, tpot_s=0.01, tokens_per_s=100.0,
                     acceptance_length=1.0, verify_steps=2, draft_tokens_proposed=0, draft_tokens_accepted=0)
        if message.get("prompt") == "hang":
            return [dict(type="accepted", id=rid, prompt_tokens=1)]
        return [dict(type="accepted", id=rid, prompt_tokens=3), dict(type="tokens", id=rid, token_ids=[1], text="Hi"),
                dict(type="tokens", id=rid, token_ids=[2], text=" " + rid),
                dict(type="done", id=rid, text="Hi " + rid, token_ids=[1, 2], finish_reason="length", stats=stats)]
    if t == "cancel":
        return [dict(type="done", id=message["id"], text="", token_ids=[], finish_reason="cancelled",
                     stats=dict(prompt_tokens=0, completion_tokens=0, ttft_s=0, tpot_s=0, tokens_per_s=0,
                                acceptance_length=0, verify_steps=0, draft_tokens_proposed=0,
                                draft_tokens_accepted=0))]
    if t == "metrics":
        return [dict(type="metrics", text="dspark_requests_total 1\n")]
    if t == "models":
        return [dict(type="models", models=[dict(id="smollm2", n_ctx=8192, draft="")])]
    if t == "health":
        return [dict(type="health", status="ok", active_requests=0, queued_requests=0)]
    return []


@pytest.fixture
def server():
    s = ScriptedServer(words)
    yield s
    s.close()


def test_streams_and_sends_protocol_frames(server):
    with Client(server.endpoint, timeout=5) as c:
        r = c.submit(messages=[{"role": "user", "content": "héllo"}], max_tokens=4, temperature=0, seed=3,
                     stop=["\n"], id="a1")
        assert list(r.text_stream()) == ["Hi", " a1"]
        assert r.result()["finish_reason"] == "length"
        assert r.finished
    assert server.received[0] == {"v": 1, "type": "submit", "id": "a1",
                                  "messages": [{"role": "user", "content": "héllo"}],
                                  "params": {"max_tokens": 4, "temperature": 0, "seed": 3, "stop": ["\n"]},
                                  "stream": True}


def test_concurrent_requests_are_routed_by_id(server):
    with Client(server.endpoint, timeout=5) as c:
        reqs = [c.submit(f"p{i}") for i in range(10)]
        for r in reversed(reqs):
            assert r.result()["text"] == "Hi " + r.id


def test_threads_share_one_client(server):
    results = {}
    with Client(server.endpoint, timeout=5) as c:
        def work(i):
            results[i] = c.submit(prompt_tokens=[1, 2, i]).result()["text"]
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == list(range(8))
    assert all(text.startswith("Hi py") for text in results.values())


def test_control_calls(server):
    with Client(server.endpoint, timeout=5) as c:
        assert c.metrics() == "dspark_requests_total 1\n"
        assert c.models()[0]["id"] == "smollm2"
        assert c.health() == {"status": "ok", "active_requests": 0, "queued_requests": 0}


def test_cancel(server):
    with Client(server.endpoint, timeout=5) as c:
        r = c.submit("hang")
        assert r.next_event()["type"] == "accepted"
        r.cancel()
        assert r.result()["finish_reason"] == "cancelled"
    assert server.received[-1] == {"v": 1, "type": "cancel", "id": r.id}


def test_server_error_raises_with_code(server):
    with Client(server.endpoint, timeout=5) as c:
        with pytest.raises(DSparkError) as e:
            c.submit("busy").result()
        assert e.value.code == "overloaded"


def test_invalid_input_is_refused_before_sending(server):
    with Client(server.endpoint, timeout=5, max_message_bytes=1000) as c:
        for kwargs in (dict(top_p=0), dict(max_tokens=0), dict(temperature=-1), dict(stop=["x"] * 9),
                       dict(seed=-1), dict(max_tokens=1.5), dict(frequency_penalty=1)):
            with pytest.raises(DSparkError) as e:
                c.submit("x", **kwargs)
            assert e.value.code == "invalid_params", kwargs
        with pytest.raises(DSparkError) as e:
            c.submit("x" * 2000)
        assert e.value.code == "too_large"
        with pytest.raises(DSparkError):
            c.submit("x", messages=[{"role": "user", "content": "y"}])
    assert server.received == []


def test_no_server_times_out():
    with Client("tcp://127.0.0.1:1", timeout=0.3) as c:
        r = c.submit("x")
        with pytest.raises(RequestTimeout) as e:
            r.next_event()
        assert "tcp://127.0.0.1:1" in str(e.value)
        with pytest.raises(RequestTimeout):
            c.health()
