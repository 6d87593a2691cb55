"""Where alerts go: a webhook (JSON with a Slack-compatible `text` and an `alert` object) and
e-mail over SMTP (stdlib smtplib; STARTTLS when the server offers it, `smtps://` for TLS from
the start). Settings from the environment (or `.env`):

    FLEET_ALERT_WEBHOOK_URL   https://hooks.slack.com/services/…
    FLEET_SMTP_URL            smtp://user:password@mail.example.com:587 (or smtps://…:465)
    FLEET_ALERT_EMAIL_TO      ops@example.com, oncall@example.com
    FLEET_ALERT_EMAIL_FROM    fleet@example.com (default: fleet@<this host>)
    FLEET_PUBLIC_URL          https://fleet.example.com (links to the panel's Alerts page)

A send answers with one line saying what the channel said, or raises ChannelError with that
line; neither ever holds the webhook's path or the SMTP password (they are secrets).
"""
from __future__ import annotations

import os
import smtplib
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote, urlencode, urlparse

import requests

from core.redact import redact
from core.settings import SettingsError, get_settings

TIMEOUT = 10.0  # seconds a channel may take to answer
ICONS = {"firing": {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"},
         "resolved": ":white_check_mark:", "test": ":wave:"}


class ChannelError(Exception):
    def __init__(self, answer: str, retryable: bool = True):
        super().__init__(answer)
        self.answer = answer
        self.retryable = retryable


@dataclass(frozen=True)
class Channels:
    webhook_url: str | None
    smtp_url: str | None
    email_to: tuple[str, ...]
    email_from: str
    public_url: str | None

    @property
    def names(self) -> list[str]:
        return [name for name, on in (("webhook", self.webhook_url), ("email", self.smtp_url and self.email_to)) if on]


def _url(name: str, value: str | None, schemes: tuple[str, ...]) -> str | None:
    if not value:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not parsed.hostname:
        raise SettingsError(name, f"must be a {' or '.join(s + '://' for s in schemes)} URL, not {safe_url(value)!r}")
    try:
        parsed.port  # noqa: B018
    except ValueError:
        raise SettingsError(name, "has a port that is not a number from 1 to 65535") from None
    return value


def load_channels(environ: dict | None = None) -> Channels:
    if environ is None:
        get_settings()  # loads .env into the environment
        environ = os.environ
    env = {k: v.strip() for k, v in environ.items() if v.strip()}
    to = tuple(a.strip() for a in env.get("FLEET_ALERT_EMAIL_TO", "").split(",") if a.strip())
    for address in to:
        if "@" not in address:
            raise SettingsError("FLEET_ALERT_EMAIL_TO", f"{address!r} is not an e-mail address")
    smtp = _url("FLEET_SMTP_URL", env.get("FLEET_SMTP_URL"), ("smtp", "smtps"))
    if to and not smtp:
        raise SettingsError("FLEET_SMTP_URL", "must be set when FLEET_ALERT_EMAIL_TO is (the mail server to send by)")
    if smtp and not to:
        raise SettingsError("FLEET_ALERT_EMAIL_TO", "must name who gets alert e-mail when FLEET_SMTP_URL is set")
    public = _url("FLEET_PUBLIC_URL", env.get("FLEET_PUBLIC_URL"), ("http", "https"))
    return Channels(_url("FLEET_ALERT_WEBHOOK_URL", env.get("FLEET_ALERT_WEBHOOK_URL"), ("http", "https")),
                    smtp, to, env.get("FLEET_ALERT_EMAIL_FROM", f"fleet@{socket.getfqdn()}"),
                    public.rstrip("/") if public else None)


def safe_url(url: str) -> str:
    """A channel's URL without its secrets: scheme, host and port (a webhook's path is its key)."""
    parsed = urlparse(url)
    host = parsed.hostname or "?"
    return f"{parsed.scheme}://{host}{f':{parsed.port}' if parsed.port else ''}" + ("/…" if parsed.path.strip("/") else "")


def _clean(text: str, url: str) -> str:
    """An error's text with the channel's URL, its path and password taken out, then redacted."""
    parsed = urlparse(url)
    for secret in (parsed.path, unquote(parsed.path), parsed.password, unquote(parsed.password or "")):
        if secret and len(secret) > 1:
            text = text.replace(secret, "/…" if secret.startswith("/") else "***")
    return redact(" ".join(text.split()))[:300]


# -- the message ---------------------------------------------------------------------------------

def panel_link(public_url: str | None, rule: str) -> str | None:
    return f"{public_url}/admin/alerts/?{urlencode({'rule': rule})}" if public_url else None


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def headline(alert: dict) -> str:
    """`[critical] breaker-open firing: openai breaker is open …` (the e-mail's subject too)."""
    state = alert["state"]
    if state == "resolved":
        lasted = f" after {alert['lasted']}" if alert.get("lasted") else ""
        return f"[{alert['severity']}] {alert['rule']} resolved{lasted} (was: {alert['summary']})"
    if state == "test":
        return f"[test] Fleet alerts reach this channel ({alert['summary']})"
    return f"[{alert['severity']}] {alert['rule']} firing: {alert['summary']}"


def slack_text(alert: dict) -> str:
    icon = ICONS[alert["state"]]
    icon = icon[alert["severity"]] if isinstance(icon, dict) else icon
    lines = [f"{icon} *{headline(alert)}*"]
    since = datetime.fromisoformat(alert["since"])
    lines.append(f"since {_when(since)}" + "".join(f" · {k}: {v}" for k, v in sorted(alert["labels"].items())))
    if alert.get("link"):
        lines.append(f"<{alert['link']}|Open the Alerts page>")
    return "\n".join(lines)


def email_body(alert: dict) -> str:
    lines = [headline(alert), "", f"Rule:      {alert['rule']} ({alert['kind']})",
             f"State:     {alert['state']}", f"Severity:  {alert['severity']}",
             f"Since:     {_when(datetime.fromisoformat(alert['since']))}"]
    if alert.get("lasted"):
        lines.append(f"Lasted:    {alert['lasted']}")
    lines += [f"{k.capitalize() + ':':<10} {v}" for k, v in sorted(alert["labels"].items())]
    if alert.get("link"):
        lines += ["", f"Alerts page: {alert['link']}"]
    lines += ["", "-- ", "Fleet alerts. Silence a rule with `fleet alerts silence RULE --for 2h` or on the Alerts page."]
    return "\n".join(lines) + "\n"


# -- sending --------------------------------------------------------------------------------------

def send_webhook(url: str, alert: dict) -> str:
    """POST the alert; the receiver's answer (`HTTP 200 ok`), or ChannelError."""
    body = {"text": slack_text(alert), "alert": {k: v for k, v in alert.items() if k != "lasted"}}
    try:
        response = requests.post(url, json=body, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        raise ChannelError(_clean(f"{safe_url(url)}: {type(exc).__name__}: {exc}", url)) from None
    answer = _clean(f"{safe_url(url)}: HTTP {response.status_code} {response.text[:120]}", url)
    if response.status_code >= 300:
        # a receiver that is down or busy may recover; one that refuses the request will not
        raise ChannelError(answer, retryable=response.status_code >= 500 or response.status_code in (408, 429))
    return answer


def send_email(channels: Channels, alert: dict) -> str:
    """Send the alert to FLEET_ALERT_EMAIL_TO; the server's answer, or ChannelError."""
    url = channels.smtp_url
    parsed = urlparse(url)
    message = EmailMessage()
    message["Subject"] = headline(alert)[:200]
    message["From"] = channels.email_from
    message["To"] = ", ".join(channels.email_to)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=channels.email_from.rsplit("@", 1)[-1])
    message.set_content(email_body(alert))
    tls = ssl.create_default_context()
    try:
        if parsed.scheme == "smtps":
            server = smtplib.SMTP_SSL(parsed.hostname, parsed.port or 465, timeout=TIMEOUT, context=tls)
        else:
            server = smtplib.SMTP(parsed.hostname, parsed.port or 25, timeout=TIMEOUT)
        with server:
            server.ehlo()
            if parsed.scheme == "smtp" and server.has_extn("starttls"):
                server.starttls(context=tls)
                server.ehlo()
            if parsed.username:
                server.login(unquote(parsed.username), unquote(parsed.password or ""))
            refused = server.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise ChannelError(_clean(f"{safe_url(url)}: login refused: {exc.smtp_code}", url), retryable=False) from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise ChannelError(_clean(f"{safe_url(url)}: every recipient refused: {', '.join(exc.recipients)}", url),
                           retryable=False) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise ChannelError(_clean(f"{safe_url(url)}: {type(exc).__name__}: {exc}", url)) from None
    sent = len(channels.email_to) - len(refused)
    answer = f"{safe_url(url)}: accepted for {sent} of {len(channels.email_to)} recipient(s)"
    if refused:
        answer += "; refused: " + ", ".join(refused)
    return _clean(answer, url)


def send(channel: str, channels: Channels, alert: dict) -> str:
    if channel == "webhook":
        if not channels.webhook_url:
            raise ChannelError("FLEET_ALERT_WEBHOOK_URL is not set", retryable=False)
        return send_webhook(channels.webhook_url, alert)
    if channel == "email":
        if not channels.smtp_url or not channels.email_to:
            raise ChannelError("FLEET_SMTP_URL and FLEET_ALERT_EMAIL_TO are not set", retryable=False)
        return send_email(channels, alert)
    raise ChannelError(f"unknown channel {channel!r}", retryable=False)
