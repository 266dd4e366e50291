#!/usr/bin/env python3
"""A deliberately faulty SMTP server for the gateway's fault tests (issue 12, item 6).

usage: faulty_smtp.py DIRECTORY MODE FAULTS
  MODE drop   the first FAULTS connections that reach DATA are closed (socket shut) after the first body line
  MODE stall  the first FAULTS connections get no greeting: the socket is held open, silent, until the peer leaves
  MODE stall-data  the first FAULTS messages are read to the final dot and never answered: silent until the peer leaves
Every other connection is a well-behaved SMTP server: each message received in full is answered 250 and
recorded in DIRECTORY/events.jsonl as {"event": "message", "subject": ..., "rcpt": [...]}; faults are recorded
as {"event": "dropped"} / {"event": "stalled"} / {"event": "stalled-data"} (a stalled message is not recorded as taken). Prints "READY port=N" once listening on 127.0.0.1.
"""
import json
import socket
import socketserver
import sys
import threading

directory, mode, faults = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock = threading.Lock()
state = {"faulted": 0}


def record(event):
    with lock:
        with open(f"{directory}/events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")


def take_fault():
    with lock:
        if state["faulted"] < faults:
            state["faulted"] += 1
            return True
        return False


class Handler(socketserver.StreamRequestHandler):
    def send(self, line):
        self.wfile.write((line + "\r\n").encode("ascii"))
        self.wfile.flush()

    def handle(self):
        if mode == "stall" and take_fault():
            record({"event": "stalled"})
            # Silent until the client gives up (its greeting timeout) and closes.
            while self.rfile.read(1):
                pass
            return
        self.send("220 faulty.test ESMTP")
        mail_from, rcpt = None, []
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("latin-1").rstrip("\r\n")
            verb = line[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.send("250-faulty.test")
                self.send("250 8BITMIME")
            elif verb == "MAIL":
                mail_from, rcpt = line[10:], []
                self.send("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpt.append(line[8:])
                self.send("250 2.1.5 ok")
            elif verb == "DATA":
                self.send("354 go ahead")
                drop = mode == "drop" and take_fault()
                subject, lines = None, 0
                while True:
                    body = self.rfile.readline()
                    if not body:
                        return
                    lines += 1
                    if drop:
                        record({"event": "dropped"})
                        # Mid-DATA: the connection is cut with no reply, as a crashing or reset peer does.
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.connection.close()
                        return
                    text = body.decode("latin-1")
                    if text == ".\r\n":
                        break
                    if subject is None and text.lower().startswith("subject:"):
                        subject = text[8:].strip()
                if mode == "stall-data" and take_fault():
                    record({"event": "stalled-data", "subject": subject})
                    # A next hop that hangs after the final dot (a stuck content filter): silent until the client gives up.
                    while self.rfile.read(1):
                        pass
                    return
                record({"event": "message", "subject": subject, "from": mail_from, "rcpt": rcpt})
                self.send("250 2.0.0 queued")
            elif verb == "RSET":
                mail_from, rcpt = None, []
                self.send("250 2.0.0 ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 ok")
            elif verb == "QUIT":
                self.send("221 2.0.0 bye")
                return
            else:
                self.send("502 5.5.2 not implemented")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
print(f"READY port={server.server_address[1]}", flush=True)
server.serve_forever()
