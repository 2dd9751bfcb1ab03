"""Per-session tokens for the page's writes (a label, an undo).

A browser gets a random session id in a cookie (HttpOnly, SameSite=Strict) with its first page;
the page carries that session's token (an HMAC of the id with the server's secret, made anew
each start) and sends it with every write in the ``X-CSRF-Token`` header or a ``csrf`` form
field. A page on another site can make the browser post, but cannot read the token: a post
without it, or with another session's, is refused (403).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

COOKIE = "ws_session"
HEADER = "X-CSRF-Token"
FIELD = "csrf"
_SESSION = re.compile(r"^[0-9a-f]{32}$")


class Tokens:
    def __init__(self, secret: bytes | None = None):
        self._secret = secret or secrets.token_bytes(32)

    @staticmethod
    def new_session() -> str:
        return secrets.token_hex(16)

    @staticmethod
    def valid_session(session: str | None) -> bool:
        return bool(session) and _SESSION.fullmatch(session) is not None

    def token_for(self, session: str) -> str:
        return hmac.new(self._secret, session.encode(), hashlib.sha256).hexdigest()

    def check(self, session: str | None, token: str | None) -> str | None:
        """Why a write with ``session`` (its cookie) and ``token`` is refused; None: allowed."""
        if not self.valid_session(session):
            return "no session cookie: open the page first"
        if not token:
            return "missing token"
        if not hmac.compare_digest(self.token_for(session), token):
            return "wrong token"
        return None

    @staticmethod
    def cookie_header(session: str) -> str:
        return f"{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict"
