"""test/integration/smtp_sink.py — the SMTP server's side of the notification
delivery test (65-notification-delivery.sh), with Debian's aiosmtpd:

  PYTHONPATH=test/integration /usr/bin/python3 -m aiosmtpd -n -l 127.0.0.1:PORT \
      -c smtp_sink.Sink DIR [--tlscert C --tlskey K]

Sink keeps each accepted message as DIR/<recipient>.<n>.eml (the bytes as
they arrived) beside DIR/<recipient>.<n>.json (the envelope, and whether the
session used TLS), and counts every DATA attempt in DIR/<recipient>.attempts.
The recipient's local part chooses how it answers:

  flaky-…   451 to the first two DATA attempts, then accepts
  reject-…  550 to RCPT TO
  slow-…    sleeps SLOW_SECONDS in DATA (longer than the sender's timeout)
  else      accepts

With SINK_AUTH=user:password in its environment, AUTH PLAIN (offered after
STARTTLS, as aiosmtpd does) accepts those credentials only, and the .json
says whether the session authenticated.

  /usr/bin/python3 test/integration/smtp_sink.py show FILE.eml

prints what a mail reader sees of a kept message, as JSON (headers decoded,
the body decoded), plus what only the raw bytes show.
"""
import asyncio
import base64
import json
import os
import sys

SLOW_SECONDS = 6


class Sink:
    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("smtp_sink.Sink takes one argument: the directory")
        return cls(args[0])

    async def auth_PLAIN(self, server, args):
        """AUTH PLAIN, the response with the command or after an empty challenge: NUL user NUL password."""
        from aiosmtpd.smtp import MISSING, AuthResult
        if len(args) == 2:
            blob = base64.b64decode(args[1])
        else:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        try:
            _, user, password = blob.decode().split("\0")
        except ValueError:
            return AuthResult(success=False)
        return AuthResult(success="%s:%s" % (user, password) == os.environ.get("SINK_AUTH"))

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].startswith("reject-"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        rcpt = envelope.rcpt_tos[0]
        with open(os.path.join(self.dir, rcpt + ".attempts"), "a") as f:
            f.write("1\n")
        with open(os.path.join(self.dir, rcpt + ".attempts")) as f:
            attempt = len(f.readlines())
        local = rcpt.split("@")[0]
        if local.startswith("flaky-") and attempt <= 2:
            return "451 4.3.0 Try again later"
        if local.startswith("slow-"):
            await asyncio.sleep(SLOW_SECONDS)
            return "250 OK (too late)"
        n = sum(1 for name in os.listdir(self.dir) if name.startswith(rcpt + ".") and name.endswith(".eml")) + 1
        base = os.path.join(self.dir, "%s.%d" % (rcpt, n))
        with open(base + ".json", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "tls": session.ssl is not None, "authenticated": session.authenticated}, f)
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        return "250 OK"


def show(path):
    from datetime import datetime, timezone
    from email import policy
    from email.parser import BytesParser
    from email.utils import parsedate_to_datetime

    raw = open(path, "rb").read()
    head = raw.split(b"\r\n\r\n", 1)[0]
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    frm = msg["From"].addresses[0]
    to = msg["To"].addresses[0]
    print(json.dumps({
        "from_name": frm.display_name, "from_addr": frm.addr_spec,
        "to_name": to.display_name, "to_addr": to.addr_spec,
        "subject": str(msg["Subject"]),
        "message_id": msg["Message-ID"],
        "date_age_s": abs((datetime.now(timezone.utc) - parsedate_to_datetime(msg["Date"])).total_seconds()),
        "mime_version": msg["MIME-Version"],
        "content_type": msg.get_content_type(),
        "charset": msg.get_content_charset(),
        "transfer_encoding": msg["Content-Transfer-Encoding"],
        "language": msg["Content-Language"],
        "body": msg.get_content().replace("\r\n", "\n"),
        "headers": sorted(k.lower() for k in msg.keys()),
        "raw_ascii": all(b < 128 for b in raw),
        "raw_lines_ok": all(len(line) <= 998 for line in raw.split(b"\r\n")),
        "raw_to_encoded": b"\r\nTo: =?UTF-8?B?" in head,
        "raw_subject_encoded": b"\r\nSubject: =?UTF-8?B?" in head,
    }, ensure_ascii=False, sort_keys=True))


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "show":
    show(sys.argv[2])
