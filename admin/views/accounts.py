"""Accounts (admins only): the panel's operators — create, change the role, disable or enable,
reset a password (a generated one, shown once) — and the API tokens (create, shown once;
revoke). A changed account's sessions end (actors.accounts); every change is audited."""
from __future__ import annotations

from flask import abort, flash, redirect, request
from flask_admin import BaseView, expose
from flask_login import current_user

from actors import accounts as ops
from actors import tokens
from admin import audit_trail
from admin.access import AdminAccess
from admin.views.base import as_id
from core import formats
from core.errors import FleetError
from db.models.accounts import PanelAccount

EXPIRY_CHOICES = (("", "never"), ("7d", "7 days"), ("30d", "30 days"), ("90d", "90 days"), ("365d", "1 year"))
NO_STORE = {"Cache-Control": "no-store"}  # a page with a password or a token shown once


class AccountsView(AdminAccess, BaseView):
    def _page(self, shown: dict | None = None):
        accounts = list(PanelAccount.select().order_by(PanelAccount.email))
        return self.render("accounts.html", accounts=accounts, tokens=tokens.list_tokens(), shown=shown,
                           roles=PanelAccount.ROLES, scopes=tokens.SCOPES, expiries=EXPIRY_CHOICES,
                           token_state=tokens.state, me=current_user.id), 200, NO_STORE

    @expose("/")
    def index(self):
        return self._page()

    def _account(self, account_id) -> PanelAccount:
        account = PanelAccount.get_or_none(PanelAccount.id == as_id(account_id)) if as_id(account_id) else None
        if account is None:
            abort(404)
        return account

    def _done(self, message: str):
        flash(message, "success")
        return redirect(self.get_url(".index"))

    def _refused(self, exc: FleetError):
        flash(str(exc), "error")
        return redirect(self.get_url(".index"))

    @expose("/create/", methods=("POST",))
    def create(self):
        email, role = request.form.get("email", "")[:320], request.form.get("role", "viewer")
        password = request.form.get("password", "")
        if role not in PanelAccount.ROLES:
            return self._refused(FleetError(f"role must be one of {', '.join(PanelAccount.ROLES)}"))
        generated = "" if password else ops.generated_password()
        try:
            account = ops.create_account(email, password or generated, role)
        except FleetError as exc:
            return self._refused(exc)
        audit_trail.record("accounts.create", f"email={account.email} role={account.role}", 1)
        flash(f"Created {account.role} account {account.email}.", "success")
        if not generated:
            return redirect(self.get_url(".index"))
        return self._page({"kind": "password", "for": account.email, "secret": generated})

    @expose("/<account_id>/reset-password/", methods=("POST",))
    def reset_password(self, account_id):
        account, password = ops.reset_password(self._account(account_id).email)
        audit_trail.record("accounts.reset_password", f"email={account.email}", 1)
        flash(f"New password for {account.email}; its sessions have ended.", "success")
        return self._page({"kind": "password", "for": account.email, "secret": password})

    @expose("/<account_id>/role/", methods=("POST",))
    def set_role(self, account_id):
        account, role = self._account(account_id), request.form.get("role", "")
        if role == account.role:
            flash(f"{account.email} is {role} already.", "info")
            return redirect(self.get_url(".index"))
        try:
            if role != "admin":
                ops.refuse_losing_the_last_admin(account.email)
            account = ops.set_role(account.email, role)
        except FleetError as exc:
            return self._refused(exc)
        audit_trail.record("accounts.set_role", f"email={account.email} role={role}", 1)
        return self._done(f"{account.email} is now {role}; its sessions have ended.")

    @expose("/<account_id>/disable/", methods=("POST",))
    def disable(self, account_id):
        account = self._account(account_id)
        try:
            ops.refuse_losing_the_last_admin(account.email)
            ops.disable_account(account.email)
        except FleetError as exc:
            return self._refused(exc)
        audit_trail.record("accounts.disable", f"email={account.email}", 1)
        return self._done(f"Disabled {account.email}; its sessions have ended.")

    @expose("/<account_id>/enable/", methods=("POST",))
    def enable(self, account_id):
        account = self._account(account_id)
        ops.enable_account(account.email)
        audit_trail.record("accounts.enable", f"email={account.email}", 1)
        return self._done(f"Enabled {account.email}.")

    @expose("/tokens/create/", methods=("POST",))
    def create_token(self):
        name, scope = request.form.get("name", "").strip()[:80], request.form.get("scope", "")
        expires = request.form.get("expires", "")
        seconds = formats.parse_span(expires) if expires else None
        if expires and not seconds:
            return self._refused(FleetError(f"{expires[:20]!r} is not a span like 30d"))
        try:
            token, secret = tokens.create_token(name, scope, current_user.email, seconds)
        except FleetError as exc:
            return self._refused(exc)
        audit_trail.record("tokens.create", f"name={token.name} scope={token.scope} "
                           f"expires={formats.moment(token.expires_at, empty='never')}", 1)
        flash(f"Created {token.scope} token {token.name}.", "success")
        return self._page({"kind": "token", "for": token.name, "secret": secret})

    @expose("/tokens/<token_id>/revoke/", methods=("POST",))
    def revoke_token(self, token_id):
        token = tokens.ApiToken.get_or_none(tokens.ApiToken.id == as_id(token_id)) if as_id(token_id) else None
        if token is None:
            abort(404)
        try:
            tokens.revoke_token(token.name)
        except FleetError as exc:
            return self._refused(exc)
        audit_trail.record("tokens.revoke", f"name={token.name}", 1)
        return self._done(f"Revoked token {token.name}.")
