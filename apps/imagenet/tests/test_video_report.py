"""The video demo's report on known inputs: centre of mass and crops exactly, real moving digits
score full marks on motion (and the classifier's accuracy on class), static or shuffled videos
fail motion, a blank or wrong-class video fails class consistency."""

import numpy as np
import pytest

from nnx_imagenet.data import moving_digits as md
from nnx_imagenet.data.digits import load_digits_split
from nnx_imagenet.demo import video_report as vr


@pytest.fixture(scope="module")
def classifier():
    xtr, ytr = load_digits_split()["train"]
    return vr.fit_crop_classifier(xtr, ytr)


def to_pm1(videos: np.ndarray) -> np.ndarray:
    return videos.astype(np.float32)[..., None] / 127.5 - 1.0


def test_centre_of_mass_and_crop_on_known_frames():
    frames = np.zeros((2, 32, 32), np.float32)
    frames[0, 5, 7] = 1.0
    frames[0, 5, 9] = 1.0
    frames[0, 20, 20] = 0.2  # below the foreground threshold: ignored
    com = vr.centre_of_mass(frames)
    np.testing.assert_allclose(com[0], [5.0, 8.0])
    assert np.isnan(com[1]).all()  # blank frame
    crops = vr.crop_digits(frames, com)  # top-left ⌊c − 3.5 + ½⌋ = (2, 5)
    assert crops.shape == (2, 8, 8) and crops[0, 3, 2] == 1.0 and crops[0, 3, 4] == 1.0
    edge = np.zeros((1, 32, 32), np.float32)
    edge[0, 31, 0] = 1.0
    assert vr.crop_digits(edge, vr.centre_of_mass(edge))[0, 7, 0] == 1.0  # clipped to canvas


def test_real_moving_digits_score_full_motion_and_the_classifier_accuracy(classifier):
    videos, labels, digits = [], [], []
    images = load_digits_split()["val"][0]
    for i, _, y, video, _ in md.moving_digit_videos("val", num_frames=32):
        videos.append(video)
        labels.append(y)
        digits.append(images[i])
        if len(videos) == 60:
            break
    videos, labels = to_pm1(np.stack(videos)), np.asarray(labels)
    report = vr.video_report(classifier, videos, labels)
    assert report["motion_score"] == 1.0 and report["videos_all_motion_ok"] == 1.0
    # Whole-pixel moves leave each frame's crop the re-centred digit (except where the crop is
    # clipped at the canvas edge): the score is the classifier's accuracy on those digits.
    crops = vr.recentre_digits(np.stack(digits))[..., None] * 2.0 - 1.0
    accuracy = classifier.accuracy(crops, labels)
    assert abs(report["class_consistency"] - accuracy) < 0.01
    assert report["class_consistency"] >= 0.85 and report["digit_found"] == 1.0
    assert report["num_videos"] == 60 and report["num_frames"] == 32

    static = vr.video_report(classifier, np.repeat(videos[:, :1], 32, axis=1), labels)
    assert static["motion_score"] == 0.0 and not static["passed"]
    perm = np.random.default_rng(0).permutation(32)
    shuffled = vr.video_report(classifier, videos[:, perm], labels)
    assert shuffled["motion_score"] < 0.2 and not shuffled["passed"]
    wrong = vr.video_report(classifier, videos, (labels + 1) % 10)
    assert wrong["class_consistency"] < 0.1 and wrong["motion_score"] == 1.0
    blank = vr.video_report(classifier, -np.ones_like(videos[:4]), labels[:4])
    assert blank["digit_found"] == 0.0 and blank["motion_score"] == 0.0


def test_motion_accepts_bounces_and_rejects_wrong_speeds():
    path = md.bounce_path((1, 3), (-2, 1), 12, limit=24).astype(float)
    assert vr.motion_ok(path + 3.5).all()  # a bounce at the wall (step 0 on the row axis)
    too_fast = md.bounce_path((0, 0), (4, 4), 6, limit=24).astype(float)
    assert not vr.motion_ok(too_fast).any()
    jitter = path.copy()
    jitter[6] += [0.0, 1.5]  # one frame off by 1.5 px: the pairs around it (and the turn) fail
    ok = vr.motion_ok(jitter)
    assert not ok[5:8].any() and ok[:5].all() and ok[8:].all()
