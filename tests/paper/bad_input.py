#!/usr/bin/env python3
"""fevo_paper on bad input: exit status 2 and one line on stderr that names the problem.

usage: bad_input.py FEVO_PAPER WORKDIR
"""
import os
import shutil
import subprocess
import sys


def main():
    paper, work = sys.argv[1:3]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "empty"))
    os.makedirs(os.path.join(work, "one_class", "cat"))
    with open(os.path.join(work, "one_class", "cat", "a.png"), "wb") as f:
        f.write(b"not a png")
    os.makedirs(os.path.join(work, "bad_images", "cat"))
    os.makedirs(os.path.join(work, "bad_images", "dog"))
    for c in ("cat", "dog"):
        for i in range(2):
            with open(os.path.join(work, "bad_images", c, f"{i}.jpg"), "wb") as f:
                f.write(b"\xff\xd8\xff garbage")
    base = ["--steps", "2", "--train-images", "64", "--test-images", "32", "--quiet"]
    out = lambda name: ["--out", os.path.join(work, name)]
    cases = [
        ("missing Fashion-MNIST", ["--model", "vgg16", "--data", "fashion-mnist", "--fashion-mnist-dir",
                                   os.path.join(work, "empty")] + out("a"), "dataset-fashion-mnist"),
        ("unknown model", ["--model", "alexnet", "--data", "fashion-mnist"] + out("b"), "unknown model 'alexnet'"),
        ("width zero", ["--model", "vgg16", "--data", "fashion-mnist", "--width", "0"] + out("c"), "width 0"),
        ("size too small", ["--model", "resnet50", "--data", "fashion-mnist", "--size", "16"] + out("d"),
         "input size 16"),
        ("size too large", ["--model", "vgg16", "--data", "fashion-mnist", "--size", "5000"] + out("e"),
         "input size 5000"),
        ("missing folder", ["--model", "vgg16", "--data", os.path.join(work, "nowhere")] + out("f"), "nowhere"),
        ("one class", ["--model", "vgg16", "--data", os.path.join(work, "one_class"), "--size", "32"] + out("g"),
         "at least 2 class folders"),
        ("undecodable images", ["--model", "vgg16", "--data", os.path.join(work, "bad_images"), "--size", "32"]
         + out("h"), ".jpg"),
        ("bad halve steps", ["--model", "vgg16", "--data", "fashion-mnist", "--lr-halve-steps", "10,x"] + out("i"),
         "'x'"),
        ("bad device", ["--model", "vgg16", "--data", "fashion-mnist", "--device", "tpu"] + out("j"), "tpu"),
        ("no --out", ["--model", "vgg16", "--data", "fashion-mnist"], "--out"),
        ("unknown flag", ["--model", "vgg16", "--data", "fashion-mnist", "--bogus"] + out("k"), "bogus"),
        ("zero record interval", ["--model", "vgg16", "--data", "fashion-mnist", "--record-every", "0"] + out("l"),
         "--record-every"),
    ]
    failed = 0
    for name, args, want in cases:
        p = subprocess.run([paper] + args + (base if name != "unknown flag" else []), capture_output=True, text=True,
                           timeout=120)
        err = p.stderr.strip()
        ok = p.returncode == 2 and want in err and len(err.splitlines()) == 1 and err.startswith("fevo_paper: ")
        print(("ok  " if ok else "FAIL"), f"{name}: exit {p.returncode}: {err}")
        failed += not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
