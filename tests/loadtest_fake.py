"""A small in-process fake of an OpenAI-compatible streaming server, for the load-test client.

:class:`FakeServer` answers ``GET /v1/models``, ``POST /v1/completions`` and ``POST
/v1/chat/completions`` through an ``httpx.MockTransport`` (no socket): it streams ``max_tokens``
text events ``step_s`` apart (one token each), then a finishing event with ``usage`` and
``[DONE]``, like vLLM. Its prompt token count is ``overhead + tokens_per_word × words`` (the
chat endpoint adds ``chat_overhead``). Misbehaviour is chosen by the requested ``max_tokens``
(``faults``: gen_len -> "http500", "error_event", "drop", "reset", "hang", "short", "no_usage",
"bad_json", "multi"), so a test picks which requests fail through its request table.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx


class FakeServer:
    def __init__(
        self,
        *,
        model: str = "fake-model",
        tokens_per_word: int = 1,
        overhead: int = 0,
        chat_overhead: int = 2,
        step_s: float = 0.0,
        first_s: float = 0.0,
        refuse_length_fields: bool = False,
        faults: dict[int, str] | None = None,
        on_request: Callable[[int, dict], None] | None = None,
    ) -> None:
        self.model = model
        self.tokens_per_word = tokens_per_word
        self.overhead = overhead
        self.chat_overhead = chat_overhead
        self.step_s = step_s
        self.first_s = first_s
        self.refuse_length_fields = refuse_length_fields
        self.faults = dict(faults or {})
        self.on_request = on_request
        self.bodies: list[dict] = []  # every generation request received, in order
        self.paths: list[str] = []

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.paths.append(path)
        if request.method == "GET" and path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": self.model}]})
        if request.method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            return httpx.Response(404, json={"detail": "Not Found"})
        body = json.loads(request.content)
        chat = path.endswith("/chat/completions")
        self.bodies.append(body)
        if self.on_request is not None:
            self.on_request(len(self.bodies), body)
        if self.refuse_length_fields and ({"ignore_eos", "min_tokens"} & set(body)):
            fields = sorted({"ignore_eos", "min_tokens"} & set(body))
            return httpx.Response(
                422, json={"detail": f"Unexpected fields in the request: {fields}"}
            )
        if body.get("model") != self.model:
            return httpx.Response(
                404, json={"error": {"message": f"model {body.get('model')!r} not found"}}
            )
        n = int(body["max_tokens"])
        fault = self.faults.get(n)
        if fault == "http500":
            return httpx.Response(500, json={"detail": "engine crashed"})
        prompt = body["messages"][0]["content"] if chat else body["prompt"]
        prompt_tokens = self.overhead + self.tokens_per_word * len(prompt.split())
        if chat:
            prompt_tokens += self.chat_overhead
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=self._events(n, prompt_tokens, chat, fault),
        )

    def _chunk(self, text: str | None, chat: bool, finish=None, usage=None) -> bytes:
        if chat:
            delta = {} if text is None else {"content": text}
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish}
        obj = {"id": "x", "object": "chunk", "model": self.model, "choices": [choice]}
        if usage is not None:
            obj["usage"] = usage
        return f"data: {json.dumps(obj)}\n\n".encode()

    async def _events(self, n: int, prompt_tokens: int, chat: bool, fault: str | None):
        if chat:  # the role chunk carries no text
            yield b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n'
        if self.first_s:
            await asyncio.sleep(self.first_s)
        if fault == "hang":
            await asyncio.sleep(30)
        sent = n - 1 if fault == "short" else n
        if fault == "multi":  # two tokens in one event: the streamed count falls short of usage
            sent = n // 2
        for i in range(sent):
            if i and self.step_s:
                await asyncio.sleep(self.step_s)
            if fault == "error_event" and i == 1:
                yield b'data: {"error": "CB worker died"}\n\n'
                return
            if fault == "bad_json" and i == 1:
                yield b"data: {not json\n\n"
                return
            if fault == "drop" and i == 2:
                return  # the stream ends mid-response, no finish, no [DONE]
            if fault == "reset" and i == 2:
                raise httpx.RemoteProtocolError("peer closed connection without response")
            yield self._chunk(f" t{i}" + (f" t{i}b" if fault == "multi" else ""), chat)
        usage = None
        if fault != "no_usage":
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n if fault == "multi" else sent,
            }
        yield self._chunk(None, chat, finish="length" if sent == n or fault == "multi" else "stop")
        if usage is not None:  # vLLM sends usage in a last chunk with no choices
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"
