"""Issue 11, safe publishing: ``flask routing load`` shows the diff and every warning, refuses
a file edited from an older version than the live one (``--base``) unless forced, records a
note and an author; ``history`` lists them and ``rollback`` republishes an old version. The
same functions (``routing.publishing``) serve the web console."""

from __future__ import annotations

import getpass
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from crisisline.settings import DEFAULT_ROUTING_FILE
from routing import publishing
from tests.conftest import table_row_counts

EXAMPLE = DEFAULT_ROUTING_FILE.read_text(encoding="utf-8")
FEWER_RETRIES = EXAMPLE.replace("  retries: 2 ", "  retries: 1 ")
LONGER_TIMEOUT = EXAMPLE.replace("  timeout_seconds: 6 ", "  timeout_seconds: 8 ")


def write(tmp_path: Path, text: str, name: str = "routing.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def live(app: Flask) -> int:
    with app.app_context():
        found = publishing.live_version()
        assert found is not None
        return found.id


def exported(app: Flask) -> str:
    return app.test_cli_runner().invoke(args=["routing", "export"]).output


def test_preview_shows_the_diff_against_the_live_version_and_every_warning(app: Flask) -> None:
    with app.app_context():
        preview = publishing.preview(FEWER_RETRIES, base=live(app))

    assert preview.valid and not preview.stale and not preview.unchanged
    assert f"--- live (version {live(app)})" in preview.diff
    assert "-  retries: 2 " in preview.diff and "+  retries: 1 " in preview.diff
    assert not any(w.path == "line.backup_number" for w in preview.warnings)  # BACKUP_NUMBER agrees
    assert any("coverage gap" in w.message for w in preview.warnings)


def test_preview_of_an_invalid_draft_lists_its_errors_with_lines(app: Flask) -> None:
    broken = EXAMPLE.replace('"+1 312 555 0103"', '"12"')

    with app.app_context():
        preview = publishing.preview(broken, base=live(app))

    assert not preview.valid
    line = 1 + broken.splitlines().index('    phone: "12"')
    assert [(p.path, p.line) for p in preview.problems] == [("counselors[2].phone", line)]


def test_load_shows_the_diff_and_warnings_then_publishes_with_note_and_author(app: Flask, tmp_path: Path) -> None:
    base = live(app)
    runner = app.test_cli_runner()

    result = runner.invoke(
        args=["routing", "load", str(write(tmp_path, FEWER_RETRIES)), "--base", str(base), "--note", "fewer retries"]
    )

    assert result.exit_code == 0, result.output
    assert "+  retries: 1 " in result.output
    assert "warning: " in result.output and "coverage gap" in result.output
    assert f"published routing version {base + 1} (edited from version {base})" in result.output
    newest = runner.invoke(args=["routing", "history"]).output.splitlines()[0]
    assert newest.split()[0] == str(base + 1)
    assert getpass.getuser() in newest and "fewer retries" in newest and newest.endswith("(live)")
    assert exported(app) == FEWER_RETRIES


def test_a_stale_file_is_refused_and_the_live_routing_stays(app: Flask, tmp_path: Path) -> None:
    base = live(app)
    runner = app.test_cli_runner()
    first = runner.invoke(
        args=["routing", "load", str(write(tmp_path, FEWER_RETRIES)), "--base", str(base), "--note", "colleague"]
    )
    assert first.exit_code == 0, first.output
    before_rows = table_row_counts(app)

    # Edited from the same base, but someone published in between.
    stale = runner.invoke(
        args=["routing", "load", str(write(tmp_path, LONGER_TIMEOUT, "mine.yaml")), "--base", str(base), "--note", "me"]
    )

    assert stale.exit_code == 1
    assert f"refused: the live version is {base + 1}, newer than version {base}" in stale.output
    assert "the live routing is unchanged" in stale.output
    assert exported(app) == FEWER_RETRIES
    assert table_row_counts(app) == before_rows


def test_force_publishes_over_a_newer_live_version(app: Flask, tmp_path: Path) -> None:
    base = live(app)
    runner = app.test_cli_runner()
    runner.invoke(args=["routing", "load", str(write(tmp_path, FEWER_RETRIES)), "--base", str(base), "--note", "a"])

    forced = runner.invoke(
        args=["routing", "load", str(write(tmp_path, LONGER_TIMEOUT, "b.yaml")), "--base", str(base),
              "--note", "b", "--force", "--author", "supervisor kim"]
    )  # fmt: skip

    assert forced.exit_code == 0, forced.output
    assert exported(app) == LONGER_TIMEOUT
    assert "supervisor kim" in runner.invoke(args=["routing", "history"]).output.splitlines()[0]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], "say which version this file was edited from (--base N)"),
        (["--base", "999999"], "there is no version 999999"),
        (["--base", "LIVE", "--note", "  "], "a note saying why is required"),
    ],
)
def test_load_refuses_without_a_base_a_real_base_or_a_note(
    app: Flask, tmp_path: Path, extra: list[str], expected: str
) -> None:
    extra = [str(live(app)) if part == "LIVE" else part for part in extra]
    args = ["routing", "load", str(write(tmp_path, FEWER_RETRIES)), *extra]
    if "--note" not in extra:
        args += ["--note", "why"]

    result = app.test_cli_runner().invoke(args=args)

    assert result.exit_code == 1
    assert expected in result.output
    assert exported(app) == EXAMPLE


