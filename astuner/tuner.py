"""ModelTuner: an AgentScope chat model that records every call of a workflow run.

Simple mode:    ReActAgent(model=model_tuner, ...)
Advanced mode:  model_tuner.register_model(role, default_model=...); model_tuner.get_model(role)

A role in the trainable targets (or any role when targets are None) is served by the engine
(the one frozen checkpoint, one parameter set for all roles) and recorded with token ids and
logprobs. Any other role is served by its registered default model and recorded as text; a
role registered without a default falls back to the engine, recorded as not trainable.

AgentJet's spellings work too (`ajet.AjetTuner` is this class): `as_agentscope_model(...)`,
`config` (astuner/compat/tuner_config.py), and `as_raw_openai_sdk_client()` / `as_oai_baseurl_apikey()`,
an OpenAI-compatible endpoint that collect serves (astuner/openai_endpoint.py).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from typing import Protocol

from agentscope.message import TextBlock, ThinkingBlock, ToolUseBlock
from agentscope.model import ChatModelBase, ChatResponse
from agentscope.model._model_usage import ChatUsage
from pydantic import BaseModel

from astuner.chat import (
    FAMILY_CHOICES,
    detect_family,
    parse_completion,
    render_prompt_ids,
    special_tokens_of,
    template_kwargs_for,
)
from astuner.compat.tuner_config import ConfigTree, as_tree, build_tuner_config
from astuner.engines import Engine, SamplingParams, derive_seed
from astuner.trajectory import Completion, ModelCall, ToolCall, to_jsonable

DEFAULT_ROLE = "default"


class EndpointKeys(Protocol):
    """What a ModelTuner needs of collect's OpenAI-compatible endpoint (astuner/openai_endpoint.py). A protocol,
    so that the tuner does not import the endpoint, which imports the tuner to serve its calls."""

    base_url: str | None

    def key_for(self, tuner: ModelTuner, role: str, agent_name: str | None) -> str: ...

    def revoke(self, tuner: ModelTuner) -> None: ...


def _calling_agent_name() -> str | None:
    """The name of the innermost AgentScope agent on the call stack.

    Agents do not tell their model who they are; walking the frames finds the agent whose
    reasoning step is awaiting this call, also for agents a tool creates at run time.
    """
    from agentscope.agent import AgentBase

    frame = sys._getframe(2)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, AgentBase):
            return owner.name
        frame = frame.f_back
    return None


class ModelTuner(ChatModelBase):
    def __init__(
        self,
        engine: Engine,
        sampling: SamplingParams,
        trainable_targets: list[str] | None = None,
        config: ConfigTree | None = None,
        endpoint: EndpointKeys | None = None,
        tool_format: str = "auto",
        template_kwargs: dict | None = None,
    ):
        super().__init__(model_name=engine.checkpoint, stream=False)
        if tool_format not in FAMILY_CHOICES:
            raise ValueError(f"--tool-format {tool_format!r}: choose one of {', '.join(FAMILY_CHOICES)}")
        # "auto": the format of each engine's checkpoint, read from its chat template (astuner.chat)
        self.tool_format = tool_format
        # extra chat-template variables (enable_thinking, date_string), recorded with every engine call
        self.template_kwargs = dict(template_kwargs or {})
        # this run's replies that had thinking: key of the reply -> reasoning (see _with_reasoning)
        self._reasoning: dict[str, str] = {}
        self.engine = engine
        self.sampling = sampling
        self.trainable_targets = None if trainable_targets is None else list(trainable_targets)
        # what AgentJet workflows read: config.ajet.rollout.multi_turn.max_steps, their own sections
        self.config = config if config is not None else as_tree(build_tuner_config())
        self.calls: list[ModelCall] = []
        self._defaults: dict[str, ChatModelBase | None] = {}
        self._endpoint = endpoint
        self._clients: list = []  # OpenAI clients handed out, closed with the run
        self.on_call = None  # called with each ModelCall as it is recorded (collect's workers stream them)

    # ----- the reference API -------------------------------------------------------
    def register_model(self, role: str, default_model: ChatModelBase | None = None) -> ChatModelBase:
        """Declare `role`; `default_model` serves it whenever it is not being trained. Returns get_model(role)."""
        if default_model is not None and not callable(default_model):
            raise TypeError(f"register_model({role!r}): default_model must be an AgentScope chat model")
        self._defaults[role] = default_model
        return RoleModel(self, role)

    def get_model(self, role: str) -> ChatModelBase:
        """The model an agent of `role` should use."""
        if role not in self._defaults:
            raise KeyError(
                f"get_model({role!r}): role not registered; call "
                f"model_tuner.register_model({role!r}, default_model=...) first"
            )
        return RoleModel(self, role)

    def as_agentscope_model(
        self, agent_name: str | None = None, target_tag: str = DEFAULT_ROLE, debug_model: ChatModelBase | None = None
    ) -> ChatModelBase:
        """Alias of register_model(target_tag, default_model=debug_model) + get_model(target_tag)."""
        if target_tag not in self._defaults or debug_model is not None:
            self.register_model(target_tag, default_model=debug_model)
        return RoleModel(self, target_tag, agent_name=agent_name)

    @property
    def registered_roles(self) -> list[str]:
        return list(self._defaults)

    def is_trainable(self, role: str) -> bool:
        # None and [] both train every role, as in AgentJet
        return not self.trainable_targets or role in self.trainable_targets

    # ----- AgentJet's OpenAI-compatible access ------------------------------------------
    def as_oai_baseurl_apikey(
        self, agent_name: str | None = None, target_tag: str = DEFAULT_ROLE
    ) -> OpenAIBaseUrlApiKey:
        """`.base_url`, `.api_key` (and `.model`) of an OpenAI-compatible endpoint serving `target_tag`.

        Requests with this key are recorded in this run like AgentScope calls. Use an async client
        (openai.AsyncOpenAI, httpx.AsyncClient, aiohttp): a synchronous one holds the event loop
        that serves it, and gets a 503 naming the cause (astuner/openai_endpoint.py).
        """
        if self._endpoint is None:
            raise RuntimeError(
                "as_oai_baseurl_apikey(): this ModelTuner has no endpoint; it is served by python -m collect"
            )
        self._defaults.setdefault(target_tag, None)
        key = self._endpoint.key_for(self, target_tag, agent_name)
        return OpenAIBaseUrlApiKey(base_url=self._endpoint.base_url, api_key=key)

    def as_raw_openai_sdk_client(self, agent_name: str | None = None, target_tag: str = DEFAULT_ROLE, debug_model=None):
        """An openai.AsyncOpenAI on the endpoint; `chat.completions.create(messages=...)` needs no model.

        `debug_model` serves the role when it is not trained if it is an AgentScope chat model;
        AgentJet's default, a model name such as 'gpt-4o', is ignored (nothing leaves the machine).
        """
        if debug_model is not None and not isinstance(debug_model, str):
            self.register_model(target_tag, default_model=debug_model)
        access = self.as_oai_baseurl_apikey(agent_name, target_tag)
        client = _openai_client_class()(base_url=access.base_url, api_key=access.api_key, max_retries=0)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        """End of the run: close its OpenAI clients and revoke its endpoint keys."""
        if self._endpoint is not None:
            self._endpoint.revoke(self)
        clients, self._clients = self._clients, []
        for client in clients:
            try:
                await client.close()
            except Exception:  # a client the workflow broke must not fail the record
                pass

    # ----- the chat model -------------------------------------------------------------
    async def __call__(
        self, messages: list[dict], tools: list[dict] | None = None, tool_choice: str | None = None, **kwargs
    ) -> ChatResponse:
        return await self.call_as_role(DEFAULT_ROLE, None, messages, tools, tool_choice, kwargs)

    async def call_as_role(
        self,
        role: str,
        agent_name: str | None,
        messages: list[dict],
        tools: list[dict] | None,
        tool_choice: str | None,
        kwargs: dict,
        auxiliary=None,
    ) -> ChatResponse:
        """One chat call made as `role` by agent `agent_name` (None: the AgentScope agent on the call stack):
        served by the engine, the role's default model or `auxiliary` (an astuner.auxiliary.AuxiliaryBackend),
        and recorded in `calls`. Its slot in `calls` is reserved before the first await."""
        agent_name = agent_name or _calling_agent_name()
        trainable = self.is_trainable(role)
        default_model = None if trainable else self._defaults.get(role)
        engine, sampling = self.engine, None
        if auxiliary is not None:  # an auxiliary model (astuner.auxiliary): never trained, served by its own backend
            trainable, default_model = False, auxiliary.model
            engine, sampling = auxiliary.engine or self.engine, auxiliary.sampling
        index = len(self.calls)
        self.calls.append(None)  # reserve the slot: concurrent agents keep their call order
        started = time.monotonic()

        def store(trainable: bool, record: dict) -> None:
            self.calls[index] = ModelCall(
                index=index,
                role=role,
                agent_name=agent_name,
                trainable=trainable,
                # an engine call records the messages it rendered (with restored reasoning_content)
                messages=to_jsonable(record.pop("rendered_messages", messages)),
                tools=to_jsonable(tools) if tools else None,
                tool_choice=tool_choice,
                latency_s=round(time.monotonic() - started, 6),
                **record,
            )
            if self.on_call is not None:
                self.on_call(self.calls[index])

        try:
            if default_model is None:
                response, record = await self._engine_call(messages, tools, index, engine, sampling)
            else:
                response, record = await self._default_call(default_model, messages, tools, tool_choice, kwargs)
        except Exception as exc:
            # The workflow may catch it and end "ok": the record says which call failed and why.
            # Never trainable: there is no completion to learn from. (A cancelled call, the run's
            # timeout, is not an Exception and leaves its slot empty.)
            store(False, _failed_call_record(exc, default_model or engine.checkpoint))
            raise
        store(trainable, record)
        return response

    def _with_reasoning(self, messages: list[dict]) -> list[dict]:
        """The messages with `reasoning_content` back on this run's own replies that had thinking.

        AgentScope's formatters drop ThinkingBlocks, so without it a Qwen3 template renders the
        earlier turn without its <think> block and the next prompt stops extending the sampled ids.
        These are the messages recorded and rendered: a re-render matches."""
        if not self._reasoning:
            return messages
        out = []
        for msg in messages:
            if isinstance(msg, dict) and msg.get("role") == "assistant" and not msg.get("reasoning_content"):
                from astuner.chat import text_of

                ids = [c.get("id") or "" for c in msg.get("tool_calls") or []]
                reasoning = self._reasoning.get(_reply_key(text_of(msg.get("content")), ids))
                if reasoning:
                    msg = {**msg, "reasoning_content": reasoning}
            out.append(msg)
        return out

    async def _engine_call(self, messages, tools, index, engine=None, sampling=None):
        engine, sampling = engine or self.engine, sampling or self.sampling  # another engine: an auxiliary model
        template_kwargs = template_kwargs_for(engine.tokenizer, self.template_kwargs)
        messages = self._with_reasoning(messages)
        prompt_ids = render_prompt_ids(engine.tokenizer, messages, tools, template_kwargs)
        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=derive_seed(self.sampling.seed, str(index)),
        )
        started = time.monotonic()
        gen = await engine.generate(prompt_ids, params)
        # Parse from a decoding that keeps the control tokens ([TOOL_CALLS], <|python_tag|>): the
        # recorded text (gen.text) drops them, as it always has.
        family = detect_family(engine.tokenizer) if self.tool_format == "auto" else self.tool_format
        tokenizer = engine.tokenizer
        parsed = parse_completion(
            tokenizer.decode(gen.completion_token_ids, skip_special_tokens=False),
            family,
            strip_tokens=special_tokens_of(tokenizer),
        )
        text, calls = parsed.text, parsed.calls
        if parsed.reasoning:
            self._reasoning[_reply_key(text, [c["id"] for c in calls])] = parsed.reasoning
        content = [ThinkingBlock(type="thinking", thinking=parsed.reasoning)] if parsed.reasoning else []
        content += [TextBlock(type="text", text=text)] if text else []
        content += [ToolUseBlock(type="tool_use", id=c["id"], name=c["name"], input=c["input"]) for c in calls]
        response = ChatResponse(
            content=content,
            usage=ChatUsage(
                input_tokens=len(prompt_ids),
                output_tokens=len(gen.completion_token_ids),
                time=time.monotonic() - started,
            ),
        )
        record = dict(
            model=engine.checkpoint,
            completion=Completion(
                text=gen.text,
                tool_calls=[ToolCall(id=c["id"], name=c["name"], arguments=json.dumps(c["input"])) for c in calls],
                reasoning=parsed.reasoning,
            ),
            tool_format=family,
            template_kwargs=template_kwargs or None,
            rendered_messages=messages,
            prompt_token_ids=gen.prompt_token_ids,
            completion_token_ids=gen.completion_token_ids,
            completion_logprobs=gen.completion_logprobs,
            finish_reason=gen.finish_reason,
            prompt_tokens=len(gen.prompt_token_ids),
            completion_tokens=len(gen.completion_token_ids),
        )
        return response, record

    async def _default_call(self, model, messages, tools, tool_choice, kwargs):
        result = await model(messages, tools=tools, tool_choice=tool_choice, **kwargs)
        if not isinstance(result, ChatResponse):  # a streaming model: the last chunk is the whole reply
            chunks = [chunk async for chunk in result]
            result = chunks[-1]
        texts, calls = [], []
        for block in result.content:
            if block.get("type") == "text":
                texts.append(block["text"])
            elif block.get("type") == "tool_use":
                calls.append(ToolCall(id=block["id"], name=block["name"], arguments=json.dumps(block.get("input", {}))))
        usage = result.usage
        record = dict(
            model=getattr(model, "model_name", type(model).__name__),
            completion=Completion(text="\n".join(texts), tool_calls=calls),
            prompt_token_ids=None,
            completion_token_ids=None,
            completion_logprobs=None,
            finish_reason=None,
            prompt_tokens=usage.input_tokens if usage else None,
            completion_tokens=usage.output_tokens if usage else None,
        )
        return result, record


def _reply_key(text: str, call_ids: list[str]) -> str:
    return "ids:" + ",".join(call_ids) if call_ids else "text:" + text.strip()


def _failed_call_record(exc: Exception, model) -> dict:
    """The ModelCall fields of a call that raised (context overflow, a default model's HTTP error)."""
    return dict(
        model=model if isinstance(model, str) else getattr(model, "model_name", type(model).__name__),
        completion=Completion(text=""),
        prompt_token_ids=None,
        completion_token_ids=None,
        completion_logprobs=None,
        finish_reason="error",
        error=f"{type(exc).__name__}: {exc}"[:2000],
    )


class RoleModel(ChatModelBase):
    """What get_model(role) returns: the tuner seen through one role."""

    def __init__(self, tuner: ModelTuner, role: str, agent_name: str | None = None):
        super().__init__(model_name=f"{tuner.model_name}#{role}", stream=False)
        self.tuner, self.role, self.agent_name = tuner, role, agent_name

    async def __call__(
        self, messages: list[dict], tools: list[dict] | None = None, tool_choice: str | None = None, **kwargs
    ) -> ChatResponse:
        return await self.tuner.call_as_role(self.role, self.agent_name, messages, tools, tool_choice, kwargs)


class AuxiliaryModel(ChatModelBase):
    """One of the run's `auxiliary_models` (collect's --auxiliary-models): its calls are recorded
    with role = its name and trainable = false, served by its own engine or endpoint."""

    def __init__(self, tuner: ModelTuner, backend):
        model_name = backend.engine.checkpoint if backend.engine is not None else backend.model.model_name
        super().__init__(model_name=model_name, stream=False)
        self.tuner, self.backend = tuner, backend

    async def __call__(
        self, messages: list[dict], tools: list[dict] | None = None, tool_choice: str | None = None, **kwargs
    ) -> ChatResponse:
        return await self.tuner.call_as_role(
            self.backend.name, None, messages, tools, tool_choice, kwargs, auxiliary=self.backend
        )


class OpenAIBaseUrlApiKey(BaseModel):
    """What as_oai_baseurl_apikey() returns (AgentJet's fields): the model name is ignored by the endpoint."""

    base_url: str
    api_key: str
    model: str = "astuner"


@functools.cache
def _openai_client_class():
    from openai import AsyncOpenAI

    class TunerOpenAI(AsyncOpenAI):
        """AsyncOpenAI whose chat.completions.create may omit `model`, as AgentJet's client allows."""

        @property
        def chat(self):
            return _ChatWithDefaultModel(super().chat)

    return TunerOpenAI


class _ChatWithDefaultModel:
    def __init__(self, chat):
        self._chat = chat

    def __getattr__(self, name):
        return getattr(self._chat, name)

    @property
    def completions(self):
        return _CompletionsWithDefaultModel(self._chat.completions)


class _CompletionsWithDefaultModel:
    def __init__(self, completions):
        self._completions = completions

    def __getattr__(self, name):
        return getattr(self._completions, name)

    async def create(self, **kwargs):
        kwargs.setdefault("model", "astuner")  # the endpoint serves one model whatever the name
        return await self._completions.create(**kwargs)
