"""fcn-edge's Segmenter inside an OpenCV capture loop.

    python examples/opencv_loop.py MODEL.onnx                        # camera 0, shown in a window
    python examples/opencv_loop.py MODEL.onnx --source video.mp4 --output out.mp4
    python examples/opencv_loop.py MODEL.onnx --source 0 --max-frames 300

Each frame is segmented and blended with its colorized labels. With --output the result is
written to a video; otherwise it is shown, or, where there is no display, the frames are still
segmented and the FPS reported. Press q or Esc in the window to stop.
"""
import argparse
import os
import sys
import time

import cv2

from fcn_edge.runtime import Segmenter

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model", help="an exported artifact: .onnx, .engine or a checkpoint")
parser.add_argument("--source", default="0", help="camera index or video file (default 0)")
parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: all)")
parser.add_argument("--output", help="write the overlay to this video instead of showing it")
args = parser.parse_args()

seg = Segmenter(args.model, backend="auto")  # the fastest backend that runs here
print(seg)  # seg.info()["reason"] says why that backend

# A digit is a camera index, anything else a file or a stream URL (OpenCV opens both).
capture = cv2.VideoCapture(int(args.source) if args.source.isdigit() else args.source)
if not capture.isOpened():
    raise SystemExit(f"cannot open {args.source!r}")
fps_in = capture.get(cv2.CAP_PROP_FPS) or 25.0  # cameras may report 0
writer = None
# On Linux without a display, Qt builds of OpenCV abort in imshow rather than raise: ask first.
no_display = sys.platform.startswith("linux") and not (
    os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
show = args.output is None and not no_display
if args.output is None and no_display:
    print("no display: segmenting without showing (use --output to keep the result)")

frames, start = 0, time.perf_counter()
while args.max_frames <= 0 or frames < args.max_frames:
    ok, frame = capture.read()  # H×W×3 uint8 BGR: what the Segmenter takes as it is
    if not ok:
        break  # end of the video, or the camera went away
    labels = seg(frame)  # H×W uint8 class indices, at the frame's own size
    view = seg.overlay(frame, labels, alpha=0.5)
    frames += 1
    if args.output:
        if writer is None:  # opened on the first frame, when its size is known
            h, w = view.shape[:2]
            writer = cv2.VideoWriter(args.output, cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (w, h))
            if not writer.isOpened():
                raise SystemExit(f"cannot write {args.output!r}")
        writer.write(view)
    elif show:
        try:
            cv2.imshow("fcn-edge", view)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                break
        except cv2.error:  # opencv-python-headless has no windows: keep going without
            show = False
            print("this OpenCV cannot show windows: segmenting without showing")

elapsed = time.perf_counter() - start
capture.release()
if writer is not None:
    writer.release()
if show and frames:
    cv2.destroyAllWindows()
fps = frames / elapsed if elapsed > 0 else 0.0
print(f"{frames} frames in {elapsed:.2f} s: {fps:.1f} FPS "
      f"(inference {seg.stats.infer_seconds / max(frames, 1) * 1e3:.1f} ms/frame)")
