"""The bad-input catalogue's BIWI cases: person folders of frames, pose files and rgb.cal intrinsics."""

from __future__ import annotations

from bad_inputs_cases import at, on, reimage, remove, write
from bad_inputs_layouts import biwi, not_image, truncate, zero

POSE = "01/frame_00001_pose.txt"


def pose(centre: str, rel: str = POSE):
    """A pose file whose head centre (x y z, mm in the camera's frame) is ``centre``."""
    return write(rel, f"1 0 0\n0 1 0\n0 0 1\n\n{centre}\n")


add = on("biwi", "biwi", lambda tmp: biwi(tmp / "biwi"))
add("head centre projects far outside the frame", pose("2000 0 900"), "frame_00001_pose.txt")
add("head centre just outside the frame (left)", pose(f"{-90 * 900 / (517.679 * 160 / 640):.3f} 0 900"), "frame_00001_pose.txt")  # x = -10 px
add("head centre outside in a validation frame", pose("0 3000 900", "13/frame_00002_pose.txt"), "frame_00002_pose.txt")
# for 640x480; the frames are 160x120
add("frames 4x smaller than rgb.cal's intrinsics", write("01/rgb.cal", "517.679 0 320\n0 517.679 240.5\n0 0 1\n"), "rgb.cal")
add("one frame of another size than the others", reimage("01/frame_00002_rgb.jpg", lambda im: im.resize((640, 480))), "frame_00002_rgb.jpg")
for _name, _fn in [("truncated frame", truncate), ("zero-byte frame", zero), ("text file as frame", not_image)]:
    add(_name, at("01/frame_00003_rgb.jpg", _fn), "frame_00003_rgb.jpg")
add("truncated validation frame", at("13/frame_00000_rgb.jpg", truncate), "frame_00000_rgb.jpg")
add("pose missing", remove(POSE), "frame_00001_pose.txt")
add("pose not numbers", pose("12 abc 900"), "frame_00001_pose.txt")
add("pose with NaN", pose("nan 0 900"), "frame_00001_pose.txt")
add("pose behind the camera (Z < 0)", pose("0 0 -900"), "frame_00001_pose.txt")
add("empty pose file", at(POSE, zero), "frame_00001_pose.txt")
add("binary garbage pose file", at(POSE, lambda p: p.write_bytes(b"\xff\xfe\x00\x01garbage\x80\x81\n")), "frame_00001_pose.txt")
add("rgb.cal missing", remove("01/rgb.cal"), "rgb.cal")
add("rgb.cal two lines", write("01/rgb.cal", "129 0 80\n0 129 60\n"), "rgb.cal")
add("rgb.cal non-UTF-8", at("01/rgb.cal", lambda p: p.write_bytes(b"129.4 0 80\n0 129.4 60\n0 0 1\n\n# cam\xe9ra\n")), "rgb.cal")
add("validation person missing", None, "07", extra=("--data.init_args.valid_persons", "[07]"))
del add
