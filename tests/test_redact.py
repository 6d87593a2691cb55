import pytest

from core.redact import redact
from tests.conftest import TEST_OPENAI_KEY


@pytest.mark.parametrize("text,expected", [
    ("Authorization: Bearer abcdefghijklmnop", "Authorization: Bearer ***"),
    ("used sk-zzzzzzzzzzzzzz here", "used *** here"),
    ('{"api_key": "hunter22secret"}', '{"api_key": "***"}'),
    ("password=correct-horse&x=1", "password=***&x=1"),
    ("redis://:pw-secret@host:6379/0", "redis://:***@host:6379/0"),
    ("postgresql://fleet:pass1@db/fleet", "postgresql://fleet:***@db/fleet"),
    (f"key is {TEST_OPENAI_KEY}.", "key is ***."),
    ("http://host:8080/path and 12 sets of 10 reps", "http://host:8080/path and 12 sets of 10 reps"),
])
def test_secrets_are_masked_and_the_rest_kept(text, expected, settings):
    assert redact(text) == expected
