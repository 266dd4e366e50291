#!/usr/bin/python3
"""Independent DKIM check with Debian's python3-dkim (dkimpy): verifies every DKIM-Signature of a message.

usage: dkim_verify.py MESSAGE_FILE RECORDS_JSON
RECORDS_JSON maps "selector._domainkey.domain." to the TXT value, e.g. from `smtpgw dkim dns`.
Prints a JSON list of booleans (one per signature, top first); exit 0 only if there is at least one and all verify.
"""
import json
import sys

import dkim

message = open(sys.argv[1], "rb").read()
records = {k.lower().rstrip("."): v for k, v in json.load(open(sys.argv[2])).items()}


def dnsfunc(name, timeout=5):
    key = (name.decode() if isinstance(name, bytes) else name).lower().rstrip(".")
    value = records.get(key)
    return value.encode() if value else None


d = dkim.DKIM(message)
count = sum(1 for h in d.headers if h[0].lower() == b"dkim-signature")
results = [bool(d.verify(idx=i, dnsfunc=dnsfunc)) for i in range(count)]
print(json.dumps(results))
sys.exit(0 if results and all(results) else 1)
