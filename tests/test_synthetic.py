"""Synthetic datasets: seeded determinism, exact on-disk layouts, label semantics, geometry and intensities."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

from nnunet_transfer.data.mots_tasks import TASKS
from nnunet_transfer.data.phantom import (ABDOMEN, LESIONS, ORGANS, SPACING_JITTER, TISSUE_HU, Geometry,
                                          make_phantom)
from nnunet_transfer.data.synthetic import (
    MARKER_NAME,
    MSD_SOURCES,
    SOURCE_FIELD_OF_VIEW,
    SOURCE_STRUCTURES,
    kits_case_ids,
    synth_kits21,
    synth_kvasir,
    synth_mots,
)

SMALL = (8, 32, 32)


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _read(path) -> tuple:
    img = sitk.ReadImage(str(path))
    return img, sitk.GetArrayFromImage(img)


def _same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing())
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin())
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection())


@pytest.fixture(scope="module")
def mots(tmp_path_factory):
    out = tmp_path_factory.mktemp("mots")
    return out, synth_mots(out, cases=2, seed=0)


@pytest.fixture(scope="module")
def kits21(tmp_path_factory):
    out = tmp_path_factory.mktemp("kits21")
    return out, synth_kits21(out, cases=3, seed=0)


@pytest.fixture(scope="module")
def kvasir(tmp_path_factory):
    out = tmp_path_factory.mktemp("kvasir")
    return out, synth_kvasir(out, cases=6, seed=0, size=(64, 80))


# ---------------------------------------------------------------------------------------------- phantom


def test_phantom_structures_and_intensities():
    ph = make_phantom((24, 64, 64), seed=5, lesion_counts={k: 1 for k in LESIONS})
    assert ph.image.dtype == np.int16 and ph.image.shape == (24, 64, 64)
    for name in ORGANS + ("hepatic_vessel",) + tuple(LESIONS):
        assert ph.masks[name].any(), name
    for kind, spec in LESIONS.items():
        assert not (ph.masks[kind] & ~ph.masks[spec.organ]).any(), f"{kind} leaks out of {spec.organ}"
        assert len(ph.instances[kind]) == 1
    assert not (ph.masks["hepatic_vessel"] & ~ph.masks["liver"]).any()
    assert not (ph.masks["kidney_right"] & ph.masks["kidney_left"]).any()
    outside = ~ndimage.binary_dilation(ph.masks["body"], iterations=2)
    assert (ph.image[outside] < -900).mean() > 0.99  # air outside

    def median(name, mask=None):
        m = ph.masks[name] if mask is None else mask
        core = ndimage.binary_erosion(m, structure=np.ones((1, 3, 3), bool))
        return float(np.median(ph.image[core if core.sum() > 20 else m]))

    clean = {o: ph.masks[o] & ~ph.masks["hepatic_vessel"] for o in ("liver",)}
    for organ in ("liver", "spleen", "pancreas", "lungs"):
        lo, hi = TISSUE_HU[organ]
        mask = clean.get(organ, ph.masks[organ])
        for kind, spec in LESIONS.items():
            if spec.organ == organ:
                mask = mask & ~ph.masks[kind]
        assert lo - 20 <= median(organ, mask) <= hi + 20, organ
    k = median("kidneys", ph.masks["kidneys"] & ~ph.masks["kidney_tumor"] & ~ph.masks["kidney_cyst"])
    assert TISSUE_HU["kidney_medulla"][0] - 20 <= k <= TISSUE_HU["kidney_cortex"][1] + 20
    assert 350 <= median("bone") <= 1000
    liver_only = clean["liver"] & ~ph.masks["liver_tumor"]
    assert float(np.median(ph.image[ph.masks["liver_tumor"]])) < median("liver", liver_only)  # hypodense tumour


def test_phantom_seeded_and_lesion_counts():
    a, b, c = (make_phantom(SMALL, s) for s in (1, 1, 2))
    assert np.array_equal(a.image, b.image) and a.geometry == b.geometry
    assert not np.array_equal(a.image, c.image)
    none = make_phantom(SMALL, 3, lesion_counts={k: 0 for k in LESIONS})
    assert not any(none.masks[k].any() for k in LESIONS)
    two = make_phantom(SMALL, 3, lesion_counts={"kidney_cyst": 2})
    assert len(two.instances["kidney_cyst"]) == 2 and all(m.any() for m in two.instances["kidney_cyst"])
    with pytest.raises(ValueError, match="at least|>="):
        make_phantom((4, 64, 64), 0)
    with pytest.raises(KeyError, match="unknown lesion"):
        make_phantom(SMALL, 0, lesion_counts={"brain_tumor": 1})


def test_abdominal_view_gives_the_kidneys_a_realistic_share_with_consistent_anatomy():
    """The abdominal view (KiTS, most MOTS sources) shows the kidneys at a few % of the voxels (the whole-body
    view: well under 1%), and its physical spacing keeps organ sizes in mm the same at any voxel count."""
    from nnunet_transfer.data.phantom import FULL_BODY

    shares = [make_phantom((16, 48, 48), s, fov=ABDOMEN).masks["kidneys"].mean() for s in range(4)]
    assert 0.02 <= np.mean(shares) <= 0.08, shares
    assert make_phantom((16, 48, 48), 0, fov=FULL_BODY).masks["kidneys"].mean() < 0.5 * np.mean(shares)
    small, large = make_phantom((12, 32, 32), 3, fov=ABDOMEN), make_phantom((24, 64, 64), 3, fov=ABDOMEN)
    mm3 = [p.masks["kidneys"].sum() * np.prod(p.geometry.spacing) for p in (small, large)]
    assert abs(mm3[0] / mm3[1] - 1) < 0.25, mm3
    with pytest.raises(ValueError, match="outside the field of view"):
        make_phantom((16, 48, 48), 0, lesion_counts={"lung_tumor": 1}, fov=ABDOMEN)


def test_geometry_slice_first_keeps_physical_positions():
    ph = make_phantom(SMALL, 7)
    normal = ph.geometry.to_sitk(ph.image)
    quirk = ph.geometry.to_sitk(ph.image, slice_first=True)
    assert quirk.GetSize() == normal.GetSize()[::-1]
    assert quirk.GetSpacing()[0] == max(quirk.GetSpacing())  # the coarse slice axis comes first
    for idx in [(0, 0, 0), (5, 17, 3), (31, 2, 7)]:  # (i, j, k) of the normal image
        np.testing.assert_allclose(normal.TransformIndexToPhysicalPoint(idx),
                                   quirk.TransformIndexToPhysicalPoint(idx[::-1]), atol=1e-3)
        assert normal[idx] == quirk[idx[::-1]]
    g = Geometry((1.0, 2.0, 3.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    assert g.slice_first().slice_first() == g


# ---------------------------------------------------------------------------------------------- MOTS


def test_mots_layout_exact(mots):
    out, summary = mots
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    expected = {MARKER_NAME}
    for i in range(2):
        expected |= {f"LiTS/volume-{i}.nii", f"LiTS/segmentation-{i}.nii",
                     f"KiTS19/case_{i:05d}/imaging.nii.gz", f"KiTS19/case_{i:05d}/segmentation.nii.gz"}
    for source, (_, pattern, _) in MSD_SOURCES.items():
        expected |= {f"{source}/dataset.json", f"{source}/imagesTs/{pattern.format(3)}.nii.gz"}
        for i in (1, 2):
            stem = pattern.format(i)
            expected |= {f"{source}/imagesTr/{stem}.nii.gz", f"{source}/labelsTr/{stem}.nii.gz"}
    assert files == expected
    assert "Task08_HepaticVessel/imagesTr/hepaticvessel_001.nii.gz" in files
    assert "Task09_Spleen/imagesTr/spleen_1.nii.gz" in files
    assert not any(f.endswith("_0000.nii.gz") for f in files)
    assert (out / "LiTS/volume-0.nii").read_bytes()[:2] != b"\x1f\x8b"  # LiTS is uncompressed NIfTI
    assert set(summary["files"]) == expected - {MARKER_NAME}
    assert summary["sources"]["KiTS19"]["cases"] == ["case_00000", "case_00001"]
    assert set(summary["sources"]) == {t.source for t in TASKS}


def test_mots_msd_dataset_json(mots):
    out, _ = mots
    for source, (name, pattern, labels) in MSD_SOURCES.items():
        ds = json.loads((out / source / "dataset.json").read_text())
        assert ds["name"] == name and ds["modality"] == {"0": "CT"} and ds["labels"] == labels
        assert ds["labels"]["0"] == "background"
        assert ds["numTraining"] == len(ds["training"]) == 2
        for entry in ds["training"]:
            assert entry["image"].startswith("./imagesTr/") and entry["label"].startswith("./labelsTr/")
            assert (out / source / entry["image"]).is_file() and (out / source / entry["label"]).is_file()
        assert [(out / source / t).is_file() for t in ds["test"]] == [True]
        task = next(t for t in TASKS if t.source == source)
        assert {int(k) for k in ds["labels"]} == set(task.allowed_source_labels)


def test_mots_labels_geometry_and_intensity(mots):
    _, summary = mots
    organ_hu = {"LiTS": (35, 85), "KiTS19": (70, 200), "Task08_HepaticVessel": (90, 200),
                "Task07_Pancreas": (15, 70), "Task09_Spleen": (25, 75)}
    for task in TASKS:
        entry = summary["sources"][task.source]
        for img_path, seg_path in zip(entry["images"], entry["labels"]):
            img, arr = _read(img_path)
            seg, lab = _read(seg_path)
            _same_geometry(img, seg)
            assert arr.dtype == np.int16 and lab.dtype == np.uint8
            assert set(np.unique(lab)) <= set(task.allowed_source_labels), seg_path
            assert (lab == 1).any(), f"{seg_path} lacks its structure 1 ({SOURCE_STRUCTURES[task.source][1]})"
            sp = np.array(img.GetSpacing())
            assert sp.max() / sp.min() > 1.05  # anisotropic
            # physical field of view: the anatomy has the same size in mm in every case (spacing jitter only)
            z_axis = 0 if task.source == "KiTS19" else 2
            z_extent = sp[z_axis] * (img.GetSize()[z_axis] - 1)
            assert abs(z_extent / SOURCE_FIELD_OF_VIEW[task.source].extent_mm()[0] - 1) <= SPACING_JITTER + 1e-6
            assert not np.allclose(np.array(img.GetDirection()), np.eye(3).ravel())
            assert np.linalg.norm(img.GetOrigin()) > 1.0
            if task.source == "KiTS19":  # KiTS19 quirk: the first image axis is the coarse cranio-caudal one
                assert sp[0] == sp.max() and abs(np.array(img.GetDirection()).reshape(3, 3)[2, 0]) == 1.0
            else:
                assert sp[2] == sp.max()
            if task.source in organ_hu:
                lo, hi = organ_hu[task.source]
                assert lo <= float(np.median(arr[lab == 1])) <= hi, (seg_path, float(np.median(arr[lab == 1])))
        for test_img in entry["test_images"]:
            assert sitk.ReadImage(test_img).GetSize() == sitk.ReadImage(entry["images"][0]).GetSize()


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = synth_mots(tmp_path / "a", cases=1, seed=4, shape=SMALL)
    synth_mots(tmp_path / "b", cases=1, seed=4, shape=SMALL)
    synth_mots(tmp_path / "c", cases=1, seed=5, shape=SMALL)
    ha, hb, hc = (_hashes(tmp_path / n) for n in "abc")
    assert ha == hb and len(ha) == len(a["files"]) + 1
    images = [f for f in ha if re.search(r"imaging|images|volume", f)]
    assert len(images) == 12 and all(ha[f] != hc[f] for f in images)

    for kind, fn in (("k", lambda d, s: synth_kits21(d, cases=2, seed=s, shape=SMALL)),
                     ("v", lambda d, s: synth_kvasir(d, cases=3, seed=s, size=(32, 32)))):
        fn(tmp_path / f"{kind}1", 1)
        fn(tmp_path / f"{kind}2", 1)
        fn(tmp_path / f"{kind}3", 2)
        h1, h2, h3 = (_hashes(tmp_path / f"{kind}{i}") for i in (1, 2, 3))
        assert h1 == h2
        assert h1 != h3


def test_rerun_overwrites_deterministically_and_refuses_foreign_dirs(tmp_path):
    out = tmp_path / "kv"
    synth_kvasir(out, cases=4, seed=0, size=(32, 32))
    first = _hashes(out)
    synth_kvasir(out, cases=2, seed=0, size=(32, 32))  # fewer cases: stale files must go
    fresh = tmp_path / "fresh"
    synth_kvasir(fresh, cases=2, seed=0, size=(32, 32))
    assert _hashes(out) == _hashes(fresh) != first

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty.*new or empty directory"):
        synth_mots(foreign, cases=1, shape=SMALL)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(FileExistsError, match="'kvasir'.*not 'mots'"):
        synth_mots(out, cases=1, shape=SMALL)
    with pytest.raises(FileExistsError, match="not 'kits19'"):
        synth_kits21(out, cases=1, layout="kits19", shape=SMALL)
    with pytest.raises(ValueError, match="layout"):
        synth_kits21(tmp_path / "x", cases=1, layout="kits20")


# ---------------------------------------------------------------------------------------------- KiTS


def test_kits_case_ids_cover_both_ranges():
    assert kits_case_ids(4, "kits21") == [0, 210, 1, 211]
    assert kits_case_ids(3, "kits19") == [0, 1, 2]
    for n in (2, 3, 7):
        ids = kits_case_ids(n, "kits21")
        assert any(i < 210 for i in ids) and any(i >= 210 for i in ids) and len(set(ids)) == n


def test_kits21_layout_labels_and_samples(kits21):
    out, summary = kits21
    assert summary["cases"] == ["case_00000", "case_00210", "case_00001"]
    assert summary["kits19_overlap"] == ["case_00000", "case_00001"] and summary["new_cases"] == ["case_00210"]
    name_re = re.compile(r"^kidney(_i\d+a[123])+_cyst(_i\d+a[123])*_tumor(_i\d+a[123])+\.nii\.gz$")
    inst_re = re.compile(r"^(kidney|tumor|cyst)_instance-\d+_annotation-[123]\.nii\.gz$")
    seen_labels = set()
    for case in summary["cases"]:
        d = out / "kits21" / "data" / case  # the git clone's layout (kits21/configuration/paths.py)
        top = {p.name for p in d.iterdir()}
        assert top == {"imaging.nii.gz", "aggregated_MAJ_seg.nii.gz", "aggregated_OR_seg.nii.gz",
                       "aggregated_AND_seg.nii.gz", "segmentations"}
        img, arr = _read(d / "imaging.nii.gz")
        maj_img, maj = _read(d / "aggregated_MAJ_seg.nii.gz")
        _same_geometry(img, maj_img)
        assert img.GetSpacing()[0] == max(img.GetSpacing())  # KiTS axis order
        assert set(np.unique(maj)) <= {0, 1, 2, 3} and {1, 2} <= set(np.unique(maj))
        seen_labels |= set(np.unique(maj).tolist())
        assert 70 <= float(np.median(arr[maj == 1])) <= 180
        _, or_ = _read(d / "aggregated_OR_seg.nii.gz")
        _, and_ = _read(d / "aggregated_AND_seg.nii.gz")
        assert (or_ > 0)[maj > 0].all() and (maj > 0)[and_ > 0].all()
        assert all(inst_re.match(p.name) for p in (d / "segmentations").iterdir())
    assert 3 in seen_labels, "no synthetic KiTS21 case has a cyst"


def test_kits21_samples_written_like_the_official_sampler(tmp_path):
    from nnunet_transfer.data.kits_samples import sample_segmentations

    summary = synth_kits21(tmp_path / "k", cases=1, seed=0, shape=SMALL, groups=2)
    d = tmp_path / "k" / "kits21" / "data" / summary["cases"][0]
    name_re = re.compile(r"^kidney(_i\d+a[123])+_cyst(_i\d+a[123])*_tumor(_i\d+a[123])+\.nii\.gz$")
    expected = sample_segmentations(d, num_groups=2)
    assert len(expected) == 6  # 3 annotators per instance
    img, _ = _read(d / "imaging.nii.gz")
    _, maj = _read(d / "aggregated_MAJ_seg.nii.gz")
    diffs = []
    for sample in expected:
        s_img, s = _read(d / "segmentation_samples" / f"group_{sample.group}" / sample.name)
        assert name_re.match(sample.name)
        _same_geometry(img, s_img)
        assert set(np.unique(s)) <= {0, 1, 2, 3}
        diffs.append(int((s != maj).sum()))
    assert max(diffs) > 0, "every sample equals the MAJ map"

    from nnunet_transfer.cli.main import main

    assert main(["synth", "kits21", str(tmp_path / "cli"), "--cases", "1", "--shape", *map(str, SMALL),
                 "--groups", "1"]) == 0
    assert len(list((tmp_path / "cli" / "kits21/data/case_00000/segmentation_samples/group_0").iterdir())) == 3


def test_kits21_overlaps_mots_kits19(tmp_path, kits21):
    out, _ = kits21
    mots = synth_mots(tmp_path / "m", cases=1, seed=0)
    assert (Path(mots["sources"]["KiTS19"]["images"][0]).read_bytes()
            == (out / "kits21/data/case_00000/imaging.nii.gz").read_bytes())


def test_kits19_and_kits23_layouts(tmp_path):
    k19 = synth_kits21(tmp_path / "k19", cases=2, seed=0, shape=SMALL, layout="kits19")
    assert sorted(k19["files"]) == sorted(f"data/case_{i:05d}/{n}" for i in range(2)
                                          for n in ("imaging.nii.gz", "segmentation.nii.gz"))
    for img_p, seg_p in zip(k19["images"], k19["labels"]):
        img, _ = _read(img_p)
        seg, lab = _read(seg_p)
        _same_geometry(img, seg)
        assert set(np.unique(lab)) == {0, 1, 2}  # KiTS19 labels cysts as kidney
    k23 = synth_kits21(tmp_path / "k23", cases=2, seed=0, shape=SMALL, layout="kits23")
    assert k23["cases"] == ["case_00000", "case_00210"]
    for case in k23["cases"]:
        d = tmp_path / "k23" / "dataset" / case
        assert {p.name for p in d.iterdir()} == {"imaging.nii.gz", "segmentation.nii.gz", "instances"}
        assert any(p.name.startswith("kidney_instance-2_annotation-") for p in (d / "instances").iterdir())
    _, lab = _read(tmp_path / "k23/dataset/case_00210/segmentation.nii.gz")
    assert set(np.unique(lab)) == {0, 1, 2, 3}


# ---------------------------------------------------------------------------------------------- Kvasir


def test_kvasir_layout_masks_and_polyps(kvasir):
    out, summary = kvasir
    assert len(summary["ids"]) == 6 and len(set(summary["ids"])) == 6
    assert all(re.fullmatch(r"[a-z0-9]{25}", i) for i in summary["ids"])
    assert {p.name for p in out.iterdir()} == {"images", "masks", "kavsir_bboxes.json", MARKER_NAME}
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(summary["ids"])
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(f"{i}.jpg" for i in summary["ids"])
    bboxes = json.loads((out / "kavsir_bboxes.json").read_text())
    for case_id in summary["ids"]:
        img = Image.open(out / "images" / f"{case_id}.jpg")
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (80, 64)
        rgb = np.asarray(img).astype(float)
        raw = np.asarray(Image.open(out / "masks" / f"{case_id}.jpg").convert("L"))
        assert raw.shape == (64, 80)
        assert ((raw < 40) | (raw > 215)).mean() > 0.95  # essentially 0/255
        mask = raw > 127
        assert 0.01 < mask.mean() < 0.5
        lum = rgb.mean(axis=2)
        fov = lum > 30
        assert lum[mask].mean() > lum[fov & ~mask].mean() + 20, "the polyp is not brighter than the mucosa"
        assert rgb[..., 0][fov].mean() > rgb[..., 2][fov].mean() + 30  # pinkish: red dominates blue
        box = bboxes[case_id]["bbox"][0]
        ys, xs = np.nonzero(mask)
        assert abs(box["xmin"] - xs.min()) <= 2 and abs(box["ymax"] - ys.max()) <= 2
        assert bboxes[case_id]["height"] == 64 and bboxes[case_id]["width"] == 80


def test_large_kidney_lesions_keep_the_anatomy_and_stand_out():
    from nnunet_transfer.data.synthetic import kits_phantom

    for case in (0, 1, 210):
        standard, large = kits_phantom(case, 4, (16, 48, 48)), kits_phantom(case, 4, (16, 48, 48), "large")
        assert np.array_equal(standard.masks["kidneys"], large.masks["kidneys"])  # same anatomy, same draws
        assert large.masks["kidney_tumor"].sum() > 2 * standard.masks["kidney_tumor"].sum()
        tumour = large.image[large.masks["kidney_tumor"]].mean()
        kidney = large.image[large.masks["kidneys"] & ~large.masks["kidney_tumor"] & ~large.masks["kidney_cyst"]]
        assert tumour < kidney.mean() - 40  # darker than the enhancing kidney around it
        if large.masks["kidney_cyst"].any():
            assert large.image[large.masks["kidney_cyst"]].mean() < tumour
    with pytest.raises(ValueError, match="profile"):
        kits_phantom(0, 4, (16, 48, 48), "huge")


def test_bright_kidney_tumours_are_brighter_than_any_soft_tissue_and_cysts_darker():
    from nnunet_transfer.data.synthetic import kits_phantom

    for case in (0, 1, 210):
        standard, bright = kits_phantom(case, 4, (16, 48, 48)), kits_phantom(case, 4, (16, 48, 48), "bright")
        assert np.array_equal(standard.masks["kidneys"], bright.masks["kidneys"])
        tumour = bright.image[bright.masks["kidney_tumor"]].mean()
        kidney = bright.image[bright.masks["kidneys"] & ~bright.masks["kidney_tumor"] & ~bright.masks["kidney_cyst"]]
        assert tumour > kidney.mean() + 60  # a hyper-enhancing mass: brighter than the cortex around it
        cyst = bright.masks["kidney_cyst"] & ~bright.masks["kidney_tumor"]  # tumours are painted over cysts
        if cyst.any():
            assert bright.image[cyst].mean() < kidney.mean() - 100


def test_the_cli_offers_every_kidney_lesion_profile():
    from nnunet_transfer.cli.data import KIDNEY_LESION_CHOICES
    from nnunet_transfer.data.synthetic import KIDNEY_LESION_PROFILES

    assert sorted(KIDNEY_LESION_CHOICES) == sorted(KIDNEY_LESION_PROFILES)


def test_mots_sources_can_have_their_own_case_counts(tmp_path):
    summary = synth_mots(tmp_path / "m", cases=1, seed=5, shape=(8, 24, 24), source_cases={"KiTS19": 3},
                         kidney_lesions="large")
    assert len(summary["sources"]["KiTS19"]["cases"]) == 3 and len(summary["sources"]["LiTS"]["cases"]) == 1
    with pytest.raises(ValueError, match="unknown MOTS sources"):
        synth_mots(tmp_path / "n", cases=1, shape=(8, 24, 24), source_cases={"KiTS99": 3})
