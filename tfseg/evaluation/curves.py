"""Training curves read back from a run's TensorBoard logs: validation scores against minutes."""
import os


def read_curve(model_dir):
    """[(step, minutes, {metric: value})] from `model_dir/validation` and the run's start time."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel

    def load(sub):
        acc = event_accumulator.EventAccumulator(os.path.join(model_dir, sub),
                                                 size_guidance={"tensors": 0})
        acc.Reload()
        return acc

    train, validation = load("train"), load("validation")
    starts = [e.wall_time for tag in train.Tags()["tensors"] for e in train.Tensors(tag)[:1]]
    start = min(starts) if starts else 0.0
    rows = {}
    for tag in validation.Tags()["tensors"]:
        if not tag.startswith("eval/") or "image" in tag:
            continue
        for event in validation.Tensors(tag):
            row = rows.setdefault(event.step, {"minutes": (event.wall_time - start) / 60})
            row[tag[len("eval/"):]] = float(tf.make_ndarray(event.tensor_proto))
    return [(step, row.pop("minutes"), row) for step, row in sorted(rows.items())]


def draw(curve, path, size=(480, 320), margin=40):
    """A plain line plot of fg IoU (0..1) against minutes, drawn with pillow."""
    from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
    width, height = size
    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    max_minutes = max(m for _, m, _ in curve) or 1.0
    to_xy = lambda m, v: (margin + (width - 2 * margin) * m / max_minutes,
                          height - margin - (height - 2 * margin) * v)
    pen.rectangle([margin, margin, width - margin, height - margin], outline="black")
    for level in (0.25, 0.5, 0.75):
        y = to_xy(0, level)[1]
        pen.line([margin, y, width - margin, y], fill=(220, 220, 220))
        pen.text((4, y - 6), f"{level:.2f}", fill="black")
    points = [to_xy(m, row["fg_iou"]) for _, m, row in curve if "fg_iou" in row]
    if len(points) > 1:
        pen.line(points, fill=(200, 0, 0), width=2)
    pen.text((margin, 8), "validation fg IoU vs minutes", fill="black")
    pen.text((width - margin - 60, height - margin + 8), f"{max_minutes:.1f} min", fill="black")
    image.save(path)
