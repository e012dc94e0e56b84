"""The template sandbox: strict, escaping, and closed to Python internals."""

from __future__ import annotations

import pytest

from mailer.content.environment import TemplateProblem, load, make_environment, render


@pytest.fixture
def env(tmp_path):
    def make(name: str, text: str):  # noqa: ANN202
        (tmp_path / name).write_text(text, encoding="utf-8")
        return load(make_environment(tmp_path), name)
    return make


def test_default_fills_a_missing_field_and_html_is_escaped(env):
    template = env("t.html.j2", '<p>Dag {{ subscriber.first_name | default("lezer") }}, '
                                "{{ subscriber.city }}</p>")
    out = render(template, {"subscriber": {"city": "<Gent & co>"}})
    assert out == "<p>Dag lezer, &lt;Gent &amp; co&gt;</p>"


def test_text_templates_are_not_escaped(env):
    template = env("t.txt.j2", "Dag {{ name }}")
    assert render(template, {"name": "Jan & <An>"}) == "Dag Jan & <An>"


def test_a_missing_field_is_an_error_naming_template_and_field(env):
    template = env("t.html.j2", "line one\n{{ subscriber.frist_name }}\n")
    with pytest.raises(TemplateProblem) as caught:
        render(template, {"subscriber": {"first_name": "An"}})
    assert "t.html.j2" in str(caught.value) and "frist_name" in str(caught.value)
    assert "default" in caught.value.hint


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ subscriber.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{% set _ = subscriber.update({'x': 1}) %}{{ subscriber }}",
    "{{ subscriber.clear() }}",
])
def test_python_internals_and_mutation_are_refused(env, source):
    template = env("evil.html.j2", source)
    with pytest.raises(TemplateProblem) as caught:
        render(template, {"subscriber": {"first_name": "An"}})
    assert "evil.html.j2" in str(caught.value)


def test_syntax_error_and_missing_template_are_clear(env, tmp_path):
    with pytest.raises(TemplateProblem, match=r"bad.html.j2, line 2"):
        env("bad.html.j2", "ok\n{% if %}\n")
    with pytest.raises(TemplateProblem, match="Template not found: nope.html.j2"):
        load(make_environment(tmp_path), "nope.html.j2")
