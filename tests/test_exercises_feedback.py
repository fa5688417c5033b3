"""The build-it checkers' shared machinery: one line of feedback, the reader's code run safely."""

import pytest
import torch
from torch import nn

from unet_edu.exercises import chapter1
from unet_edu.exercises.feedback import (Feedback, ReaderModule, Verdict, checker, hint, pick,
                                         problem, replace_modules, require_callable,
                                         require_class, require_signature, run)


def test_feedback_is_one_marked_line_in_text_and_html():
    f = Feedback("hint", "your crop is\none pixel off: use `x // 2`")
    assert str(f) == repr(f) == "✗ not yet: your crop is one pixel off: use `x // 2`"
    assert f.status == "hint" and not f.passed and f.attempted
    html = f._repr_html_()
    assert html.startswith('<div class="unet-exercise unet-exercise--hint">')
    assert "<code>x // 2</code>" in html and "\n" not in html
    assert str(Feedback("todo", "fill in")).startswith("○ not attempted yet: ")
    assert Feedback("pass", "ok").passed and str(Feedback("pass", "ok")).startswith("✓ correct: ")
    assert str(Feedback("error", "x")).startswith("⚠ ")
    assert "unet-exercise--error" in Feedback("error", "a < b & c")._repr_html_()
    assert "a &lt; b &amp; c" in Feedback("error", "a < b & c")._repr_html_()
    with pytest.raises(ValueError, match="status must be one of"):
        Feedback("maybe", "x")


def test_checker_turns_every_outcome_into_one_line():
    @checker
    def check(fn):
        require_callable(fn, "my_fn", "(x)")
        require_signature(fn, "my_fn", (1,), "(x)")
        ran = run(fn, 1, what="my_fn")
        if not ran.ok:
            raise Verdict(ran.failure("my_fn"))
        if ran.value != 2:
            raise Verdict(hint("add one"))
        return Feedback("pass", "fine")

    def todo(x):
        raise NotImplementedError("fill in my_fn")

    def empty(x):
        pass

    def broken(x):
        return [1][x + 5]

    assert check(lambda x: x + 1).passed
    assert check(todo).status == "todo" and "fill in `my_fn`" in check(todo).text
    assert check(empty).status == "todo" and "return" in check(empty).text
    assert check(lambda x: x).status == "hint"
    out = check(broken)
    assert out.status == "error" and "IndexError" in out.text and "`return [1][x + 5]`" in out.text
    assert "/" not in out.text  # no file path: a saved notebook must not show local paths
    assert check(3).status == "error" and "pass the function `my_fn` itself" in check(3).text
    assert check(nn.ReLU()).status == "error"
    assert check(lambda a, b: a).status == "error" and "must take (x)" in check(lambda a, b: a).text

    @checker
    def buggy(fn):
        return {}["missing"]

    assert buggy(None).status == "error" and "KeyError" in buggy(None).text


def test_a_check_leaves_the_notebooks_random_stream_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    chapter1.check_plain_stack(lambda depth, hidden, channels: nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1)))
    assert torch.equal(torch.rand(3), expected)


def test_require_class_tells_a_class_from_an_instance():
    @checker
    def check(cls):
        require_class(cls, "MyBlock")
        return Feedback("pass", "ok")

    assert check(nn.ReLU).passed
    assert "not an instance" in check(nn.ReLU()).text
    assert "must derive from `torch.nn.Module`" in check(int).text
    assert "pass the class `MyBlock` itself" in check(len).text


def test_pick_uses_the_solution_until_the_readers_code_passes(capsys):
    @checker
    def check(fn):
        ran = run(fn, what="my_fn")
        return Feedback("pass", "ok") if ran.ok and ran.value == 1 else problem("no")

    def unfilled():
        raise NotImplementedError

    solution = lambda: 1  # noqa: E731
    assert pick(unfilled, solution, check, "my_fn") is solution
    assert capsys.readouterr().out == "my_fn: not filled in yet, using the worked solution\n"
    assert pick(lambda: 2, solution, check, "my_fn") is solution
    assert "not passing its check yet" in capsys.readouterr().out
    mine = lambda: 1  # noqa: E731
    assert pick(mine, solution, check, "my_fn") is mine
    assert capsys.readouterr().out == "using your my_fn\n"


def test_replace_modules_swaps_layers_in_lists_dicts_and_sequentials():
    model = nn.Sequential(nn.ReLU(), nn.ModuleList([nn.ReLU(), nn.Linear(2, 2)]),
                          nn.ModuleDict({"a": nn.ReLU()}))
    n = replace_modules(model, nn.ReLU, lambda m: ReaderModule(m, lambda layer, x: -x))
    assert n == 3
    assert isinstance(model[0], ReaderModule) and isinstance(model[1][0], ReaderModule)
    assert isinstance(model[2]["a"], ReaderModule)
    assert torch.equal(model[0](torch.ones(2)), -torch.ones(2))
