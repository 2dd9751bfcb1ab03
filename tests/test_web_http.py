"""`waste-sorter web` over plain HTTP: a cross-site post without the token is refused; bad input
(unknown ids, a label that is not a class, paths outside the capture folder, oversize
requests, a foreign Host) gets a 4xx with one line; the server survives them and a client that
goes away mid-image; `waste-sorter web` serves until SIGTERM; stuck events reach the status
file. The browser's view of the pages is tests/test_web_browser.py."""

from __future__ import annotations

import http.client
import io
import json
import logging
import signal
import socket
import struct
import subprocess
import sys
import urllib.request

import pytest

from device.capture_store import read_labels, sidecar_body
from device.cli import main as cli_main
from device.commands import status as status_cli
from device.commands.status import show_status
from device.runtime_status import RuntimeStatus, read_runtime_status, write_runtime_status
from device.sortlog import utc_iso
from device.stuck_watch import StuckWatch
from device.web import pages
from device.web.labelling import Labeller
from device.web.server import MAX_BODY_BYTES, WebServer
from device.web.sources import Sources
from helpers import args_for, colour_scene, sort_scene


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-http")
    paths = colour_scene(root, rounds=1)
    status = root / "run" / "status.json"
    sort_scene(paths, root / "sort.jsonl", "--status-file", str(status))
    sources = Sources(status_file=status, log_path=root / "sort.jsonl", capture_dir=paths["caps"])
    with WebServer(("127.0.0.1", 0), sources).start() as server:
        yield server, paths


def request(server, method, target, *, body=None, headers=None, host="localhost"):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"{host}:{server.server_address[1]}")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        data = body.encode() if isinstance(body, str) else body
        if data is not None and "Content-Length" not in (headers or {}):
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        answer = conn.getresponse()
        return answer.status, answer.read(), answer.getheader("Set-Cookie") or ""
    finally:
        conn.close()


def session(server) -> tuple[str, str]:
    """A browser's first look at the label page: (its cookie, the page's token)."""
    status, page, cookie = request(server, "GET", "/label")
    assert status == 200 and "SameSite=Strict" in cookie and "HttpOnly" in cookie
    token = page.decode().split('name="csrf-token" content="')[1].split('"')[0]
    return cookie.split(";")[0], token


def one_line(body: bytes) -> str:
    text = body.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text.strip()


def test_a_cross_site_post_without_the_token_is_refused(site):
    server, paths = site
    form = "id=1&label=glass"
    form_headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"}
    cookie, token = session(server)
    refused = [
        request(server, "POST", "/api/label", body=form, headers=form_headers),  # no cookie, no token
        request(server, "POST", "/api/label", body=form, headers={**form_headers, "Cookie": cookie}),  # no token
        request(server, "POST", "/api/label", body=form + "&csrf=" + "0" * 64,
                headers={**form_headers, "Cookie": cookie}),  # a guessed token
        request(server, "POST", "/api/label", body=form,
                headers={**form_headers, "Cookie": "ws_session=" + "a" * 32, "X-CSRF-Token": token}),  # another's
    ]
    for status, body, _ in refused:
        assert status == 403 and one_line(body).startswith("refused:")
    assert read_labels(paths["caps"]) == {}
    status, body, _ = request(server, "POST", "/api/label", body=form,
                              headers={**form_headers, "Cookie": cookie, "X-CSRF-Token": token})
    assert status == 200 and json.loads(body) == {"id": 1, "label": "glass", "left": 3}
    status, body, _ = request(server, "POST", "/api/undo", body="", headers={"Cookie": cookie, "X-CSRF-Token": token})
    assert status == 200 and json.loads(body)["label"] is None
    assert read_labels(paths["caps"]) == {}


@pytest.mark.parametrize("method, target, body, expected", [
    ("POST", "/api/label", "id=999&label=glass", 404),  # an unknown capture
    ("POST", "/api/label", "id=1x&label=glass", 400),  # not an id
    ("POST", "/api/label", "id=1&label=banana", 400),  # not a class
    ("POST", "/api/label", "id=1&label=.hidden", 400),
    ("POST", "/api/label", "id=1&label=%2e%2e%2fx", 400),
    ("POST", "/api/undo", "", 400),  # nothing to undo in this session
    ("POST", "/api/nothing", "", 404),
    ("GET", "/captures/../../etc/passwd", None, 404),  # outside the capture folder
    ("GET", "/captures/..%2F..%2Fetc%2Fpasswd", None, 404),
    ("GET", "/captures/%2e%2e/sort.jsonl", None, 404),
    ("GET", "/captures/1.json", None, 404),  # inside it, but not a frame
    ("GET", "/captures/labels.json", None, 404),
    ("GET", "/captures/99-1.jpg", None, 404),  # a frame that is not there
    ("GET", "/no-such-page", None, 404),
    ("GET", "/now?" + "x" * 3000, None, 414),
    ("DELETE", "/api/label", None, 405),
])
def test_bad_input_gets_a_4xx_with_one_line(site, method, target, body, expected):
    server, paths = site
    cookie, token = session(server)
    headers = {"Cookie": cookie, "X-CSRF-Token": token} if method == "POST" else {}
    status, answer, _ = request(server, method, target, body=body, headers=headers)
    assert status == expected, answer
    assert one_line(answer)
    assert request(server, "GET", "/now")[0] == 200  # still serving
    assert read_labels(paths["caps"]) == {}


