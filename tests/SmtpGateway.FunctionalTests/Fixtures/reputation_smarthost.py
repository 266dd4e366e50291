#!/usr/bin/env python3
"""A smarthost that judges its clients by their EHLO name, as a receiver judging a sender's reputation would: one
plain SMTP listener (one host:port) shared by every tenant of the gateway under test.

    reputation_smarthost.py DIRECTORY REFUSED_HELO[,REFUSED_HELO...]

A client whose EHLO (or HELO) name is in the refused list gets "421 4.7.0 ..." and the connection is closed
(RFC 5321 section 3.8); everyone else may send, and each message is stored as DIRECTORY/message-N.eml.
Prints "READY smtp=<port>" on stdout once it listens (port chosen by the kernel). Every session outcome is a JSON line
in DIRECTORY/events.jsonl:
    {"event": "refused", "helo": ...}
    {"event": "message", "helo": ..., "from": ..., "rcpt": [...], "file": ...}
Standard library only.
"""

import json
import os
import socketserver
import sys
import threading

HOSTNAME = "reputation.functional.test"


class Handler(socketserver.StreamRequestHandler):
    timeout = 60

    def reply(self, line):
        self.wfile.write(line.encode("ascii") + b"\r\n")
        self.wfile.flush()

    def command(self):
        raw = self.rfile.readline(65536)
        if not raw:
            raise ConnectionError("closed")
        text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        verb, _, arg = text.partition(" ")
        return verb.upper(), arg.strip()

    def record(self, **fields):
        server = self.server
        with server.lock:
            with open(os.path.join(server.directory, "events.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(fields, sort_keys=True) + "\n")

    def handle(self):
        try:
            self.request.settimeout(self.timeout)
            self.reply("220 %s ESMTP reputation test server" % HOSTNAME)
            helo, sender, rcpts = None, None, []
            while True:
                verb, arg = self.command()
                if verb in ("EHLO", "HELO") and arg in self.server.refused:
                    self.record(event="refused", helo=arg)
                    self.reply("421 4.7.0 %s: your sending reputation is poor, try again later" % arg)
                    return
                if verb == "EHLO":
                    helo = arg
                    self.reply("250-%s" % HOSTNAME)
                    self.reply("250-ENHANCEDSTATUSCODES")
                    self.reply("250 8BITMIME")
                elif verb == "HELO":
                    helo = arg
                    self.reply("250 %s" % HOSTNAME)
                elif verb == "MAIL" and helo is not None:
                    sender, rcpts = arg[5:].strip(), []
                    self.reply("250 2.1.0 OK")
                elif verb == "RCPT" and sender is not None:
                    rcpts.append(arg[3:].strip())
                    self.reply("250 2.1.5 OK")
                elif verb == "DATA" and rcpts:
                    self.reply("354 End data with <CR><LF>.<CR><LF>")
                    self.store(helo, sender, rcpts)
                    sender, rcpts = None, []
                elif verb in ("RSET", "NOOP"):
                    if verb == "RSET":
                        sender, rcpts = None, []
                    self.reply("250 2.0.0 OK")
                elif verb == "QUIT":
                    self.reply("221 2.0.0 Bye")
                    return
                else:
                    self.reply("503 5.5.1 Bad sequence of commands")
        except (ConnectionError, OSError):
            return

    def store(self, helo, sender, rcpts):
        body = []
        while True:
            raw = self.rfile.readline(1 << 20)
            if not raw:
                raise ConnectionError("closed in DATA")
            if raw in (b".\r\n", b".\n"):
                break
            body.append(raw[1:] if raw.startswith(b".") else raw)
        with self.server.lock:
            self.server.count += 1
            path = os.path.join(self.server.directory, "message-%d.eml" % self.server.count)
        with open(path, "wb") as f:
            f.write(b"".join(body))
        self.record(event="message", helo=helo, **{"from": sender}, rcpt=rcpts, file=path)
        self.reply("250 2.0.0 OK %s" % os.path.basename(path))


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    server = Server(("127.0.0.1", 0), Handler)
    server.directory = sys.argv[1]
    server.refused = set(name for name in sys.argv[2].split(",") if name)
    server.lock = threading.Lock()
    server.count = 0
    print("READY smtp=%d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
