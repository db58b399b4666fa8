"""Line plots as PNGs drawn with Pillow (no plotting dependency): the spectra of dip.evaluate and the error-vs-NFE
plot of benchmarks/bench_sampler.py."""
from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def line_plot(series: dict, path, *, xlabel: str, ylabel: str, log_x: bool = False, log_y: bool = False,
              size=(830, 400)) -> Path:
    """Write a PNG with one coloured line per entry of ``series`` (label → (xs, ys)), a legend and the axes' ranges;
    log axes plot log10 of the values (non-positive values are left out)."""
    def scaled(values, log):
        return [math.log10(v) if log else float(v) for v in values]

    lines = {}
    for label, (xs, ys) in series.items():
        points = [(x, y) for x, y in zip(xs, ys) if (x > 0 or not log_x) and (y > 0 or not log_y)]
        if points:
            lines[label] = (scaled([p[0] for p in points], log_x), scaled([p[1] for p in points], log_y))
    width, height = size
    margin, legend = 56, 190  # the legend sits in a column right of the axes
    right = width - legend
    picture = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(picture)
    draw.rectangle([margin, margin // 2, right, height - margin], outline="black")
    if lines:
        x_low, x_high = (f(v for xs, _ in lines.values() for v in xs) for f in (min, max))
        y_low, y_high = (f(v for _, ys in lines.values() for v in ys) for f in (min, max))

        def px(x, y):
            return (margin + (right - margin) * (x - x_low) / max(x_high - x_low, 1e-12),
                    height - margin - (height - 1.5 * margin) * (y - y_low) / max(y_high - y_low, 1e-12))

        for k in range(math.ceil(x_low), math.floor(x_high) + 1) if log_x else ():  # decades: grid and labels
            x, _ = px(k, y_low)
            draw.line([(x, margin // 2), (x, height - margin)], fill=(225, 225, 225))
            draw.text((x - 8, height - margin + 4), f"1e{k}", fill="black")
        for k in range(math.ceil(y_low), math.floor(y_high) + 1) if log_y else ():
            _, y = px(x_low, k)
            draw.line([(margin, y), (right, y)], fill=(225, 225, 225))
            draw.text((4, y - 6), f"1e{k}", fill="black")
        for i, (label, (xs, ys)) in enumerate(lines.items()):
            points = [px(x, y) for x, y in zip(xs, ys)]
            colour = COLOURS[i % len(COLOURS)]
            draw.line(points, fill=colour, width=2) if len(points) > 1 else draw.point(points, fill=colour)
            draw.text((right + 10, margin // 2 + 4 + 14 * i), label, fill=colour)
        unit = {True: "log10 ", False: ""}
        draw.text((margin, height - margin + 20), f"{unit[log_x]}{xlabel}  [{x_low:.3g}, {x_high:.3g}]",
                  fill="black")
        draw.text((margin, 4), f"{unit[log_y]}{ylabel}  [{y_low:.3g}, {y_high:.3g}]", fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path
