"""A loopback stand-in for the OpenAI-format chat providers, for the
gateway's end-to-end tests.

    LoopbackServer  the HTTP server every mock runs on
    MockProvider  the four providers' key validation, and whatever routes a
                  test adds, each answering a MockRequest with a MockReply
    EchoBackend   a loopback application that prints the X-Keygate-*
                  headers it gets
    MockLLM       an HTTP server answering POST <base>/chat/completions the
                  way OpenAI and OpenRouter do, recording every exchange
    Complete      a normal answer (JSON, or Server-Sent Events when the
                  request asks for a stream), optionally paced, cut short or
                  stalled part-way
    Fail          an error status with a provider-shaped body
    Hang          no answer at all until the client gives up
    Drop          the connection closed without an answer
    Redirect      a 3xx pointing elsewhere on the mock
    Raw           any status and body, e.g. something that is not JSON
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
Anything else is recorded and answered 404, so a test notices if one is
made.  The OpenRouter stand-in knows only real OpenRouter model ids: those
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

import collections
import http.client
import http.server
import json
import os
import re
import secrets
import select
import socket
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
ANTHROPIC_VERSION = "2023-06-01"

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
    peer closes (or `hang` seconds).  `usage=None` sends no usage at all,
    asked for or not, as some OpenAI-compatible servers do.  `comments` sends OpenRouter's
    keep-alive comments before the first chunk and between chunks.
    `newline` ends every line ("\r\n" is as valid as "\n"); `split`
    writes each event in two pieces, 50 ms apart, cut in the middle of its
    JSON; `multiline` sends each JSON chunk on two `data:` lines (after its
    first comma), which a reader joins with a newline.  A stream with
    "n" in the request streams that many choices.  `wait` seconds pass
    before a whole (not streamed) answer, watching the connection.

    A request that asks for a JSON answer (OpenAI's response_format,
    Anthropic's forced tool, Gemini's responseMimeType) is answered with
    `answer` (a JSON-able object) in the form the provider would give it:
    content text, a tool_use input, a JSON text part.  An embeddings
    request gets one vector of `dims` numbers per input."""

    def __init__(self, content="Hello from the mock provider.", pieces=4,
                 pause=0.0, stop_after=None, hang_after=None, hang=30.0,
                 comments=False, usage=(11, 7), finish_reason="stop",
                 headers=None, newline="\n", split=False, multiline=False,
                 wait=0.0, answer=None, dims=3):
        self.content = content
        self.pieces = pieces
        self.pause = pause
        self.stop_after = stop_after
        self.hang_after = hang_after
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
    def __init__(self, status, body, content_type="application/json",
                 headers=None):
        self.status = status
        self.body = body if isinstance(body, bytes) else body.encode()
        self.content_type = content_type
        self.headers = dict(headers or {})


# ---------------------------------------------------------------------------
# What the mock saw

