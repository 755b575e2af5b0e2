import csv
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avag_core.data import AffordanceDataset, read_index, scan_release
from avag_core.data.avagd import SEEN_CATEGORIES, UNSEEN_CATEGORIES, category_splits
from avag_core.data.synthetic import CATEGORIES, render_scene, write_dataset
from avag_core.data.transforms import apply_joint, training_transform
from avag_core.training.metrics import sample_iou

from conftest import run_script, sample_dir


def test_paper_category_lists():
    assert len(SEEN_CATEGORIES) == 84 and len(UNSEEN_CATEGORIES) == 29
    assert not set(SEEN_CATEGORIES) & set(UNSEEN_CATEGORIES)
    objects = {c.split("@")[1] for c in SEEN_CATEGORIES + UNSEEN_CATEGORIES}
    affordances = {c.split("@")[0] for c in SEEN_CATEGORIES + UNSEEN_CATEGORIES}
    assert len(objects) == 97 and len(affordances) == 55


def test_scan_real_release_layout():
    categories = {c.name: c for c in scan_release(sample_dir())}
    assert set(categories) == {"hit@hammer", "turn on or off@switch", "open or close@drawer", "twist@bottle cap"}
    hammer = categories["hit@hammer"]
    assert any(r.image.name == "Flickr1_Hammer (1140).jpg" for r in hammer.images)
    assert all(r.function_mask.is_file() for r in hammer.images)
    assert any(c.name.startswith("-9dA") for c in categories["turn on or off@switch"].clips)


def test_missing_dependency_mask_means_empty(tmp_path):
    folder = tmp_path / "cup" / "lift"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "a.jpg"), np.full((20, 30, 3), 128, np.uint8))
    cv2.imwrite(str(folder / "a_Function_mask.png"), np.full((20, 30), 255, np.uint8))
    cv2.imwrite(str(folder / "b.jpg"), np.full((20, 30, 3), 128, np.uint8))  # no function mask: reported
    (category,) = scan_release(tmp_path)
    assert [r.image.name for r in category.images] == ["a.jpg"] and category.images[0].dependency_mask is None
    assert "no function mask" in category.problems[0]


def test_prepare_dataset_on_real_sample_is_idempotent(tmp_path):
    out = tmp_path / "index"
    first = run_script("prepare_dataset.py", "--root", sample_dir(), "--out", out)
    assert first.returncode == 0, first.stderr
    snapshot = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    caches = sorted(p.name for p in (out / "log_mel").iterdir())
    second = run_script("prepare_dataset.py", "--root", sample_dir(), "--out", out)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert {p.name: p.read_bytes() for p in out.glob("*.csv")} == snapshot
    assert sorted(p.name for p in (out / "log_mel").iterdir()) == caches
    train, val = read_index(out / "train.csv"), read_index(out / "val.csv")
    assert not {r.image for r in train} & {r.image for r in val}  # images split, not shared
    assert not {r.audio for r in train} & {r.audio for r in val}
    for row in train + val:  # pairs stay within a category
        assert row.image.parent == row.audio.parent and row.log_mel.is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"]["train"]["pairs"] == len(train)


def test_prepare_dataset_reports_bad_files_and_unknown_categories(tmp_path):
    root = tmp_path / "root"
    write_dataset(root, num_samples=30, seed=1, size=64, clips_per_category=3)
    (root / "hammer" / "hit" / "synth000_0.00_1.00.wav").write_bytes(b"not audio")
    broken_image = sorted((root / "bell" / "ring").glob("*.jpg"))[0]
    broken_image.write_bytes(b"not a jpeg")
    stray = root / "teapot" / "pour"
    stray.mkdir(parents=True)
    (stray / "x.wav").write_bytes(b"RIFF")
    result = run_script("prepare_dataset.py", "--root", root, "--out", tmp_path / "index")
    assert result.returncode == 0
    assert "synth000_0.00_1.00.wav: cannot decode" in result.stderr
    assert f"{broken_image.name}: unreadable image" in result.stderr
    assert "'pour@teapot' is in neither" in result.stderr
    unseen = read_index(tmp_path / "index" / "unseen.csv")
    assert unseen and {r.image.parent.parent.name for r in unseen} <= {"bell", "faucet", "scissors"}


def test_reads_official_csv_with_pkl_log_mel(tmp_path):
    folder = sample_dir() / "bottle_cap" / "twist"
    stem = "Products-10K_train-00013-of-00029_88"
    torch.save(torch.randn(20, 1, 96, 64), tmp_path / "clip.pkl")
    index = tmp_path / "val.csv"
    with open(index, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "pkl", "mask_func", "mask_dep", "audio"])
        writer.writerow([folder / f"{stem}.jpg", tmp_path / "clip.pkl", folder / f"{stem}_Function_mask.png",
                         folder / f"{stem}_Dependency_mask.png", folder / "P1FXGXxfcVw_2.23_4.44.mp3"])
    rows = read_index(index)
    sample = AffordanceDataset(rows, 64, 20, augment=False)[0]
    assert sample["image"].shape == (3, 64, 64) and sample["log_mel"].shape == (20, 1, 96, 64)
    assert torch.equal(sample["log_mel"], torch.load(tmp_path / "clip.pkl"))
    assert sample["function_mask"].shape == (1, 64, 64) and set(sample["function_mask"].unique().tolist()) <= {0, 1}
    assert sample["function_mask"].sum() > 0 and sample["dependency_mask"].sum() > 0
    assert sample["name"].endswith(f"twist_{stem}_P1FXGXxfcVw_2.23_4.44")


