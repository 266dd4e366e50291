#!/usr/bin/env python3
"""A scripted upstream for the functional tests: an implicit-TLS SMTP server that accepts only XOAUTH2 with an access
token its own OAuth 2.0 token endpoint issued, and that endpoint (https, POST /token, refresh_token grant).

    xoauth2_server.py CONFIG.json

CONFIG.json (written by Infrastructure/XOAuth2Server.cs):
    certificate, key      PEM files for both TLS servers
    directory             where events.jsonl and the received messages (message-N.eml) go
    user                  the only user name XOAUTH2 accepts
    client_id             the client id the token endpoint requires
    client_secret         optional: then the endpoint requires it too (form field or HTTP Basic, RFC 6749 section 2.3.1)
    refresh_token         the refresh token the endpoint accepts
    expires_in            seconds an issued access token is valid (and what the endpoint says it is)
    access_token          optional: an access token valid from the start (for the access-token-only vault record)

Prints "READY smtp=<port> token=<port>" on stdout once both listen (ports chosen by the kernel).
Every AUTH outcome, token request and message is a JSON line in <directory>/events.jsonl:
    {"event": "auth", "result": "ok"|"refused", "mechanism": ..., "user": ..., "reason": ...}
    {"event": "refresh", "result": "ok"|"refused", "count": <successful refreshes so far>, "reason": ...}
    {"event": "message", "file": ..., "from": ..., "rcpt": [...], "user": ...}
Tokens are never logged (only whether they were right).
"""

import base64
import binascii
import http.server
import json
import os
import secrets
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse

HOSTNAME = "xoauth2.functional.test"


class State:
    def __init__(self, config):
        self.config = config
        self.lock = threading.Lock()
        self.tokens = {}  # access token -> expiry (monotonic seconds)
        self.refreshes = 0
        self.messages = 0
        if config.get("access_token"):
            self.tokens[config["access_token"]] = time.monotonic() + float(config.get("expires_in", 3600))
        self.events_path = os.path.join(config["directory"], "events.jsonl")

    def event(self, **fields):
        line = json.dumps(fields, sort_keys=True)
        with self.lock:
            with open(self.events_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
        print(line, flush=True)

    def issue(self):
        token = secrets.token_urlsafe(32)
        with self.lock:
            now = time.monotonic()
            # Expired ones are useless anyway; keep the table small.
            self.tokens = {t: e for t, e in self.tokens.items() if e > now}
            self.tokens[token] = now + float(self.config["expires_in"])
            self.refreshes += 1
            return token, self.refreshes

    def valid(self, token):
        with self.lock:
            expiry = self.tokens.get(token)
            return expiry is not None and expiry > time.monotonic()

    def next_message_path(self):
        with self.lock:
            self.messages += 1
            return os.path.join(self.config["directory"], "message-%d.eml" % self.messages)


def tls_context(config):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config["certificate"], config["key"])
    return context


# --- SMTP (implicit TLS) ---------------------------------------------------------------------------------------------

