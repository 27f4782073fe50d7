"""Progress bars survive TFDS's lazy-import hook (which swaps ``builtins.__import__``)."""
from __future__ import annotations

import io
import sys

import pytest
from etils import epy
from rich.console import Console
from rich.progress import Progress

from lopt_cli.console import import_hook_active, progress_bar


def quiet_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True)


def test_a_plain_rich_bar_fails_inside_the_hook_and_ours_shows_its_last_frame():
    plain = Progress(console=quiet_console())
    plain.add_task("plain", total=3)
    ours = progress_bar(console=quiet_console())
    ours.add_task("ours", total=3)
    before = ours.get_renderable()
    with epy.lazy_imports():
        assert import_hook_active()
        with pytest.raises(ValueError, match="Relative import statements not supported"):
            plain.get_renderable()
        assert ours.get_renderable() is before
    assert not import_hook_active()
    assert ours.get_renderable() is not before  # redrawn once the hook is gone


def test_a_bar_imports_tfds_before_it_starts():
    progress_bar(console=quiet_console())
    assert "tensorflow_datasets" in sys.modules


def test_another_librarys_import_hook_does_not_freeze_the_bar(monkeypatch):
    import builtins
    import functools

    original = builtins.__import__

    def other_hook(*args, **kwargs):
        return original(*args, **kwargs)

    for hook in (other_hook, functools.partial(other_hook)):
        monkeypatch.setattr(builtins, "__import__", hook)
        assert not import_hook_active()
