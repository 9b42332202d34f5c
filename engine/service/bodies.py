"""Request bodies: read as bytes under a size cap, parsed by the strict JSON reader.

No amount ever becomes a float: numbers are Decimal, repeated keys and NaN are refused
with their JSON path, as the facts reader refuses them in a file.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import anyio
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.errors import (
    FactsError,
    Location,
    Problem,
)
from engine.loading import jsontext
from engine.service.errors import ApiError, error_body, problem_dict


class BodyTimeout(Exception):
    """The body did not arrive in time; the 408 has been sent already."""


class BodyClock:
    """Pure ASGI middleware: a request body must keep up with a minimum rate.

    A body of N bytes has `timeout_s + N / min_rate` seconds from the request's headers:
    at every read the bytes so far must keep up with that pace. A client that stops (a
    Content-Length larger than what it sends) or trickles (a byte every 2 s) is answered
    408 with `Connection: close` within `timeout_s` or so, and holds neither a worker nor
    the connection. The body is read by the app in chunks under the body size limit, so a
    slow sender cannot make the server buffer more than that either.
    """

    def __init__(self, app: ASGIApp, timeout_s: float, min_rate: int) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        received = 0
        started = answered = False

        async def timed_receive() -> Message:
            nonlocal received, answered
            if answered:
                raise BodyTimeout
            wait = start + self.timeout_s + received / self.min_rate - time.monotonic()
            message: Message | None = None
            with anyio.move_on_after(max(wait, 0.0)):
                message = await receive()
            if message is None:
                if not started:
                    answered = True
                    await _send_timeout(send, self.timeout_s, self.min_rate)
                raise BodyTimeout
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the 408 went out; whatever the app makes of the timeout is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except BodyTimeout:
            if not answered:
                raise


async def _send_timeout(send: Send, timeout_s: float, min_rate: int) -> None:
    problem = Problem(
        "request.body_timeout",
        f"the request body did not arrive in time (allowed: {timeout_s:g} s plus 1 s per "
        f"{min_rate} bytes); send the whole body, as fast as the Content-Length promises",
    )
    body = json.dumps(error_body("body_timeout", [problem_dict(problem)], None)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 408,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed `limit` bytes."""
    too_large = ApiError(
        413,
        "too_large",
        Problem(
            "request.too_large",
            f"the request body is over the limit of {limit} bytes; send fewer shipments "
            "per request or ask the operator to raise --max-body",
        ),
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


# What the strict reader must see before the facts reader does: a number with an exponent
# or a long run of digits (bounded by jsontext), a \\u escape of a surrogate (not text).
_NEEDS_STRICT = re.compile(rb"[0-9][eE]|[0-9]{%d}|\\u[dD][89a-fA-F]" % jsontext.MAX_DIGITS)


def require_object(body: bytes) -> None:
    """The facts reader also takes YAML; over HTTP the body must be a JSON object.

    A body with exponents, long numbers or escaped surrogates is read by the strict reader
    first, so an unbounded number or a lone surrogate is a 422 naming its JSON path.
    """
    if body.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"{":
        if _NEEDS_STRICT.search(body):
            found = jsontext.problems(_parse(body))
            if found:
                raise ApiError(422, "invalid_facts", found)
        return
    _text(body)  # not UTF-8 says so first
    raise ApiError(
        422,
        "invalid_facts",
        Problem("facts.type", "the body must be a JSON object of shipment facts"),
    )


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ApiError(
            422,
            "invalid_facts",
            Problem("facts.encoding", f"the body is not UTF-8 text (byte {error.start})"),
        ) from None


def _parse(body: bytes) -> Any:
    """The body's data, exact; 422 for text that is not UTF-8 or not JSON."""
    return _parse_marked(body)[0]


def _parse_marked(body: bytes) -> tuple[Any, bool]:
    """`_parse`, and whether the reader marked a repeated key or NaN anywhere (if not,
    there is nothing for `jsontext.problems` to find: a batch need not walk its items)."""
    text = _text(body)
    try:
        return jsontext.parse_marked(text)
    except (ValueError, RecursionError) as error:
        raise ApiError(422, "invalid_facts", jsontext.syntax_problem(error)) from None


def shipments(body: bytes, limit: int) -> list[Any]:
    """The shipments of a JSON array: each a facts mapping, or the FactsError it earned.

    One bad shipment (a repeated key, NaN, not an object) is that shipment's error; the
    others are still valued. Bad JSON, or more than `limit` shipments, fails the request.
    """
    data, marked = _parse_marked(body)
    if not isinstance(data, list):
        raise ApiError(
            422,
            "invalid_facts",
            Problem("facts.type", "the body must be a JSON array of shipment facts objects"),
        )
    if len(data) > limit:
        raise ApiError(
            422,
            "too_many_shipments",
            Problem(
                "request.too_many_shipments",
                f"more than {limit} shipments in one request; split the list "
                "(the limit is the server's --max-batch)",
            ),
        )
    items: list[Any] = []
    for item in data:
        found = jsontext.problems(item) if marked else []
        if not found and not isinstance(item, dict):
            found = [Problem("facts.type", "must be a JSON object of shipment facts")]
        items.append(FactsError(found) if found else item)
    return items


def claim_body(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shipment facts and the loss of `{"shipment": ..., "loss": ...}`; 422 otherwise."""
    wanted = ("shipment", "loss")
    data = _parse(body)
    if not isinstance(data, dict):
        raise ApiError(
            422,
            "invalid_facts",
            Problem("facts.type", f"the body must be a JSON object with {' and '.join(wanted)}"),
        )
    problems = jsontext.problems(data)
    problems += [
        Problem("facts.required", "is required", Location(path=name))
        for name in wanted
        if name not in data
    ] + [
        Problem(
            "facts.unknown_field",
            f"unknown field {name!r}; expected {', '.join(wanted)}",
            Location(path=name),
        )
        for name in data
        if name not in wanted
    ]
    if problems:
        raise ApiError(422, "invalid_facts", problems)
    facts, loss = data["shipment"], data["loss"]
    if not isinstance(facts, dict):
        raise ApiError(
            422,
            "invalid_facts",
            Problem(
                "facts.type",
                "must be a JSON object of shipment facts",
                Location(path="shipment"),
            ),
        )
    if not isinstance(loss, dict):
        raise ApiError(
            422,
            "invalid_facts",
            Problem(
                "facts.loss", 'must be an object such as {"kind": "total"}', Location(path="loss")
            ),
        )
    return facts, loss
