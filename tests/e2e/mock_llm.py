"""A loopback stand-in for the LLM providers, for the gateway's
end-to-end tests: one mock, a route per provider, that knows each
provider's wire format (paths, where the key goes, replies, error bodies,
event streams), and tests saying what it answers with behaviours.

    LoopbackServer  the HTTP server every mock runs on
    EchoBackend   a loopback application that prints the X-Keygate-*
                  headers it gets
    MockLLM       the providers, a route per provider and endpoint (key
                  validation, chat, embeddings), each in the provider's own
                  wire format, recording every exchange
    Complete      a normal answer (JSON, or Server-Sent Events when the
                  request asks for a stream), optionally paced, cut short or
                  stalled part-way; a tool call, several choices, embeddings
    Fail          an error status with a provider-shaped body
    Hang          no answer at all until the client gives up
    Drop          the connection closed without an answer
    Redirect      a 3xx pointing elsewhere on the mock
    Raw           any status and body, e.g. something that is not JSON
    Stream        a given event stream, framed as the provider frames it
    Choose        a behaviour picked for each request from what it asks
    SSEReader     a client for keygate's streams, timing every event

The mock runs on LoopbackServer, the one HTTP server of every mock in the
tests, and watches each connection: while it pauses or stalls it polls
the socket, and it records when the peer closed the connection
(`Exchange.closed_at`), which is how the tests see that keygate ended an
upstream call.

Providers live below their own path prefixes, like the real base URLs:

    openai      <mock>/openai/v1             (openai_base_url)
    openrouter  <mock>/openrouter/api/v1     (openrouter_base_url)
    anthropic   <mock>/anthropic             (anthropic_base_url)
    google      <mock>/google                (google_base_url)

openai and openrouter answer chat completions and embeddings; anthropic
answers POST /v1/messages in its own shape (x-api-key, anthropic-version),
google POST /v1beta/models/{model}:generateContent,
:streamGenerateContent?alt=sse and :batchEmbedContents (x-goog-api-key).
Each of the four answers the request keygate checks a key with
(VALIDATE_PATHS) as it does: 200 for an accepted key, else its own refusal
(rejection()).  Anything else is recorded and answered 404, so a test
notices if one is made.  The OpenRouter stand-in knows only real OpenRouter model ids: those
of keygate's own table (sql/0005-openrouter-models.sql) and a few that
clients name themselves (OPENROUTER_PASSTHROUGH); any other model is
refused with OpenRouter's 400, so a test notices a guessed id.  An
operator's own OpenAI-compatible server (vLLM, llama.cpp, Ollama) is one
more:

    local       <mock>/local/v1              (an upstreams url=)

which answers chat completions like OpenAI; accept("local", None) makes it
answer a request that carries no key at all, as such servers may.

All times are time.monotonic(), so they compare with the client's.
"""

import http.client
import http.server
import base64
import json
import os
import re
import secrets
import select
import socket
import struct
import threading
import time
import urllib.parse

BASES = {
    "openai": "/openai/v1",
    "openrouter": "/openrouter/api/v1",
    "anthropic": "/anthropic",
    "google": "/google",
}
# An operator upstream: not a <provider>_base_url setting.
OPERATOR_BASES = {"local": "/local/v1"}
ALL_BASES = dict(BASES, **OPERATOR_BASES)
CHAT_PROVIDERS = ("openai", "openrouter", "local")

# OpenRouter model ids that clients send as they are (vendor/model), beyond
# those keygate maps native ids to; real ids from openrouter.ai.
OPENROUTER_PASSTHROUGH = (
    "meta-llama/llama-3.1-8b-instruct",
    "mistralai/mistral-7b-instruct",
    "openai/text-embedding-3-small",
)


