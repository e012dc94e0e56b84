"""The web pages, rendered from the project's templates/web/ in the house style.

The templates are the organisation's to edit, so they run in the same sandbox as the
mail templates, with autoescaping. The style sheet is rendered once at start-up (the
organisation's colours) and served from this site: the pages' Content-Security-Policy
allows no inline style, no script and nothing from elsewhere.
"""

from __future__ import annotations

from typing import Any

from mailer.config import Settings
from mailer.content.environment import load, make_environment, render
from mailer.scaffold import SHIPPED
from mailer.web.texts import page_texts

__all__ = ["Pages"]


class Pages:
    def __init__(self, settings: Settings) -> None:
        folder = settings.templates_path / "web"
        if not (folder / "page.html.j2").is_file():
            folder = SHIPPED / "templates" / "web"  # the house style's, as shipped
        self._env = make_environment(folder)
        self._org = settings.organisation.model_dump()
        self._page = load(self._env, "page.html.j2")
        self.css = render(load(self._env, "site.css.j2"), {"org": self._org}).encode()

    def render(self, language: str, *, title: str, lines: list[str] = (),  # type: ignore[assignment]
               form: dict[str, Any] | None = None, links: list[tuple[str, str]] = (),  # type: ignore[assignment]
               template: str | None = None, **extra: Any) -> str:
        page = load(self._env, template) if template else self._page
        return render(page, {"language": language, "org": self._org, "title": title,
                             "lines": list(lines), "form": form, "links": list(links),
                             "t": page_texts(language), **extra})
