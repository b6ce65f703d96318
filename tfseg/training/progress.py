"""A one-line progress display: step, losses, images/s, ETA."""
import sys
import time


def _duration(seconds):
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Prints `step k/N | losses | img/s | elapsed | ETA`; rewrites one line on a terminal."""

    def __init__(self, total_steps, start_step, images_per_step, stream=None):
        self.total = total_steps
        self.images_per_step = images_per_step
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start_time = time.time()
        self.last_time = self.start_time
        self.last_step = start_step
        self.images_per_second = 0.0
        self.timed_from = None  # (time, step) after the first, traced, step

    def first_step_done(self, step):
        """Starts the clocks after the first step, whose tracing would skew the rate and the ETA."""
        now = time.time()
        self.timed_from = (now, step)
        self.last_time, self.last_step = now, step

    def update(self, step, values):
        """Reports progress at `step` with a dict of scalar `values`; returns images/s since last call."""
        now = time.time()
        steps = step - self.last_step
        if steps > 0 and now > self.last_time:
            self.images_per_second = steps * self.images_per_step / (now - self.last_time)
        self.last_time, self.last_step = now, step
        # The ETA covers every remaining step of every stage, at the average pace since the first step
        # (evaluations and checkpoints included, so it is the wall clock a person waits).
        if self.timed_from and step > self.timed_from[1]:
            seconds_per_step = (now - self.timed_from[0]) / (step - self.timed_from[1])
            eta = _duration((self.total - step) * seconds_per_step)
        else:
            eta = "?"
        shown = " ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in values.items())
        line = (f"step {step}/{self.total} | {shown} | {self.images_per_second:.1f} img/s | "
                f"{_duration(now - self.start_time)} elapsed | ETA {eta}")
        if self.tty:
            self.stream.write("\r" + line[:200].ljust(120))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        return self.images_per_second

    def message(self, text):
        """Prints a line of its own (after the progress line on a terminal)."""
        self.stream.write(("\n" if self.tty else "") + text + "\n")
        self.stream.flush()
