"""The HTTP server of ``waste-sorter web`` (standard library ``http.server``, one thread per
request).

    GET  /now /now/facts /frame.jpg     the sorter's state, ready light, latest frame, last items
    GET  /today                         today's figures and plots (as ``logs --summary``)
    GET  /label /captures/ID-K.jpg      the unlabelled captures, biggest doubt first; their frames
    POST /api/label (id, label)         label one capture          } need the session's token
    POST /api/undo                      take the last label back   }

Bad requests get a 4xx and one line of text: an unknown path or capture (404), a label that is
not a class (400), a missing or wrong token (403), a body over MAX_BODY_BYTES (413), a target
over MAX_TARGET_CHARS (414), a Host that is not this machine while serving on loopback (421:
a page on another site cannot reach it through DNS rebinding). A client that goes away
mid-answer ends only its own request.
"""

from __future__ import annotations

import logging
import threading
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from urllib.parse import parse_qs, unquote, urlsplit

from device.commands.status import local_day_start
from device.errors import DataError, SorterError, first_line
from device.safe_open import read_regular
from device.web import pages
from device.web.labelling import MAX_FRAME_BYTES, LabelError, Labeller
from device.web.sources import NowSource, Sources, TodayLog, today_summary
from device.web.tokens import COOKIE, FIELD, HEADER, Tokens

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096  # a label post is about 30 bytes
MAX_TARGET_CHARS = 2048
REQUEST_TIMEOUT_S = 10.0  # a client that sends nothing for this long is dropped
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class WebServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sources: Sources, *, tokens: Tokens | None = None,
                 clock=None, service=None):
        self.sources = sources
        self.tokens = tokens or Tokens()
        self.today = TodayLog(sources.log_path, **({"clock": clock} if clock else {}))
        self.now = NowSource(sources, self.today, **({"clock": clock} if clock else {}),
                             **({"service": service} if service else {}))
        self.labeller = Labeller(sources.capture_dir)
        self.loopback_only = _is_loopback(address[0])
        self._thread: threading.Thread | None = None
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> "WebServer":
        """Serve on a thread (tests); :meth:`close` stops it."""
        self._thread = threading.Thread(target=self.serve_forever, name="web", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(5)
            self._thread = None
        self.server_close()

    def __enter__(self) -> "WebServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def handle_error(self, request, client_address) -> None:
        log.exception("request from %s failed", client_address[0])


def _is_loopback(host: str) -> bool:
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Handler(BaseHTTPRequestHandler):
    server: WebServer
    timeout = REQUEST_TIMEOUT_S
    server_version = "waste-sorter-web"
    sys_version = ""

    # -- plumbing ---------------------------------------------------------------------------
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, *, extra: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self'; style-src 'unsafe-inline'; "
                             "script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'")
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except DISCONNECTS:
            self.close_connection = True
            log.debug("client %s went away mid-answer", self.address_string())

    def _text(self, status: int, line: str) -> None:
        self._send(status, (first_line(line)[:300] + "\n").encode(), "text/plain; charset=utf-8")

    def _html(self, text: str, session_cookie: str | None = None) -> None:
        extra = {"Set-Cookie": self.server.tokens.cookie_header(session_cookie)} if session_cookie else None
        self._send(200, text.encode(), "text/html; charset=utf-8", extra=extra)

    def _session(self) -> str | None:
        try:
            morsel = SimpleCookie(self.headers.get("Cookie", "")).get(COOKIE)
        except CookieError:
            return None
        return morsel.value if morsel and Tokens.valid_session(morsel.value) else None

    def _checked(self) -> str:
        """The request's path once its target and Host pass; Refused otherwise."""
        if len(self.path) > MAX_TARGET_CHARS:
            raise Refused(414, f"request target over {MAX_TARGET_CHARS} characters")
        host = self.headers.get("Host") or ""
        host = host.partition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
        if self.server.loopback_only and host not in LOOPBACK_HOSTS:
            raise Refused(421, f"Host {host[:60]!r} is not this machine's loopback name (use http://localhost:PORT)")
        return urlsplit(self.path).path

    def _run(self, method) -> None:
        try:
            method(self._checked())
        except Refused as exc:
            self._text(exc.status, str(exc))
        except LabelError as exc:
            self._text(exc.status, str(exc))
        except SorterError as exc:  # a damaged labels file, a capture folder that is not there ...
            self._text(409 if isinstance(exc, DataError) else 400, str(exc))
        except DISCONNECTS:
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 and the server goes on
            log.exception("%s %s failed", self.command, self.path[:200])
            self._text(500, f"internal error ({type(exc).__name__}); see the web service's journal")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._run(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._run(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._run(self._post)

    def _not_allowed(self) -> None:
        self._text(405, f"{self.command} is not served here")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    # -- GET --------------------------------------------------------------------------------
    def _get(self, path: str) -> None:
        server = self.server
        if path == "/":
            self._send(303, b"", "text/plain", extra={"Location": "/now"})
        elif path == "/now":
            self._html(pages.now_page(server.now.report()))
        elif path == "/now/facts":
            self._html(pages.now_facts(server.now.report()))
        elif path == "/frame.jpg":
            frame = server.now.frame()
            if frame is None:
                raise Refused(404, "no latest frame: the sorter is not running with --status-file in this folder")
            self._send(200, frame, "image/jpeg")
        elif path == "/today":
            report = server.now.report()
            now = server.now.clock()
            self._html(pages.today_page(today_summary(server.today), report["runtime"],
                                        pages.day_hours(local_day_start(now), now)))
        elif path == "/label":
            session = self._session()
            new = session is None
            session = session or Tokens.new_session()
            try:
                body = pages.label_page(server.labeller.queue(), server.tokens.token_for(session))
            except DataError as exc:
                body = pages.label_page([], "", problem=str(exc))
            self._html(body, session if new else None)
        elif path.startswith("/captures/"):
            name = unquote(path[len("/captures/"):])
            file = server.labeller.frame_path(name)
            try:
                data = read_regular(file, what="captured frame", error=DataError, limit_bytes=MAX_FRAME_BYTES)
            except DataError:
                raise Refused(404, f"captured frame {name} is not there (deleted?)") from None
            self._send(200, data, "image/jpeg")
        else:
            raise Refused(404, f"no page {path[:80]!r}")

    # -- POST -------------------------------------------------------------------------------
    def _form(self) -> dict[str, str]:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise Refused(411, "a post needs a Content-Length")
        try:
            length = int(length_text)
        except ValueError:
            raise Refused(400, "Content-Length is not a number") from None
        if length < 0:
            raise Refused(400, "Content-Length is negative")
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is not read
            raise Refused(413, f"request body of {length} bytes, at most {MAX_BODY_BYTES}")
        raw = self.rfile.read(length)
        try:
            fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=10, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "the body is not a form (application/x-www-form-urlencoded)") from None
        return {k: v[0] for k, v in fields.items()}

    def _post(self, path: str) -> None:
        if path not in ("/api/label", "/api/undo"):
            raise Refused(404, f"nothing to post to at {path[:80]!r}")
        form = self._form()
        session = self._session()
        problem = self.server.tokens.check(session, self.headers.get(HEADER) or form.get(FIELD))
        if problem:
            raise Refused(403, f"refused: {problem} (writes need the page's token)")
        labeller = self.server.labeller
        if path == "/api/label":
            done = labeller.label(session, form.get("id", ""), form.get("label", ""))
        else:
            done = labeller.undo(session)
        self._send(200, pages.json_body({"id": done.capture_id, "label": done.label or None, "left": done.left}),
                   "application/json")
