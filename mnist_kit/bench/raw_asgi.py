"""The Python HTTP ceiling `mnist-kit bench` measures the kserve runtime against: a bare ASGI app on uvicorn (httptools,
uvloop), as many workers as the runtime, that reads each request's body and answers a fixed JSON answer. No routing,
no model: what serving a request costs in Python on this machine before any work is done.

    python -m uvicorn mnist_kit.bench.raw_asgi:app --workers 2 --http httptools --loop uvloop --no-access-log
"""

ANSWER = b'{"digit": 7, "confidence": 0.999993, "flags": [], "probabilities": [0, 0, 0, 0, 0, 0, 0, 0.999993, 0, 0]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # the whole body, as a server must read it
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
