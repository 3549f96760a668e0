"""A small invoicing and CRM HTTP API to try Nova and Casey against: `python -m examples.business_api`.

It stands in for the systems a business already has (an invoicing tool, a CRM), seeded with
demo data, so the shipped `payment-reminders` workflow and the README's tour work on a fresh
machine. Everything lives in memory and is lost when the process stops.

Routes (JSON in and out; every error is `{"error": "<one line>"}`):

- `GET /invoices?status=overdue|open|paid&min_days=N` → `{"invoices": [invoice, ...]}`, where an
  invoice is `{number, client, client_email (null when unknown), amount, currency, due_date,
  days_overdue, reminders_sent}`; `GET /invoices/{number}` → one invoice, 404 otherwise.
- `POST /invoices/{number}/reminders` `{"subject", "text"}` → 201 `{reminder_id, invoice,
  reminders_sent}`: counts the reminder and, when an SMTP host is configured, emails it to the
  client; 422 when the client has no email address.
- `GET /leads?status=new|contacted&min_days_idle=N` → `{"leads": [lead, ...]}`, a lead being
  `{id, name, company, email, status, days_idle, follow_ups}`; `GET /leads/{id}`;
  `POST /leads/{id}/follow-ups` `{"subject", "text"}` → 201 `{follow_up_id, lead, follow_ups}`.
- `GET /_stats` → `{effects, requests, keys}`: what a test needs to say "charged once".

Invariants:
- Every POST needs an `Idempotency-Key` header (400 without). The first request with a key
  that succeeds does the effect (one email, one count) and its answer is kept; any later
  request with that key gets the kept answer with status 200 and does nothing (Stripe's
  convention). Requests with one key are served one at a time, so a retry that arrives while
  the first is still sending waits for it instead of sending again. A request that fails
  (422, SMTP down) keeps nothing: retrying it with the same key may succeed later.
- The email's `Message-ID` is derived from the key: a mail server or inbox that dedupes on it
  sees one message even if this process were restarted between two attempts.
- With `--delay S` every POST answer waits S seconds *after* the effect is done: the window in
  which a caller killed mid-request has had its effect land without knowing it.
- With a token, every route but `/_stats` needs `Authorization: Bearer <token>` (401 otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

from aiohttp import web

DEFAULT_PORT = 8765
DEFAULT_MAIL_FROM = "Acme BV Accounts <accounts@acme.test>"
MAX_TEXT = 20_000  # characters of a reminder or follow-up body
MAX_KEY = 255  # characters of an Idempotency-Key

log = logging.getLogger("examples.business_api")

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _utc_today() -> date:
    return datetime.now(UTC).date()


@dataclass
class Invoice:
    """An invoice; `days_overdue` is derived from `due_date` and today, negative before it is due."""

    number: str
    client: str
    client_email: str | None
    amount: float
    currency: str
    due_date: date
    reminders_sent: int = 0
    paid: bool = False

    def as_json(self, today: date) -> Json:
        return {"number": self.number, "client": self.client, "client_email": self.client_email,
                "amount": self.amount, "currency": self.currency, "due_date": self.due_date.isoformat(),
                "days_overdue": (today - self.due_date).days, "reminders_sent": self.reminders_sent}


@dataclass
class Lead:
    """A sales lead; `days_idle` counts from the last contact (or from when it came in)."""

    id: str
    name: str
    company: str
    email: str | None
    status: str  # new | contacted
    last_contact: date
    follow_ups: int = 0

    def as_json(self, today: date) -> Json:
        return {"id": self.id, "name": self.name, "company": self.company, "email": self.email,
                "status": self.status, "days_idle": (today - self.last_contact).days,
                "follow_ups": self.follow_ups}


def demo_invoices(today: date) -> list[Invoice]:
    """Invoices a small Dutch agency might have: overdue by different spans, each tone of
    reminder (none sent, one, two), a client without an email address, one open, one paid."""
    def due(days_ago: int) -> date:
        return today - timedelta(days=days_ago)

    return [
        Invoice("INV-2026-0141", "Bakkerij de Vries", "finance@bakkerijdevries.test", 1250.00, "EUR", due(38), reminders_sent=2),
        Invoice("INV-2026-0152", "Studio Lumen", "hello@studiolumen.test", 480.00, "EUR", due(21), reminders_sent=1),
        Invoice("INV-2026-0158", "Green Leaf Catering", "accounts@greenleafcatering.test", 2300.50, "EUR", due(12)),
        Invoice("INV-2026-0163", "Van Dijk Logistics", None, 860.00, "EUR", due(9)),
        Invoice("INV-2026-0167", "Noordzee Fietsen", "admin@noordzeefietsen.test", 149.95, "EUR", due(3)),
        Invoice("INV-2026-0170", "Atelier Mosa", "studio@ateliermosa.test", 3100.00, "EUR", due(-14)),
        Invoice("INV-2026-0129", "Kaasmakerij Hoorn", "boekhouding@kaasmakerijhoorn.test", 720.00, "EUR", due(30), paid=True),
    ]


def demo_leads(today: date) -> list[Lead]:
    """Leads in both states, idle for different spans."""
    def ago(days: int) -> date:
        return today - timedelta(days=days)

    return [
        Lead("L-1001", "Sanne Jansen", "Jansen Architecten", "sanne@jansenarchitecten.test", "new", ago(2)),
        Lead("L-1002", "Pieter Bakker", "Bakker & Zonen", "pieter@bakkerenzonen.test", "new", ago(9)),
        Lead("L-1003", "Emma Visser", "Visser Retail", "emma.visser@visserretail.test", "contacted", ago(16), follow_ups=1),
        Lead("L-1004", "Daan Smit", "Smit Installaties", "daan@smitinstallaties.test", "contacted", ago(31), follow_ups=2),
        Lead("L-1005", "Lotte de Boer", "De Boer Events", "lotte@deboerevents.test", "new", ago(5)),
    ]


@dataclass(frozen=True)
class Mailer:
    """Where effect emails go; `host=None` means they are only counted, not sent."""

    host: str | None = None
    port: int = 25
    sender: str = DEFAULT_MAIL_FROM

    async def send(self, to: str, subject: str, text: str, key: str) -> None:
        """Send one email whose Message-ID is derived from `key`. Raises on any SMTP failure."""
        if self.host is None:
            return
        import aiosmtplib  # only the process that sends mail needs it loaded

        domain = parseaddr(self.sender)[1].rpartition("@")[2] or "business-api.example"
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = message_id(key, domain)
        message.set_content(text)
        await aiosmtplib.send(message, hostname=self.host, port=self.port, timeout=15)


def message_id(key: str, domain: str) -> str:
    """The Message-ID of the email sent for an Idempotency-Key (the same key, the same id)."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


