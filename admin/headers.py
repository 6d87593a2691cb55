"""Security headers on every response, and the session cookie's `Secure` flag on HTTPS.

The CSP allows scripts and styles from this panel only: no inline script, no style attribute
(the templates use static files and classes). The one exception is the hash of
`return false;`, the onclick Flask-Admin's filter menu writes (it runs nothing).
Whether a request came over HTTPS is the request's own scheme, or the proxies' X-Forwarded-Proto
when FLEET_TRUSTED_PROXIES trusts them (admin.app's ProxyFix).
"""
from __future__ import annotations

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface

_RETURN_FALSE = "'sha256-2rvfFrggTCtyF5WOiTri1gDS8Boibj4Njn0e+VCBmDI='"  # onclick="return false;"
CSP = "; ".join([
    "default-src 'self'",
    f"script-src 'self' 'unsafe-hashes' {_RETURN_FALSE}",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP level 2
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
HSTS = "max-age=31536000"  # a year; not includeSubDomains: other hosts of the domain are not ours to decide


class SessionOverHttps(SecureCookieSessionInterface):
    """Flask's signed-cookie session, its cookie `Secure` whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


def add_headers(response):
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def init_app(app: Flask) -> None:
    app.session_interface = SessionOverHttps()
    app.after_request(add_headers)
