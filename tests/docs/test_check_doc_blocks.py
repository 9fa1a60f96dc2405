#!/usr/bin/env python3
"""Tests of check_doc_blocks.py on small Markdown files written here.

  test_check_doc_blocks.py FLAGS.cfg

Each case writes one file, runs the checker on it and checks its exit status and the lines it
prints: a good file (a fragment, a whole program, shell, CMake and unmarked text blocks) passes; a
broken fragment fails naming the Markdown file and the block's line, and the compiler's message
points into the Markdown file; an unmarked C++ block, a marker with an unknown word, a marker
above a shell block and a file without any marked block fail, each with its own message.
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKER = os.path.join(HERE, "check_doc_blocks.py")
ROOT = os.path.dirname(os.path.dirname(HERE))

GOOD = """# good

<!-- compile: fragment -->
```cpp
fevo::layer_metrics m = fevo::compute(fevo::seq, fevo::oihw(before.data(), N, C, H, W),
                                      fevo::oihw(after.data(), N, C, H, W), tau);
std::printf("%g\\n", m.D);
```

<!-- compile: record -->
```cpp
#include <fevo/record/recorder.hpp>
int main() { fevo::record::recorder_options o; return o.tau == 0 ? 0 : 1; }
```

```sh
this is not C++ and is not compiled ((
```

```cmake
find_package(fevo 0.1 CONFIG REQUIRED)
```

```
plain text )))
```
"""

# The error is on the block's second line: line 6 of the file.
BROKEN = """# broken

<!-- compile: fragment -->
```cpp
auto prev = fevo::oihw(before.data(), N, C, H, W);
fevo::layer_metrics m = fevo::compute(fevo::seq, prev, tau);
```
"""

UNMARKED = """# unmarked

```cpp
int f() { return 0; }
```
"""

UNKNOWN_WORD = """<!-- compile: fragment gpu -->
```cpp
int x = 0;
```
"""

MARKER_ABOVE_SHELL = """<!-- compile: fragment -->
```sh
echo hi
```
"""

NOTHING = """# nothing to compile

```sh
echo hi
```
"""


def run(cfg, name, text, work):
    path = os.path.join(work, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    r = subprocess.run([sys.executable, CHECKER, "--config", cfg, "--root", ROOT, "--jobs", "2", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return r.returncode, r.stdout, path


def main():
    cfg = sys.argv[1]
    failures = []

    def expect(case, cond, out):
        if not cond:
            failures.append(f"{case}:\n{out}")
        print(f"{'ok  ' if cond else 'FAIL'} {case}")

    with tempfile.TemporaryDirectory(prefix="fevo-doc-check.") as work:
        rc, out, path = run(cfg, "good.md", GOOD, work)
        expect("good file passes, two blocks compiled, others ignored",
               rc == 0 and "2 of 2 blocks compiled" in out and f"ok   {path}:5 (fragment)" in out
               and f"ok   {path}:12 (record)" in out, out)

        rc, out, path = run(cfg, "broken.md", BROKEN, work)
        expect("broken fragment fails with the file and block line",
               rc == 1 and f"FAIL {path}:5: the block does not compile (fragment)" in out, out)
        expect("compiler message points at the Markdown line", f"{path}:6:" in out, out)

        rc, out, path = run(cfg, "unmarked.md", UNMARKED, work)
        expect("unmarked C++ block fails", rc == 1 and f"{path}:3: C++ block without a marker" in out, out)

        rc, out, path = run(cfg, "unknown.md", UNKNOWN_WORD, work)
        expect("unknown marker word fails", rc == 1 and f"{path}:1: unknown word(s) in compile marker: gpu" in out, out)

        rc, out, path = run(cfg, "shell.md", MARKER_ABOVE_SHELL, work)
        expect("marker above a shell block fails",
               rc == 1 and f"{path}:1: marker is not followed by a C++ block" in out, out)

        rc, out, path = run(cfg, "nothing.md", NOTHING, work)
        expect("a file without marked blocks fails", rc == 1 and "no marked C++ block was found" in out, out)

    if failures:
        print("\n".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
