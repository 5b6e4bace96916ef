"""An OpenAI-compatible test server: real HTTP on 127.0.0.1, deterministic, scriptable.

Tests and benchmarks point the real `openai` client at it (`server.base_url`), so
every byte the copywriter sends and parses goes through the SDK exactly as in
production, and no test reaches a real provider.

- `POST /v1/chat/completions` answers a structured-output request (the SDK's
  `response_format` with a `json_schema`; plain requests get 400) with a draft built
  from the lead and the passages found in the prompt: its content is deterministic
  for a given request.
- `POST /v1/embeddings` returns feature-hashed bag-of-words vectors (float lists,
  or base64 as the SDK asks by default), so texts sharing words are close.
- Faults, per request: `script(...)` queues actions for the next matching requests;
  `p429` / `p500` inject 429s (with `Retry-After`) and 500s at random but
  reproducibly (the fate of a request depends on its body and how often that body
  was seen, not on timing); `latency` delays every answer; a wrong API key gets 401.
- `log` records every request: path, action, status, lead, whether it was a repair.

Actions: `ok`, `429`, `500`, `503`, `408`, `409`, `400`, `401`, `403`, `404`, `422`,
`slow` (sleeps `slow_seconds`, then answers ok), `malformed` (not JSON),
`bad_citation` (cites a passage that was not retrieved), `placeholder` (leaves
`{first_name}` and `[Company]` in), `refusal`, `length` (cut off at the token limit).

A request for the reply-intent schema (`ReplyIntentOutput`, activities/reply_intents.py)
gets a classification instead of a draft: `unsubscribe` when the fenced reply asks to be
removed, `question` when it asks something, else `interested`; the action
`intent:<label>:<confidence>` answers that label, `off_label` a label outside the enum;
`refusal`, `malformed` and the status actions behave as for drafts.

Run it alone with `python -m tests.fakes.llm_server --port 8900 --p429 0.2` to point a
`campaign dev` at it (OPENAI_BASE_URL=http://127.0.0.1:8900/v1).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

EMBED_DIM = 256
INVENTED_PASSAGE = "kb/invented.md#9-deadbeef"
_PASSAGE = re.compile(r'<passage id="([^"]+)"[^>]*>\n(.*?)\n</passage>', re.S)
_WORD = re.compile(r"[a-z0-9]+")
#: The reply-intent request's schema name, and the fenced reply in its prompt.
INTENT_SCHEMA = "ReplyIntentOutput"
_REPLY = re.compile(r"<reply>\n(.*?)\n</reply>", re.S)
_STATUS_ACTIONS = {"400", "401", "403", "404", "408", "409", "422", "429", "500", "503"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_api_key", 403: "permission_denied",
                404: "not_found", 408: "timeout", 409: "conflict", 422: "unprocessable_entity",
                429: "rate_limit_exceeded", 500: "server_error", 503: "server_error"}


@dataclass
class Logged:
    """One request the server answered."""

    path: str
    action: str
    status: int
    model: str | None = None
    lead: str | None = None
    repair: bool = False
    response_format: str | None = None
    inputs: int = 0  # embeddings: how many texts
    body: dict[str, Any] = field(default_factory=dict, repr=False)  # the request as sent
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Scripted:
    action: str
    match: str | None
    path: str


def _field(user: str, name: str) -> str | None:
    m = re.search(rf"(?m)^{name}: (.+)$", user)
    return m.group(1).strip() if m else None


def _first_sentence(text: str) -> str:
    body = " ".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    body = re.sub(r"\s+", " ", body).strip()
    m = re.match(r"(.{20,240}?[.!?])(\s|$)", body)
    return (m.group(1) if m else body[:160]).strip()


def embed_text(text: str, dim: int = EMBED_DIM) -> list[float]:
    """Feature hashing of words: deterministic, and texts sharing words are close."""
    vec = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        if len(word) < 3:
            continue
        word = word[:-1] if word.endswith("s") and not word.endswith("ss") else word
        h = hashlib.sha256(word.encode()).digest()
        vec[h[0] % dim] += 1.0 if h[1] % 2 else -1.0
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]


class LLMTestServer:
    """The server and its switches; use as a context manager or call start()/stop()."""

    def __init__(self, *, api_key: str = "test-key", seed: int = 0, p429: float = 0.0,
                 p500: float = 0.0, retry_after: float | None = 1.0, latency: float = 0.0,
                 slow_seconds: float = 3.0, default_action: str = "ok") -> None:
        self.api_key = api_key
        self.seed = seed
        self.p429 = p429
        self.p500 = p500
        self.retry_after = retry_after
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.default_action = default_action
        self.log: list[Logged] = []
        self._script: list[_Scripted] = []
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------

    def script(self, *actions: str, match: str | None = None, path: str = "chat") -> None:
        """Queue `actions` for the next requests to `path` ("chat" or "embeddings") whose
        body contains `match` (any request when None), one action per request."""
        with self._lock:
            self._script.extend(_Scripted(a, match, path) for a in actions)

    def reset(self) -> None:
        with self._lock:
            self.log.clear()
            self._script.clear()
            self._seen.clear()

    def calls(self, path: str = "chat", *, lead: str | None = None,
              status: int | None = None) -> list[Logged]:
        """Logged requests to `path`, optionally only for one lead or one status."""
        with self._lock:
            suffix = "/chat/completions" if path == "chat" else f"/{path}"
            return [e for e in self.log if e.path.endswith(suffix)
                    and (lead is None or e.lead == lead) and (status is None or e.status == status)]

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self, port: int = 0) -> LLMTestServer:
        """Serve on 127.0.0.1:`port` (0: any free port) from a daemon thread."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="llm-test-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LLMTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- handling --------------------------------------------------------------------

    def _decide(self, path: str, raw: bytes) -> str:
        """The action for this request: scripted first, then injected faults, else default."""
        kind = "embeddings" if path.endswith("/embeddings") else "chat"
        text = raw.decode("utf-8", "replace")
        with self._lock:
            for i, s in enumerate(self._script):
                if s.path == kind and (s.match is None or s.match in text):
                    del self._script[i]
                    return s.action
            body_hash = hashlib.sha256(raw).hexdigest()
            self._seen[body_hash] += 1
            nth = self._seen[body_hash]
        if self.p429 or self.p500:
            digest = hashlib.sha256(f"{self.seed}:{body_hash}:{nth}".encode()).digest()
            u = int.from_bytes(digest[:8], "big") / 2**64
            if u < self.p429:
                return "429"
            if u < self.p429 + self.p500:
                return "500"
        return self.default_action if kind == "chat" else "ok"

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        path = h.path.split("?", 1)[0]
        entry = Logged(path=path, action="", status=0)
        with self._lock:  # logged on arrival: a client that times out still shows its call
            self.log.append(entry)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        entry.model = body.get("model")
        entry.body = body if isinstance(body, dict) else {}
        if path.endswith("/chat/completions"):
            user = "\n".join(str(m.get("content") or "") for m in body.get("messages", [])
                             if m.get("role") == "user")
            entry.lead = _field(user, "first_name")
            entry.repair = any(m.get("role") == "assistant" for m in body.get("messages", []))
            entry.response_format = (body.get("response_format") or {}).get("type")
        elif path.endswith("/embeddings"):
            inp = body.get("input")
            entry.inputs = len(inp) if isinstance(inp, list) else 1
        else:
            self._send(h, entry, 404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            return
        if h.headers.get("Authorization") != f"Bearer {self.api_key}":
            entry.action = "401"
            self._send(h, entry, 401, {"error": {"message": "Incorrect API key provided",
                                                 "type": "invalid_request_error",
                                                 "code": "invalid_api_key"}})
            return
        action = entry.action = self._decide(path, raw)
        if self.latency:
            time.sleep(self.latency)
        if action == "slow":
            time.sleep(self.slow_seconds)
        if action in _STATUS_ACTIONS:
            status = int(action)
            headers = {}
            if status == 429 and self.retry_after is not None:
                headers["Retry-After"] = f"{self.retry_after:g}"
            self._send(h, entry, status, {"error": {"message": f"injected {status}",
                                                    "type": _ERROR_TYPES[status]}}, headers)
            return
        if path.endswith("/embeddings"):
            self._send(h, entry, 200, self._embeddings(body))
            return
        if entry.response_format != "json_schema":
            self._send(h, entry, 400, {"error": {"message": "this server only answers structured "
                                                 "output (response_format json_schema)",
                                                 "type": "invalid_request_error"}})
            return
        self._send(h, entry, 200, self._completion(body, action))

    def _send(self, h: BaseHTTPRequestHandler, entry: Logged, status: int, payload: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        entry.status = status
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    # -- answers ---------------------------------------------------------------------

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = body.get("input")
        texts = texts if isinstance(texts, list) else [texts]
        data = []
        for i, t in enumerate(texts):
            vec = embed_text(str(t))
            emb: Any = vec
            if body.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(len(str(t)) // 4 + 1 for t in texts)
        return {"object": "list", "data": data, "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def _completion(self, body: dict[str, Any], action: str) -> dict[str, Any]:
        messages = body.get("messages", [])
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        if schema == INTENT_SCHEMA:
            return self._intent_completion(body, action)
        user = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
        passages = _PASSAGE.findall(user)
        first = _field(user, "first_name")
        company = _field(user, "company") or "your team"
        title = _field(user, "title")
        claims = [{"passage_id": pid, "claim": _first_sentence(text)} for pid, text in passages[:1]]
        lines = [f"Hi {first}," if first else "Hello,", ""]
        role = f" as {title}" if title else ""
        lines.append(f"Your work{role} at {company} is why I am writing to you today, "
                     "briefly and with one question.")
        lines += [c["claim"] for c in claims]
        lines += ["", "Would a short call next week be useful?", "", "Best regards"]
        draft: dict[str, Any] = {
            "subject": f"A question for {company}",
            "body": "\n".join(lines),
            "personal_points": [p for p in (title, company) if p],
            "citations": claims,
        }
        finish, refusal = "stop", None
        if action == "bad_citation":
            draft["citations"] = [*claims, {"passage_id": INVENTED_PASSAGE, "claim": lines[2]}]
        elif action == "placeholder":
            draft["body"] = draft["body"].replace(f"Hi {first},", "Hi {first_name},").replace(
                company, "[Company]")
        content: str | None = json.dumps(draft)
        if action == "malformed":
            content = "Sure! Here is the email you asked for: " + (content or "")[:80]
        elif action == "refusal":
            content, refusal = None, "I can't help with that request."
        elif action == "length":
            content, finish = (content or "")[:60], "length"
        prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 4
        completion_tokens = len(content or refusal or "") // 4
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
        return {
            "id": f"chatcmpl-{digest}", "object": "chat.completion", "created": 1700000000,
            "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


    def _intent_completion(self, body: dict[str, Any], action: str) -> dict[str, Any]:
        """A reply-intent answer (see the module's docstring)."""
        messages = body.get("messages", [])
        user = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
        found = _REPLY.search(user)
        reply = (found.group(1) if found else user).lower()
        label, confidence = "interested", 0.9
        if re.search(r"unsubscribe|remove me|take me off", reply):
            label, confidence = "unsubscribe", 0.96
        elif "?" in reply:
            label, confidence = "question", 0.85
        if action.startswith("intent:"):
            _, label, conf = action.split(":", 2)
            confidence = float(conf)
        elif action == "off_label":
            label = "positive"
        answer: dict[str, Any] = {"intent": label, "confidence": confidence,
                                  "why": f"test server: {label}", "date": None,
                                  "referral_name": None, "referral_email": None}
        content: str | None = json.dumps(answer)
        refusal = None
        if action == "malformed":
            content = "I think this reply is " + label
        elif action == "refusal":
            content, refusal = None, "I can't help with that request."
        prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 4
        completion_tokens = len(content or refusal or "") // 4
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
        return {
            "id": f"chatcmpl-{digest}", "object": "chat.completion", "created": 1700000000,
            "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content,
                                     "refusal": refusal}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible test server")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--p429", type=float, default=0.0)
    parser.add_argument("--p500", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    server = LLMTestServer(api_key=args.api_key, p429=args.p429, p500=args.p500, latency=args.latency)
    server.start(args.port)
    print(f"OPENAI_BASE_URL={server.base_url} OPENAI_API_KEY={args.api_key}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
