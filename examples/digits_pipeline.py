"""An end-to-end pipeline for the digits classifier: camera-like PGM frames in, a digit and its confidence out.

    bench deploy examples/digits.onnx --pipeline examples/digits_pipeline.py --samples examples/digits_frames

numpy only, so it runs on any board the agent runs on. Each frame is a 32 x 32 8-bit greyscale PGM (P5); the model
takes 8 x 8 images scaled to [0, 1], as it was trained (scikit-learn's digits).
"""

import numpy as np

SIDE = 8  # the model's input is [batch, 1, 8, 8]


def load(path):
    """Decode a binary PGM (P5): header 'P5 width height maxval', then the pixels."""
    with open(path, "rb") as handle:
        data = handle.read()
    fields, position = [], 0
    while len(fields) < 4:  # magic, width, height, maxval; '#' starts a comment
        while data[position:position + 1].isspace():
            position += 1
        if position >= len(data):
            raise ValueError("truncated PGM header")
        if data[position:position + 1] == b"#":
            position = data.find(b"\n", position)
            if position < 0:
                raise ValueError("truncated PGM header")
            continue
        end = position
        while end < len(data) and not data[end:end + 1].isspace():
            end += 1
        fields.append(data[position:end])
        position = end
    if fields[0] != b"P5":
        raise ValueError("not a binary PGM (P5) file")
    width, height, maxval = (int(f) for f in fields[1:])
    if not (0 < maxval < 256) or len(data) < position + 1 + width * height:
        raise ValueError("a PGM of %d x %d 8-bit pixels needs more data than the file has" % (width, height))
    pixels = np.frombuffer(data, dtype=np.uint8, count=width * height, offset=position + 1)
    return pixels.reshape(height, width).astype(np.float32) / maxval


def preprocess(frame):
    """Downscale by block averaging to 8 x 8 and add the batch and channel axes."""
    height, width = frame.shape
    blocks = frame[: height - height % SIDE, : width - width % SIDE]
    small = blocks.reshape(SIDE, blocks.shape[0] // SIDE, SIDE, blocks.shape[1] // SIDE).mean(axis=(1, 3))
    return {"image": small[None, None].astype(np.float32)}


def postprocess(outputs):
    """The top class and its softmax probability."""
    scores = outputs[0][0].astype(np.float64)
    probabilities = np.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    best = int(np.argmax(probabilities))
    return {"digit": best, "confidence": float(probabilities[best])}
