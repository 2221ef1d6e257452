"""dlib's classic photo-in, points-out pipeline scored as fkd's `cargo xtask eval-photos` scores
its own: dlib's HOG frontal face detector (`dlib.get_frontal_face_detector()`, the detector of
face_recognition's default `model="hog"`) and its 68-point shape predictor
(`shape_predictor_68_face_landmarks.dat`, the one face_recognition_models ships), on folders of
300-W photos.

Every JPEG/PNG under the given folders (recursively) that has a 300-W `.pts` file beside it
(same stem) is read upright (EXIF orientation applied) as RGB. 300-W stores AFW group photos as
one byte-identical copy per annotated face (`photo_N.jpg` + `photo_N.pts`): copies are grouped
by their content, so each physical photo is processed once with all its annotated faces (in
sorted file order). Faces are detected with --upsample pyramid upsamplings (face_recognition's
default: 1), and the shape predictor runs on each detection rectangle.

Matching, as eval_photos.rs: an annotated face's truth box is the tight box of its 68 points;
a detection's box is dlib's rectangle as (left, top, right - left, bottom - top); taking faces
in file order, each face is matched to the unused detection of highest IoU with its truth box,
if that IoU is >= 0.3. Unmatched detections are not errors. NME of a found face: mean point
error over the ground truth's outer-eye-corner distance (points 36 and 45, 0-based); a missed
face's error is 1e9. FR@0.08 counts errors strictly above 0.08; AUC@0.08 is
sum(max(0, 0.08 - e_i)) / (n * 0.08), exactly as crates/metrics/src/nme.rs. `seconds` is the
wall time of loading, detecting and predicting over all photos (as fkd's, which includes
reading the photo), model loading excluded. dlib's HOG detector and shape predictor run on one
thread.

Setup: python3 -m venv venv && venv/bin/pip install dlib-bin face-recognition-models numpy pillow
Usage: python dlib_photos.py DIR [DIR...] [--json OUT] [--upsample 1]
Prints a summary like fkd's; --json writes the same fields as eval-photos' JSON, each face's
NME included, so that `cargo xtask eval-photos --against dlib.json` compares the two on the faces
both found.
"""
import argparse, hashlib, json, math, os, sys, time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("folders", nargs="+", type=Path, help="folders of photos with their .pts files")
ap.add_argument("--json", type=Path, help="also write the numbers as JSON here")
ap.add_argument("--upsample", type=int, default=1, help="HOG detector upsamplings (face_recognition's default 1)")
a = ap.parse_args()

import dlib  # noqa: E402
import face_recognition_models  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

MISSED = 1e9  # a missed face's error: above every threshold
MATCH_IOU = 0.3  # the rule of xtask/src/eval_photos.rs
T = 0.08


def read_pts(path):
    """The points of a 300-W .pts file: `version: 1`, `n_points: N`, `{`, N lines `x y`, `}`."""
    lines = [l.strip() for l in path.read_text(encoding="utf-8-sig").splitlines() if l.strip()]
    header = {}
    i = 0
    while i < len(lines) and lines[i] != "{":
        k, _, v = lines[i].partition(":")
        header[k.strip()] = v.strip()
        i += 1
    n = int(header["n_points"])
    end = lines.index("}", i)
    pts = np.array([[float(v) for v in l.split()] for l in lines[i + 1 : end]], dtype=np.float64)
    if pts.shape != (n, 2):
        sys.exit(f"{path}: {pts.shape[0]} points where n_points says {n}")
    return pts


def annotated_photos(folders):
    """[(photo path, [points of each annotated face])], copies of one photo (same bytes) merged."""
    by_content = {}
    for folder in folders:
        files = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        for image in files:
            pts = image.with_suffix(".pts")
            if not pts.is_file():
                continue
            data = image.read_bytes()
            key = (hashlib.sha256(data).hexdigest(), len(data))
            by_content.setdefault(key, (image, []))[1].append(read_pts(pts))
    return sorted(by_content.values(), key=lambda p: p[0])


