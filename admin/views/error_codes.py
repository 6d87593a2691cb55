"""Error codes: the registry with how often each code happened and what is failed with it now."""
from __future__ import annotations

from flask_admin import BaseView, expose

from actors.workouts import failed_days_by_code
from admin.access import PanelAccess, is_admin
from admin.stats import error_code_counts
from core.errors import CODES

# the "Error code equals" filter of the job-log and failed-plan lists, as Flask-Admin names it in URLs
CODE_FILTER = "flt0_error_code_equals"


class ErrorCodesView(PanelAccess, BaseView):
    @expose("/")
    def index(self):
        counts = error_code_counts()
        failed = failed_days_by_code()
        rows = [{"code": c, "counts": counts.get(c.code, (0, 0, 0)), "failed_days": failed.get(c.code, 0)}
                for c in CODES.values()]
        return self.render("error_codes.html", rows=rows, can_act=is_admin(),
                           code_filter=CODE_FILTER)
