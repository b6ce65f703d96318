"""tfseg.progress: one live line for the trainer's step line and the file-count bar."""
import io

from tfseg import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_durations_show_hours_only_from_an_hour_on():
    assert progress.format_duration(59) == "00:59"
    assert progress.format_duration(75 * 60) == "1:15:00"
    assert progress.format_duration(-3) == "00:00"


def test_off_a_terminal_every_update_and_message_is_a_line_of_its_own():
    stream = io.StringIO()
    bar = progress.ProgressBar(4, stream)
    bar.update(1)
    bar.message("skipped x.jpg: empty file")
    bar.update(4)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("[#######")
    assert "1/4 images" in lines[0] and lines[1] == "skipped x.jpg: empty file" and "4/4 images" in lines[2]


def test_on_a_terminal_the_line_is_rewritten_and_a_message_goes_below_it():
    stream = _Terminal()
    line = progress.TrainingProgress(total_steps=10, start_step=0, images_per_step=4, stream=stream)
    line.message("stage 1/1")  # nothing live yet: no blank line first
    line.update(1, {"loss/g": 1.0})
    line.update(2, {"loss/g": 0.5})
    line.message("validation")
    assert stream.getvalue().startswith("stage 1/1\n\rstep 1/10 | g 1.000")
    assert "\rstep 2/10 | g 0.500" in stream.getvalue()
    assert stream.getvalue().endswith("\033[K\nvalidation\n")
