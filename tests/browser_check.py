"""Open the built book offline in headless Chromium and move every slider (`make test-browser`).

For each page of the built HTML book (default ``_build/check/_build/html``, the output of
``make html-check``) this script

* checks that no ``<script>`` or stylesheet is loaded from the network (``http(s)://``);
* for pages with precomputed interactive figures (``div.bl-slider``, from
  ``bilevel_lib.interactive.slider_figure``), writes a copy of the page next to it with a small
  probe script, opens it from ``file://`` in headless Chromium with every host unresolvable
  (the network unplugged), and lets the probe move each slider to its other end the way a
  reader's drag does (set the value, fire ``input``). The probe reports, per figure, whether
  the inline script ran, which frame was visible before and after (a hash of its image), that
  the visible image decoded, the value read-out before and after, and every resource the page
  requested that was not a ``file:`` or ``data:`` URL.

It fails (exit status 1) unless every slider changes the drawing and the read-out, every
chapter in ``--chapters`` has at least one slider, and nothing was requested from the network.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys

_PROBE = """<script>
window.addEventListener("load", function () { setTimeout(function () {
  function hash(s) { var h = 0; for (var i = 0; i < s.length; i++) {
    h = (h * 31 + s.charCodeAt(i)) | 0; } return h; }
  function visible(root) {
    var shown = Array.prototype.filter.call(root.querySelectorAll("img.bl-frame"),
      function (im) { return !im.hidden && im.offsetWidth > 0; });
    if (shown.length !== 1) { return {count: shown.length}; }
    return {count: 1, hash: hash(shown[0].src), decoded: shown[0].naturalWidth > 0};
  }
  var res = [];
  document.querySelectorAll(".bl-slider").forEach(function (root) {
    var input = root.querySelector("input"), out = root.querySelector("output");
    var before = visible(root), out_before = out.textContent;
    input.value = (input.value === input.max) ? input.min : input.max;
    input.dispatchEvent(new Event("input", {bubbles: true}));
    res.push({id: root.id, ready: root.getAttribute("data-ready") === "1",
              frames: root.querySelectorAll("img.bl-frame").length,
              before: before, after: visible(root),
              out_before: out_before, out_after: out.textContent});
  });
  var remote = performance.getEntriesByType("resource").map(function (e) { return e.name; })
    .filter(function (u) { return !/^(file|data|blob|about):/.test(u); });
  var pre = document.createElement("pre");
  pre.id = "bl-browser-result";
  pre.textContent = JSON.stringify({sliders: res, remote: remote});
  document.body.appendChild(pre);
}, 200); });
</script>"""

_NET = re.compile(r"<script[^>]*\bsrc=[\"']https?://|<link[^>]*\bhref=[\"']https?://[^>]*"
                  r"stylesheet|<link[^>]*stylesheet[^>]*\bhref=[\"']https?://", re.I)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def probe(chromium: str, page: pathlib.Path) -> dict:
    """Open ``page`` with the probe in headless Chromium (offline); the probe's report."""
    text = page.read_text(encoding="utf-8")
    copy = page.with_name(f".browser-check-{page.name}")
    copy.write_text(text.replace("</body>", _PROBE + "</body>", 1), encoding="utf-8")
    try:
        out = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--allow-file-access-from-files",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
             "--virtual-time-budget=15000", "--dump-dom", copy.resolve().as_uri()],
            capture_output=True, text=True, timeout=180, check=False).stdout
    finally:
        copy.unlink(missing_ok=True)
    match = re.search(r'<pre id="bl-browser-result"[^>]*>(.*?)</pre>', out, re.S)
    if not match:
        return {"error": "the probe did not report (page did not load or script failed)"}
    import html

    return json.loads(html.unescape(match.group(1)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", nargs="?", default="_build/check/_build/html")
    parser.add_argument("--chapters", default="01,03,04,06,07",
                        help="chapter numbers that must each have a working slider")
    args = parser.parse_args(argv)
    root = pathlib.Path(args.build)
    pages = sorted(p for p in root.rglob("*.html")
                   if "_static" not in p.parts and not p.name.startswith("."))
    if not pages:
        print(f"no HTML pages under {root}: build the book first (make html-check)")
        return 1
    chromium = find_chromium()
    if chromium is None:
        print("no chromium found (apt-get install chromium)")
        return 1
    failures = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if _NET.search(text):
            failures.append(f"{page}: loads a script or stylesheet from the network")
    chapters_ok = set()
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if 'class="bl-slider"' not in text:
            continue
        report = probe(chromium, page)
        rel = page.relative_to(root)
        if "error" in report:
            failures.append(f"{rel}: {report['error']}")
            continue
        for url in report["remote"]:
            failures.append(f"{rel}: requested {url}")
        for s in report["sliders"]:
            b, a = s["before"], s["after"]
            ok = (s["ready"] and b.get("count") == 1 and a.get("count") == 1
                  and b.get("decoded") and a.get("decoded") and b["hash"] != a["hash"]
                  and s["out_before"] != s["out_after"])
            print(f"{rel}: {s['id']}: {s['frames']} frames, value "
                  f"{s['out_before']!r} -> {s['out_after']!r}, drawing changed: "
                  f"{ok}")
            if ok:
                chapters_ok.add(page.name[:2])
            else:
                failures.append(f"{rel}: slider {s['id']} did not change the drawing: {s}")
    for ch in args.chapters.split(","):
        if ch and ch not in chapters_ok:
            failures.append(f"chapter {ch}: no slider that changes its figure")
    print(f"{len(pages)} pages checked; chapters with working sliders: "
          f"{', '.join(sorted(chapters_ok)) or 'none'}")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