def openrouter_models():
    """Every model id the OpenRouter stand-in serves: the OpenRouter ids
    of keygate's seeded table, and OPENROUTER_PASSTHROUGH."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                        "..", "sql", "0005-openrouter-models.sql")
    with open(path) as f:
        ids = re.findall(r"\(\s*'[^']+',\s*'([^']+)'\s*\)", f.read())
    assert ids, "no OpenRouter ids in %s" % path
    return frozenset(ids) | frozenset(OPENROUTER_PASSTHROUGH)


OPENROUTER_MODELS = openrouter_models()


def mask(key):
    """How OpenAI quotes a rejected key: never the whole of it."""
    if len(key) <= 8:
        return "*" * len(key)
    return key[:3] + "*" * 10 + key[-4:]


def openai_error(message, type_="invalid_request_error", code=None,
                 param=None):
    return {"error": {"message": message, "type": type_, "param": param,
                      "code": code}}


def openrouter_error(message, code):
    return {"error": {"message": message, "code": code}}


# Where each provider checks a key: the request keygate's validation makes.
VALIDATE_PATHS = {
    "openai": "/openai/v1/models",
    "anthropic": "/anthropic/v1/models",
    "google": "/google/v1beta/models",
    "openrouter": "/openrouter/api/v1/key",
}
# What each of them answers there for a key it accepts.
KEY_ACCEPTED = {
    "openai": {"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741,
         "owned_by": "system"}]},
    "anthropic": {"data": [], "has_more": False, "first_id": None,
                  "last_id": None},
    "google": {"models": []},
    "openrouter": {"data": {"label": "sk-or-v1-abc...", "limit": None,
                            "usage": 0}},
}
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error",
    403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error",
}
GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


def error_body(provider, status, message):
    """The body `provider` answers an error `status` with."""
    if provider == "anthropic":
        return {"type": "error", "error": {
            "type": ANTHROPIC_ERROR_TYPES.get(status, "api_error"),
            "message": message}}
    if provider == "google":
        return {"error": {"code": status, "message": message,
                          "status": GOOGLE_STATUSES.get(status, "INTERNAL")}}
    if provider == "openrouter":
        return openrouter_error(message, status)
    return openai_error(
        message, "server_error" if status >= 500 else
        ("requests" if status == 429 else "invalid_request_error"),
        code={429: "rate_limit_exceeded",
              404: "model_not_found"}.get(status))


def rejection(provider, key):
    """(status, body): how `provider` refuses the key `key` (None: none
    presented)."""
    if provider == "anthropic":
        return 401, error_body(provider, 401, "invalid x-api-key")
    if provider == "google":
        body = error_body(provider, 400, "API key not valid. Please pass a "
                                         "valid API key.")
        body["error"]["details"] = [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID"}]
        return 400, body
    if provider == "openrouter":
        return 401, openrouter_error("No auth credentials found", 401)
    return 401, openai_error(
        "Incorrect API key provided: %s. You can find your API key at "
        "https://platform.openai.com/account/api-keys." % mask(key or ""),
        code="invalid_api_key")


def openai_usage(usage):
    prompt, completion = usage
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def openai_call(tool_call):
    """A tool call, (name, arguments), as OpenAI's tool_calls hold it."""
    name, args = tool_call
    return {"id": "call_" + secrets.token_hex(6), "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)}}


def openai_completion(model, texts, usage=(11, 7), finish="stop",
                      tool_call=None, provider="openai"):
    """An OpenAI-format chat.completion: one choice per text of `texts`
    (or the call `tool_call`), usage from (prompt, completion) `usage`
    (None: none), OpenRouter's provider member when it answers."""
    choices = []
    for i, text in enumerate(texts):
        message = {"role": "assistant", "content": text, "refusal": None}
        if tool_call:
            message.update(content=None, tool_calls=[openai_call(tool_call)])
        choices.append({"index": i, "message": message, "logprobs": None,
                        "finish_reason": "tool_calls" if tool_call
                        else finish})
    reply = {"id": "chatcmpl-" + secrets.token_hex(12),
             "object": "chat.completion", "created": int(time.time()),
             "model": model, "system_fingerprint": "fp_mock",
             "choices": choices}
    if usage is not None:
        reply["usage"] = openai_usage(usage)
    if provider == "openrouter":
        reply["provider"] = "MockCloud"
    return reply


def openai_chunks(model, texts, split, usage=(11, 7), finish="stop",
                  with_usage=False, tool_call=None, provider="openai"):
    """The chat.completion.chunk objects of an OpenAI-format stream, [DONE]
    left out: a role chunk per choice (one per text of `texts`), each
    text's pieces (split(text)) a choice after another, or the call
    `tool_call` with empty arguments and then them in pieces, a finish
    chunk per choice, and with `with_usage` the usage chunk (every chunk
    before it then carrying "usage": null)."""
    cid, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())

    def chunk(delta, finish=None, index=0):
        c = {"id": cid, "object": "chat.completion.chunk",
             "created": created, "model": model,
             "system_fingerprint": "fp_mock",
             "choices": [{"index": index, "delta": delta,
                          "logprobs": None, "finish_reason": finish}]
             if delta is not None else []}
        if provider == "openrouter":
            c["provider"] = "MockCloud"
        if with_usage:
            c["usage"] = None
        return c

    n = len(texts)
    events = [chunk({"role": "assistant", "content": ""}, index=k)
              for k in range(n)]
    if tool_call:
        call = openai_call(tool_call)
        args = call["function"]["arguments"]
        events.append(chunk({"tool_calls": [dict(
            call, index=0, function=dict(call["function"], arguments=""))]}))
        events += [chunk({"tool_calls": [{"index": 0, "function": {
            "arguments": piece}}]}) for piece in split(args)]
    else:
        parts = [split(t) for t in texts]
        events += [chunk({"content": parts[k][j]}, index=k)
                   for j in range(max(map(len, parts)))
                   for k in range(n) if j < len(parts[k])]
    events += [chunk({}, "tool_calls" if tool_call else finish, index=k)
               for k in range(n)]
    if with_usage:
        u = chunk(None)
        u["usage"] = openai_usage(usage)
        events.append(u)
    return events


def presented_key(provider, headers):
    """The key a request presents the way `provider` takes it (the
    Authorization bearer, x-api-key or x-goog-api-key; `headers` with
    lower-case names), or None."""
    if provider == "anthropic":
        return headers.get("x-api-key")
    if provider == "google":
        return headers.get("x-goog-api-key")
    value = headers.get("authorization", "")
    return value[len("Bearer "):] if value.startswith("Bearer ") else None


# ---------------------------------------------------------------------------
# Behaviours

class Complete:
    """A successful completion.

    Without "stream" in the request: one chat.completion object.  With
    "stream": true: a role chunk, one chunk per piece of `content`
    (`pieces` of them), a finish chunk, a usage chunk (for OpenAI only when
    stream_options.include_usage is true; OpenRouter always sends it), then
    `data: [DONE]`.  `pause` seconds pass before every event after the
    first.  `stop_after` closes the connection after that many events,
    without [DONE]; `hang_after` stalls after that many events until the
    peer closes (or `hang` seconds); `linger` keeps the body open that many
    seconds after the last event ([DONE] included), as a server that ends
    its answer late.  `usage=None` sends no usage at all,
    asked for or not, as some OpenAI-compatible servers do.  `comments`
    sends OpenRouter's keep-alive comments before the first chunk and
    between chunks.
    `newline` ends every line ("\r\n" is as valid as "\n"; by default
    the provider's own, CRLF for Gemini's); `split`
    writes each event in two pieces, 50 ms apart, cut in the middle of its
    JSON; `multiline` sends each JSON chunk on two `data:` lines (after its
    first comma), which a reader joins with a newline.  A stream with
    "n" in the request streams that many choices.  `wait` seconds pass
    before a whole (not streamed) answer, watching the connection.

    A request that asks for a JSON answer (OpenAI's response_format,
    Anthropic's forced tool, Gemini's responseMimeType) is answered with
    `answer` (a JSON-able object) in the form the provider would give it:
    content text, a tool_use input, a JSON text part.  `tool_call`, a
    (name, arguments) pair, answers with a call of that tool instead of
    text, as each provider does (tool_calls, a tool_use block, a
    functionCall part; a stream sends the arguments in pieces, Gemini's
    whole).  `content` a list answers one choice (candidate) per item.
    An embeddings request gets one vector per input: vectors(text), or
    `dims` numbers made up; OpenAI's in base64 when the request asks for
    encoding_format "base64"."""

    def __init__(self, content="Hello from the mock provider.", pieces=4,
                 pause=0.0, stop_after=None, hang_after=None, hang=30.0,
                 linger=0.0,
                 comments=False, usage=(11, 7), finish_reason="stop",
                 headers=None, newline=None, split=False, multiline=False,
                 wait=0.0, answer=None, dims=3, tool_call=None,
                 vectors=None):
        self.content = content
        self.pieces = pieces
        self.pause = pause
        self.stop_after = stop_after
        self.hang_after = hang_after
        self.linger = linger
        self.hang = hang
        self.comments = comments
        self.usage = usage
        self.finish_reason = finish_reason
        self.headers = dict(headers or {})
        self.newline = newline
        self.split = split
        self.multiline = multiline
        self.wait = wait
        self.answer = {"answer": content} if answer is None else answer
        self.dims = dims
        self.tool_call = tool_call
        self.vectors = vectors