@dataclass
class _Kept:
    """The answer of the request that did an idempotent effect, replayed for its key."""

    path: str
    body: Json


@dataclass
class BusinessStore:
    """The API's state: demo data, the kept answer per Idempotency-Key, and counters."""

    today: Callable[[], date] = _utc_today
    invoices: dict[str, Invoice] = field(default_factory=dict)
    leads: dict[str, Lead] = field(default_factory=dict)
    kept: dict[str, _Kept] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # key -> requests that carried it
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    requests: int = 0
    sequence: int = 0

    @classmethod
    def seeded(cls, today: Callable[[], date] = _utc_today) -> BusinessStore:
        day = today()
        return cls(today=today, invoices={i.number: i for i in demo_invoices(day)},
                   leads={lead.id: lead for lead in demo_leads(day)})

    def next_id(self, prefix: str) -> str:
        self.sequence += 1
        return f"{prefix}_{self.sequence:05d}"

    def stats(self) -> Json:
        return {"effects": len(self.kept), "requests": self.requests, "keys": dict(self.seen)}


@dataclass(frozen=True)
class Settings:
    """How the app was started: optional bearer token, mail server, and POST delay (seconds)."""

    token: str | None = None
    mailer: Mailer = field(default_factory=Mailer)
    delay: float = 0.0


STORE = web.AppKey("store", BusinessStore)
SETTINGS = web.AppKey("settings", Settings)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class _Refused(Exception):
    """A request this API answers with a 4xx/5xx and does nothing for."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts requests, checks the bearer token, and turns every failure into a JSON error."""
    store, settings = request.app[STORE], request.app[SETTINGS]
    if request.path != "/_stats":
        store.requests += 1
        if settings.token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                return _error(401, "missing or wrong bearer token")
    try:
        return await handler(request)
    except _Refused as exc:
        return _error(exc.status, exc.message)
    except web.HTTPException as exc:  # the router's 404 / 405
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise _Refused(400, f"{name}: expected a whole number, got {raw[:40]!r}") from None


