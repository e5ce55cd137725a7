"""bench/notification_fanout/smtp_count.py — the SMTP server of the
notification fan-out benchmark, with Debian's aiosmtpd:

  PYTHONPATH=bench/notification_fanout /usr/bin/python3 -m aiosmtpd -n -l 127.0.0.1:PORT \
      -c smtp_count.Count FILE

Count accepts every message and appends one line per message to FILE:
"<epoch seconds> <Message-ID> <connection number>", the time it took the
message (after DATA).  Nothing is fsynced: the lines go out through a
buffer flushed every 50 ms, so the file is at most that much behind and the
sink costs no disk wait per message.  The connection number tells how many
SMTP connections the messages came over.

  /usr/bin/python3 bench/notification_fanout/smtp_count.py send PORT N CONNECTIONS TAG

is the benchmark's baseline client: N messages of the size isa sends, over
CONNECTIONS concurrent connections kept open (smtplib, one thread each),
Message-ID <TAG-n@bench>; prints "sent N seconds S".
"""
import itertools
import os
import re
import sys
import threading
import time

MSGID = re.compile(rb"^Message-ID: *(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


class Count:
    def __init__(self, path):
        self.out = open(path, "a", buffering=1 << 16)
        self.lock = threading.Lock()
        self.connections = itertools.count(1)
        threading.Thread(target=self._flush, daemon=True).start()

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("smtp_count.Count takes one argument: the file")
        return cls(args[0])

    def _flush(self):
        while True:
            time.sleep(0.05)
            with self.lock:
                self.out.flush()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if not hasattr(session, "bench_conn"):
            session.bench_conn = next(self.connections)
        return responses

    async def handle_DATA(self, server, session, envelope):
        m = MSGID.search(envelope.original_content.split(b"\r\n\r\n", 1)[0])
        line = "%.6f %s %s\n" % (time.time(), m.group(1).decode() if m else "-", getattr(session, "bench_conn", 0))
        with self.lock:
            self.out.write(line)
        return "250 OK"


def send(port, n, connections, tag):
    import smtplib
    body = ("Date: Mon, 07 Dec 2026 05:00:00 +0000\r\nFrom: isa <noreply@isa.test>\r\n"
            "To: Bench <bench@example.com>\r\nSubject: Your balance is low: 500 tokens\r\n"
            "Message-ID: <%s-%d@bench>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
            "Content-Transfer-Encoding: base64\r\nAuto-Submitted: auto-generated\r\nContent-Language: en\r\n\r\n"
            + "SGVsbG8gQmVuY2gsIHlvdXIgYmFsYW5jZSBpcyA1MDAgdG9rZW5zLCBiZWxvdyB5b3VyIHRocmVz\r\n" * 3)
    nxt = itertools.count()

    def worker():
        s = smtplib.SMTP("127.0.0.1", port)
        s.ehlo("bench")
        while True:
            i = next(nxt)
            if i >= n:
                break
            s.sendmail("noreply@isa.test", ["bench-%d@example.com" % i], body % (tag, i))
        s.quit()

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("sent %d seconds %.3f" % (n, time.time() - t0))


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "send":
    send(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
