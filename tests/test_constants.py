"""Pre-rendering campaign constants changes nothing a recipient receives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.content.constants import prerender_constants
from mailer.content.environment import from_source, make_environment
from mailer.content.flatten import flatten
from mailer.content.inline import inline_css
from tests.test_house_style import TEMPLATES, context

SOURCE = inline_css(flatten(TEMPLATES, "newsletter.html.j2"))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["nl", "en"]), st.one_of(st.none(), st.text(max_size=20)),
       st.text(max_size=20))
def test_prerendered_template_renders_the_same_message(language, first_name, org_name):
    data = context(language, first_name)
    data["org"] = {**data["org"], "name": org_name or "{{ not jinja }} & <b>"}
    env = make_environment()
    constants = {k: data[k] for k in ("org", "t", "list", "campaign")}
    fast = from_source(env, prerender_constants(env, SOURCE, "n.html.j2", constants),
                       "n.html.j2")
    slow = from_source(env, SOURCE, "n.html.j2")
    assert fast.render(data) == slow.render(data)


def test_only_constants_are_rendered_and_bound_names_are_left_alone():
    env = make_environment()
    source = ("{{ org.name }} {{ subscriber.first_name }} {% for t in items %}{{ t }}"
              "{% endfor %} {{ campaign.title | upper }}")
    out = prerender_constants(env, source, "x.html.j2", {
        "org": {"name": "A&B"}, "campaign": {"title": "nieuws"}, "t": {}, "list": {}})
    assert out.startswith("A&amp;B {{ subscriber.first_name }}")
    assert "{{ t }}" in out and out.endswith("NIEUWS")


def test_a_binding_with_plus_whitespace_control_shadows_a_constant_too():
    env = make_environment()
    source = "{%+ for t in items %}{{ t }}{% endfor %}{%+ set org = 1 %}{{ org }}"
    out = prerender_constants(env, source, "x.html.j2", {
        "org": {"name": "A"}, "campaign": {}, "t": {"x": 1}, "list": {}})
    assert "{{ t }}" in out and "{{ org }}" in out