def test_load_without_a_note_is_a_usage_error(app: Flask, tmp_path: Path) -> None:
    result = app.test_cli_runner().invoke(args=["routing", "load", str(write(tmp_path, FEWER_RETRIES))])

    assert result.exit_code == 2 and "--note" in result.output
    assert exported(app) == EXAMPLE


def test_a_file_with_a_duplicate_key_is_refused_with_its_line(app: Flask, tmp_path: Path) -> None:
    first = '  backup_number: "+1 800 273 8255"'
    doubled = EXAMPLE.replace(first, f'{first}\n  backup_number: "+1 312 555 0199"')

    result = app.test_cli_runner().invoke(
        args=["routing", "load", str(write(tmp_path, doubled)), "--base", str(live(app)), "--note", "x"]
    )

    assert result.exit_code == 1
    line = next(n for n, text in enumerate(doubled.splitlines(), 1) if text.startswith('  backup_number: "+1 312'))
    assert f"line {line}, column 3: line.backup_number: 'backup_number' appears twice" in result.output
    assert exported(app) == EXAMPLE


def test_rollback_republishes_an_old_version_as_a_new_one(app: Flask, tmp_path: Path) -> None:
    original = live(app)
    runner = app.test_cli_runner()
    runner.invoke(args=["routing", "load", str(write(tmp_path, FEWER_RETRIES)), "--base", str(original), "--note", "a"])

    result = runner.invoke(args=["routing", "rollback", str(original), "--note", "retries were fine"])

    assert result.exit_code == 0, result.output
    assert "-  retries: 1 " in result.output and "+  retries: 2 " in result.output
    assert f"published routing version {original + 2}: the text of version {original}" in result.output
    assert exported(app) == EXAMPLE
    history = runner.invoke(args=["routing", "history"]).output.splitlines()
    assert len(history) == 3
    assert f"rollback to version {original}: retries were fine" in history[0]


def test_rollback_to_the_live_text_or_a_missing_version_changes_nothing(app: Flask) -> None:
    runner = app.test_cli_runner()

    same = runner.invoke(args=["routing", "rollback", str(live(app))])
    missing = runner.invoke(args=["routing", "rollback", "999999"])

    assert same.exit_code == 0 and "is already live" in same.output
    assert missing.exit_code == 1 and "there is no version 999999" in missing.output
    assert len(runner.invoke(args=["routing", "history"]).output.splitlines()) == 1


