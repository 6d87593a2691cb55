"""New translation: upload files, choose the languages, and watch the batch it starts."""
from __future__ import annotations

from pathlib import Path

from flask import abort, flash, redirect, request, send_file, url_for
from flask_admin import BaseView, expose
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileRequired
from wtforms import MultipleFileField, RadioField, SelectField
from wtforms.validators import DataRequired

from actors import translations as ops
from admin.access import PanelAccess
from core.errors import FleetError
from core.settings import get_settings
from db.models.batches import Batch, BatchItem

LANE_CHOICES = [
    ("live", "Live: full price, done in minutes (one OpenAI call a request, now)"),
    ("economy", "Economy: half the price, done within 24 hours (OpenAI's Batch API; usually much sooner)"),
]
MAX_FILES = 50
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a whole form


class TranslationForm(FlaskForm):
    files = MultipleFileField("Files (text, Markdown, JSON of strings)", validators=[FileRequired()])
    source = SelectField("From", default="de", validators=[DataRequired()])
    target = SelectField("To", default="nl", validators=[DataRequired()])
    lane = RadioField("Lane", validators=[DataRequired()])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lane.choices = LANE_CHOICES
        if not self.lane.data:
            self.lane.data = get_settings().ai_lane
        choices = [(code, f"{name} ({code})") for code, name in ops.languages()]
        self.source.choices = self.target.choices = choices

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        if self.source.data == self.target.data:
            self.target.errors.append("Choose a language other than the one to translate from.")
            return False
        if len(self.files.data) > MAX_FILES:
            self.files.errors.append(f"At most {MAX_FILES} files at a time.")
            return False
        return True


class TranslationsView(PanelAccess, BaseView):
    def is_visible(self) -> bool:
        return False  # reached from the Batches page's "New translation" (admins): a nav of one line

    @expose("/", methods=("GET", "POST"))
    def index(self):
        if request.method == "POST" and (request.content_length or 0) > MAX_UPLOAD_BYTES:
            flash(f"The files are larger than {MAX_UPLOAD_BYTES // 2**20} MB together; upload fewer at a time.", "error")
            return redirect(self.get_url(".index"))
        form = TranslationForm()
        if form.validate_on_submit():
            files = [(f.filename or "", f.read()) for f in form.files.data]
            try:
                batch = ops.start_uploaded_translation(files, form.source.data, form.target.data,
                                                       created_by=current_user.email, lane=form.lane.data)
            except FleetError as exc:
                flash(str(exc), "error")
            else:
                lane = " on the economy lane" if batch.lane == "economy" else ""
                flash(f"Translation of {batch.total} file(s) started{lane}.", "success")
                return redirect(url_for("batches.details", batch_id=batch.id))
        return self.render("translation_form.html", form=form, max_files=MAX_FILES,
                           max_mb=MAX_UPLOAD_BYTES // 2**20, max_file_mb=ops.MAX_FILE_BYTES // 2**20)

    @expose("/<batch_id>/download/<int:position>")
    def download(self, batch_id: str, position: int):
        """A translated file of a batch started here (kept under var/translations)."""
        item = (BatchItem.select(BatchItem.result, Batch.options).join(Batch)
                .where((Batch.id == batch_id) & (Batch.kind == ops.KIND) & (BatchItem.position == position)
                       & (BatchItem.status == "succeeded")).first())
        output = Path((item.result or {}).get("output", "")) if item else None
        if output is None or not output.resolve().is_relative_to((get_settings().var_dir / "translations").resolve()):
            abort(404)
        if not output.is_file():
            abort(404)
        original = ((item.batch.options or {}).get("original_names") or {}).get(output.name)
        return send_file(output, as_attachment=True, download_name=Path(original).name if original else output.name)
