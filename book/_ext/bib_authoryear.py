"""Bibliography labels in the in-text style: "Vicol et al., 2022", not "[VLP+22]".

sphinxcontrib-bibtex cites author-year in the text (``bibtex_reference_style: author_year``)
but labels the bibliography with the formatting style's label style (alpha by default). This
registers a pybtex formatting style ``authoryear`` whose labels are the in-text form, sorted
by author, year and title; ``_config.yml`` selects it with ``bibtex_default_style``.
"""

from __future__ import annotations

import re

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _plain(text: str) -> str:
    # Drop BibTeX braces and accent commands ({\"o} -> o) for a plain-text label.
    text = re.sub(r"\\[a-zA-Z\"'`^~=.]\s*", "", text)
    return text.replace("{", "").replace("}", "")


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        seen = {}
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [_plain(" ".join(p.prelast_names + p.last_names)) for p in people]
            if not names:
                who = _plain(entry.fields.get("title", entry.key)).split(":")[0]
            elif len(names) == 1:
                who = names[0]
            elif len(names) == 2:
                who = f"{names[0]} and {names[1]}"
            else:
                who = f"{names[0]} et al."
            label = f"{who}, {entry.fields.get('year', 'n.d.')}"
            count = seen.get(label, 0)
            seen[label] = count + 1
            # Two works with the same label get a, b, ... after the year.
            yield label if count == 0 else f"{label}{chr(ord('a') + count)}"


class AuthorYearStyle(PlainStyle):
    default_label_style = "authoryear"
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabels)
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