class Fail:
    """`status` with `body` (default: the provider's own error shape for
    that status) and `headers`."""

    def __init__(self, status, body=None, headers=None, message=None):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.message = message or {
            400: "Invalid value for 'temperature': must be at most 2.",
            401: "Incorrect API key provided.",
            403: "You are not allowed to sample from this model",
            404: "The model `gpt-9` does not exist or you do not have "
                 "access to it.",
            429: "Rate limit reached for requests. Please try again in 7s.",
        }.get(status, "The server had an error while processing your "
              "request. Sorry about that!")


class Hang:
    """Reads the request and answers nothing until the peer closes the
    connection (or `seconds` pass, or the mock closes)."""

    def __init__(self, seconds=30.0):
        self.seconds = seconds


class Drop:
    """Reads the request and closes the connection without a word."""


class Redirect:
    def __init__(self, location, status=302):
        self.location = location
        self.status = status


class Raw:
    """`status` with `body`: bytes, a str, or a JSON-able value."""

    def __init__(self, status, body, content_type="application/json",
                 headers=None):
        self.status = status
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        self.body = body if isinstance(body, bytes) else body.encode()
        self.content_type = content_type
        self.headers = dict(headers or {})


class Stream:
    """A 200 event stream of the given `events`, framed as the provider
    frames its own: each a (name, data) pair (Anthropic's named events) or
    data alone, data a JSON-able value or a str sent as it is (OpenAI's
    "[DONE]").  `pause` seconds pass before every event after the first;
    `stop_after` closes the connection after that many events; `newline`
    (default: the provider's own) ends every line."""

    def __init__(self, events, pause=0.0, stop_after=None, headers=None,
                 newline=None):
        self.events = list(events)
        self.pause = pause
        self.stop_after = stop_after
        self.headers = dict(headers or {})
        self.newline = newline


class Choose:
    """Whatever behaviour choose(exchange) returns, for each request: an
    answer that depends on what was asked."""

    def __init__(self, choose):
        self.choose = choose


def tool_result(ex):
    """The result of a tool call that the request of `ex` sends back,
    parsed as JSON, in its provider's shape (OpenAI's "tool" message,
    Anthropic's tool_result block, Gemini's functionResponse), or None."""
    body = ex.json if isinstance(ex.json, dict) else {}
    if ex.provider == "google":
        result = None
        for c in body.get("contents") or []:
            for part in c.get("parts") or []:
                if "functionResponse" in part:
                    result = part["functionResponse"].get("response")
        if result is None:
            return None
        out = result.get("output", result)
        return json.loads(out) if isinstance(out, str) else out
    for m in body.get("messages") or []:
        if ex.provider != "anthropic":
            if m.get("role") == "tool":
                return json.loads(m["content"])
            continue
        blocks = m.get("content")
        for b in blocks if isinstance(blocks, list) else []:
            if b.get("type") == "tool_result":
                c = b.get("content")
                if isinstance(c, list):
                    c = "".join(x.get("text", "") for x in c)
                return json.loads(c)
    return None


# ---------------------------------------------------------------------------
# What the mock saw

class Exchange:
    """One request to the mock and what became of it."""

    def __init__(self, method, path, raw_headers, body, received_at,
                 query=None):
        self.method = method
        self.path = path
        self.query = query or {}   # the query string, parsed
        self.raw_headers = raw_headers        # [(name, value)] as sent
        self.headers = {}
        for name, value in raw_headers:
            self.headers.setdefault(name.lower(), value)
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None
        self.received_at = received_at
        self.peer = None           # (address, port) of the connection
        self.provider = None
        self.route = None          # "validate", "chat", "embeddings"
        self.reply = None          # the JSON object answered, if any
        self.events = []           # the SSE data payloads sent, in order
        self.sent_at = []          # when each of them was (about to be)
                                   # written
        self.completed = False     # everything was written
        self.closed_at = None      # the peer closed (or a write failed)
        self.finished_at = None    # the handler returned
        self.done = threading.Event()

    def header_values(self, name):
        return [v for n, v in self.raw_headers if n.lower() == name.lower()]

    def text(self):
        """Everything the request carried, as one string to search."""
        head = "".join("%s: %s\n" % (n, v) for n, v in self.raw_headers)
        return "%s %s\n%s\n%s" % (self.method, self.path, head,
                                  self.body.decode("utf-8", "replace"))

    @property
    def bearer(self):
        value = self.headers.get("authorization", "")
        return value[len("Bearer "):] if value.startswith("Bearer ") else None

    @property
    def key(self):
        """The key presented the way the provider takes it, or None."""
        return presented_key(self.provider, self.headers)

    def chunks(self):
        """The JSON chunks sent in the stream, [DONE] left out."""
        return [json.loads(e) for e in self.events if e != "[DONE]"]

    def __repr__(self):
        return "Exchange(%s %s)" % (self.method, self.path)


# ---------------------------------------------------------------------------
# The server

class _ThreadingServer(http.server.ThreadingHTTPServer):
    # http.server listens with a backlog of 5: a burst of calls from every
    # worker at once (new connections, as keygated lets go of the ones a
    # burst left) could overflow it and see a connection reset, a failure
    # of the mock, not of keygated.
    request_queue_size = 128
    daemon_threads = True


