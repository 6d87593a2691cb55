"""Health: the checks of /healthz on a page."""
from __future__ import annotations

from flask import request
from flask_admin import BaseView, expose

from admin import health
from admin.access import PanelAccess


class HealthView(PanelAccess, BaseView):
    @expose("/")
    def index(self):
        body, status = health.summary(health.current_checks(), strict=request.args.get("strict") == "1")
        return self.render("health.html", body=body), status