def _choice_param(request: web.Request, name: str, choices: Sequence[str]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise _Refused(400, f"{name}: expected one of {', '.join(choices)}, got {raw[:40]!r}")
    return raw


async def list_invoices(request: web.Request) -> web.Response:
    store = request.app[STORE]
    status = _choice_param(request, "status", ("overdue", "open", "paid"))
    min_days = _int_param(request, "min_days")
    today = store.today()
    found = []
    for invoice in store.invoices.values():
        days = (today - invoice.due_date).days
        state = "paid" if invoice.paid else ("overdue" if days > 0 else "open")
        if status is not None and state != status:
            continue
        if min_days is not None and days < min_days:
            continue
        found.append(invoice.as_json(today))
    found.sort(key=lambda i: -i["days_overdue"])
    return web.json_response({"invoices": found})


def _invoice(request: web.Request) -> Invoice:
    number = request.match_info["number"]
    invoice = request.app[STORE].invoices.get(number)
    if invoice is None:
        raise _Refused(404, f"no invoice {number[:60]!r}")
    return invoice


async def get_invoice(request: web.Request) -> web.Response:
    return web.json_response(_invoice(request).as_json(request.app[STORE].today()))


async def list_leads(request: web.Request) -> web.Response:
    store = request.app[STORE]
    status = _choice_param(request, "status", ("new", "contacted"))
    min_idle = _int_param(request, "min_days_idle")
    today = store.today()
    found = [lead.as_json(today) for lead in store.leads.values()
             if (status is None or lead.status == status)
             and (min_idle is None or (today - lead.last_contact).days >= min_idle)]
    found.sort(key=lambda lead: -lead["days_idle"])
    return web.json_response({"leads": found})


def _lead(request: web.Request) -> Lead:
    lead_id = request.match_info["id"]
    lead = request.app[STORE].leads.get(lead_id)
    if lead is None:
        raise _Refused(404, f"no lead {lead_id[:60]!r}")
    return lead


async def get_lead(request: web.Request) -> web.Response:
    return web.json_response(_lead(request).as_json(request.app[STORE].today()))


async def _message(request: web.Request) -> tuple[str, str]:
    """The `{"subject", "text"}` body, checked."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _Refused(400, "the body must be a JSON object with subject and text") from None
    if not isinstance(body, dict):
        raise _Refused(400, "the body must be a JSON object with subject and text")
    subject, text = body.get("subject"), body.get("text")
    for name, value in (("subject", subject), ("text", text)):
        if not isinstance(value, str) or not value.strip():
            raise _Refused(400, f"{name}: expected a non-empty string")
    assert isinstance(subject, str) and isinstance(text, str)
    if len(subject) > 300 or "\n" in subject or "\r" in subject:
        raise _Refused(400, "subject: expected one line of at most 300 characters")
    if len(text) > MAX_TEXT:
        raise _Refused(400, f"text: expected at most {MAX_TEXT} characters")
    return subject, text


Effect = Callable[[str], Awaitable[Json]]


async def _idempotent(request: web.Request, effect: Effect) -> web.Response:
    """Run `effect(key)` once per Idempotency-Key and replay its answer for repeats."""
    store, settings = request.app[STORE], request.app[SETTINGS]
    key = request.headers.get("Idempotency-Key", "")
    if not key or len(key) > MAX_KEY or not key.isprintable() or not key.isascii():
        raise _Refused(400, f"an Idempotency-Key header is required (1 to {MAX_KEY} printable ASCII characters)")
    store.seen[key] = store.seen.get(key, 0) + 1
    lock = store.locks.setdefault(key, asyncio.Lock())
    async with lock:
        kept = store.kept.get(key)
        if kept is not None:
            if kept.path != request.path:
                raise _Refused(409, "this Idempotency-Key was used for another request")
            status, body = 200, kept.body
        else:
            body = await effect(key)
            store.kept[key] = _Kept(request.path, body)
            status = 201
    if settings.delay > 0:
        await asyncio.sleep(settings.delay)
    return web.json_response(body, status=status)


async def _send(request: web.Request, to: str, subject: str, text: str, key: str) -> None:
    try:
        await request.app[SETTINGS].mailer.send(to, subject, text, key)
    except Exception as exc:  # aiosmtplib's errors and OSError alike: nothing is counted
        raise _Refused(502, f"could not send the email ({type(exc).__name__})") from None


async def send_reminder(request: web.Request) -> web.Response:
    store = request.app[STORE]
    invoice = _invoice(request)
    subject, text = await _message(request)

    async def remind(key: str) -> Json:
        if invoice.client_email is None:
            raise _Refused(422, f"no email address for {invoice.client}")
        await _send(request, invoice.client_email, subject, text, key)
        invoice.reminders_sent += 1
        reminder_id = store.next_id("rem")
        log.info("%s: reminder %d for %s to %s (%s): %s", reminder_id, invoice.reminders_sent, invoice.number,
                 invoice.client, invoice.client_email, subject)
        return {"reminder_id": reminder_id, "invoice": invoice.number, "reminders_sent": invoice.reminders_sent}

    return await _idempotent(request, remind)


async def send_follow_up(request: web.Request) -> web.Response:
    store = request.app[STORE]
    lead = _lead(request)
    subject, text = await _message(request)

    async def follow_up(key: str) -> Json:
        if lead.email is None:
            raise _Refused(422, f"no email address for {lead.name}")
        await _send(request, lead.email, subject, text, key)
        lead.follow_ups += 1
        lead.status = "contacted"
        lead.last_contact = store.today()
        follow_up_id = store.next_id("fu")
        log.info("%s: follow-up %d to %s of %s (%s): %s", follow_up_id, lead.follow_ups, lead.name, lead.company,
                 lead.email, subject)
        return {"follow_up_id": follow_up_id, "lead": lead.id, "follow_ups": lead.follow_ups}

    return await _idempotent(request, follow_up)


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STORE].stats())


def build_app(*, token: str | None = None, smtp_host: str | None = None, smtp_port: int = 25,
              mail_from: str = DEFAULT_MAIL_FROM, delay: float = 0.0,
              store: BusinessStore | None = None) -> web.Application:
    """The aiohttp app, seeded with the demo data unless `store` is given."""
    if delay < 0:
        raise ValueError("delay: expected 0 or more seconds")
    app = web.Application(middlewares=[_guard], client_max_size=256 * 1024)
    app[STORE] = store if store is not None else BusinessStore.seeded()
    app[SETTINGS] = Settings(token=token or None, mailer=Mailer(smtp_host, smtp_port, mail_from), delay=delay)
    app.router.add_get("/invoices", list_invoices)
    app.router.add_get("/invoices/{number}", get_invoice)
    app.router.add_post("/invoices/{number}/reminders", send_reminder)
    app.router.add_get("/leads", list_leads)
    app.router.add_get("/leads/{id}", get_lead)
    app.router.add_post("/leads/{id}/follow-ups", send_follow_up)
    app.router.add_get("/_stats", stats)
    return app


async def start(app: web.Application, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> tuple[web.AppRunner, str]:
    """Serve `app` on the running loop; returns the runner (`await runner.cleanup()` stops it)
    and the base URL. `port=0` picks a free port."""
    # handler_cancellation=False (aiohttp's default, said out loud): a caller that hangs up
    # mid-request does not cancel the effect half-way; it completes and its answer is kept.
    runner = web.AppRunner(app, handler_cancellation=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    return runner, f"http://{host}:{bound[1]}"


class BusinessApiServer:
    """The API on its own event loop in a background thread, for tests and scripts:

        with BusinessApiServer(smtp_host="127.0.0.1", smtp_port=2525) as api:
            requests.get(f"{api.url}/invoices")
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self.app = build_app(**options)
        self.host, self.port = host, port
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="business-api", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def store(self) -> BusinessStore:
        return self.app[STORE]

    def start(self) -> str:
        self._thread.start()
        self._runner, self.url = asyncio.run_coroutine_threadsafe(
            start(self.app, self.host, self.port), self._loop).result(timeout=10)
        return self.url

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._runner = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> BusinessApiServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.business_api",
                                     description="Example invoicing and CRM API with demo data (in memory).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--smtp-host", help="send reminder and follow-up emails through this SMTP server")
    parser.add_argument("--smtp-port", type=int, default=25)
    parser.add_argument("--mail-from", default=DEFAULT_MAIL_FROM)
    parser.add_argument("--token", default=os.environ.get("BUSINESS_API_TOKEN"),
                        help="require 'Authorization: Bearer TOKEN' (default: env BUSINESS_API_TOKEN)")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds every POST waits after its effect, before answering (for tests)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    app = build_app(token=args.token, smtp_host=args.smtp_host, smtp_port=args.smtp_port,
                    mail_from=args.mail_from, delay=args.delay)
    runner, url = await start(app, args.host, args.port)
    mail = f"mail via {args.smtp_host}:{args.smtp_port}" if args.smtp_host else "mail counted, not sent (no --smtp-host)"
    auth = "bearer token required" if args.token else "no auth"
    print(f"Example business API on {url} (invoices: {url}/invoices, leads: {url}/leads; {mail}; {auth})", flush=True)
    print("Each reminder and follow-up is logged here as it is sent.", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    if args.delay < 0:
        print("--delay: expected 0 or more seconds", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
