#!/usr/bin/env python3
"""report.html in headless Chromium (Debian's `chromium`): it loads with no error and its
screenshot is not blank.

    python3 tests/report/test_chromium.py [CHROMIUM]

The report of the fixture runs (make_fixture.py) is written to a temporary directory, then:
  1. A copy with a probe (inline script, first thing in <head>) is loaded with --dump-dom. The
     probe records every error event (a resource that failed to load, a script error) and every
     console.error, and on the load event writes into the DOM one line
       FEVO-PROBE images=N broken=B first=ID top=T above=A open=O errors=E ...
     where broken counts the <img> not complete or with naturalWidth 0, ID is the id of the
     page's first table, T the distance in CSS pixels from the top of the page to it, A the number
     of images drawn above its bottom and O the number of open <details>. The line must be there
     (the page loaded), with N = the number of figures, B = 0, E = 0, and the findings table
     first, at the top (ID = findings, T < 150 with the window's 1280 px width, A = 0), the run
     settings folded (O = 0).
  2. The same probe on a copy with one image's data cut short must report broken=1, and on a
     copy with a figure moved to the top of the page above=1 and T >= 150 (the probe can fail).
  3. The unmodified report.html is screenshotted; the PNG must decode, have the window's size
     and not be blank (more than 2 % of its pixels differ from the top-left one, many colours).
Exit status 0 when all hold; 1 with the reason otherwise. The report itself holds no script.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WINDOW = (1280, 2400)

PROBE = """<script>
(function () {
  var errs = [];
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) errs.push('resource ' + t.tagName + ' ' + String(t.src || t.href).slice(0, 60));
    else errs.push('script ' + e.message);
  }, true);
  var ce = console.error;
  console.error = function () { errs.push('console.error ' + Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); };
  window.addEventListener('load', function () {
    var imgs = document.images, bad = 0;
    for (var i = 0; i < imgs.length; i++) if (!imgs[i].complete || imgs[i].naturalWidth === 0) bad++;
    var t = document.querySelector('table'), top = -1, above = 0;
    if (t) {
      var r = t.getBoundingClientRect();
      top = Math.round(r.top + window.scrollY);
      for (var k = 0; k < imgs.length; k++) if (imgs[k].getBoundingClientRect().top < r.bottom) above++;
    }
    var p = document.createElement('pre');
    p.id = 'fevo-probe';
    p.textContent = 'FEVO-PROBE images=' + imgs.length + ' broken=' + bad + ' first=' + (t ? t.id : 'none') +
      ' top=' + top + ' above=' + above + ' open=' + document.querySelectorAll('details[open]').length +
      ' errors=' + errs.length + (errs.length ? ' ' + errs.join(' | ') : '');
    document.body.appendChild(p);
  });
})();
</script>"""


def fail(msg):
    print(f"FAILED: {msg}")
    sys.exit(1)


def chromium(exe, profile, *args):
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        fail("chromium did not finish within 90 s: " + " ".join(cmd))


def probe(exe, tmp, html, name):
    path = os.path.join(os.path.dirname(html), name)
    with open(html, encoding="utf-8") as f:
        doc = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc.replace("<head>", "<head>\n" + PROBE, 1))
    p = chromium(exe, os.path.join(tmp, "profile-" + name), "--dump-dom", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                 "file://" + path)
    m = re.search(r"FEVO-PROBE images=(\d+) broken=(\d+) first=(\S+) top=(-?\d+) above=(\d+) open=(\d+) "
                  r"errors=(\d+)([^<]*)", p.stdout)
    if not m:
        fail(f"the probe did not run in {path} (page not loaded?); chromium exit {p.returncode}, "
             f"stderr tail:\n{p.stderr[-2000:]}")
    return {"images": int(m.group(1)), "broken": int(m.group(2)), "first": m.group(3), "top": int(m.group(4)),
            "above": int(m.group(5)), "open": int(m.group(6)), "errors": int(m.group(7)), "detail": m.group(8).strip()}


def main():
    exe = sys.argv[1] if len(sys.argv) > 1 else shutil.which("chromium")
    if not exe:
        fail("chromium not found on PATH (Debian: apt-get install chromium; ./run.sh test installs it)")
    tmp = tempfile.mkdtemp(prefix="fevo_report_chromium_")
    try:
        fx = os.path.join(tmp, "fixture")
        subprocess.run([sys.executable, os.path.join(HERE, "make_fixture.py"), fx], check=True)
        out = os.path.join(tmp, "report")
        p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "fevo_report.py"),
                            os.path.join(fx, "vgg16"), os.path.join(fx, "resnet50"), "--out", out],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            fail(f"fevo_report.py exit {p.returncode}: {p.stderr}")
        html = p.stdout.strip().splitlines()[-1]
        n_figs = len([f for f in os.listdir(os.path.join(out, "figures")) if f.endswith(".png")])

        r = probe(exe, tmp, html, "probe.html")
        print(f"report.html: {r['images']} images, {r['broken']} broken, {r['errors']} load errors {r['detail']}; "
              f"first table '{r['first']}' at {r['top']} px, {r['above']} images above its end, "
              f"{r['open']} open <details>")
        if r["images"] != n_figs or r["broken"] or r["errors"]:
            fail(f"expected {n_figs} images, 0 broken, 0 errors")
        if r["first"] != "findings" or not 0 <= r["top"] < 150 or r["above"]:
            fail("the findings table is not the first thing on the page")
        if r["open"]:
            fail("the run settings are not folded")

        # Negative control: one image's PNG data cut short must be seen as broken.
        with open(html, encoding="utf-8") as f:
            doc = f.read()
        i = doc.index("data:image/png;base64,") + len("data:image/png;base64,")
        bad = os.path.join(out, "bad.html")
        with open(bad, "w", encoding="utf-8") as f:
            f.write(doc[:i] + "iVBORw0KGgo" + doc[doc.index('"', i):])
        broken_bad = probe(exe, tmp, bad, "probe_bad.html")["broken"]
        print(f"negative control (one truncated image): {broken_bad} broken")
        if broken_bad != 1:
            fail("the probe did not see the truncated image")
        # Negative control: a figure moved above the findings table must be seen there.
        a, b = doc.index("<figure>"), doc.index("</figure>") + len("</figure>")
        moved = doc[:a] + doc[b:]
        moved = moved.replace("<body>\n", "<body>\n" + doc[a:b] + "\n", 1)
        bad = os.path.join(out, "bad_order.html")
        with open(bad, "w", encoding="utf-8") as f:
            f.write(moved)
        r = probe(exe, tmp, bad, "probe_order.html")
        print(f"negative control (a figure first): findings table at {r['top']} px, {r['above']} images above")
        if r["above"] != 1 or r["top"] < 150:
            fail("the probe did not see the figure above the findings table")

        shot = os.path.join(tmp, "shot.png")
        p = chromium(exe, os.path.join(tmp, "profile-shot"), f"--screenshot={shot}",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}", "file://" + html)
        if not os.path.isfile(shot):
            fail(f"no screenshot (chromium exit {p.returncode}); stderr tail:\n{p.stderr[-2000:]}")
        a = mpimg.imread(shot)
        rgb = a[..., :3].reshape(-1, 3)
        differ = float(np.mean(np.any(rgb != rgb[0], axis=1)))
        colours = len(np.unique((rgb * 255).astype(np.uint8), axis=0))
        print(f"screenshot {a.shape[1]}x{a.shape[0]}: {100 * differ:.1f} % non-background, {colours} colours")
        if (a.shape[1], a.shape[0]) != WINDOW:
            fail(f"screenshot size {a.shape[1]}x{a.shape[0]}, expected {WINDOW[0]}x{WINDOW[1]}")
        if differ <= 0.02 or colours < 16:
            fail("the screenshot is blank")
        print("PASSED")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
