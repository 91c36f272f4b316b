"""Python client of a DSpark server over ZeroMQ (protocol: docs/protocol.md, usage: docs/sdk.md).

    from dspark_client import Client
    with Client("tcp://127.0.0.1:5555") as c:
        req = c.submit(messages=[{"role": "user", "content": "Hi"}], max_tokens=32, temperature=0)
        for piece in req.text_stream():
            print(piece, end="", flush=True)
        print(req.result()["stats"])
"""
from .client import Client, DSparkError, Request, RequestTimeout, PROTOCOL_VERSION

__all__ = ["Client", "Request", "DSparkError", "RequestTimeout", "PROTOCOL_VERSION"]