def iou(a, b):
    """IoU of two (left, top, width, height) boxes, as fkd_landmarker::placement::iou."""
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def failure_rate(errors, t):
    return sum(e > t for e in errors) / len(errors) if errors else math.nan


def auc(errors, t):
    return sum(max(0.0, t - e) for e in errors) / (len(errors) * t) if errors else math.nan


photos = annotated_photos(a.folders)
if not photos:
    sys.exit("no photo with .pts annotations under the given folders")
for path, faces in photos:
    for f in faces:
        if f.shape != (68, 2):
            sys.exit(f"{path}: dlib_photos.py needs 68-point (iBUG) annotations, got {f.shape[0]}")

print(f"dlib {dlib.__version__} (HOG detector, upsample {a.upsample}; 68-point shape predictor), "
      f"threads: 1 (dlib's HOG detector and shape predictor are single-threaded; {os.cpu_count()} CPUs)")
detector = dlib.get_frontal_face_detector()
predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

started = time.perf_counter()
all_errors, found, per_face = [], [], []
for path, faces in photos:
    with Image.open(path) as im:
        rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8)
    rects = detector(rgb, a.upsample)
    dets = []
    for r in rects:
        shape = predictor(rgb, r)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)
        dets.append(((r.left(), r.top(), r.right() - r.left(), r.bottom() - r.top()), pts))
    used = set()
    for n, truth in enumerate(faces):
        x0, y0 = truth.min(axis=0)
        x1, y1 = truth.max(axis=0)
        tight = (x0, y0, x1 - x0, y1 - y0)
        # Each detection serves one face at most: faces in file order, greedily.
        best = None
        for k, (box, pts) in enumerate(dets):
            if k in used:
                continue
            o = iou(box, tight)
            if o >= MATCH_IOU and (best is None or o > best[0]):
                best = (o, k, pts)
        if best is None:
            all_errors.append(MISSED)
            per_face.append({"photo": str(path), "face": n, "nme": None})
            continue
        used.add(best[1])
        d = float(np.linalg.norm(truth[36] - truth[45]))
        e = float(np.linalg.norm(best[2] - truth, axis=1).mean()) / d
        all_errors.append(e)
        found.append(e)
        per_face.append({"photo": str(path), "face": n, "nme": e})
seconds = time.perf_counter() - started

s = {
    "photos": len(photos),
    "annotated_faces": len(all_errors),
    "found_faces": len(found),
    "recall": len(found) / max(1, len(all_errors)),
    "fr_008_all": failure_rate(all_errors, T),
    "auc_008_all": auc(all_errors, T),
    "nme_found": sum(found) / max(1, len(found)),
    "fr_008_found": failure_rate(found, T),
    "auc_008_found": auc(found, T),
    "seconds": seconds,
    "photos_per_s": len(photos) / max(seconds, 1e-9),
    # Each annotated face: its photo (the first copy's path), its place among the photo's faces
    # in file order, and its NME (null when missed); `eval-photos --against` reads these.
    "faces": per_face,
}
print(f"{s['photos']} photos, {s['annotated_faces']} annotated faces, {s['found_faces']} found "
      f"(recall {100 * s['recall']:.1f}%)")
print(f"all faces (missed = failure): FR@0.08 {100 * s['fr_008_all']:.2f}%, AUC@0.08 {s['auc_008_all']:.4f}")
print(f"found faces: NME {100 * s['nme_found']:.2f}%, FR@0.08 {100 * s['fr_008_found']:.2f}%, "
      f"AUC@0.08 {s['auc_008_found']:.4f}")
print(f"{s['photos_per_s']:.1f} photos/s ({s['seconds']:.0f} s)")
if a.json:
    # NaN (no face found) is not JSON: write null, as serde_json writes a NaN f32.
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()}
    a.json.write_text(json.dumps(clean, indent=2) + "\n")
