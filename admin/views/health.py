"""Health: the checks of /healthz on a page."""
from __future__ import annotations

from flask import current_app
from flask_admin import BaseView, expose

from admin import health
from admin.access import PanelAccess


class HealthView(PanelAccess, BaseView):
    @expose("/")
    def index(self):
        body = health.summary(health.run_checks(current_app.config["FLEET_SETTINGS"]))
        return self.render("health.html", body=body), 503 if body["status"] == "failing" else 200
