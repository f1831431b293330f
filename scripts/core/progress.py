"""Progress lines for long jobs: count, total, rate and ETA, at most every few seconds.

Logs are files, not terminals, so this prints whole lines rather than a redrawn bar.
"""
import sys
import time

INTERVAL_SECONDS = 5.0


class Progress:
    """``update(n)`` after each unit of work; prints ``label: 96/640 images (15%), 31.2 images/s, ETA 17 s``."""

    def __init__(self, label, total=None, unit="images", stream=sys.stderr, interval=INTERVAL_SECONDS):
        self.label, self.total, self.unit, self.stream, self.interval = label, total, unit, stream, interval
        self.done, self.started = 0, time.monotonic()
        self.last_print = self.started

    def update(self, count=1):
        self.done += count
        now = time.monotonic()
        if self.stream is not None and (now - self.last_print >= self.interval or self.done == self.total):
            self.last_print = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now=None):
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100 * self.done // self.total}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:.1f} {self.unit}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {format_seconds((self.total - self.done) / rate)}"
        elif self.total and self.done >= self.total:
            text += f", done in {format_seconds(elapsed)}"
        return text


def format_seconds(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
