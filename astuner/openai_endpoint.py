"""An OpenAI-compatible chat-completions endpoint on 127.0.0.1 that serves the trainable model.

AgentJet workflows that are not AgentScope code talk to the model through the OpenAI SDK
(`tuner.as_raw_openai_sdk_client()`) or any client given `tuner.as_oai_baseurl_apikey()`.
Each process that runs workflows (each of collect's workers, or collect itself with --workers 0)
starts one endpoint, on the first such call, and closes it when it ends: aiohttp in a daemon
thread of that process (no child process of its own, so a kill -9 takes the socket with it). Each (run, role, agent) gets its own API key; a request is answered
through that run's ModelTuner, on collect's event loop, so it is recorded in the run's
trajectory exactly as an AgentScope call is: prompt ids = render_prompt_ids(messages, tools),
completion ids and logprobs from the engine. A finished run's keys are revoked. Sampling is
collect's (--temperature, --seed ...): the request's own sampling fields are ignored, so
samples stay reproducible.

The workflow must call it with an async client. A synchronous one (requests, openai.OpenAI)
blocks collect's event loop, which alone can serve the call: rather than wait forever, the
server answers 503 naming the cause once the loop has not run for BLOCKED_S seconds.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from astuner.tuner import ModelTuner


BLOCKED_S = 10.0  # collect's loop silent this long while a request waits: a synchronous client holds it
_BEAT_S = 0.25


def _error(status: int, message: str, kind: str = "invalid_request_error"):
    from aiohttp import web

    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)


class OpenAIEndpoint:
    """One per collect: `key_for(tuner, role, agent)` starts it (synchronously: the socket is
    bound and listening at once; requests wait in its backlog until the server thread serves)."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.base_url: str | None = None
        self._keys: dict[str, tuple[ModelTuner, str, str | None]] = {}
        self._socket: socket.socket | None = None
        self._main_loop: asyncio.AbstractEventLoop | None = None  # collect's: engine and tuners live there
        self._server_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self._heartbeat: asyncio.Task | None = None
        self._beat = time.monotonic()

    # ----- lifecycle --------------------------------------------------------------------
    def _start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.host, 0))  # a free port, chosen by the kernel
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        self.base_url = f"http://{self.host}:{sock.getsockname()[1]}/v1"
        self._main_loop = asyncio.get_running_loop()
        self._heartbeat = self._main_loop.create_task(self._beating())
        self._server_loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._server_loop.run_forever, name="astuner-openai-endpoint", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(sock), self._server_loop)

    async def _beating(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(_BEAT_S)

    async def _serve(self, sock: socket.socket) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def started(self) -> bool:
        return self._socket is not None

    async def close(self) -> None:
        """Stop serving and free the port (collect calls this once, on its loop, when its runs are done)."""
        if not self.started:
            return
        self._heartbeat.cancel()
        try:
            await asyncio.wait_for(
                asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._shutdown(), self._server_loop)), 10
            )
        except Exception:  # a server that never started, or would not stop: the port is closed below anyway
            pass
        self._server_loop.call_soon_threadsafe(self._server_loop.stop)
        await asyncio.to_thread(self._thread.join, 10)
        if not self._thread.is_alive():
            self._server_loop.close()
        self._socket.close()
        self._keys.clear()
        self._socket = self._runner = self._thread = self._server_loop = self._heartbeat = None

    async def _on_main_loop(self, coro):
        """Run `coro` on collect's loop; give up with a 503 when that loop is held by a synchronous call."""
        future = asyncio.run_coroutine_threadsafe(coro, self._main_loop)
        waiting = asyncio.wrap_future(future)
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=_BEAT_S * 4)
            if done:
                return waiting.result()
            if time.monotonic() - self._beat > BLOCKED_S:
                future.cancel()  # not started: nothing is recorded; started: its slot stays empty, as for any cancelled call
                raise _LoopBlocked()

    # ----- keys ---------------------------------------------------------------------------
    def key_for(self, tuner: ModelTuner, role: str, agent_name: str | None) -> str:
        if not self.started:
            self._start()
        for key, route in self._keys.items():
            if route[0] is tuner and route[1:] == (role, agent_name):
                return key
        key = "sk-astuner-" + secrets.token_hex(16)
        self._keys[key] = (tuner, role, agent_name)
        return key

    def revoke(self, tuner: ModelTuner) -> None:
        """A finished run's keys stop working (a late call cannot land in a written trajectory)."""
        for key in [k for k, route in self._keys.items() if route[0] is tuner]:
            del self._keys[key]

    # ----- handlers -----------------------------------------------------------------------
    async def _models(self, request):
        from aiohttp import web

        if self._route(request) is None:
            return _error(
                401, "unknown API key: use the api_key of model_tuner.as_oai_baseurl_apikey()", "authentication_error"
            )
        return web.json_response(
            {"object": "list", "data": [{"id": "astuner", "object": "model", "owned_by": "astuner"}]}
        )

    def _route(self, request):
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("api-key", "")
        return self._keys.get(key)

    async def _chat_completions(self, request):
        from aiohttp import web

        route = self._route(request)
        if route is None:
            return _error(
                401,
                "unknown or revoked API key (a key works only during its own run): use the api_key of "
                "model_tuner.as_oai_baseurl_apikey()",
                "authentication_error",
            )
        tuner, role, agent_name = route
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "the request needs 'messages': a list of chat messages")
        if body.get("stream"):
            return _error(400, "stream=true is not supported by astuner's endpoint; call without streaming")
        if (body.get("n") or 1) != 1:
            return _error(400, "n > 1 is not supported; make one request per sample")
        tool_choice = body.get("tool_choice")
        if tool_choice is not None and not isinstance(tool_choice, str):
            tool_choice = json.dumps(tool_choice)
        try:
            completion = await self._on_main_loop(
                chat_completion(tuner, role, agent_name, body["messages"], body.get("tools") or None, tool_choice)
            )
        except _LoopBlocked:
            return _error(
                503,
                f"collect's event loop has not run for {BLOCKED_S:g}s: the workflow called this endpoint with a "
                "synchronous client (requests, openai.OpenAI), which blocks the loop that serves it; use an async "
                "client (openai.AsyncOpenAI, httpx.AsyncClient, aiohttp)",
                "server_error",
            )
        except Exception as exc:  # the workflow sees an API error, as from any provider; the run goes on
            return _error(500, f"{type(exc).__name__}: {exc}", "server_error")
        return web.json_response(completion)


