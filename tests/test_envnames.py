"""Environment variables: one prefix, LKRIG_. The old RIG_ names are read until 0.3, through
lkrig_instrument.envnames only, with one warning per name."""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lkrig_instrument import envnames

from rig import paths

REPO = Path(__file__).resolve().parent.parent
OLD_NAME = re.compile(r"\bRIG_[A-Z0-9_]*[A-Z0-9]")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[pytest.MonkeyPatch]:
    """No rig variable set, no warning given yet; warnings captured."""
    for old, new in envnames.RENAMED.items():
        monkeypatch.delenv(old, raising=False)
        monkeypatch.delenv(new, raising=False)
    envnames.deprecated.cache_clear()
    caplog.set_level(logging.WARNING, logger=envnames.log.name)
    yield monkeypatch
    envnames.deprecated.cache_clear()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == envnames.log.name]


def test_the_new_name_is_read_without_a_warning(env: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    env.setenv("LKRIG_CACHE", "/new")
    assert envnames.get("LKRIG_CACHE") == "/new"
    assert paths.cache_dir() == Path("/new")
    assert warnings(caplog) == []


def test_an_old_name_is_read_with_exactly_one_warning(env: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    env.setenv("RIG_CACHE", "/old")
    assert [envnames.get("LKRIG_CACHE") for _ in range(3)] == ["/old"] * 3
    assert paths.cache_dir() == Path("/old")
    assert warnings(caplog) == [
        "RIG_CACHE is deprecated, use LKRIG_CACHE; the old name stops working in 0.3"]


def test_with_both_names_set_the_new_one_wins(env: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    env.setenv("RIG_PROFILE", "slow")
    env.setenv("LKRIG_LATENCY_PROFILE", "fast")
    assert envnames.get("LKRIG_LATENCY_PROFILE") == "fast"
    assert warnings(caplog) == []


def test_unset_or_empty_gives_the_default(env: pytest.MonkeyPatch) -> None:
    assert envnames.get("LKRIG_DEFAULT_SCENARIO", "seed") == "seed"
    env.setenv("LKRIG_DEFAULT_SCENARIO", "")
    env.setenv("RIG_SCENARIO", "")
    assert envnames.get("LKRIG_DEFAULT_SCENARIO", "seed") == "seed"


def test_a_setting_is_read_by_its_new_name() -> None:
    with pytest.raises(ValueError, match=r"envnames.get\('RIG_CACHE'\): read a setting by its LKRIG_ name"):
        envnames.get("RIG_CACHE")


def test_every_rename_keeps_the_prefix_and_no_two_collide() -> None:
    assert all(old.startswith("RIG_") and new.startswith("LKRIG_")
               for old, new in envnames.RENAMED.items())
    assert len(set(envnames.RENAMED.values())) == len(envnames.RENAMED)


def test_the_readme_lists_every_rename() -> None:
    rows = re.findall(r"^\| `(RIG_\w+)` \| `(LKRIG_\w+)` \|", (REPO / "README.md").read_text(), re.M)
    assert dict(rows) == envnames.RENAMED and len(rows) == len(envnames.RENAMED)


def test_an_old_name_appears_only_beside_its_new_one() -> None:
    """Readers go through envnames; shell and compose files fall back as ${NEW:-${OLD:-...}}."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    skip = {"instrument/lkrig_instrument/envnames.py", "tests/test_envnames.py"}
    problems = []
    for rel in sorted(set(listed) - skip):
        path = REPO / rel
        if not path.is_file() or path.stat().st_size > 1 << 20:
            continue
        text = path.read_text(errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            for old in OLD_NAME.findall(line):
                new = envnames.RENAMED.get(old)
                if new is None or not re.search(rf"\b{new}\b", line):
                    problems.append(f"{rel}:{n}: {old} " + (
                        f"without {new}" if new else "is not in envnames.RENAMED"))
    assert not problems, "\n".join(problems)