class SmtpHandler(socketserver.StreamRequestHandler):
    timeout = 60

    def setup(self):
        self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def send(self, line):
        self.wfile.write(line.encode("ascii") + b"\r\n")
        self.wfile.flush()

    def readline(self):
        line = self.rfile.readline(65536)
        if not line:
            raise ConnectionError("client closed the connection")
        return line.rstrip(b"\r\n").decode("utf-8", "replace")

    def handle(self):
        state = self.server.state
        try:
            self.request.settimeout(self.timeout)
            self.send("220 %s ESMTP scripted XOAUTH2 test server" % HOSTNAME)
            user = None
            mail_from = None
            rcpts = []
            while True:
                line = self.readline()
                verb = line.split(" ", 1)[0].upper()
                arg = line[len(verb) + 1:] if " " in line else ""
                if verb == "EHLO":
                    self.send("250-%s" % HOSTNAME)
                    self.send("250-AUTH XOAUTH2 PLAIN")
                    self.send("250-ENHANCEDSTATUSCODES")
                    self.send("250-8BITMIME")
                    self.send("250 SIZE 52428800")
                elif verb == "HELO":
                    self.send("250 %s" % HOSTNAME)
                elif verb == "AUTH":
                    if user is not None:
                        self.send("503 5.5.1 Already authenticated")
                        continue
                    user = self.auth(state, arg)
                elif verb == "MAIL":
                    if user is None:
                        self.send("530 5.7.0 Authentication required")
                        continue
                    mail_from = arg[5:].strip() if arg.upper().startswith("FROM:") else arg
                    rcpts = []
                    self.send("250 2.1.0 OK")
                elif verb == "RCPT":
                    if mail_from is None:
                        self.send("503 5.5.1 MAIL first")
                        continue
                    rcpts.append(arg[3:].strip() if arg.upper().startswith("TO:") else arg)
                    self.send("250 2.1.5 OK")
                elif verb == "DATA":
                    if not rcpts:
                        self.send("503 5.5.1 RCPT first")
                        continue
                    self.send("354 Go ahead")
                    self.data(state, user, mail_from, rcpts)
                    mail_from, rcpts = None, []
                elif verb in ("RSET", "NOOP"):
                    if verb == "RSET":
                        mail_from, rcpts = None, []
                    self.send("250 2.0.0 OK")
                elif verb == "QUIT":
                    self.send("221 2.0.0 Bye")
                    return
                else:
                    self.send("502 5.5.2 Command not implemented")
        except (ConnectionError, OSError, ssl.SSLError):
            return

    def auth(self, state, arg):
        parts = arg.split(" ", 1)
        mechanism = parts[0].upper()
        initial = parts[1].strip() if len(parts) > 1 else None
        if mechanism not in ("XOAUTH2", "PLAIN"):
            self.send("504 5.5.4 Unrecognized authentication type")
            state.event(event="auth", result="refused", mechanism=mechanism, user=None, reason="unknown mechanism")
            return None
        if initial is None:
            self.send("334 ")
            initial = self.readline().strip()
        if initial == "*":
            self.send("501 5.7.0 Authentication cancelled")
            state.event(event="auth", result="refused", mechanism=mechanism, user=None, reason="cancelled")
            return None
        try:
            decoded = base64.b64decode(initial, validate=True)
        except (binascii.Error, ValueError):
            self.send("501 5.5.2 Cannot decode response")
            state.event(event="auth", result="refused", mechanism=mechanism, user=None, reason="not base64")
            return None
        if mechanism == "PLAIN":
            # Offered (so a client must choose XOAUTH2 on its own), never accepted.
            fields = decoded.split(b"\0")
            who = fields[1].decode("utf-8", "replace") if len(fields) == 3 else None
            self.send("535 5.7.8 Username and Password not accepted (only XOAUTH2 here)")
            state.event(event="auth", result="refused", mechanism=mechanism, user=who, reason="PLAIN is not accepted")
            return None

        # XOAUTH2: "user=" {User} "^Aauth=Bearer " {Access Token} "^A^A", exactly.
        who, reason = None, None
        text = decoded.decode("utf-8", "replace")
        if not text.endswith("\x01\x01") or text.count("\x01") != 3:
            reason = "malformed SASL string (want user=U^Aauth=Bearer T^A^A)"
        else:
            first, second = text[:-2].split("\x01")
            if not first.startswith("user=") or not second.startswith("auth=Bearer "):
                reason = "malformed SASL string (want user=U^Aauth=Bearer T^A^A)"
            else:
                who = first[len("user="):]
                token = second[len("auth=Bearer "):]
                if who != state.config["user"]:
                    reason = "wrong user"
                elif not state.valid(token):
                    reason = "invalid or expired access token"
        if reason is None:
            self.send("235 2.7.0 Accepted")
            state.event(event="auth", result="ok", mechanism=mechanism, user=who, reason=None)
            return who
        # As Gmail does: a 334 with a JSON error, the client answers with an empty line, then 535.
        error = base64.b64encode(json.dumps({"status": "401", "schemes": "Bearer", "scope": "https://mail.example/"}).encode()).decode()
        self.send("334 " + error)
        try:
            self.readline()
        except ConnectionError:
            pass
        self.send("535 5.7.8 Username and Password not accepted")
        state.event(event="auth", result="refused", mechanism=mechanism, user=who, reason=reason)
        return None

    def data(self, state, user, mail_from, rcpts):
        lines = []
        while True:
            raw = self.rfile.readline(1 << 20)
            if not raw:
                raise ConnectionError("client closed the connection in DATA")
            if raw in (b".\r\n", b".\n"):
                break
            if raw.startswith(b"."):
                raw = raw[1:]
            lines.append(raw)
        path = state.next_message_path()
        with open(path, "wb") as f:
            f.write(b"".join(lines))
        state.event(event="message", file=path, **{"from": mail_from}, rcpt=rcpts, user=user)
        self.send("250 2.0.0 OK %s" % os.path.basename(path))


class SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


# --- Token endpoint (https) ------------------------------------------------------------------------------------------

class TokenHandler(http.server.BaseHTTPRequestHandler):
    server_version = "scripted-token-endpoint/1"

    def log_message(self, format, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Pragma", "no-cache")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def refuse(self, status, error, reason):
        self.server.state.event(event="refresh", result="refused", count=self.server.state.refreshes, reason=reason)
        self.reply(status, {"error": error})

    def do_GET(self):
        self.reply(405, {"error": "invalid_request"})

    def do_POST(self):
        state = self.server.state
        config = state.config
        if urllib.parse.urlsplit(self.path).path != "/token":
            self.reply(404, {"error": "not_found"})
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("utf-8", "replace")
        if content_type != "application/x-www-form-urlencoded":
            self.refuse(400, "invalid_request", "Content-Type is %r, not application/x-www-form-urlencoded" % content_type)
            return
        form = urllib.parse.parse_qs(body, keep_blank_values=True, strict_parsing=False)
        if any(len(v) != 1 for v in form.values()):
            self.refuse(400, "invalid_request", "a parameter is repeated")
            return
        form = {k: v[0] for k, v in form.items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        authorization = self.headers.get("Authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                basic_id, _, basic_secret = base64.b64decode(authorization[6:]).decode().partition(":")
                client_id = urllib.parse.unquote_plus(basic_id)
                client_secret = urllib.parse.unquote_plus(basic_secret)
            except (binascii.Error, ValueError):
                self.refuse(401, "invalid_client", "malformed Basic authorization")
                return
        if form.get("grant_type") != "refresh_token":
            self.refuse(400, "unsupported_grant_type", "grant_type is %r" % form.get("grant_type"))
            return
        if client_id != config["client_id"]:
            self.refuse(401, "invalid_client", "wrong client_id %r" % client_id)
            return
        if config.get("client_secret") and client_secret != config["client_secret"]:
            self.refuse(401, "invalid_client", "wrong or missing client_secret")
            return
        if form.get("refresh_token") != config["refresh_token"]:
            self.refuse(400, "invalid_grant", "wrong refresh_token")
            return
        token, count = state.issue()
        state.event(event="refresh", result="ok", count=count, reason=None)
        self.reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": int(config["expires_in"])})


class TokenServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    state = State(config)
    context = tls_context(config)

    smtp = SmtpServer(("127.0.0.1", 0), SmtpHandler)
    smtp.state, smtp.tls = state, context
    token = TokenServer(("127.0.0.1", 0), TokenHandler)
    token.state = state
    token.socket = context.wrap_socket(token.socket, server_side=True)

    for server in (smtp, token):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("READY smtp=%d token=%d" % (smtp.server_address[1], token.server_address[1]), flush=True)
    # Until killed (or stdin closes when run by hand with a pipe: the test wrapper keeps it closed, so just wait).
    threading.Event().wait()


if __name__ == "__main__":
    main()