class LoopbackServer:
    """The one HTTP server every mock of the tests runs on: threaded, on a
    free loopback port, handing each request, whatever its method, to
    serve(handler), where `handler` is the request's
    BaseHTTPRequestHandler (its command, path, headers and unread body).
    A peer that leaves mid-answer ends its connection quietly.  `backlog`
    lets many calls connect at once; `protocol` is the HTTP version the
    server answers in (HTTP/1.1 keeps connections open)."""

    def __init__(self, serve, name, backlog=None, protocol="HTTP/1.1"):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = protocol

            def log_message(self, fmt, *args):
                pass

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _any(self):
                serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        self.server = _ThreadingServer(("127.0.0.1", 0), Handler)
        if backlog:
            self.server.socket.listen(backlog)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
            daemon=True, name=name)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @staticmethod
    def read_body(h):
        """The bytes of the request `h` carries (Content-Length long)."""
        n = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(n) if n else b""

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _PeerClosed(Exception):
    pass


class MockLLM:
    """The mock providers, one route per provider and endpoint: key
    validation (VALIDATE_PATHS), chat and embeddings, each in the
    provider's own wire format.  Each provider answers with its behaviour
    (set with behave(), default Complete()) for a key in accept()ed keys,
    and with its own refusal (rejection()) otherwise.  A behaviour other
    than Complete (Fail, Hang, Drop, Redirect, Raw, Stream) applies to
    every route of the provider; Choose picks one per request."""

    HOLD_SECONDS = 30

    def __init__(self):
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.exchanges = []
        self.accepted = {p: set() for p in ALL_BASES}
        self.behaviour = {p: Complete() for p in ALL_BASES}
        self._holds = {p: None for p in ALL_BASES}
        # Thousands of calls may connect at once.
        self.server = LoopbackServer(self._serve, "mock-llm", backlog=4096)
        self.port = self.server.port

    # -- configuration

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def base_url(self, provider):
        return self.url + ALL_BASES[provider]

    def chat_path(self, provider, model=None, stream=False):
        """Where `provider` takes a chat call (Google: for `model`)."""
        if provider == "anthropic":
            return ALL_BASES[provider] + "/v1/messages"
        if provider == "google":
            return "%s/v1beta/models/%s:%s" % (
                ALL_BASES[provider], model,
                "streamGenerateContent" if stream else "generateContent")
        return ALL_BASES[provider] + "/chat/completions"

    def embeddings_path(self, provider, model=None):
        if provider == "google":
            return "%s/v1beta/models/%s:batchEmbedContents" % (
                ALL_BASES[provider], model)
        return ALL_BASES[provider] + "/embeddings"

    def config(self):
        """<provider>_base_url for every provider, for Stack(**config)."""
        return {"%s_base_url" % p: self.base_url(p) for p in BASES}

    def accept(self, provider, *keys):
        """Answers requests bearing one of `keys` (None: no key)."""
        with self._lock:
            self.accepted[provider].update(keys)

    def behave(self, provider, behaviour):
        """What `provider` answers from now on."""
        with self._lock:
            self.behaviour[provider] = behaviour

    def serve(self, keys, **complete):
        """reset(), then every provider of `keys` ({provider: key})
        accepting its key and answering Complete(**complete)."""
        self.reset()
        for provider, key in keys.items():
            self.accept(provider, key)
            self.behave(provider, Complete(**complete))
        return self

    def hold(self, provider):
        """Makes `provider` hold every answer until release() (at most
        HOLD_SECONDS); the request is recorded when it arrives."""
        with self._lock:
            if self._holds[provider] is None:
                self._holds[provider] = threading.Event()

    def release(self, provider=None):
        """Lets the held answers of `provider` (of every provider) go."""
        for p in [provider] if provider else list(ALL_BASES):
            with self._lock:
                gate, self._holds[p] = self._holds[p], None
            if gate:
                gate.set()

    def clear(self):
        """No exchange recorded; keys and behaviours stay."""
        with self._lock:
            self.exchanges = []

    def reset(self):
        """No exchange recorded, no key accepted, nothing held, every
        provider answering Complete()."""
        self.release()
        with self._lock:
            self.exchanges = []
            for p in ALL_BASES:
                self.accepted[p] = set()
                self.behaviour[p] = Complete()

    # -- what happened

    def mark(self):
        """Where the record stands now, for seen(since=)."""
        with self._lock:
            return len(self.exchanges)

    def seen(self, provider=None, path=None, since=0):
        """Recorded exchanges (under `provider`'s prefix; to `path`, or
        below it when it ends with "/"; after mark() gave `since`), oldest
        first."""
        with self._lock:
            ex = self.exchanges[since:]
        if provider is not None:
            base = ALL_BASES[provider]
            ex = [e for e in ex if e.path.startswith(base + "/")
                  or e.path == base]
        if path is not None:
            ex = [e for e in ex if e.path == path or (
                path.endswith("/") and e.path.startswith(path))]
        return ex

    def chats(self, provider):
        """The chat calls `provider` received, oldest first."""
        return [e for e in self.seen(provider)
                if e.path == self.chat_path(provider) or (
                    provider == "google" and ":" in e.path and
                    e.path.rsplit(":", 1)[1] in ("generateContent",
                                                 "streamGenerateContent"))]

    def only(self, provider):
        """The one exchange there was, which went to `provider`."""
        ex = self.seen()
        assert len(ex) == 1, "expected one upstream request to %s, saw %r" % (
            provider, ex)
        assert ex[0].provider == provider, (
            "the request went to %s, not %s: %r" % (ex[0].provider, provider,
                                                    ex[0]))
        if provider == "google":
            assert ex[0].path.startswith("/google/v1beta/models/"), \
                ex[0].path
        else:
            assert ex[0].path in (self.chat_path(provider),
                                  self.embeddings_path(provider)), \
                ex[0].path
        return ex[0]

    def wait_for(self, count=1, timeout=10, provider=None):
        """The exchanges (of `provider`) once there are `count` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ex = self.seen(provider)
            if len(ex) >= count:
                return ex
            time.sleep(0.02)
        raise AssertionError("the mock saw %d request(s)%s, expected %d" % (
            len(self.seen(provider)), " to " + provider if provider else "",
            count))

    # -- serving

    def _provider_of(self, path):
        for p, base in ALL_BASES.items():
            if path == base or path.startswith(base + "/"):
                return p
        return None

    def _serve(self, h):
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        parts = urllib.parse.urlsplit(h.path)
        ex = Exchange(h.command, parts.path, list(h.headers.items()), body,
                      time.monotonic(), urllib.parse.parse_qs(
                          parts.query, keep_blank_values=True))
        ex.peer = h.client_address
        ex.provider = self._provider_of(parts.path)
        ex.route = self._route(h, ex)
        with self._lock:
            self.exchanges.append(ex)
            behaviour = self.behaviour.get(ex.provider)
            accepted = set(self.accepted.get(ex.provider, ()))
            gate = self._holds.get(ex.provider)
        try:
            if gate is not None:
                gate.wait(self.HOLD_SECONDS)
            while isinstance(behaviour, Choose):
                behaviour = behaviour.choose(ex)
            self._answer(h, ex, behaviour, accepted)
        except _PeerClosed:
            h.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            ex.closed_at = ex.closed_at or time.monotonic()
            h.close_connection = True
        finally:
            ex.finished_at = time.monotonic()
            ex.done.set()

    def _route(self, h, ex):
        """What `ex` asks its provider for: "validate", "chat",
        "embeddings", or None (no such route)."""
        p, path = ex.provider, ex.path
        if p is None:
            return None
        if h.command == "GET":
            return "validate" if VALIDATE_PATHS.get(p) == path else None
        if h.command != "POST":
            return None
        if p == "google":
            method = path.rsplit(":", 1)[-1]
            if not path.startswith(ALL_BASES[p] + "/v1beta/models/") or \
                    ":" not in path:
                return None
            return {"generateContent": "chat",
                    "streamGenerateContent": "chat",
                    "batchEmbedContents": "embeddings",
                    "embedContent": "embeddings"}.get(method)
        if path == self.chat_path(p):
            return "chat"
        if p in CHAT_PROVIDERS and path == self.embeddings_path(p):
            return "embeddings"
        return None

    def _refusal(self, ex, route, accepted):
        """(status, body) when the provider refuses the request before
        looking at what it asks (its key, its headers, its model), else
        None."""
        p, req = ex.provider, ex.json
        if ex.key not in accepted:
            return rejection(p, ex.key)
        if p == "anthropic" and not re.fullmatch(
                r"\d{4}-\d{2}-\d{2}", ex.headers.get("anthropic-version", "")):
            return 400, error_body(p, 400, "anthropic-version: header is "
                                           "required")
        if route == "validate":
            return None
        if not isinstance(req, dict):
            return 400, error_body(p, 400, "We could not parse the JSON "
                                           "body of your request.")
        if p == "anthropic" and route == "chat" and (not isinstance(
                req.get("max_tokens"), int) or not req.get("messages")):
            return 400, error_body(p, 400, "max_tokens: Field required")
        if p == "openrouter" and req.get("model") not in OPENROUTER_MODELS:
            return 400, openrouter_error(
                "%s is not a valid model ID" % req.get("model"), 400)
        return None

    def _answer(self, h, ex, behaviour, accepted):
        p, route = ex.provider, ex.route
        if route is None:
            return self._json(h, 404, openai_error(
                "Unknown request URL: %s %s." % (h.command, ex.path),
                code="unknown_url"))
        if isinstance(behaviour, Redirect):
            h.send_response(behaviour.status)
            h.send_header("Location", behaviour.location)
            h.send_header("Content-Length", "0")
            h.end_headers()
            h.wfile.flush()
            return
        refused = self._refusal(ex, route, accepted)
        if refused:
            ex.reply = refused[1]
            return self._json(h, refused[0], refused[1])
        if self._fail_common(h, ex, behaviour):
            return
        if isinstance(behaviour, Stream):
            self._sse_head(h, behaviour)
            return self._sse_events(h, ex, behaviour, [
                e if isinstance(e, tuple) else (None, e)
                for e in behaviour.events])
        if route == "validate":
            ex.reply = KEY_ACCEPTED[p]
            return self._json(h, 200, ex.reply)
        if p == "anthropic":
            return self._anthropic(h, ex, behaviour)
        if p == "google":
            return self._google(h, ex, behaviour)
        if route == "embeddings":
            return self._embeddings(h, ex, behaviour)
        if ex.json.get("stream") is True:
            return self._stream(h, ex, behaviour)
        return self._complete(h, ex, behaviour)

    # -- replies

    def _complete(self, h, ex, b):
        if b.wait:
            self._watch(h, ex, b.wait)
        reply = openai_completion(ex.json.get("model"), self._texts(ex, b),
                                  b.usage, b.finish_reason, b.tool_call,
                                  ex.provider)
        ex.reply = reply
        headers = dict(b.headers)
        headers.setdefault("x-request-id", "req_" + secrets.token_hex(8))
        self._json(h, 200, reply, headers)
        ex.completed = True

    def _stream(self, h, ex, b):
        opts = ex.json.get("stream_options")
        with_usage = b.usage is not None and (
            ex.provider == "openrouter" or (
                isinstance(opts, dict) and opts.get("include_usage") is True))
        # With n choices (as many as the request asks for, or one per
        # item of `content`), each piece goes out once per choice, in
        # turn, and every choice finishes at the end.
        texts = self._texts(ex, b)
        if len(texts) == 1 and isinstance(ex.json.get("n"), int):
            texts = texts * ex.json["n"]
        events = openai_chunks(
            ex.json.get("model"), texts,
            lambda text: self._pieces(text, b.pieces), b.usage,
            b.finish_reason, with_usage, b.tool_call, ex.provider)
        events = [json.dumps(e, separators=(",", ":")) for e in events]
        events.append("[DONE]")

        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("x-request-id", "req_" + secrets.token_hex(8))
        for k, v in b.headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.flush()
        nl = (b.newline or "\n").encode()
        comment = b": OPENROUTER PROCESSING" + nl + nl
        if b.comments:
            self._write_chunk(h, ex, comment)
        for i, data in enumerate(events):
            if b.stop_after is not None and i >= b.stop_after:
                h.close_connection = True
                return      # the connection closes without [DONE]
            if b.hang_after is not None and i >= b.hang_after:
                self._watch(h, ex, b.hang)
                h.close_connection = True
                return
            if i and b.pause:
                self._watch(h, ex, b.pause)
            if i and b.comments:
                self._write_chunk(h, ex, comment)
            lines = [data]
            if b.multiline and data != "[DONE]":
                cut = data.index(",") + 1
                lines = [data[:cut], data[cut:]]
            frame = b"".join(b"data: " + line.encode() + nl
                             for line in lines) + nl
            # Recorded first, so that whoever reads the event finds it here.
            ex.events.append(data)
            ex.sent_at.append(time.monotonic())
            if b.split:
                half = len(frame) // 2
                self._write_chunk(h, ex, frame[:half])
                self._watch(h, ex, 0.05)
                frame = frame[half:]
            self._write_chunk(h, ex, frame)
        if b.linger:
            self._watch(h, ex, b.linger)
        self._write_chunk(h, ex, b"", last=True)
        ex.completed = True

    @staticmethod
    def _texts(ex, b):
        """The content of each choice of a chat answer: `answer` as JSON
        text when the OpenAI-format request asked for JSON."""
        rf = ex.json.get("response_format") if ex.json else None
        if isinstance(rf, dict) and rf.get("type") in ("json_object",
                                                       "json_schema"):
            return [json.dumps(b.answer)]
        if isinstance(b.content, (list, tuple)):
            return list(b.content)
        return [b.content]


    @staticmethod
    def _pieces(text, n):
        step = -(-len(text) // max(1, n)) or 1
        return [text[i:i + step] for i in range(0, len(text), step)] or [""]

    def _vectors(self, b, texts):
        if b.vectors:
            return [list(b.vectors(t)) for t in texts]
        return [[round(0.1 * (i + 1) + 0.01 * k, 4) for k in range(b.dims)]
                for i in range(len(texts))]

    def _embeddings(self, h, ex, b):
        """OpenAI's embeddings: one vector per input (a string or a list
        of them), in base64 (little-endian float32) when asked for, usage
        prompt_tokens from `usage`."""
        inp = ex.json.get("input")
        vectors = self._vectors(b, inp if isinstance(inp, list) else [inp])
        if ex.json.get("encoding_format") == "base64":
            vectors = [base64.b64encode(struct.pack(
                "<%df" % len(v), *v)).decode() for v in vectors]
        reply = {"object": "list", "model": ex.json.get("model"),
                 "data": [{"object": "embedding", "index": i,
                           "embedding": v}
                          for i, v in enumerate(vectors)],
                 "usage": {"prompt_tokens": b.usage[0],
                           "total_tokens": b.usage[0]}}
        ex.reply = reply
        self._json(h, 200, reply)
        ex.completed = True

    def _fail_common(self, h, ex, behaviour):
        """Hang, Drop, Raw and Fail, the latter in the provider's own
        error shape; True when one of them answered."""
        if isinstance(behaviour, Hang):
            self._watch(h, ex, behaviour.seconds)
            return True
        if isinstance(behaviour, Drop):
            h.close_connection = True
            return True
        if isinstance(behaviour, Raw):
            self._send(h, behaviour.status, behaviour.body,
                       behaviour.content_type, behaviour.headers)
            return True
        if isinstance(behaviour, Fail):
            ex.reply = behaviour.body if behaviour.body is not None else \
                error_body(ex.provider, behaviour.status, behaviour.message)
            self._json(h, behaviour.status, ex.reply, behaviour.headers)
            return True
        return False

    def _sse_head(self, h, b):
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Transfer-Encoding", "chunked")
        for k, v in b.headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.flush()

    def _sse_events(self, h, ex, b, events):
        """Writes (event name or None, JSON-able or str) pairs, paced and
        cut as `b` says, lines ended as the provider ends them (Gemini:
        CRLF) unless `b` says otherwise, then ends the body."""
        nl = b.newline or ("\r\n" if ex.provider == "google" else "\n")
        for i, (name, data) in enumerate(events):
            if b.stop_after is not None and i >= b.stop_after:
                h.close_connection = True
                return
            if i and b.pause:
                self._watch(h, ex, b.pause)
            text = data if isinstance(data, str) else json.dumps(
                data, separators=(",", ":"))
            frame = ("event: %s%s" % (name, nl) if name else "") + \
                "data: %s%s%s" % (text, nl, nl)
            ex.events.append(text)
            ex.sent_at.append(time.monotonic())
            self._write_chunk(h, ex, frame.encode())
        self._write_chunk(h, ex, b"", last=True)
        ex.completed = True

    # -- Anthropic

    def _anthropic(self, h, ex, b):
        req = ex.json
        choice = req.get("tool_choice") or {}
        forced = choice.get("name") if choice.get("type") == "tool" else None
        if forced is None and choice.get("type") == "any":
            forced = (req.get("tools") or [{}])[-1].get("name")
        mid = "msg_" + secrets.token_hex(12)
        prompt, completion = b.usage or (0, 0)
        if forced:
            block = {"type": "tool_use", "id": "toolu_" + secrets.token_hex(
                8), "name": forced, "input": b.answer}
        elif b.tool_call:
            block = {"type": "tool_use", "id": "toolu_" + secrets.token_hex(
                8), "name": b.tool_call[0], "input": b.tool_call[1]}
        else:
            block = {"type": "text", "text": self._texts(ex, b)[0]}
        tool = block["type"] == "tool_use"
        stop = "tool_use" if tool else {
            "stop": "end_turn", "length": "max_tokens",
            "tool_calls": "tool_use"}.get(b.finish_reason, "end_turn")
        if req.get("stream") is not True:
            reply = {"id": mid, "type": "message", "role": "assistant",
                     "model": req.get("model"), "content": [block],
                     "stop_reason": stop, "stop_sequence": None,
                     "usage": {"input_tokens": prompt,
                               "output_tokens": completion}}
            ex.reply = reply
            return self._json(h, 200, reply)
        events = [("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "content": [],
            "model": req.get("model"), "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1}}})]
        start = dict(block, input={}) if tool else dict(block, text="")
        events.append(("content_block_start", {
            "type": "content_block_start", "index": 0,
            "content_block": start}))
        events.append(("ping", {"type": "ping"}))
        text = json.dumps(block["input"]) if tool else block["text"]
        for piece in self._pieces(text, b.pieces):
            delta = {"type": "input_json_delta", "partial_json": piece} \
                if tool else {"type": "text_delta", "text": piece}
            events.append(("content_block_delta", {
                "type": "content_block_delta", "index": 0, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop",
                                              "index": 0}))
        events.append(("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": completion}}))
        events.append(("message_stop", {"type": "message_stop"}))
        self._sse_head(h, b)
        self._sse_events(h, ex, b, events)

    # -- Google

    def _google(self, h, ex, b):
        method = ex.path.rsplit(":", 1)[-1]
        req = ex.json
        prompt, completion = b.usage or (0, 0)
        def text_of(content):
            parts = (content or {}).get("parts") or [{}]
            return parts[0].get("text")
        if method == "embedContent":
            reply = {"embedding": {"values": self._vectors(
                b, [text_of(req.get("content"))])[0]}}
            ex.reply = reply
            return self._json(h, 200, reply)
        if method == "batchEmbedContents":
            texts = [text_of(r.get("content"))
                     for r in req.get("requests") or []]
            reply = {"embeddings": [{"values": v}
                                    for v in self._vectors(b, texts)]}
            ex.reply = reply
            return self._json(h, 200, reply)
        gc = req.get("generationConfig") or {}
        texts = [json.dumps(b.answer)] if gc.get("responseMimeType") == \
            "application/json" else self._texts(ex, b)
        if b.tool_call:
            texts = [None]
        finish = {"length": "MAX_TOKENS"}.get(b.finish_reason, "STOP")

        def candidate(k, parts, finished=True):
            # proto3 JSON leaves out every zero: index 0 too.
            c = {"content": {"role": "model", "parts": parts}}
            if k:
                c["index"] = k
            if finished:
                c["finishReason"] = finish
            return c

        def parts_of(text):
            if b.tool_call:
                return [{"functionCall": {"name": b.tool_call[0],
                                          "args": b.tool_call[1]}}]
            return [{"text": text}]
        usage = {"promptTokenCount": prompt,
                 "candidatesTokenCount": completion,
                 "totalTokenCount": prompt + completion}
        model = ex.path.rsplit("/", 1)[-1].split(":")[0]
        if method == "generateContent":
            reply = {"candidates": [candidate(k, parts_of(t))
                                    for k, t in enumerate(texts)],
                     "usageMetadata": usage, "modelVersion": model}
            ex.reply = reply
            return self._json(h, 200, reply)
        if len(texts) > 1:
            # Each candidate's text in an event of its own, then every
            # one finishes together.
            events = [(None, {"candidates": [candidate(k, parts_of(t),
                                                       False)],
                              "modelVersion": model})
                      for k, t in enumerate(texts)]
            events.append((None, {"candidates": [
                candidate(k, []) for k in range(len(texts))],
                "usageMetadata": usage, "modelVersion": model}))
        else:
            # A function call comes whole.
            pieces = [None] if b.tool_call else self._pieces(texts[0],
                                                             b.pieces)
            events = [(None, {"candidates": [candidate(0, parts_of(p),
                                                       False)],
                              "modelVersion": model}) for p in pieces[:-1]]
            events.append((None, {"candidates": [candidate(
                0, parts_of(pieces[-1]))], "usageMetadata": usage,
                "modelVersion": model}))
        self._sse_head(h, b)
        self._sse_events(h, ex, b, events)

    # -- low level

    def _write_chunk(self, h, ex, data, last=False):
        try:
            if data:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if last:
                h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            ex.closed_at = ex.closed_at or time.monotonic()
            raise _PeerClosed()

    def _watch(self, h, ex, seconds):
        """Waits `seconds`, watching the connection; raises _PeerClosed as
        soon as the peer closes it (or the mock shuts down)."""
        sock = h.connection
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._closing.is_set():
                raise _PeerClosed()
            try:
                # poll(), not select(): thousands of connections may be
                # open, with descriptors past select()'s 1024.
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                readable = poller.poll(min(left, 0.02) * 1000)
                gone = bool(readable) and not sock.recv(1, socket.MSG_PEEK)
            except OSError:
                gone = True
            if gone:
                ex.closed_at = ex.closed_at or time.monotonic()
                raise _PeerClosed()
            if readable:
                time.sleep(min(left, 0.02))

    def _json(self, h, status, obj, headers=None):
        return self._send(h, status, json.dumps(obj).encode(),
                          "application/json", headers)

    @staticmethod
    def _send(h, status, body, content_type, headers=None):
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    def close(self):
        self._closing.set()
        self.release()
        self.server.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "MockLLM(%s)" % self.url


# ---------------------------------------------------------------------------
# A streaming client

class SSEEvent:
    def __init__(self, data, event, at):
        self.data = data
        self.event = event
        self.at = at            # time.monotonic() when it was complete

    @property
    def json(self):
        return json.loads(self.data)

    def __repr__(self):
        return "SSEEvent(%r)" % self.data[:200]


class SSEReader:
    """POSTs `body` to `url` and reads the answer as it arrives.

    status, headers (lower-case names) and, when the answer is not an
    event stream, body and json are set once the constructor returns;
    events() then yields SSEEvent objects as each one completes (framing as
    in the SSE spec: blank-line separated, `data:` lines joined, comments
    skipped, CR, LF or CRLF line ends)."""

    def __init__(self, url, body, headers=None, timeout=15):
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port,
                                               timeout=timeout)
        hdrs = {"Content-Type": "application/json",
                "Accept": "text/event-stream"}
        hdrs.update(headers or {})
        self.sent_at = time.monotonic()
        self.conn.request("POST", parts.path, json.dumps(body).encode(),
                          hdrs)
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {}
        for name, value in self.resp.getheaders():
            name = name.lower()
            self.headers[name] = (self.headers[name] + ", " + value
                                  if name in self.headers else value)
        self.body = None
        self.json = None
        self.comments = []
        self.ended_at = None
        if not self.is_stream:
            self.body = self.resp.read()
            self.ended_at = time.monotonic()
            try:
                self.json = json.loads(self.body)
            except ValueError:
                pass
            self.close()

    @property
    def is_stream(self):
        ctype = self.headers.get("content-type", "")
        return ctype.split(";")[0].strip() == "text/event-stream"

    def _lines(self):
        pending = b""
        while True:
            line = self.resp.readline()
            if not line:
                if pending:
                    yield pending
                return
            # Split on CR, LF or CRLF without waiting for more data.
            data = pending + line
            pending = b""
            while data:
                cr, lf = data.find(b"\r"), data.find(b"\n")
                ends = [i for i in (cr, lf) if i >= 0]
                if not ends:
                    pending = data
                    break
                i = min(ends)
                yield data[:i]
                if data[i:i + 2] == b"\r\n":
                    i += 1
                data = data[i + 1:]

    def events(self):
        data, event = [], None
        for raw in self._lines():
            line = raw.decode("utf-8")
            if line == "":
                if data:
                    yield SSEEvent("\n".join(data), event, time.monotonic())
                data, event = [], None
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
        if data:
            yield SSEEvent("\n".join(data), event, time.monotonic())
        self.ended_at = time.monotonic()

    def read_all(self):
        return list(self.events())

    def abort(self):
        """Closes the connection at once, as a client that goes away."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.resp.close()
        finally:
            self.conn.close()
            try:
                self.sock.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------
