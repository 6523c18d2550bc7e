"""Request size limit as pure ASGI middleware: 413 before a too large body is parsed."""

from __future__ import annotations

import json


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 JSON.

    A declared ``Content-Length`` over the limit is refused before anything is read; a body
    without one (chunked) is counted as it arrives and refused once it passes the limit.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _refuse(self, send, size: str) -> None:
        body = json.dumps({"error": f"the request body is {size}; the limit is {self.max_bytes:,} bytes."}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                n = -1
            if n > self.max_bytes:
                return await self._refuse(send, f"{n:,} bytes")
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracked(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, "larger than that")
        except Exception as e:  # Starlette may wrap what the body reader raised
            if isinstance(e.__cause__ or e.__context__, BodyTooLarge) and not started:
                await self._refuse(send, "larger than that")
            else:
                raise


MAX_JSON_BYTES = 2 * 1024 * 1024  # a 100,000-character review fits even with every character \u-escaped
MAX_JSON_DEPTH = 32  # the API's JSON is at most 3 levels deep


class TooLarge(ValueError):
    """JSON over the size limit."""


class TooDeep(ValueError):
    """JSON nested over the depth limit."""


def json_depth(obj, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of parsed JSON (iterative; stops counting past ``limit``)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            deepest = max(deepest, d)
            if d > limit:
                return d
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def parse_json(text: str | bytes, what: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """``json.loads`` with a size and a nesting limit: :class:`TooLarge`, :class:`TooDeep` or
    ``ValueError`` (not JSON) with a message, never RecursionError or a parse traceback."""
    if len(text) > max_bytes:
        raise TooLarge(f"{what} is {len(text):,} bytes of JSON; the limit is {max_bytes:,}.")
    try:
        obj = json.loads(text)
    except RecursionError:
        raise TooDeep(f"{what} is nested too deeply (the limit is {max_depth} levels).") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} is not JSON ({e}).") from None
    if json_depth(obj, max_depth) > max_depth:
        raise TooDeep(f"{what} is nested too deeply (the limit is {max_depth} levels).")
    return obj


def _is_json(content_type: bytes) -> bool:
    kind = content_type.split(b";")[0].strip().lower()
    return not kind or kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))


class JsonLimit:
    """JSON request bodies (or bodies without a content type, which FastAPI reads as JSON) are
    read here first: over ``max_bytes`` is a 413, nested over ``max_depth`` a 422, before the app
    parses them. Other bodies pass untouched (``BodyLimit`` bounds them)."""

    def __init__(self, app, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
        self.app, self.max_bytes, self.max_depth = app, max_bytes, max_depth

    @staticmethod
    async def _answer(send, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        if not _is_json(dict(scope.get("headers") or []).get(b"content-type", b"")):
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._answer(send, 413, f"the JSON body is larger than the limit of {self.max_bytes:,} bytes.")
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body.strip():
            try:
                parse_json(body, "the JSON body", self.max_bytes, self.max_depth)
            except TooLarge as e:
                return await self._answer(send, 413, str(e))
            except TooDeep as e:
                return await self._answer(send, 422, str(e))
            except ValueError:
                pass  # anything else unparsable: the app answers it (its own 422 names the field)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