def test_oversize_posts_missing_lengths_and_foreign_hosts_are_refused(site):
    server, _ = site
    cookie, token = session(server)
    headers = {"Cookie": cookie, "X-CSRF-Token": token}
    status, body, _ = request(server, "POST", "/api/label", body=b"",
                              headers={**headers, "Content-Length": str(10 * MAX_BODY_BYTES)})
    assert status == 413 and one_line(body)
    status, body, _ = request(server, "POST", "/api/label", headers=headers)  # no body, no length
    assert status == 411 and one_line(body)
    status, body, _ = request(server, "GET", "/now", host="evil.example")  # DNS rebinding
    assert status == 421 and one_line(body)
    assert request(server, "GET", "/now", host="127.0.0.1")[0] == 200


def test_a_client_that_goes_away_mid_image_ends_only_its_own_request(site, caplog):
    server, paths = site
    big = server.sources.frame_file
    saved = big.read_bytes()
    big.write_bytes(saved + b"\0" * 3_000_000)  # larger than the sockets' buffers
    try:
        with caplog.at_level(logging.DEBUG, logger="device.web.server"):
            for _ in range(3):
                sock = socket.create_connection(server.server_address[:2], timeout=5)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(b"GET /frame.jpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
                assert sock.recv(100).startswith(b"HTTP/1.0 200")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
                sock.close()
            status, body, _ = request(server, "GET", "/frame.jpg")
        assert status == 200 and len(body) == len(saved) + 3_000_000
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r for r in caplog.records if "went away mid-answer" in r.getMessage()]
    finally:
        big.write_bytes(saved)


def test_web_refuses_a_port_out_of_range(capsys):
    assert cli_main(["web", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err


def test_the_command_serves_until_sigterm_and_exits_0(site, tmp_path):
    server, paths = site
    sources = server.sources
    web = subprocess.Popen([sys.executable, "-m", "device.cli", "web", "--port", "0", "--log", str(sources.log_path),
                            "--status-file", str(sources.status_file), "--dir", str(sources.capture_dir)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = web.stdout.readline()
        assert line.startswith("waste-sorter web: serving http://127.0.0.1:"), line + web.stderr.read()
        address = line.split()[3]
        with urllib.request.urlopen(address.replace("127.0.0.1", "localhost") + "/today", timeout=10) as answer:
            assert answer.status == 200 and b"svg" in answer.read()
    finally:
        web.send_signal(signal.SIGTERM)
        assert web.wait(10) == 0


def test_stuck_events_are_counted_into_the_status_file_and_status_shows_them(tmp_path):
    watch = StuckWatch(stuck_warn_s=1.0)
    for spell in range(2):
        watch.sorted(spell + 1, "glass", 10.0 * spell)
        assert watch.board_event("", 10.0 * spell + 0.5) == ""
        assert watch.board_event("", 10.0 * spell + 1.0).startswith("stuck")
        assert watch.board_event("", 10.0 * spell + 2.0) == ""  # said once a spell
        assert watch.board_event("departed", 10.0 * spell + 3.0) == "sorting again"
    assert watch.events == 2
    path = tmp_path / "status.json"
    write_runtime_status(path, RuntimeStatus(updated_utc=utc_iso(), started_utc=utc_iso(), stuck_events=2))
    assert read_runtime_status(path).stuck_events == 2
    out = io.StringIO()
    assert show_status(args_for("--status-file", str(path), "--log", str(tmp_path / "none.jsonl"), module=status_cli),
                       out, service="active") == 0
    assert "stuck        2 time(s) a sorted item stayed on the board" in out.getvalue()


def test_a_capture_whose_record_is_odd_still_shows_and_goes_by_its_confidence(tmp_path):
    caps = tmp_path / "caps"
    caps.mkdir()
    for capture_id, top3, confidence in ((1, "not a list", 0.9), (2, [["glass", "x"], 7, ["metal", 0.3]], 0.2),
                                         (3, [["glass", 0.5], ["metal", 0.45]], 0.5)):
        record = json.dumps({"ts": "2024-05-01T10:00:00.000Z", "item": capture_id, "label": "glass",
                             "confidence": confidence, "top3": top3, "bin": "glass"})
        (caps / f"{capture_id}.json").write_bytes(sidecar_body(capture_id, "uncertain", [], ("glass", "metal"),
                                                               "abc", record))
    queue = Labeller(caps).queue()
    assert [c.id for c in queue] == [3, 2, 1]  # margins 0.05, 0.3 (the one pair that is one), 0.9
    assert "capture 2" in pages.label_page(queue, "token")