# An application behind keygate: EchoBackend

def _stack():
    """keygate_stack, which imports this module: imported when first
    needed, for its registry of what to close and its bounded waits."""
    import keygate_stack
    return keygate_stack



class EchoBackend:
    """A loopback HTTP application that answers every GET with the
    X-Keygate-* headers it was sent, as KEYGATE_KEY_ID=... lines (and the
    credential headers, should any reach it, as AUTHORIZATION=... and
    X_API_KEY=...)."""

    def __init__(self):
        self.server = LoopbackServer(self._echo, "echo-backend",
                                     protocol="HTTP/1.0")
        self.port = self.server.port
        _stack()._register(self)

    @staticmethod
    def _echo(h):
        if h.command != "GET":
            h.send_error(501, "Unsupported method (%r)" % h.command)
            return
        lines = []
        for name, value in h.headers.items():
            low = name.lower()
            if low.startswith("x-keygate-"):
                name = "KEYGATE_" + low[len("x-keygate-"):]
            elif low not in ("authorization", "x-api-key"):
                continue
            lines.append("%s=%s" % (name.upper().replace("-", "_"), value))
        body = ("\n".join(sorted(lines)) + "\n").encode()
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def close(self):
        _stack()._unregister(self)
        self.server.close()


# ---------------------------------------------------------------------------
# Many calls at once

