"""`send_email`: the built-in effect tool, offered once `email:` is configured.

The message carries `Message-ID: <effect id@teammates.local>`, the same on every attempt, and
the send is recorded (`effects.once`): a retried turn or step that finds it `done` does not
send again. A crash between the server's acceptance and the record sends it once more under
the same Message-ID, which mail clients and archives treat as the same message."""

from __future__ import annotations

import hashlib
import logging
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

from pydantic import BaseModel, Field, field_validator

from agents.tools.context import ToolContext
from agents.tools.registry import Tool, ToolError
from jobs.business_tools import effects
from teammates.config import EmailConfig

log = logging.getLogger(__name__)

NAME = "send_email"  # also reserved in `tools:` (jobs.business_tools.SEND_EMAIL)
DOMAIN = "teammates.local"


class SendEmailInput(BaseModel):
    to: list[str] = Field(min_length=1, max_length=20, description="Recipient addresses")
    subject: str = Field(min_length=1, max_length=300)
    text: str = Field(min_length=1, max_length=20_000, description="The message, plain text")
    cc: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("to", "cc", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("to", "cc")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            parsed = getaddresses([address])
            if len(parsed) != 1 or "@" not in parsed[0][1] or any(c in address for c in "\r\n"):
                raise ValueError(f"not an email address: {address!r}")
        return value

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(c in value for c in "\r\n"):
            raise ValueError("a subject is one line")
        return value


def send_email_tool(config: EmailConfig, unset: dict[str, str]) -> Tool[SendEmailInput]:
    """The tool, bound to this config's SMTP server and sender."""

    async def send_email(ctx: ToolContext, args: SendEmailInput) -> Any:
        if unset:
            where, variable = next(iter(unset.items()))
            raise ToolError(f"email is not set up: ${{{variable}}} ({where}) is not set; tell the person")
        intent = {"to": args.to, "cc": args.cc, "subject": args.subject}
        return await effects.once(ctx, NAME, "email", intent, lambda effect_id: _send(ctx, config, args, effect_id))

    return Tool(name=NAME, description="Send an email from the team's address (plain text). It leaves the team: "
                                       "only send what the person asked for or approved.",
                input_model=SendEmailInput, run=send_email, effect=True)


async def _send(ctx: ToolContext, config: EmailConfig, args: SendEmailInput, effect_id: str) -> dict[str, Any]:
    import aiosmtplib

    smtp = config.smtp
    message = EmailMessage()
    message["From"] = config.from_ or ""
    message["To"] = ", ".join(args.to)
    if args.cc:
        message["Cc"] = ", ".join(args.cc)
    message["Subject"] = args.subject
    # Derived from the effect id, never random: a resend after a crash is the same message.
    local = effect_id if _id_safe(effect_id) else hashlib.sha256(effect_id.encode()).hexdigest()[:32]
    message["Message-ID"] = f"<{local}@{DOMAIN}>"
    message.set_content(args.text)
    extra = {"run_id": ctx.run_id, "member": ctx.member.id, "tool": NAME}
    try:
        refused, reply = await aiosmtplib.send(
            message, hostname=smtp.host, port=smtp.port, username=smtp.username, password=smtp.password,
            use_tls=smtp.port == 465, start_tls=False if smtp.port == 465 else smtp.starttls, timeout=smtp.timeout,
        )
    except aiosmtplib.SMTPException as exc:
        log.warning("send_email via %s:%s failed: %s", smtp.host, smtp.port, type(exc).__name__, extra=extra)
        raise ToolError(f"the email was not sent: the mail server refused it ({type(exc).__name__})") from None
    except OSError as exc:
        raise ToolError(f"the email was not sent: cannot reach the mail server ({type(exc).__name__})") from None
    log.info("email sent (%s)", message["Message-ID"], extra=extra)
    return {"sent": True, "message_id": str(message["Message-ID"]), "server": reply,
            "refused": sorted(refused)}


def _id_safe(effect_id: str) -> bool:
    return all(c.isalnum() or c in "-_.:" for c in effect_id)