class Exchange:
    """One request to the mock and what became of it."""

    def __init__(self, method, path, raw_headers, body, received_at):
        self.method = method
        self.path = path
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
    """The mock providers.  Each chat provider answers with its behaviour
    (set with behave(), default Complete()) for a key in accept()ed keys,
    and with a 401 in its own error shape otherwise."""

    def __init__(self):
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.exchanges = []
        self.accepted = {p: set() for p in ALL_BASES}
        self.behaviour = {p: Complete() for p in ALL_BASES}
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

    def reset(self):
        """No exchange recorded, no key accepted, every provider answering
        Complete()."""
        with self._lock:
            self.exchanges = []
            for p in ALL_BASES:
                self.accepted[p] = set()
                self.behaviour[p] = Complete()

    # -- what happened

    def seen(self, provider=None):
        """Recorded exchanges (under `provider`'s prefix), oldest first."""
        with self._lock:
            ex = list(self.exchanges)
        if provider is None:
            return ex
        return [e for e in ex if e.path.startswith(ALL_BASES[provider] + "/")
                or e.path == ALL_BASES[provider]]

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

    def wait_for(self, count=1, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ex = self.seen()
            if len(ex) >= count:
                return ex
            time.sleep(0.02)
        raise AssertionError("the mock saw %d request(s), expected %d" % (
            len(self.seen()), count))

    # -- serving

    def _provider_of(self, path):
        for p, base in ALL_BASES.items():
            if path == base or path.startswith(base + "/"):
                return p
        return None

    def _serve(self, h):
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(h.path).path
        ex = Exchange(h.command, path, list(h.headers.items()), body,
                      time.monotonic())
        ex.peer = h.client_address
        ex.provider = self._provider_of(path)
        with self._lock:
            self.exchanges.append(ex)
            behaviour = self.behaviour.get(ex.provider)
            accepted = set(self.accepted.get(ex.provider, ()))
        try:
            self._answer(h, ex, behaviour, accepted)
        except _PeerClosed:
            h.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            ex.closed_at = ex.closed_at or time.monotonic()
            h.close_connection = True
        finally:
            ex.finished_at = time.monotonic()
            ex.done.set()

    def _answer(self, h, ex, behaviour, accepted):
        p = ex.provider
        if p == "anthropic" and h.command == "POST" and \
                ex.path == self.chat_path(p):
            return self._anthropic(h, ex, behaviour, accepted)
        if p == "google" and h.command == "POST" and \
                ex.path.startswith(ALL_BASES[p] + "/v1beta/models/"):
            return self._google(h, ex, behaviour, accepted)
        if (p not in CHAT_PROVIDERS or h.command != "POST" or
                ex.path not in (self.chat_path(p),
                                self.embeddings_path(p))):
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
        key = ex.bearer
        if key not in accepted:
            if p == "openrouter":
                return self._json(h, 401, openrouter_error(
                    "No auth credentials found", 401))
            return self._json(h, 401, openai_error(
                "Incorrect API key provided: %s. You can find your API key "
                "at https://platform.openai.com/account/api-keys."
                % mask(key or ""), code="invalid_api_key"))
        if ex.json is None or not isinstance(ex.json, dict):
            return self._json(h, 400, openai_error(
                "We could not parse the JSON body of your request."))
        if p == "openrouter" and ex.json.get("model") not in \
                OPENROUTER_MODELS:
            ex.reply = openrouter_error(
                "%s is not a valid model ID" % ex.json.get("model"), 400)
            return self._json(h, 400, ex.reply)
        if isinstance(behaviour, Hang):
            self._watch(h, ex, behaviour.seconds)
            return
        if isinstance(behaviour, Drop):
            h.close_connection = True
            return
        if isinstance(behaviour, Raw):
            return self._send(h, behaviour.status, behaviour.body,
                              behaviour.content_type, behaviour.headers)
        if isinstance(behaviour, Fail):
            body = behaviour.body
            if body is None:
                if p == "openrouter":
                    body = openrouter_error(behaviour.message,
                                            behaviour.status)
                else:
                    body = openai_error(
                        behaviour.message,
                        "server_error" if behaviour.status >= 500 else
                        ("requests" if behaviour.status == 429 else
                         "invalid_request_error"),
                        code={429: "rate_limit_exceeded",
                              404: "model_not_found"}.get(behaviour.status))
            ex.reply = body
            return self._json(h, behaviour.status, body, behaviour.headers)
        if ex.path == self.embeddings_path(p):
            return self._embeddings(h, ex, behaviour)
        if ex.json.get("stream") is True:
            return self._stream(h, ex, behaviour)
        return self._complete(h, ex, behaviour)

    # -- replies

    @staticmethod
    def _ids():
        return "chatcmpl-" + secrets.token_hex(12), int(time.time())

    def _usage(self, b):
        prompt, completion = b.usage
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def _complete(self, h, ex, b):
        if b.wait:
            self._watch(h, ex, b.wait)
        cid, created = self._ids()
        reply = {
            "id": cid, "object": "chat.completion", "created": created,
            "model": ex.json.get("model"),
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0,
                         "message": {"role": "assistant",
                                     "content": self._text(ex, b),
                                     "refusal": None},
                         "logprobs": None,
                         "finish_reason": b.finish_reason}],
        }
        if b.usage is not None:
            reply["usage"] = self._usage(b)
        if ex.provider == "openrouter":
            reply["provider"] = "MockCloud"
        ex.reply = reply
        headers = dict(b.headers)
        headers.setdefault("x-request-id", "req_" + secrets.token_hex(8))
        self._json(h, 200, reply, headers)
        ex.completed = True

    def _stream(self, h, ex, b):
        cid, created = self._ids()
        model = ex.json.get("model")
        opts = ex.json.get("stream_options")
        with_usage = b.usage is not None and (
            ex.provider == "openrouter" or (
                isinstance(opts, dict) and opts.get("include_usage") is True))

        def chunk(delta, finish=None, choices=True, index=0):
            c = {"id": cid, "object": "chat.completion.chunk",
                 "created": created, "model": model,
                 "system_fingerprint": "fp_mock",
                 "choices": [{"index": index, "delta": delta,
                              "logprobs": None, "finish_reason": finish}]
                 if choices else []}
            if ex.provider == "openrouter":
                c["provider"] = "MockCloud"
            if with_usage:
                c["usage"] = None
            return c

        # With n choices, each piece goes out once per choice, in turn,
        # and every choice finishes at the end.
        n = ex.json.get("n") if isinstance(ex.json.get("n"), int) else 1
        parts = self._pieces(self._text(ex, b), b.pieces)
        events = [chunk({"role": "assistant", "content": ""}, index=k)
                  for k in range(n)]
        events += [chunk({"content": part}, index=k) for part in parts
                   for k in range(n)]
        events += [chunk({}, b.finish_reason, index=k) for k in range(n)]
        if with_usage:
            u = chunk(None, choices=False)
            u["usage"] = self._usage(b)
            events.append(u)
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
        nl = b.newline.encode()
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
        self._write_chunk(h, ex, b"", last=True)
        ex.completed = True

    @staticmethod
    def _text(ex, b):
        """The content of a chat answer: `answer` as JSON text when the
        OpenAI-format request asked for JSON."""
        rf = ex.json.get("response_format") if ex.json else None
        if isinstance(rf, dict) and rf.get("type") in ("json_object",
                                                       "json_schema"):
            return json.dumps(b.answer)
        return b.content

    @staticmethod
    def _pieces(text, n):
        step = -(-len(text) // max(1, n)) or 1
        return [text[i:i + step] for i in range(0, len(text), step)] or [""]

    def _vectors(self, b, count):
        return [[round(0.1 * (i + 1) + 0.01 * k, 4) for k in range(b.dims)]
                for i in range(count)]

    def _embeddings(self, h, ex, b):
        """OpenAI's embeddings: one vector per input (a string or a list
        of them), usage prompt_tokens from `usage`."""
        inp = ex.json.get("input")
        count = len(inp) if isinstance(inp, list) else 1
        reply = {"object": "list", "model": ex.json.get("model"),
                 "data": [{"object": "embedding", "index": i,
                           "embedding": v}
                          for i, v in enumerate(self._vectors(b, count))],
                 "usage": {"prompt_tokens": b.usage[0],
                           "total_tokens": b.usage[0]}}
        ex.reply = reply
        self._json(h, 200, reply)
        ex.completed = True

    def _fail_common(self, h, ex, behaviour, body):
        """Hang, Drop, Raw and Fail for the providers of their own shape;
        True when one of them answered."""
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
            ex.reply = behaviour.body if behaviour.body is not None else body
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
        """Writes (event name or None, JSON-able) pairs, paced and cut as
        `b` says, then ends the body."""
        for i, (name, data) in enumerate(events):
            if b.stop_after is not None and i >= b.stop_after:
                h.close_connection = True
                return
            if i and b.pause:
                self._watch(h, ex, b.pause)
            text = json.dumps(data, separators=(",", ":"))
            frame = ("event: %s\n" % name if name else "") + \
                "data: %s\n\n" % text
            ex.events.append(text)
            ex.sent_at.append(time.monotonic())
            self._write_chunk(h, ex, frame.encode())
        self._write_chunk(h, ex, b"", last=True)
        ex.completed = True

    # -- Anthropic

    def _anthropic(self, h, ex, b, accepted):
        key = ex.headers.get("x-api-key")
        if key not in accepted:
            return self._json(h, 401, {"type": "error", "error": {
                "type": "authentication_error",
                "message": "invalid x-api-key"}})
        if ex.headers.get("anthropic-version") != ANTHROPIC_VERSION:
            return self._json(h, 400, {"type": "error", "error": {
                "type": "invalid_request_error",
                "message": "anthropic-version: header is required"}})
        req = ex.json
        if not isinstance(req, dict) or not isinstance(
                req.get("max_tokens"), int) or not req.get("messages"):
            return self._json(h, 400, {"type": "error", "error": {
                "type": "invalid_request_error",
                "message": "max_tokens: Field required"}})
        if self._fail_common(h, ex, b, {"type": "error", "error": {
                "type": "overloaded_error" if getattr(b, "status", 0) == 529
                else "api_error", "message": b.message
                if isinstance(b, Fail) else ""}}):
            return
        choice = req.get("tool_choice") or {}
        forced = choice.get("name") if choice.get("type") == "tool" else None
        if forced is None and choice.get("type") == "any":
            forced = (req.get("tools") or [{}])[-1].get("name")
        mid = "msg_" + secrets.token_hex(12)
        prompt, completion = b.usage or (0, 0)
        stop = "tool_use" if forced else {
            "stop": "end_turn", "length": "max_tokens",
            "tool_calls": "tool_use"}.get(b.finish_reason, "end_turn")
        if forced:
            block = {"type": "tool_use", "id": "toolu_" + secrets.token_hex(
                8), "name": forced, "input": b.answer}
        else:
            block = {"type": "text", "text": b.content}
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
        start = dict(block, input={}) if forced else dict(block, text="")
        events.append(("content_block_start", {
            "type": "content_block_start", "index": 0,
            "content_block": start}))
        events.append(("ping", {"type": "ping"}))
        text = json.dumps(b.answer) if forced else b.content
        for piece in self._pieces(text, b.pieces):
            delta = {"type": "input_json_delta", "partial_json": piece} \
                if forced else {"type": "text_delta", "text": piece}
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

    def _google(self, h, ex, b, accepted):
        key = ex.headers.get("x-goog-api-key")
        if key not in accepted:
            return self._json(h, 400, {"error": {
                "code": 400, "status": "INVALID_ARGUMENT",
                "message": "API key not valid. Please pass a valid API "
                           "key."}})
        method = ex.path.rsplit(":", 1)[-1]
        req = ex.json if isinstance(ex.json, dict) else {}
        if self._fail_common(h, ex, b, {"error": {
                "code": getattr(b, "status", 500),
                "message": getattr(b, "message", ""),
                "status": "UNAVAILABLE"}}):
            return
        prompt, completion = b.usage or (0, 0)
        if method == "batchEmbedContents":
            reqs = req.get("requests") or []
            reply = {"embeddings": [{"values": v} for v in self._vectors(
                b, len(reqs))]}
            ex.reply = reply
            return self._json(h, 200, reply)
        if method not in ("generateContent", "streamGenerateContent"):
            return self._json(h, 404, {"error": {
                "code": 404, "status": "NOT_FOUND",
                "message": "no such method"}})
        gc = req.get("generationConfig") or {}
        text = json.dumps(b.answer) if gc.get("responseMimeType") == \
            "application/json" else b.content
        finish = {"length": "MAX_TOKENS"}.get(b.finish_reason, "STOP")
        usage = {"promptTokenCount": prompt,
                 "candidatesTokenCount": completion,
                 "totalTokenCount": prompt + completion}
        model = ex.path.rsplit("/", 1)[-1].split(":")[0]
        if method == "generateContent":
            reply = {"candidates": [{"content": {"role": "model", "parts": [
                {"text": text}]}, "finishReason": finish}],
                "usageMetadata": usage, "modelVersion": model}
            ex.reply = reply
            return self._json(h, 200, reply)
        pieces = self._pieces(text, b.pieces)
        events = [(None, {"candidates": [{"content": {
            "role": "model", "parts": [{"text": p}]}}],
            "modelVersion": model}) for p in pieces[:-1]]
        events.append((None, {"candidates": [{"content": {
            "role": "model", "parts": [{"text": pieces[-1]}]},
            "finishReason": finish}], "usageMetadata": usage,
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
# The providers as routes: MockProvider, and EchoBackend

def _stack():
    """keygate_stack, which imports this module: imported when first
    needed, for its registry of what to close and its bounded waits."""
    import keygate_stack
    return keygate_stack



class MockRequest(collections.namedtuple(
        "MockRequest", "method path query headers body time")):
    """One request a MockProvider received: `query` parsed, `headers`
    with lower-case names, `body` the bytes it carried."""

    __slots__ = ()

    @property
    def json(self):
        """The body as JSON (None when empty)."""
        return json.loads(self.body or b"null")


class MockReply:
    """What a mock route answers.  `body` is bytes, a str, a JSON-able
    value, or an iterable of byte chunks (sent chunked, flushed one by one,
    `delay` seconds apart, e.g. for Server-Sent Events)."""

    def __init__(self, status=200, body=b"", headers=None, delay=0.0):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.delay = delay


# Where each provider's API lives below its base URL; keygate's
# <provider>_base_url points at MockProvider.url (plus any prefix).
PROVIDER_PATHS = {
    "openai": {"chat": "/v1/chat/completions", "models": "/v1/models"},
    "anthropic": {"chat": "/v1/messages", "models": "/v1/models"},
    "google": {"chat": "/v1beta/models/",       # MODEL:generateContent
               "models": "/v1beta/models"},
    "openrouter": {"chat": "/api/v1/chat/completions",
                   "models": "/api/v1/models"},
}


class MockProvider:
    """A loopback HTTP server standing in for the LLM providers.

    Every request is recorded.  Routes are added with
    route(method, path_prefix, handler); the handler gets a MockRequest and
    returns a MockReply, a (status, body) tuple, or None to close the
    connection without answering.  The longest matching prefix wins;
    without a match the answer is a 404 in JSON.

    One mock serves all four providers, each below its own path prefix
    (PROVIDERS); config() gives the `<provider>_base_url` settings that
    point keygate at it.  Out of the box each provider answers its real
    key-validation request the way the real one does: 200 for a key in
    accepted[provider] (see accept()), otherwise that provider's own
    rejection (REJECTIONS); the OpenAI-compatible ones (OPENAI_COMPATIBLE)
    also answer a chat completion for an accepted key.  Anthropic's and
    Google's chat endpoints are left to route().  A provider can be told to misbehave
    ("hang": answer only after HANG_SECONDS, longer than any client timeout
    a test configures; "error": a 5xx; "drop": close the connection without
    a reply; "reply": a given MockReply), or to hold every answer until the
    test releases it (hold()).
    Routes added later for other endpoints (chat completions, say) get the
    same switches by answering through provider_reply()."""

    # Per provider: `prefix`, the first path segment that is the
    # provider's own; `base`, what <provider>_base_url points at below the
    # mock's URL (the real services' base URLs end the same way); and
    # `validate`, the path keygate requests to check a key.
    PROVIDERS = collections.OrderedDict([
        ("openai", {"prefix": "/openai/", "base": "/openai/v1",
                    "validate": "/openai/v1/models",
                    "chat": "/openai/v1/chat/completions"}),
        ("anthropic", {"prefix": "/anthropic/", "base": "/anthropic",
                       "validate": "/anthropic/v1/models",
                       "chat": "/anthropic/v1/messages"}),
        ("google", {"prefix": "/google/", "base": "/google",
                    "validate": "/google/v1beta/models",
                    # + MODEL:generateContent or :streamGenerateContent
                    "chat": "/google/v1beta/models/"}),
        ("openrouter", {"prefix": "/openrouter/",
                        "base": "/openrouter/api/v1",
                        "validate": "/openrouter/api/v1/key",
                        "chat": "/openrouter/api/v1/chat/completions"}),
    ])
    # Providers whose chat endpoint speaks the OpenAI format; the mock
    # answers their `chat` path out of the box (see _openai_chat_handler).
    OPENAI_COMPATIBLE = ("openai", "openrouter")
    ANTHROPIC_VERSION = "2023-06-01"

    # What each provider answers to a key it accepts ...
    ACCEPTED = {
        "openai": {"object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model"}]},
        "anthropic": {"data": [], "has_more": False, "first_id": None,
                      "last_id": None},
        "google": {"models": []},
        "openrouter": {"data": {"label": "sk-or-v1-abc...", "limit": None,
                                "usage": 0}},
    }
    # ... to one it does not (status, body; `message` is the reason a
    # client is shown) ...
    REJECTIONS = {
        "openai": (401, {"error": {
            "message": "Incorrect API key provided: sk-...xyz.",
            "type": "invalid_request_error", "param": None,
            "code": "invalid_api_key"}}),
        "anthropic": (401, {"type": "error", "error": {
            "type": "authentication_error", "message": "invalid x-api-key"}}),
        "google": (400, {"error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                         "reason": "API_KEY_INVALID"}]}}),
        "openrouter": (401, {"error": {"message": "No auth credentials found",
                                       "code": 401}}),
    }
    REJECTION_MESSAGES = {
        "openai": "Incorrect API key provided: sk-...xyz.",
        "anthropic": "invalid x-api-key",
        "google": "API key not valid. Please pass a valid API key.",
        "openrouter": "No auth credentials found",
    }
    # ... and when told to fail with a 5xx.
    SERVER_ERRORS = {
        "openai": {"error": {
            "message": "The server had an error while processing your "
                       "request. Sorry about that!",
            "type": "server_error", "param": None, "code": None}},
        "anthropic": {"type": "error", "error": {
            "type": "api_error", "message": "Internal server error"}},
        "google": {"error": {"code": 500,
                             "message": "An internal error has occurred.",
                             "status": "INTERNAL"}},
        "openrouter": {"error": {"message": "Internal Server Error",
                                 "code": 500}},
    }
    HANG_SECONDS = 60
    HOLD_SECONDS = 30

    def __init__(self):
        self.requests = []
        self._routes = []
        self._lock = threading.Lock()
        # Per provider: the keys it accepts, and what it is told to do
        # instead of answering (None, or a (mode, status, threading.Event)).
        self.accepted = {p: set() for p in self.PROVIDERS}
        self._faults = {p: None for p in self.PROVIDERS}
        self._holds = {p: None for p in self.PROVIDERS}
        self._closing = threading.Event()
        self.server = LoopbackServer(self._serve, "mock-provider")
        self.port = self.server.port
        for provider, where in self.PROVIDERS.items():
            self.route("GET", where["validate"],
                       self._validation_handler(provider))
        for provider in self.OPENAI_COMPATIBLE:
            self.route("POST", self.PROVIDERS[provider]["chat"],
                       self._openai_chat_handler(provider))
        _stack()._register(self)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def route(self, method, path_prefix, handler):
        """Answers `method` requests whose path starts with `path_prefix`."""
        with self._lock:
            self._routes.append((method.upper(), path_prefix, handler))

    def requests_to(self, path_prefix):
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def reset(self):
        with self._lock:
            self.requests.clear()

    # -- the providers

    def base_url(self, provider):
        """What keygate's <provider>_base_url should be."""
        return self.url + self.PROVIDERS[provider]["base"]

    def config(self):
        """The four <provider>_base_url settings, for Stack(**config)."""
        return {"%s_base_url" % p: self.base_url(p) for p in self.PROVIDERS}

    def provider_of(self, path):
        """The provider whose prefix `path` is under, or None."""
        for provider, where in self.PROVIDERS.items():
            if path.startswith(where["prefix"]):
                return provider
        return None

    def requests_for(self, provider):
        """Every recorded request under `provider`'s prefix, oldest first."""
        return self.requests_to(self.PROVIDERS[provider]["prefix"])

    def wait_for_requests(self, provider, count=1, timeout=10):
        """Waits until `provider` has received at least `count` requests."""
        return _stack().wait_until(
            lambda: len(self.requests_for(provider)) >= count, timeout,
            what="%d request(s) to the mock %s" % (count, provider))

    def accept(self, provider, *keys):
        """Makes `provider` accept `keys` (in addition to earlier ones)."""
        with self._lock:
            self.accepted[provider].update(keys)

    def reject(self, provider, *keys):
        """Makes `provider` reject `keys` again; every key without any."""
        with self._lock:
            if keys:
                self.accepted[provider].difference_update(keys)
            else:
                self.accepted[provider].clear()

    def is_accepted(self, provider, key):
        with self._lock:
            return key in self.accepted[provider]

    def misbehave(self, provider, mode, status=500, reply=None):
        """From now on `provider` answers every request by `mode`: "hang"
        (answers only after HANG_SECONDS, or when behave() or close() is
        called), "error" (`status` with the provider's 5xx body), "drop"
        (closes the connection without a reply) or "reply" (always
        `reply`, a MockReply: a redirect, say)."""
        if mode not in ("hang", "error", "drop", "reply"):
            raise ValueError("unknown mode %r" % mode)
        with self._lock:
            old = self._faults[provider]
            self._faults[provider] = (
                mode, reply if mode == "reply" else status, threading.Event())
        if old:
            old[2].set()

    def hold(self, provider):
        """Makes `provider` hold every answer until release() (at most
        HOLD_SECONDS).  Returns nothing; see wait_for_requests()."""
        with self._lock:
            if self._holds[provider] is None:
                self._holds[provider] = threading.Event()

    def release(self, provider=None):
        """Lets held answers of `provider` (of every provider) go."""
        for p in [provider] if provider else list(self.PROVIDERS):
            with self._lock:
                gate, self._holds[p] = self._holds[p], None
            if gate:
                gate.set()

    def behave(self, provider=None):
        """Ends misbehaving and holding for `provider` (or all of them);
        anything hanging is answered at once."""
        for p in [provider] if provider else list(self.PROVIDERS):
            with self._lock:
                fault, self._faults[p] = self._faults[p], None
            if fault:
                fault[2].set()
            self.release(p)

    def restore(self):
        """Back to how the mock started: every provider well-behaved and
        accepting no key, and no request recorded."""
        self.behave()
        with self._lock:
            for keys in self.accepted.values():
                keys.clear()
            self.requests.clear()

    @staticmethod
    def presented_key(provider, req):
        """The key a request presents the way `provider` expects it (the
        Authorization bearer, x-api-key or x-goog-api-key header), or None."""
        if provider in ("openai", "openrouter"):
            value = req.headers.get("authorization", "")
            return value[len("Bearer "):] if value.startswith(
                "Bearer ") else None
        if provider == "anthropic":
            return req.headers.get("x-api-key")
        if provider == "google":
            return req.headers.get("x-goog-api-key")
        raise ValueError(provider)

    def provider_reply(self, provider, req, answer):
        """Applies `provider`'s current hold and fault, then answers with
        answer(req) if it is behaving.  For route handlers."""
        with self._lock:
            gate = self._holds[provider]
        if gate is not None:
            gate.wait(self.HOLD_SECONDS)
        with self._lock:
            fault = self._faults[provider]
        if fault is not None:
            mode, value, wake = fault     # value: a status or a reply
            if mode == "drop":
                return None
            if mode == "reply":
                return value
            if mode == "hang":
                wake.wait(self.HANG_SECONDS)
                if self._closing.is_set():
                    return None
                value = 500
            return MockReply(value, self.SERVER_ERRORS[provider])
        return answer(req)

    def _validation_handler(self, provider):
        path = self.PROVIDERS[provider]["validate"]

        def answer(req):
            if req.path.rstrip("/") != path:
                return MockReply(404, {"error": {
                    "message": "no mock route for %s %s" % (req.method,
                                                            req.path),
                    "code": 404}})
            if provider == "anthropic" and req.headers.get(
                    "anthropic-version") != self.ANTHROPIC_VERSION:
                return MockReply(400, {"type": "error", "error": {
                    "type": "invalid_request_error",
                    "message": "anthropic-version: header is required"}})
            key = self.presented_key(provider, req)
            if key is not None and self.is_accepted(provider, key):
                return MockReply(200, self.ACCEPTED[provider])
            return MockReply(*self.REJECTIONS[provider])

        return lambda req: self.provider_reply(provider, req, answer)

    def chat_requests(self, provider):
        """The chat requests `provider` has received, oldest first."""
        return self.requests_to(self.PROVIDERS[provider]["chat"])

    def _openai_chat_handler(self, provider):
        """An OpenAI-format chat completion for an accepted key ("ok",
        streamed when the request asks for it); else the rejection."""
        def answer(req):
            key = self.presented_key(provider, req)
            if key is None or not self.is_accepted(provider, key):
                return MockReply(*self.REJECTIONS[provider])
            try:
                body = json.loads(req.body or b"{}")
            except ValueError:
                body = {}
            model = body.get("model") if isinstance(body, dict) else None
            model = model if isinstance(model, str) else "mock-model"
            usage = {"prompt_tokens": 5, "completion_tokens": 1,
                     "total_tokens": 6}
            base = {"id": "chatcmpl-mock", "created": int(time.time()),
                    "model": model}
            if isinstance(body, dict) and body.get("stream") is True:
                chunks = [
                    dict(base, object="chat.completion.chunk", choices=[{
                        "index": 0, "delta": {"role": "assistant",
                                              "content": ""},
                        "finish_reason": None}]),
                    dict(base, object="chat.completion.chunk", choices=[{
                        "index": 0, "delta": {"content": "ok"},
                        "finish_reason": None}]),
                    dict(base, object="chat.completion.chunk", choices=[{
                        "index": 0, "delta": {}, "finish_reason": "stop"}],
                         usage=usage),
                ]
                events = ["data: %s\n\n" % json.dumps(c) for c in chunks]
                events.append("data: [DONE]\n\n")
                # A tuple, not a list: sent chunk by chunk, not as JSON.
                return MockReply(200, tuple(events), {
                    "Content-Type": "text/event-stream"})
            return MockReply(200, dict(
                base, object="chat.completion", choices=[{
                    "index": 0, "message": {"role": "assistant",
                                            "content": "ok"},
                    "finish_reason": "stop"}], usage=usage))

        return lambda req: self.provider_reply(provider, req, answer)

    # -- serving

    def _find(self, method, path):
        best = None
        with self._lock:
            for m, prefix, handler in self._routes:
                if m == method and path.startswith(prefix) and (
                        best is None or len(prefix) > len(best[0])):
                    best = (prefix, handler)
        return best[1] if best else None

    def _serve(self, h):
        body = LoopbackServer.read_body(h)
        parts = urllib.parse.urlsplit(h.path)
        req = MockRequest(h.command, parts.path,
                          urllib.parse.parse_qs(parts.query,
                                                keep_blank_values=True),
                          {k.lower(): v for k, v in h.headers.items()},
                          body, time.time())
        with self._lock:
            self.requests.append(req)
        handler = self._find(h.command, parts.path)
        if handler is None:
            reply = MockReply(404, {"error": {
                "message": "no mock route for %s %s" % (h.command, parts.path),
                "type": "invalid_request_error", "code": "not_found"}})
        else:
            reply = handler(req)
            if isinstance(reply, tuple):
                reply = MockReply(*reply)
        if reply is None:
            # No answer at all: the client sees the connection close.
            h.close_connection = True
            return
        self._send(h, reply)

    @staticmethod
    def _send(h, reply):
        body = reply.body
        headers = dict(reply.headers)
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes) and (
                isinstance(body, (dict, list)) or not hasattr(body, "__iter__")):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        try:
            h.send_response(reply.status)
            for k, v in headers.items():
                h.send_header(k, v)
            if isinstance(body, bytes):
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                if reply.delay:
                    time.sleep(reply.delay)
                h.wfile.write(body)
            else:
                h.send_header("Transfer-Encoding", "chunked")
                h.end_headers()
                for chunk in body:
                    if reply.delay:
                        time.sleep(reply.delay)
                    if isinstance(chunk, str):
                        chunk = chunk.encode()
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    h.wfile.flush()
                h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def close(self):
        _stack()._unregister(self)
        self._closing.set()
        self.behave()
        self.server.close()

    def __repr__(self):
        return "MockProvider(%s)" % self.url


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
    tests' CPU), every call answered alike.  A streamed call gets a role
    chunk, `pieces` chunks of `content` `pause` seconds apart, the finish
    chunk, the usage chunk when asked for, then [DONE]; a whole one waits
    pieces x pause seconds.  stats() counts the calls received, completed
    (everything written) and cut (the peer left first)."""

    def __init__(self, content, pieces=8, pause=1.0, usage=(9, 8)):
        import subprocess
        import sys
        spec = json.dumps({"content": content, "pieces": pieces,
                           "pause": pause, "usage": list(usage)})
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
    pieces = [text[i * len(text) // n:(i + 1) * len(text) // n]
              for i in range(n)]

    def event(obj):
        return ("data: %s\n\n" % json.dumps(obj)).encode()

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
        req = json.loads(body or b"{}")
        cid = "chatcmpl-" + secrets.token_hex(12)
        base = {"id": cid, "object": "chat.completion.chunk",
                "created": int(time.time()), "model": req.get("model", "")}
        p, c = spec["usage"]
        usage = {"prompt_tokens": p, "completion_tokens": c,
                 "total_tokens": p + c}
        try:
            if not req.get("stream"):
                await asyncio.sleep(n * spec["pause"])
                out = json.dumps(dict(base, object="chat.completion",
                                      choices=[{"index": 0, "message": {
                                          "role": "assistant",
                                          "content": text},
                                          "finish_reason": "stop"}],
                                      usage=usage)).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: "
                             b"application/json\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(out),
                                                                out))
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: "
                             b"text/event-stream\r\nConnection: close\r\n\r\n")
                writer.write(event(dict(base, choices=[{
                    "index": 0, "delta": {"role": "assistant",
                                          "content": ""},
                    "finish_reason": None}])))
                for piece in pieces:
                    await writer.drain()
                    await asyncio.sleep(spec["pause"])
                    writer.write(event(dict(base, choices=[{
                        "index": 0, "delta": {"content": piece},
                        "finish_reason": None}])))
                writer.write(event(dict(base, choices=[{
                    "index": 0, "delta": {}, "finish_reason": "stop"}])))
                if (req.get("stream_options") or {}).get("include_usage"):
                    writer.write(event(dict(base, choices=[], usage=usage)))
                writer.write(b"data: [DONE]\n\n")
            await writer.drain()
            stats["completed"] += 1
        except (ConnectionError, OSError):
            stats["cut"] += 1
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(answer, "127.0.0.1", 0,
                                            backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "bulk":
        _bulk_main(sys.argv[2])