class BulkOpenAI:
    """OpenAI's chat completions for thousands of calls at once: one
    asyncio process of its own (MockLLM's thread per call would spend the
    tests' CPU), every call answered alike, with MockLLM's replies
    (openai_completion, openai_chunks).  A streamed call gets a role
    chunk, `pieces` chunks of `content` `pause` seconds apart, the finish
    chunk, the usage chunk when asked for, then [DONE]; a whole one waits
    pieces x pause seconds.  With `together`, no call goes past its first
    chunk (or, whole, starts its wait) before that many have arrived, or
    60 s passed: however slowly they come, they are then in flight at
    once.  stats() counts the calls received, completed (everything
    written) and cut (the peer left first)."""

    def __init__(self, content, pieces=8, pause=1.0, usage=(9, 8),
                 together=0):
        import subprocess
        import sys
        spec = json.dumps({"content": content, "pieces": pieces,
                           "pause": pause, "usage": list(usage),
                           "together": together})
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "bulk", spec],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.port = int(self.proc.stdout.readline())

    def config(self):
        return {"openai_base_url": "http://127.0.0.1:%d/v1" % self.port}

    def stats(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", "/stats")
            return json.loads(c.getresponse().read())
        finally:
            c.close()

    def wait_for(self, received, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.stats()
            if st["received"] >= received:
                return st
            time.sleep(0.1)
        raise AssertionError("the provider received %d call(s) of %d" % (
            self.stats()["received"], received))

    def close(self):
        self.proc.kill()
        self.proc.wait()


def _bulk_main(spec):
    import asyncio
    spec = json.loads(spec)
    stats = {"received": 0, "completed": 0, "cut": 0, "arrivals": []}
    text = spec["content"]
    n = spec["pieces"]

    def split(text):
        """Exactly n pieces, so that a stream takes n pauses."""
        return [text[i * len(text) // n:(i + 1) * len(text) // n]
                for i in range(n)]

    def event(obj):
        return ("data: %s\n\n" % json.dumps(obj)).encode()

    everyone = None

    async def together():
        try:
            await asyncio.wait_for(everyone.wait(), 60)
        except asyncio.TimeoutError:
            pass

    async def answer(reader, writer):
        line = await reader.readline()
        length = 0
        while True:
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        if line.startswith(b"GET /stats"):
            out = json.dumps(stats).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json"
                         b"\r\nConnection: close\r\nContent-Length: %d\r\n"
                         b"\r\n%s" % (len(out), out))
            await writer.drain()
            writer.close()
            return
        stats["received"] += 1
        stats["arrivals"].append(time.monotonic())
        if stats["received"] >= spec["together"]:
            everyone.set()
        req = json.loads(body or b"{}")
        model, usage = req.get("model", ""), tuple(spec["usage"])
        try:
            if not req.get("stream"):
                await together()
                await asyncio.sleep(n * spec["pause"])
                out = json.dumps(openai_completion(model, [text],
                                                   usage)).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: "
                             b"application/json\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(out),
                                                                out))
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: "
                             b"text/event-stream\r\nConnection: close\r\n\r\n")
                chunks = openai_chunks(
                    model, [text], split, usage, with_usage=bool(
                        (req.get("stream_options") or {}).get(
                            "include_usage")))
                # The role chunk, each piece after a pause, the rest.
                writer.write(event(chunks[0]))
                await writer.drain()
                await together()
                for chunk in chunks[1:1 + n]:
                    await writer.drain()
                    await asyncio.sleep(spec["pause"])
                    writer.write(event(chunk))
                for chunk in chunks[1 + n:]:
                    writer.write(event(chunk))
                writer.write(b"data: [DONE]\n\n")
            await writer.drain()
            stats["completed"] += 1
        except (ConnectionError, OSError):
            stats["cut"] += 1
        finally:
            writer.close()

    async def main():
        nonlocal everyone
        everyone = asyncio.Event()
        server = await asyncio.start_server(answer, "127.0.0.1", 0,
                                            backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "bulk":
        _bulk_main(sys.argv[2])