def test_history_diff_shows_what_a_version_changed(app: Flask, tmp_path: Path) -> None:
    base = live(app)
    runner = app.test_cli_runner()
    runner.invoke(args=["routing", "load", str(write(tmp_path, FEWER_RETRIES)), "--base", str(base), "--note", "a"])

    result = runner.invoke(args=["routing", "history", "--diff", str(base + 1)])

    assert result.output.startswith(f"--- version {base}\n+++ version {base + 1}\n")
    assert "+  retries: 1 " in result.output


def test_publish_functions_refuse_a_stale_draft_for_the_console_too(app: Flask) -> None:
    with app.app_context():
        base = live(app)
        publishing.publish(FEWER_RETRIES, base=base, note="first", author="ana")

        with pytest.raises(publishing.PublishRefused) as refused:
            publishing.publish(LONGER_TIMEOUT, base=base, note="second", author="ben")

        assert refused.value.reason == "stale"
        assert refused.value.preview is not None and "+  timeout_seconds: 8 " in refused.value.preview.diff
        assert [(row.author, row.note, row.live) for row in publishing.history()][:1] == [("ana", "first", True)]


def test_two_editors_publishing_from_the_same_base_at_once_one_is_refused(app: Flask) -> None:
    base = live(app)
    start = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def edit(author: str, text: str) -> None:
        with app.app_context():
            start.wait()
            try:
                publishing.publish(text, base=base, note=author, author=author)
                outcomes[author] = "published"
            except publishing.PublishRefused as refused:
                outcomes[author] = refused.reason

    editors = [
        threading.Thread(target=edit, args=("ana", FEWER_RETRIES)),
        threading.Thread(target=edit, args=("ben", LONGER_TIMEOUT)),
    ]
    for editor in editors:
        editor.start()
    for editor in editors:
        editor.join(timeout=30)

    assert sorted(outcomes.values()) == ["published", "stale"]
    winner = next(author for author, outcome in outcomes.items() if outcome == "published")
    assert exported(app) == (FEWER_RETRIES if winner == "ana" else LONGER_TIMEOUT)
    with app.app_context():
        assert len(publishing.history()) == 2


def previewing_together(monkeypatch: pytest.MonkeyPatch, publishers: int) -> None:
    """Each of ``publishers`` publishes only once all have previewed their draft, so every one
    of them saw the same live version there (as two clicks a moment apart do)."""
    previewed = threading.Barrier(publishers, timeout=30)
    preview = publishing.preview

    def previewed_by_all(*args: Any, **kwargs: Any) -> publishing.Preview:
        draft = preview(*args, **kwargs)
        previewed.wait()
        return draft

    monkeypatch.setattr(publishing, "preview", previewed_by_all)


def test_two_editors_publishing_the_same_text_at_once_only_one_publishes_it(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A double-clicked Publish, or two administrators with the same edit: one version is
    written, and only its publisher is told they created it (the other is told it is live)."""
    base = live(app)
    previewing_together(monkeypatch, 2)
    start = threading.Barrier(2)
    results: dict[str, publishing.Published] = {}

    def edit(author: str) -> None:
        with app.app_context():
            start.wait()
            results[author] = publishing.publish(FEWER_RETRIES, base=base, note=f"{author}'s note", author=author)

    editors = [threading.Thread(target=edit, args=(author,)) for author in ("ana", "ben")]
    for editor in editors:
        editor.start()
    for editor in editors:
        editor.join(timeout=30)

    assert sorted(results) == ["ana", "ben"]
    assert {result.version for result in results.values()} == {base + 1}
    assert sorted(result.created for result in results.values()) == [False, True]
    winner = next(author for author, result in results.items() if result.created)
    assert exported(app) == FEWER_RETRIES
    with app.app_context():
        assert [(row.number, row.author, row.note) for row in publishing.history()][:2] == [
            (base + 1, winner, f"{winner}'s note"),
            (base, "tests", ""),
        ]
        assert len(publishing.history()) == 2
