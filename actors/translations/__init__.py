"""Translations: a batch kind that translates files, one item a file, with OpenAI.

Plain text and Markdown are cut on paragraph boundaries (fenced code stays as it is), JSON
files have their string values translated and their keys kept. Segments go to the model in
requests of at most MAX_REQUEST_CHARS; the answer (Structured Outputs) must have as many
segments, each with the same placeholders (`{name}`, `%s`, `:count`, HTML tags) and no markup
the source did not have (`markup`), or the item fails with ERR_INVALID_RESPONSE. JSON numbers
are written back as they were written. The output is written atomically (temporary file, then
rename) as `OUT/<name>`, or `<stem>.<to><suffix>` beside the input. Cost and tokens come from
each response's usage. An unreadable, binary or non-UTF-8 input fails its item with
ERR_INPUT_FILE, never the batch, and so does a JSON file that cannot be kept exactly.

Modules: `languages`, `documents` (cutting and reassembling), `files`, `model` (the requests
and their checks), `markup` (what an answer may not add), `kind` (the batch kind), `start`
(from the CLI or the panel).
"""
from actors.translations.documents import MAX_SEGMENT_CHARS, JsonDocument, TextDocument, file_format, parse, text_pieces
from actors.translations.files import MAX_FILE_BYTES, output_path, read_input, write_atomically
from actors.translations.kind import KIND, translate_file
from actors.translations.languages import check_language, language_name, languages
from actors.translations.model import MAX_REQUEST_CHARS, placeholder_problem, requests_for, translate_segments
from actors.translations.start import MAX_UPLOAD_NAME, TranslationPlan, plan_translation, start_uploaded_translation

__all__ = [
    "KIND", "MAX_FILE_BYTES", "MAX_UPLOAD_NAME", "MAX_REQUEST_CHARS", "MAX_SEGMENT_CHARS", "JsonDocument", "TextDocument",
    "TranslationPlan", "check_language", "file_format", "language_name", "languages", "output_path", "parse",
    "placeholder_problem", "plan_translation", "read_input", "requests_for", "start_uploaded_translation",
    "text_pieces", "translate_file", "translate_segments", "write_atomically",
]
