"""Alert channels that run here: a loopback HTTP server taking apprise's ``json://`` posts and a loopback
SMTP server (aiosmtpd) taking its e-mails; both keep what they received, and the apprise URL to them."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from streaming.stack.process import free_port


@dataclass
class Received:
    """What a channel received: (title, body) per message."""

    url: str
    messages: list[tuple[str, str]] = field(default_factory=list)

    def titles(self) -> list[str]:
        return [title for title, _ in self.messages]


@contextmanager
def webhook() -> Iterator[Received]:
    received = Received("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            doc: dict[str, Any] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.messages.append((doc["title"], doc["message"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received.url = f"json://127.0.0.1:{server.server_port}/tally-alerts"
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def smtp() -> Iterator[Received]:
    from aiosmtpd.controller import Controller

    port = free_port()
    received = Received(f"mailto://127.0.0.1:{port}?from=tally@example.com&to=oncall@example.com")

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            part = message.get_body(preferencelist=("plain",))
            received.messages.append((str(message["Subject"]), part.get_content() if part is not None else ""))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield received
    finally:
        controller.stop()
