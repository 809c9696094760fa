"""The README's settings table lists every COACH_* variable of every settings class."""

import pytest

from coach.readme_table import README, readme_with_table
from coach.settings_table import settings_rows

pytestmark = pytest.mark.unit


def test_readme_table_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert readme_with_table(text) == text, "run `coach settings --write-readme`"


def test_every_variable_is_documented() -> None:
    rows = settings_rows()
    assert len(rows) > 30
    for variable, _default, _component, description in rows:
        assert variable.startswith("COACH_")
        assert description.strip(), f"{variable} has no description"
