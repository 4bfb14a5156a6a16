"""Read a form's fields from a rendered page, as a browser would submit them (hidden fields included), so a
test posts what the page really carries rather than a hand-made dict."""

from html.parser import HTMLParser


class _Forms(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms = []  # [(attrs, {name: value})]
        self._current = None
        self._select = None
        self._textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self._current = {}
            self.forms.append((attrs, self._current))
        elif self._current is None:
            return
        elif tag == "input" and attrs.get("name"):
            kind = attrs.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in attrs:
                    self._current[attrs["name"]] = attrs.get("value", "on")
            elif kind not in ("submit", "button"):
                self._current[attrs["name"]] = attrs.get("value", "")
        elif tag == "select" and attrs.get("name"):
            self._select = attrs["name"]
            self._current.setdefault(self._select, None)
        elif tag == "option" and self._select:
            # The selected option wins; without one, the first option is what a browser submits.
            if "selected" in attrs or self._current[self._select] is None:
                self._current[self._select] = attrs.get("value", "")
        elif tag == "textarea" and attrs.get("name"):
            self._textarea = attrs["name"]
            self._current[self._textarea] = ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea and self._current is not None:
            self._current[self._textarea] += data


def page_forms(html):
    """``[(form attributes, {field name: value})]`` of every form on the page, in page order."""
    parser = _Forms()
    parser.feed(html)
    return [(attrs, {k: ("" if v is None else v) for k, v in fields.items() if k != "csrfmiddlewaretoken"})
            for attrs, fields in parser.forms]


def form_with(html, field):
    """The field values of the first form on the page that has a field named ``field``."""
    for _, fields in page_forms(html):
        if field in fields:
            return fields
    raise AssertionError(f"no form with a field {field!r} on the page")


def form_values(client, url, field):
    """GET ``url`` and return the field values of its first form with a field named ``field``."""
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return form_with(response.content.decode(), field)
