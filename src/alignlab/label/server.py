"""The HTTP side of ``alignlab label``: the standard library's ThreadingHTTPServer and three routes.

    GET  /                       the page (a fresh CSP nonce per load)
    GET  /api/next?labeler=NAME  that labeler's next prompt, its responses in their order, and their progress
    POST /api/submit             one ranking as JSON: 200 once it is on disk, 400 with the reason, 409 when
                                 that labeler already ranked that prompt

The server writes one file, the rankings file it was started with; no route takes a path. Everything a
request carries is checked (``submission.py``) and every submission must name a prompt this server showed
that labeler. Served on loopback, it answers only requests addressed to loopback by name (a ``Host`` of
127.0.0.1, localhost or [::1]: a web page elsewhere that points its own domain at 127.0.0.1 is refused)
and refuses a POST from another origin; it accepts only JSON bodies (a plain HTML form cannot send one
without the browser asking first, which this server never allows).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import socketserver
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from alignlab.label.items import Item, prompt_text
from alignlab.label.page import render_page
from alignlab.label.store import RankingStore
from alignlab.label.submission import (
    Refused,
    check_fields,
    check_flags,
    check_ranks,
    display_order,
    labeler_problem,
    ranked_line,
)

MAX_BODY = 64 * 1024  # a submission is a few hundred bytes
CSP = (
    "default-src 'none'; script-src 'nonce-{n}'; style-src 'nonce-{n}'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class AlreadyRanked(Refused):
    """This labeler has ranked this prompt (HTTP 409): a second tab or a double submit, not a second line."""


class LabelApp:
    """What the routes do, apart from HTTP: the items, the rankings file, and who was shown what."""

    def __init__(self, items: list[Item], store: RankingStore, labeler: str = "", seed: int = 0):
        self.items, self.store, self.fixed, self.seed = items, store, labeler, seed
        self.by_id = {it.id: it for it in items}
        self.served: set[tuple[str, str]] = set()
        self.submitted = 0
        self._lock = threading.Lock()

    def who(self, name: object) -> str:
        """The labeler a request is for: the one the server was started for, else the name it gives."""
        if self.fixed:
            return self.fixed
        name = name.strip() if isinstance(name, str) else name
        if problem := labeler_problem(name):
            raise Refused(f"labeler name {problem}")
        return name

    def progress(self, labeler: str) -> dict:
        done = sum(self.store.has(labeler, it.id) for it in self.items)
        return {"done": done, "total": len(self.items), "labeler": labeler}

    def next_for(self, name: object) -> dict:
        """The first prompt this labeler has not ranked, with its responses in their order for this labeler."""
        labeler = self.who(name)
        item = next((it for it in self.items if not self.store.has(labeler, it.id)), None)
        view = None
        if item is not None:
            order = display_order(self.seed, labeler, item.id, len(item.responses))
            with self._lock:
                self.served.add((labeler, item.id))
            view = {"id": item.id, "prompt": prompt_text(item.prompt), "responses": [item.responses[i] for i in order]}
        return {"item": view, **self.progress(labeler)}

    def submit(self, payload: object, time: str) -> dict:
        """Check one submission and append its line; the labeler's progress after it."""
        payload = check_fields(payload)
        labeler = self.who(payload.get("labeler"))
        item = self.by_id.get(payload.get("item")) if isinstance(payload.get("item"), str) else None
        if item is None:
            raise Refused(f"unknown prompt id {payload.get('item')!r}; reload the page")
        with self._lock:
            served = (labeler, item.id) in self.served
        if not served:
            raise Refused(f"prompt {item.id} was not shown to {labeler} by this server; reload the page")
        k = len(item.responses)
        ranks, flags = check_ranks(payload.get("ranks"), k), check_flags(payload.get("flags"), k)
        order = display_order(self.seed, labeler, item.id, k)
        line = ranked_line(item.prompt, list(item.responses), order, ranks, flags, labeler, time)
        if not self.store.add(labeler, item.id, line):
            raise AlreadyRanked(f"{labeler} has already ranked this prompt; reload the page for the next one")
        with self._lock:
            self.submitted += 1
        return {"ok": True, **self.progress(labeler)}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(host: str, port: int) -> str:
    """The address to open: a wildcard host (every interface) is reachable on loopback too."""
    shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server_version = "alignlab-label"
    server: LabelServer

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def do_GET(self) -> None:
        if not self._trusted():
            return
        url = urlsplit(self.path)
        if url.path == "/":
            nonce = secrets.token_urlsafe(16)
            page = render_page(nonce, self.server.app.fixed).encode()
            self._send(200, page, "text/html; charset=utf-8", {"Content-Security-Policy": CSP.format(n=nonce)})
        elif url.path == "/api/next":
            name = parse_qs(url.query).get("labeler", [""])[0]
            self._answer(lambda: self.server.app.next_for(name))
        else:
            self._json(404, {"error": f"no page {url.path}"})

    def do_POST(self) -> None:
        if not self._trusted():
            return
        if urlsplit(self.path).path != "/api/submit":
            self._json(404, {"error": "only /api/submit takes a POST"})
            return
        if self.headers.get_content_type() != "application/json":
            self._json(415, {"error": "send the submission as application/json"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._json(413, {"error": f"a submission is a JSON body of at most {MAX_BODY} bytes with its length"})
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._json(400, {"error": "the submission is not valid JSON"})
            return
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._answer(lambda: self.server.app.submit(payload, now))

    def _answer(self, fn) -> None:
        try:
            body = fn()
        except AlreadyRanked as e:
            self._json(409, {"error": str(e)})
        except Refused as e:
            self._json(400, {"error": str(e)})
        else:
            self._json(200, body)

    def _trusted(self) -> bool:
        """Refuse a request addressed to another host name (DNS rebinding) or, with an Origin, from another origin."""
        host = self.headers.get("Host", "")
        allowed = self.server.allowed_hosts
        if allowed is not None and host not in allowed:
            self._json(403, {"error": f"this server answers only {sorted(allowed)}"})
            return False
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != host:
            self._json(403, {"error": "cross-origin requests are refused"})
            return False
        return True

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in {
            "Content-Type": ctype,
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            **(headers or {}),
        }.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        """Quiet: a line per request would bury the URL and the warnings."""


class LabelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: LabelApp, host: str, port: int):
        self.app = app
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), Handler)
        port = self.server_address[1]
        loopback = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
        self.allowed_hosts: set[str] | None = loopback if is_loopback(host) else None

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's name up (socket.getfqdn), which can stall for seconds
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]