def test_augmentation_keeps_masks_aligned_with_the_image():
    # The image is bright exactly where the mask is set; after any joint transform that must still hold.
    image = torch.zeros(3, 120, 160, dtype=torch.uint8)
    function = torch.zeros(1, 120, 160, dtype=torch.bool)
    image[:, 30:90, 40:100] = 255
    function[:, 30:90, 40:100] = True
    dependency = torch.zeros_like(function)
    dependency[:, 30:60, 40:70] = True
    for seed in range(8):
        torch.manual_seed(seed)
        pixels, f, d = apply_joint(training_transform(96), image, function, dependency)
        bright = pixels.mean(0) > 0.3
        gt = f[0] > 0.5
        assert (bright & gt).sum() / (bright | gt).sum() > 0.85
        assert (d[0] > 0.5)[~gt].sum() == 0  # the dependency part moved with the function part
        torch.manual_seed(seed)
        again = apply_joint(training_transform(96), image, function, dependency)
        assert all(torch.equal(a, b) for a, b in zip((pixels, f, d), again))


def test_synthetic_scenes_put_targets_on_distinct_objects():
    scene = render_scene(np.random.default_rng(3), size=128)
    assert 2 <= len(scene.categories) <= 3 and len({c.shape for c in scene.categories}) == len(scene.categories)
    for i, function in enumerate(scene.function_masks):
        assert function.any()
        for j, other in enumerate(scene.function_masks + scene.dependency_masks):
            if j != i and j != i + len(scene.categories):
                assert not (function & other).any()


def test_synthetic_parts_are_coarse_enough_for_the_stride_8_head():
    # At 128 px the head predicts on a 16x16 grid. The ground truth pooled to that grid and upsampled again must
    # still score well, or no model could (the previous generator's parts capped it at 39.7 mIoU_f).
    rng = np.random.default_rng(0)
    fractions, ious = [], []
    for _ in range(40):
        for mask in render_scene(rng, size=128).function_masks:
            target = torch.from_numpy(mask).float()[None, None]
            coarse = F.interpolate(F.avg_pool2d(target, 8), size=(128, 128), mode="bilinear", align_corners=False)
            fractions.append(mask.mean())
            ious.append(sample_iou(coarse[0, 0], target[0, 0]))
    assert min(fractions) > 0.01 and np.mean(ious) > 0.75


def test_synthetic_dataset_is_deterministic_and_sound_decides(tmp_path):
    # The script once as a user runs it, the library once in this process: two processes that must agree, at the
    # cost of one interpreter start. Three clips a category, not twelve: the clips are most of the writing time.
    a = run_script("make_synthetic.py", "--out", tmp_path / "a", "--num", "40", "--seed", "5", "--size", "64",
                   "--clips-per-category", "3")
    assert a.returncode == 0 and "wrote 40 samples" in a.stdout
    write_dataset(tmp_path / "b", num_samples=40, seed=5, size=64, clips_per_category=3)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    splits = json.loads((tmp_path / "a" / "splits.json").read_text())
    assert len(splits["unseen"]) == sum(not c.seen for c in CATEGORIES)
    # The same picture is stored under several categories with different targets.
    by_stem = {}
    for mask_path in (tmp_path / "a").rglob("*_Function_mask.png"):
        by_stem.setdefault(mask_path.name, []).append(cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE))
    shared = [masks for masks in by_stem.values() if len(masks) > 1]
    assert shared and all(not np.array_equal(m[0], m[1]) for m in shared)
    assert category_splits(tmp_path / "a") == (splits["seen"], splits["unseen"])


def test_audio_crops_run_from_the_shortest_to_the_whole_clip_and_are_the_clip_itself(tmp_path):
    """audio_crop_min_s (train.py): each draw is a run of the clip's own samples, at least that long (or the whole
    clip when shorter), up to the whole clip, anywhere in it; what the model gets is the front end of that run."""
    import soundfile

    from avag_core.audio import audio_to_model_input
    from avag_core.data.avagd import IndexRow
    from avag_core.data.dataset import crop_span, load_cropped_log_mel

    rate = 16000
    generator = torch.Generator().manual_seed(0)
    spans = [crop_span(2 * rate, rate, 0.3, generator) for _ in range(2000)]
    lengths = np.array([s.stop - s.start for s in spans])
    assert lengths.min() >= 0.3 * rate and lengths.max() <= 2 * rate and all(0 <= s.start for s in spans)
    assert all(s.stop <= 2 * rate for s in spans)
    # lengths spread over the whole range, starts over the whole clip
    assert np.percentile(lengths, 5) < 0.5 * rate and np.percentile(lengths, 95) > 1.8 * rate
    assert min(s.start for s in spans) < 0.05 * rate and max(s.stop for s in spans) > 1.95 * rate
    assert crop_span(1000, rate, 0.3, generator) == slice(0, 1000)  # shorter than 0.3 s: the whole clip

    clip = np.random.default_rng(1).normal(0, 0.1, 2 * rate).astype(np.float32)
    path = tmp_path / "clip.wav"
    soundfile.write(path, clip, rate, subtype="PCM_16")
    clip = soundfile.read(path, dtype="int16")[0] / np.float32(32768)  # as stored
    row = IndexRow(tmp_path / "x.jpg", path, tmp_path / "m.png", None, None)
    torch.manual_seed(7)
    cropped = load_cropped_log_mel(row, 20, 0.3)
    torch.manual_seed(7)
    span = crop_span(clip.size, rate, 0.3)
    torch.testing.assert_close(cropped, audio_to_model_input(clip[span], rate, 20))
    with pytest.raises(ValueError, match="needs the clip itself"):
        load_cropped_log_mel(IndexRow(tmp_path / "x.jpg", tmp_path / "gone.wav", tmp_path / "m.png", None,
                                      tmp_path / "x.pt"), 20, 0.3)
