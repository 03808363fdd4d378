"""A real SMTP server for heal's email tests (tests/it/email.rs): aiosmtpd
with STARTTLS required before anything else and AUTH PLAIN/LOGIN with one
known user, on 127.0.0.1.

Usage: python smtp_server.py PORT CERT KEY USER PASSWORD OUT

Each AUTH try and each message is one JSON line appended to OUT:
  {"event": "auth", "tls": bool, "mechanism": "PLAIN", "user": "...", "ok": bool}
  {"event": "message", "tls": bool, "user": "...", "mail_from": "...",
   "rcpt_tos": [...], "headers": {"Subject": ..., ...}, "content_type": "...",
   "text": "...", "html": "...", "data": "..."}
(headers decoded, and the text/plain and text/html parts decoded, by
Python's email package).
("tls": whether STARTTLS had been done on that connection). The password
tried is never written. Prints "ready" on stdout once it listens; runs until
killed.
"""

import asyncio
import email
import email.policy
import json
import ssl
import logging
import sys

from aiosmtpd.smtp import SMTP, AuthResult


def main():
    # aiosmtpd logs a warning about its own use of a deprecated attribute.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    port, cert, key, user, password, out = sys.argv[1:7]
    port = int(port)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    # With TLS 1.3, aiosmtpd 1.4.6 (Python 3.11) never answers heal's EHLO
    # after STARTTLS (rustls may send it right behind its last handshake
    # message); with TLS 1.2, where the server speaks last, it does.
    context.maximum_version = ssl.TLSVersion.TLSv1_2

    def record(entry):
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def authenticator(server, session, envelope, mechanism, auth_data):
        login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
        given = auth_data.password.decode() if isinstance(auth_data.password, bytes) else auth_data.password
        ok = login == user and given == password
        record({"event": "auth", "tls": session.ssl is not None, "mechanism": mechanism,
                "user": login, "ok": ok})
        return AuthResult(success=ok, handled=False)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
            headers = {name: str(msg[name]) for name in
                       ("Subject", "From", "To", "Cc", "Message-ID", "In-Reply-To",
                        "References", "Date", "MIME-Version") if msg[name] is not None}
            part = lambda kind: (msg.get_body((kind,)) or None) and msg.get_body((kind,)).get_content()
            record({"event": "message", "tls": session.ssl is not None,
                    "user": user if session.authenticated else None,
                    "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                    "headers": headers, "content_type": msg.get_content_type(),
                    "text": part("plain"), "html": part("html"),
                    "data": envelope.original_content.decode("utf-8", "replace")})
            return "250 Message accepted"

    def factory():
        return SMTP(Handler(), hostname="smtp.test", tls_context=context,
                    require_starttls=True, authenticator=authenticator,
                    auth_required=True, auth_require_tls=True)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", port))
    print("ready", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
