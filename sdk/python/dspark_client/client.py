"""The client: one DEALER socket, replies routed to requests by id.

pyzmq sockets are not thread-safe, so every socket use happens under one lock: whichever caller
waits pumps the socket and files each reply under its request (or, for metrics/models/health,
which carry no id, under the oldest pending call of that type; the server answers in order).
"""
import collections
import itertools
import json
import threading
import time

import zmq

PROTOCOL_VERSION = 1
MAX_ID_BYTES = 128
MAX_STOP_STRINGS = 8
MAX_STOP_BYTES = 256
MAX_MAX_TOKENS = 1 << 20


class DSparkError(Exception):
    """An error reply from the server, or a request refused before sending.

    `code` is the protocol's error code (bad_request, invalid_params, too_large, overloaded,
    unknown_id, duplicate_id, internal) or "timeout" / "closed" for local conditions.
    """

    def __init__(self, code, message, request_id=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


class RequestTimeout(DSparkError):
    def __init__(self, message, request_id=None):
        super().__init__("timeout", message, request_id)


def _check_params(params):
    """The protocol's ranges (docs/protocol.md), checked before sending for a clear error."""
    def bad(field, why):
        raise DSparkError("invalid_params", f"params.{field}: {why}")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if "max_tokens" in params and not (is_int(params["max_tokens"]) and 1 <= params["max_tokens"] <= MAX_MAX_TOKENS):
        bad("max_tokens", f"must be an integer in [1, {MAX_MAX_TOKENS}]")
    if "temperature" in params and not (is_num(params["temperature"]) and 0 <= params["temperature"] <= 100):
        bad("temperature", "must be a number in [0, 100]")
    if "top_k" in params and not (is_int(params["top_k"]) and 0 <= params["top_k"] < 2**31):
        bad("top_k", "must be an integer >= 0")
    if "top_p" in params and not (is_num(params["top_p"]) and 0 < params["top_p"] <= 1):
        bad("top_p", "must be in (0, 1]")
    if "min_p" in params and not (is_num(params["min_p"]) and 0 <= params["min_p"] < 1):
        bad("min_p", "must be in [0, 1)")
    if "seed" in params and not (is_int(params["seed"]) and 0 <= params["seed"] < 2**64):
        bad("seed", "must be an integer in [0, 2^64)")
    if "stop" in params:
        stop = params["stop"]
        if not isinstance(stop, list) or len(stop) > MAX_STOP_STRINGS:
            bad("stop", f"must be a list of at most {MAX_STOP_STRINGS} strings")
        for s in stop:
            if not isinstance(s, str) or not 1 <= len(s.encode()) <= MAX_STOP_BYTES:
                bad("stop", f"each string must be 1 to {MAX_STOP_BYTES} bytes")
    if "ignore_eos" in params and not isinstance(params["ignore_eos"], bool):
        bad("ignore_eos", "must be true or false")


class Request:
    """A live request. Iterate it for events (dicts with "type": accepted, tokens, done, error)."""

    def __init__(self, client, request_id):
        self._client = client
        self.id = request_id
        self._events = collections.deque()
        self._ended = False      # done or error received
        self._consumed = False   # the final event was handed out
        self.done = None         # the done message, once received through iteration

    def next_event(self, timeout=None):
        """The next event; RequestTimeout when none arrives within `timeout` (default: the client's)."""
        if self._consumed:
            raise DSparkError("closed", f"request '{self.id}' has ended", self.id)
        timeout = self._client.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self._events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimeout(f"no reply for request '{self.id}' within {timeout} s "
                                     f"(is the server at {self._client.endpoint} running?)", self.id)
            self._client._pump(remaining)
        event = self._events.popleft()
        if event["type"] in ("done", "error"):
            self._consumed = True
            if event["type"] == "done":
                self.done = event
        return event

    def __iter__(self):
        while not self._consumed:
            yield self.next_event()

    def text_stream(self):
        """The streamed text pieces; raises DSparkError for an error reply."""
        for event in self:
            if event["type"] == "tokens" and event["text"]:
                yield event["text"]
            elif event["type"] == "error":
                raise DSparkError(event["code"], event["message"], self.id)

    def result(self):
        """Waits for the end: the done message (text, token_ids, finish_reason, stats)."""
        if self.done is not None:
            return self.done
        for event in self:
            if event["type"] == "error":
                raise DSparkError(event["code"], event["message"], self.id)
        return self.done

    def cancel(self):
        """Ends the request on the server; it finishes with done, finish_reason "cancelled"."""
        if not self._ended:
            self._client._send({"v": PROTOCOL_VERSION, "type": "cancel", "id": self.id})

    @property
    def finished(self):
        return self._ended


class Client:
    def __init__(self, endpoint="tcp://127.0.0.1:5555", server_public_key=None, timeout=30.0,
                 max_message_bytes=1 << 20, context=None):
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        if server_public_key:
            public, secret = zmq.curve_keypair()
            self._socket.curve_serverkey = server_public_key.encode() if isinstance(server_public_key, str) \
                else server_public_key
            self._socket.curve_publickey = public
            self._socket.curve_secretkey = secret
        try:
            self._socket.connect(endpoint)
        except zmq.ZMQError as e:
            self._socket.close()
            raise DSparkError("bad_request", f"cannot connect to '{endpoint}': {e}") from None
        self._lock = threading.RLock()
        self._live = {}
        self._pending = {"metrics": collections.deque(), "models": collections.deque(),
                         "health": collections.deque()}
        self._ids = itertools.count()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        with self._lock:
            for request in self._live.values():
                request._events.append({"v": 1, "type": "error", "id": request.id, "code": "internal",
                                        "message": "client closed"})
                request._ended = True
            self._live.clear()
            self._socket.close()

    # ---- requests ----------------------------------------------------------------------

    def submit(self, prompt=None, *, messages=None, prompt_tokens=None, stream=True, id=None, **params):
        """Sends a submit: exactly one of prompt (raw text), messages ([{role, content}]) or
        prompt_tokens ([int]); params are max_tokens, temperature, top_k, top_p, min_p, seed,
        stop, ignore_eos. Returns a Request; raises DSparkError for invalid input."""
        inputs = [("prompt", prompt), ("messages", messages), ("prompt_tokens", prompt_tokens)]
        given = [(k, v) for k, v in inputs if v is not None]
        if len(given) != 1:
            raise DSparkError("bad_request", "submit needs exactly one of prompt, messages, prompt_tokens")
        unknown = set(params) - {"max_tokens", "temperature", "top_k", "top_p", "min_p", "seed", "stop",
                                 "ignore_eos"}
        if unknown:
            raise DSparkError("invalid_params", f"unknown parameter(s): {', '.join(sorted(unknown))}")
        params = {k: v for k, v in params.items() if v is not None}
        _check_params(params)
        with self._lock:
            request_id = id if id is not None else f"py{next(self._ids)}"
            if not 1 <= len(request_id.encode()) <= MAX_ID_BYTES:
                raise DSparkError("bad_request", f"id must be 1 to {MAX_ID_BYTES} bytes")
            if request_id in self._live:
                raise DSparkError("duplicate_id", f"request id '{request_id}' is live")
            message = {"v": PROTOCOL_VERSION, "type": "submit", "id": request_id, given[0][0]: given[0][1],
                       "params": params, "stream": stream}
            request = Request(self, request_id)
            self._live[request_id] = request
            try:
                self._send(message)
            except DSparkError:
                del self._live[request_id]
                raise
        return request

    def metrics(self):
        """The server's metrics, Prometheus text."""
        return self._control("metrics")["text"]

    def models(self):
        """[{id, n_ctx, draft}]"""
        return self._control("models")["models"]

    def health(self):
        """{status, active_requests, queued_requests}"""
        reply = self._control("health")
        return {k: reply[k] for k in ("status", "active_requests", "queued_requests")}

    # ---- socket ------------------------------------------------------------------------

    def _send(self, message):
        frame = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        # The server refuses an oversized frame without reading its id, so it is checked here.
        if len(frame) > self.max_message_bytes:
            raise DSparkError("too_large", f"request of {len(frame)} bytes exceeds max_message_bytes "
                                           f"{self.max_message_bytes}")
        with self._lock:
            self._socket.send(frame)

    def _control(self, kind):
        slot = {}
        with self._lock:
            self._pending[kind].append(slot)
            self._send({"v": PROTOCOL_VERSION, "type": kind})
        deadline = time.monotonic() + self.timeout
        while "reply" not in slot:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimeout(f"no {kind} reply from {self.endpoint} within {self.timeout} s "
                                     "(is the server running?)")
            self._pump(remaining)
        return slot["reply"]

    def _pump(self, timeout):
        """Receives what arrives within `timeout` seconds (at most 50 ms per call) and files it."""
        with self._lock:
            if not self._socket.poll(int(min(timeout, 0.05) * 1000) + 1, zmq.POLLIN):
                return
            while True:
                try:
                    frame = self._socket.recv(zmq.NOBLOCK)
                except zmq.Again:
                    return
                self._dispatch(frame)

    def _dispatch(self, frame):
        try:
            message = json.loads(frame.decode("utf-8"))
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            return  # unreadable, so unattributable
        if kind in self._pending:
            if self._pending[kind]:
                self._pending[kind].popleft()["reply"] = message
            return
        request = self._live.get(message.get("id"))
        if request is None:
            return  # no id (the server could not read one of our frames) or already ended
        request._events.append(message)
        if kind in ("done", "error"):
            request._ended = True
            del self._live[request.id]
