"""The training loop the recorder's crash test kills (test_recorder.py): a fevo.Recorder over three
float32 layers whose weights at each step are a pure function of SEED and the step, as if training
were replayed from step 0. It records steps 1..STEPS (every step), closes the run, and prints
"resumed <last step|none>" once the run is open, "step <s>" after each record and "done".

    python record_worker.py OUT compact|series SEED STEPS
"""
import sys

import numpy as np

import fevo

SHAPES = {"conv1.weight": (64, 32, 3, 3), "block/conv,2.weight": (96, 64, 3, 3), "fc.weight": (10, 128, 1, 1)}


def weights_at(seed, step, k, shape):
    """Layer k's weights at `step`: a random walk of small steps, some weights frozen."""
    base = np.random.default_rng([seed, k]).standard_normal(shape).astype(np.float32) * 0.05
    if step == 0:
        return base
    noise = np.random.default_rng([seed, k, step]).standard_normal(shape).astype(np.float32)
    frozen = np.random.default_rng([seed, k, 7]).random(shape) < 0.3
    return base + np.where(frozen, 0, noise * np.float32(1e-3) * np.float32(step ** 0.5))


def say(line):
    """One line in one write: under PYTHONUNBUFFERED (or -u) print() writes its pieces one by one,
    and a kill between them would leave a torn line for the test to read."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main():
    out, mode, seed, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    live = {name: weights_at(seed, 0, k, s) for k, (name, s) in enumerate(SHAPES.items())}
    series = mode == "series"
    rec = fevo.Recorder(live, 1e-3, out, every=1, per_filter_series=series, tensorboard=True,
                        journal_compact_bytes=1 << 20 if series else 16384)
    say(f"resumed {rec.last_recorded_step if rec.last_recorded_step is not None else 'none'}")
    for step in range(1, steps + 1):
        for k, (name, s) in enumerate(SHAPES.items()):
            live[name][...] = weights_at(seed, step, k, s)  # in place, as an optimiser updates
        rec.step(step)
        say(f"step {step}")
    rec.close()
    say("done")


if __name__ == "__main__":
    main()
