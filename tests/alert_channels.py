"""Real alert channels for the tests: an HTTP receiver (a webhook) that can fail its first
requests, and an SMTP server (aiosmtpd) that keeps what it is sent."""
from __future__ import annotations

import json
import threading
import time
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from core.net import free_port


class WebhookReceiver:
    def __init__(self, fail_first: int = 0, status: int = 500):
        self.posts: list[dict] = []  # accepted: {"body": …, "at": time.time()}
        self.refused = 0
        self.fail_first = fail_first
        self.status = status
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    refuse = receiver.refused < receiver.fail_first
                    if refuse:
                        receiver.refused += 1
                    else:
                        receiver.posts.append({"body": json.loads(body), "at": time.time(), "path": self.path})
                self.send_response(receiver.status if refuse else 200)
                self.end_headers()
                self.wfile.write(b"busy" if refuse else b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/s3cretHookToken"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, rule: str | None = None, state: str | None = None) -> list[dict]:
        with self._lock:
            found = [p["body"]["alert"] for p in self.posts]
        return [a for a in found if (rule is None or a["rule"] == rule) and (state is None or a["state"] == state)]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpServer:
    def __init__(self):
        self.messages: list[dict] = []
        server = self

        class Handler:
            async def handle_DATA(self, smtp, session, envelope):
                mail = message_from_bytes(envelope.content, policy=default_policy)
                server.messages.append({"to": envelope.rcpt_tos, "from": envelope.mail_from,
                                        "subject": str(mail["Subject"]), "body": mail.get_content(),
                                        "at": time.time()})
                return "250 Message accepted for delivery"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.url = f"smtp://127.0.0.1:{self.controller.port}"

    def subjects(self, text: str = "") -> list[str]:
        return [m["subject"] for m in self.messages if text in m["subject"]]

    def stop(self) -> None:
        self.controller.stop()