class _LoopBlocked(Exception):
    pass


async def chat_completion(
    tuner: ModelTuner,
    role: str,
    agent_name: str | None,
    messages: list[dict],
    tools: list[dict] | None,
    tool_choice: str | None,
) -> dict[str, Any]:
    """One request through the run's tuner (recorded like any call) -> an OpenAI ChatCompletion as JSON."""
    from openai.types.chat import ChatCompletion

    index = len(tuner.calls)  # call_as_role reserves this slot before its first await
    response = await tuner.call_as_role(role, agent_name, messages, tools, tool_choice, {})
    record = tuner.calls[index] if index < len(tuner.calls) else None
    text = "\n".join(b["text"] for b in response.content if b.get("type") == "text")
    tool_calls = [
        {
            "id": b["id"],
            "type": "function",
            "function": {"name": b["name"], "arguments": json.dumps(b.get("input", {}))},
        }
        for b in response.content
        if b.get("type") == "tool_use"
    ]
    finish = getattr(record, "finish_reason", None) or "stop"
    if tool_calls and finish == "stop":
        finish = "tool_calls"
    usage = response.usage
    prompt_tokens = usage.input_tokens if usage else 0
    completion_tokens = usage.output_tokens if usage else 0
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    payload = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": getattr(record, "model", None) or tuner.model_name,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    # the SDK's own model checks the shape, so every client can parse what we send
    return ChatCompletion.model_validate(payload).model_dump(mode="json", exclude_unset=True)
