"""Progress on one live line: the training step line and the count bar of predict and prepare_data.

On a terminal the line is rewritten in place and a message is printed below it (the line stays in
view above the message); elsewhere (a log file, CI) every update is a line of its own, so logs read
top to bottom. Standard library only.
"""
import sys
import time


def format_duration(seconds):
    """`mm:ss`, or `h:mm:ss` from an hour on (elapsed times and ETAs)."""
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class LiveLine:
    """A line rewritten in place on a terminal (a line per update elsewhere), with messages below it."""

    #: Longer lines are cut: a line that wraps cannot be rewritten in place.
    MAX_WIDTH = 200

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._live = False  # a rewritable line is on screen, without its newline

    def show(self, line):
        """Replaces the live line with `line`."""
        if self.tty:
            self.stream.write("\r" + line[:self.MAX_WIDTH] + "\033[K")
            self._live = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text):
        """Prints a line of its own, below the live line."""
        self.close()
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        """Ends the live line, so that what is printed next starts a line of its own."""
        if self._live:
            self.stream.write("\n")
            self.stream.flush()
            self._live = False


class TrainingProgress(LiveLine):
    """`step k/N | losses | img/s | elapsed | ETA`, the trainer's progress line."""

    def __init__(self, total_steps, start_step, images_per_step, stream=None):
        super().__init__(stream)
        self.total = total_steps
        self.images_per_step = images_per_step
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
            eta = format_duration((self.total - step) * seconds_per_step)
        else:
            eta = "?"
        shown = " ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in values.items())
        self.show(f"step {step}/{self.total} | {shown} | {self.images_per_second:.1f} img/s | "
                  f"{format_duration(now - self.start_time)} elapsed | ETA {eta}")
        return self.images_per_second


class ProgressBar(LiveLine):
    """`[#####.....] k/N images | x img/s | ETA mm:ss`, for a known number of files (on stderr by default)."""

    def __init__(self, total, stream=None, width=30):
        super().__init__(stream or sys.stderr)
        self.total = total
        self.width = width
        self.start = time.time()

    def update(self, done):
        """Shows `done` of `total` files handled."""
        elapsed = max(time.time() - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else 0
        filled = int(self.width * done / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        self.show(f"[{bar}] {done}/{self.total} images | {rate:.1f} img/s | ETA {format_duration(eta)}")
