"""Chat requests: validation (OpenAI schema plus routecraft's optional fields) and the routing text of a conversation
(the messages a strategy sends for a conversation: ``routecraft.strategies.conversation``).

Routing fields may be given at the top level or inside a ``routecraft`` object (the openai client sends either through
``extra_body``): ``lam`` (alias ``lambda``), ``max_cost`` (USD), ``task``, ``reasoning`` (alias ``show_reasoning``),
``conversation_id``. ``max_tokens`` (or ``max_completion_tokens``) is the standard OpenAI field; it caps every
backend call and removes candidates whose length budget exceeds it.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

Number = Union[StrictInt, StrictFloat]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: StrictStr
    text: Optional[StrictStr] = None

    @field_validator("type")
    @classmethod
    def _text_only(cls, v: str) -> str:
        if v != "text":
            raise ValueError(f"content part type {v!r} is not supported (text only)")
        return v


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[StrictStr, list[TextPart], None] = None
    name: Optional[StrictStr] = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: Optional[StrictBool] = None


class RoutecraftOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    lam: Optional[Number] = Field(None, alias="lambda", ge=0)
    max_cost: Optional[Number] = Field(None, gt=0)
    task: Optional[StrictStr] = None
    reasoning: Optional[StrictBool] = Field(None, alias="show_reasoning")
    conversation_id: Optional[StrictStr] = Field(None, max_length=256)


class ChatRequest(BaseModel):
    """POST /v1/chat/completions body. Unknown OpenAI fields are accepted and ignored unless listed here."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: StrictStr = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[StrictInt] = Field(None, ge=1)
    max_completion_tokens: Optional[StrictInt] = Field(None, ge=1)
    temperature: Optional[Number] = Field(None, ge=0, le=2)
    top_p: Optional[Number] = Field(None, ge=0, le=1)
    presence_penalty: Optional[Number] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[Number] = Field(None, ge=-2, le=2)
    stop: Union[StrictStr, list[StrictStr], None] = None
    seed: Optional[StrictInt] = None
    n: Optional[StrictInt] = Field(None, ge=1, le=1)
    stream: Optional[StrictBool] = None
    stream_options: Optional[StreamOptions] = None
    user: Optional[StrictStr] = None
    tools: Optional[list[Any]] = None
    # routecraft's fields (top level or in "routecraft")
    lam: Optional[Number] = Field(None, alias="lambda", ge=0)
    max_cost: Optional[Number] = Field(None, gt=0)
    task: Optional[StrictStr] = None
    reasoning: Optional[StrictBool] = None
    conversation_id: Optional[StrictStr] = Field(None, max_length=256)
    routecraft: Optional[RoutecraftOptions] = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, v):
        if v:
            raise ValueError("tool calling is not supported by this gateway")
        return v

    # ---- merged views ----
    def option(self, name: str) -> Any:
        v = getattr(self.routecraft, name, None) if self.routecraft is not None else None
        return v if v is not None else getattr(self, name)

    @property
    def output_cap(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def plain_messages(self) -> list[dict]:
        """Messages as {role, content} with text content ("developer" becomes "system")."""
        out = []
        for m in self.messages:
            role = "system" if m.role == "developer" else m.role
            d = {"role": role, "content": m.text}
            if m.name:
                d["name"] = m.name
            out.append(d)
        return out


class RequestError(ValueError):
    """A request the gateway refuses: maps to an OpenAI-style error JSON."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _loc(loc: tuple) -> str:
    out = ""
    for x in loc:
        if isinstance(x, int):
            out += f"[{x}]"
        elif x in ("str", "list[TextPart]", "int", "float", "bool", "none", "function-after[_stop(), union]"):
            continue  # union branch names
        else:
            out += ("." if out else "") + str(x)
    return out


def validation_error(exc: ValidationError) -> RequestError:
    """A 400 naming the (first three) fields pydantic refused and why."""
    errs = exc.errors()
    first = errs[0]
    param = _loc(tuple(first["loc"]))
    merged: dict[str, list[str]] = {}
    for e in errs:  # a union (e.g. content: string or list of parts) reports one error per branch: merge them
        where = _loc(tuple(e["loc"])) or "body"
        msg = e["msg"].removeprefix("Value error, ")
        if msg not in merged.setdefault(where, []):
            merged[where].append(msg)
    items = list(merged.items())
    msgs = [f"{where}: {' or '.join(m)}" for where, m in items[:3]]
    more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
    return RequestError(400, "invalid request: " + "; ".join(msgs) + more, param=param or None)


def parse_chat(data: dict) -> ChatRequest:
    """The validated chat request of a JSON body, or a 400 naming what is wrong."""
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def check_conversation(messages: list[dict], max_messages: int) -> None:
    """Refuse conversations the gateway cannot route: too many messages, no user text."""
    if len(messages) > max_messages:
        raise RequestError(400, f"too many messages ({len(messages)}; the limit is {max_messages})",
                           param="messages")
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise RequestError(400, "messages must contain at least one user message with non-empty text",
                           param="messages")


def routing_text(messages: list[dict], history_turns: int = 3, history_chars: int = 500) -> str:
    """What the router reads for a conversation: up to ``history_turns`` earlier user turns (each cut to
    ``history_chars``) then the last user turn, last. A one-turn conversation routes on its question alone."""
    users = [m["content"].strip() for m in messages if m["role"] == "user" and m["content"].strip()]
    last = users[-1]
    earlier = [u[:history_chars] for u in users[:-1][-history_turns:]]
    return "\n".join(earlier + [last])


def conversation_chars(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages)


def text_tokens(text: str) -> int:
    """A cautious token estimate for fitting a context: 4 ASCII characters a token, and a token for every other
    character (CJK and most non-Latin scripts take one or more tokens a character in small vocabularies)."""
    if text.isascii():
        return (len(text) + 3) // 4
    other = sum(1 for c in text if c >= "\x80")
    return (len(text) - other + 3) // 4 + other


def conversation_tokens(messages: list[dict]) -> int:
    """``text_tokens`` of every message plus a few tokens of chat template per message."""
    return sum(text_tokens(m["content"]) + 4 for m in messages)


def find_unencodable(value: Any, where: str = "body") -> Optional[str]:
    """The path of the first string in a parsed JSON value that is not valid Unicode text (a lone surrogate such as
    ``"\\ud800"``, which JSON allows as an escape but UTF-8 cannot carry), or None."""
    stack = [(value, where)]
    while stack:
        v, path = stack.pop()
        if isinstance(v, str):
            if not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError as exc:
                    return f"{path} (character {exc.start})"
        elif isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str) and not k.isascii():
                    try:
                        k.encode("utf-8")
                    except UnicodeEncodeError:
                        return f"{path} (a key)"
                stack.append((x, f"{path}.{k}" if path != "body" else str(k)))
        elif isinstance(v, list):
            stack.extend((x, f"{path}[{i}]") for i, x in enumerate(v))
    return None


