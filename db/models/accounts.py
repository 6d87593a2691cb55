"""Operator accounts of the panel."""
from __future__ import annotations

from peewee import CharField, DateTimeField, IntegerField
from werkzeug.security import check_password_hash, generate_password_hash

from db.models import BaseModel, utcnow


class PanelAccount(BaseModel):
    """An operator of the panel (not a user of the app)."""

    ROLES = ("admin", "viewer")

    email = CharField(unique=True)
    password_hash = CharField()
    role = CharField(default="viewer")
    created_at = DateTimeField(default=utcnow)
    last_login_at = DateTimeField(null=True)
    session_version = IntegerField(default=0)  # in every session cookie; bumped to end them all
    disabled_at = DateTimeField(null=True)

    class Meta:
        table_name = "panel_account"

    def set_password(self, password: str, method: str | None = None) -> None:
        """Hashed with werkzeug's default method, or `method` (the settings' `password_hash_method`)."""
        self.password_hash = generate_password_hash(password, method) if method else generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"
