"""A seeded, CT-like abdominal phantom: one call gives an int16 HU volume, its organ masks and its geometry.

The synthetic datasets (:mod:`nnunet_transfer.data.synthetic`), which let every pipeline run without real data,
are built from this phantom. Each source dataset then picks the
structures it labels (a LiTS case labels only liver and liver tumour, an MSD spleen case only the spleen, ...),
exactly like the real partially labelled datasets of MOTS.

Array convention: every array is numpy ``(z, y, x)`` as returned by ``SimpleITK.GetArrayFromImage``;
:class:`Geometry` holds spacing/origin/direction in SimpleITK's ``(x, y, z)`` order. The anatomy is drawn in
normalised patient coordinates (z 0 = cranial .. 1 = caudal; y -1 = anterior .. 1 = posterior;
x -1 = patient right .. 1 = patient left); in-plane axes are randomly flipped per case (as in real scans stored
in LPS or RAS order) and the direction matrix says so, so the physical geometry is always consistent.

Everything is vectorised numpy; a 64^3 case takes a few tens of milliseconds.

Size: about 417 lines, as one generator: the anatomy, tissue intensities and lesions of a phantom are drawn together
from one random stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage
from nnunet_transfer.errors import InvalidValueError, MissingEntryError

SeedLike = Union[int, Sequence[int], np.random.SeedSequence, np.random.Generator]

#: (low, high) HU of each tissue's base value (drawn uniformly per case, before blur and noise)
TISSUE_HU: Dict[str, Tuple[float, float]] = {
    "air": (-1000.0, -1000.0),
    "fat": (-110.0, -85.0),
    "muscle": (35.0, 55.0),
    "bowel": (15.0, 30.0),
    "lungs": (-870.0, -830.0),
    "bone_cortex": (850.0, 1000.0),
    "bone_marrow": (400.0, 480.0),
    "liver": (55.0, 65.0),
    "spleen": (45.0, 55.0),
    "kidney_cortex": (120.0, 190.0),  # wide: the contrast phase varies from scan to scan
    "kidney_medulla": (75.0, 110.0),
    "pancreas": (35.0, 45.0),
    "colon_wall": (35.0, 50.0),
    "colon_lumen": (-950.0, -850.0),
    "hepatic_vessel": (170.0, 190.0),
    "liver_tumor": (25.0, 40.0),
    "kidney_tumor": (60.0, 105.0),
    "kidney_cyst": (0.0, 15.0),
    "pancreas_tumor": (15.0, 30.0),
    "colon_tumor": (45.0, 60.0),
    "lung_tumor": (10.0, 40.0),
}

#: organ masks produced by every phantom (each includes the lesions and vessels drawn inside it)
ORGANS: Tuple[str, ...] = ("body", "bone", "lungs", "liver", "spleen", "kidneys", "pancreas", "colon")


@dataclass(frozen=True)
class LesionSpec:
    """Where a lesion kind grows, how big it is (normalised in-plane radius range) and its HU tissue."""

    organ: str
    radius: Tuple[float, float]


#: lesion kinds in placement order: a later kind avoids centring on earlier lesions of the same organ, so a
#: cyst always keeps voxels of its own when tumours are painted over cysts (KiTS21 order kidney, cyst, tumor)
LESIONS: Dict[str, LesionSpec] = {
    "liver_tumor": LesionSpec("liver", (0.08, 0.16)),
    "kidney_tumor": LesionSpec("kidneys", (0.06, 0.11)),
    "kidney_cyst": LesionSpec("kidneys", (0.035, 0.06)),
    "pancreas_tumor": LesionSpec("pancreas", (0.05, 0.08)),
    "colon_tumor": LesionSpec("colon", (0.07, 0.12)),
    "lung_tumor": LesionSpec("lungs", (0.05, 0.10)),
}
#: intensities are painted cysts first so that tumours overwrite them, like the KiTS21 label aggregation
_PAINT_ORDER = ("liver_tumor", "kidney_cyst", "kidney_tumor", "pancreas_tumor", "colon_tumor", "lung_tumor")
#: probabilities of 0, 1, 2 lesions of a kind when the caller does not fix the count (most cases have one)
DEFAULT_LESION_PROBS = (0.15, 0.65, 0.20)

#: smallest (z, in-plane) size at which every organ is reliably drawn
MIN_SHAPE = (8, 24)
#: voxel spacing of the whole-body field of view (the legacy default: random, independent of the anatomy's size)
IN_PLANE_SPACING_MM = (0.6, 0.95)
SLICE_SPACING_MM = (1.0, 5.0)
NOISE_SIGMA_HU = (10.0, 20.0)
#: physical size (mm) of one normalised unit along (z, y, x) in a field of view with physical spacing
MM_PER_UNIT = (500.0, 190.0, 190.0)
#: relative per-case jitter of a physical spacing (scanners and patients differ a little)
SPACING_JITTER = 0.06


@dataclass(frozen=True)
class FieldOfView:
    """The part of the normalised patient (z 0..1 cranio-caudal, y and x -1..1) a scan covers.

    ``physical``: the spacing follows from the covered extent (:data:`MM_PER_UNIT`, jittered by
    :data:`SPACING_JITTER`), so the anatomy has the same size in millimetres in every case, as in real scans;
    otherwise the spacing is random (:data:`IN_PLANE_SPACING_MM`, :data:`SLICE_SPACING_MM`), today's whole-body
    behaviour. ``organs`` are those the view must show (checked non-empty).
    """

    z: Tuple[float, float] = (0.0, 1.0)
    y: Tuple[float, float] = (-1.0, 1.0)
    x: Tuple[float, float] = (-1.0, 1.0)
    physical: bool = False
    organs: Tuple[str, ...] = ("bone", "lungs", "liver", "spleen", "kidneys", "pancreas", "colon")

    def extent_mm(self) -> Tuple[float, float, float]:
        """Covered extent in mm along (z, y, x)."""
        return tuple(float(u * (hi - lo)) for u, (lo, hi) in zip(MM_PER_UNIT, (self.z, self.y, self.x)))


#: the whole body (lungs to pelvis), random spacing: :func:`make_phantom`'s default
FULL_BODY = FieldOfView()
#: an abdominal scan centred on the kidneys (as KiTS and most MOTS sources): kidneys ~3% of the voxels,
#: liver, spleen, pancreas and colon cut by the view as in real abdominal CT
ABDOMEN = FieldOfView(z=(0.38, 0.86), y=(-0.45, 0.75), x=(-0.8, 0.8), physical=True,
                      organs=("bone", "liver", "spleen", "kidneys", "pancreas", "colon"))
#: a chest scan (MSD lung): lungs and the upper abdomen
CHEST = FieldOfView(z=(0.0, 0.48), y=(-0.6, 0.6), x=(-0.9, 0.9), physical=True,
                    organs=("bone", "lungs", "liver"))


@dataclass(frozen=True)
class Geometry:
    """Physical geometry of a volume in SimpleITK conventions (all tuples in index order i, j, k)."""

    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    #: 3x3 row-major; column j is the world (LPS) direction of index axis j
    direction: Tuple[float, ...]

    def slice_first(self) -> "Geometry":
        """The geometry of the same voxels stored with reversed index axes (the KiTS19 on-disk quirk).

        KiTS19 files have the cranio-caudal axis as their *first* image axis (nibabel shape (slices, rows,
        cols)); the direction matrix carries the permutation so the physical placement is unchanged.
        """
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        return Geometry(tuple(self.spacing[::-1]), self.origin, tuple(d[:, ::-1].ravel().tolist()))

    def to_sitk(self, array: np.ndarray, slice_first: bool = False):
        """A SimpleITK image of a ``(z, y, x)`` array with this geometry (optionally in KiTS19 axis order)."""
        import SimpleITK as sitk

        geo = self
        if slice_first:
            array = np.ascontiguousarray(np.transpose(array, (2, 1, 0)))
            geo = self.slice_first()
        img = sitk.GetImageFromArray(array)
        img.SetSpacing([float(s) for s in geo.spacing])
        img.SetOrigin([float(o) for o in geo.origin])
        img.SetDirection([float(v) for v in geo.direction])
        return img


@dataclass
class Phantom:
    """One synthetic CT case: HU image, boolean structure masks and instance masks, geometry."""

    image: np.ndarray
    #: structure name -> bool mask; organs of :data:`ORGANS`, ``hepatic_vessel``, ``kidney_right``,
    #: ``kidney_left`` and one entry per lesion kind of :data:`LESIONS` (empty when the case has none)
    masks: Dict[str, np.ndarray]
    #: ``kidney`` -> [right, left]; lesion kind -> one mask per lesion (in drawing order)
    instances: Dict[str, List[np.ndarray]]
    geometry: Geometry
    #: base HU drawn for each tissue of this case
    tissue_hu: Dict[str, float] = field(default_factory=dict)


def _rng(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def random_geometry(shape: Tuple[int, int, int], rng: np.random.Generator,
                    flips: Tuple[bool, bool], fov: FieldOfView = FULL_BODY) -> Geometry:
    """Anisotropic spacing, a direction with the given in-plane flips (z runs caudally) and a plausible origin.

    With a physical field of view the spacing is its extent over the voxel count, jittered per case (and the
    same along y and x); otherwise random as today.
    """
    nz, ny, nx = shape
    if fov.physical:
        ez, ey, ex = fov.extent_mm()
        scale = 1.0 + float(rng.uniform(-SPACING_JITTER, SPACING_JITTER))
        inplane = scale * max(ey / max(ny - 1, 1), ex / max(nx - 1, 1))
        spacing = np.array([inplane, inplane, scale * ez / max(nz - 1, 1)])
    else:
        inplane = float(rng.uniform(*IN_PLANE_SPACING_MM))
        spacing = np.array([inplane, inplane, float(rng.uniform(*SLICE_SPACING_MM))])
    flip_x, flip_y = flips
    direction = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, -1.0])
    centre = np.array([rng.uniform(-20, 20), rng.uniform(-30, 10), rng.uniform(-700, -100)])
    half_extent = spacing * (np.array([nx, ny, nz]) - 1) / 2.0
    origin = centre - direction @ half_extent
    return Geometry(tuple(np.round(spacing, 6).tolist()), tuple(np.round(origin, 4).tolist()),
                    tuple(direction.ravel().tolist()))


class _Grid:
    """Open (broadcastable) normalised patient coordinates of a volume, flips applied."""

    def __init__(self, shape: Tuple[int, int, int], flip_x: bool, flip_y: bool, fov: FieldOfView = FULL_BODY):
        nz, ny, nx = shape
        x = np.linspace(*fov.x, nx, dtype=np.float32)
        y = np.linspace(*fov.y, ny, dtype=np.float32)
        self.shape = shape
        self.z = np.linspace(*fov.z, nz, dtype=np.float32)[:, None, None]
        self.y = (y[::-1] if flip_y else y)[None, :, None]
        self.x = (x[::-1] if flip_x else x)[None, None, :]

    def ellipsoid(self, centre_zyx, radii_zyx) -> np.ndarray:
        (cz, cy, cx), (rz, ry, rx) = centre_zyx, radii_zyx
        return ((self.z - cz) / rz) ** 2 + ((self.y - cy) / ry) ** 2 + ((self.x - cx) / rx) ** 2 <= 1.0

    def point(self, flat_index: int) -> np.ndarray:
        iz, iy, ix = np.unravel_index(flat_index, self.shape)
        return np.array([self.z[iz, 0, 0], self.y[0, iy, 0], self.x[0, 0, ix]], dtype=np.float32)

    def segment_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distance of every voxel to the segment a-b (normalised units)."""
        d = b - a
        dz, dy, dx = self.z - a[0], self.y - a[1], self.x - a[2]
        t = np.clip((dz * d[0] + dy * d[1] + dx * d[2]) / max(float(d @ d), 1e-12), 0.0, 1.0)
        return np.sqrt((dz - t * d[0]) ** 2 + (dy - t * d[1]) ** 2 + (dx - t * d[2]) ** 2)


def _jitter(rng: np.random.Generator, values, rel: float = 0.08) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v * (1.0 + rng.uniform(-rel, rel, size=v.shape)).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: Tuple[int, int, int], coarse=(4, 6, 6)) -> np.ndarray:
    """Low-frequency random field in [-1, 1] (trilinear upsampling of coarse noise)."""
    coarse_noise = rng.uniform(-1.0, 1.0, size=coarse).astype(np.float32)
    zoom = [s / c for s, c in zip(shape, coarse)]
    return ndimage.zoom(coarse_noise, zoom, order=1, mode="nearest", grid_mode=True)[: shape[0], : shape[1], : shape[2]]


def _pick_voxel(rng: np.random.Generator, region: np.ndarray, avoid: Optional[np.ndarray] = None,
                interior: Optional[np.ndarray] = None) -> int:
    """A random voxel of ``region`` (preferring its ``interior`` and voxels outside ``avoid``)."""
    if interior is None:
        interior = ndimage.binary_erosion(region)
    for cand in (interior & ~avoid if avoid is not None else interior,
                 region & ~avoid if avoid is not None else region, region):
        idx = np.flatnonzero(cand)
        if idx.size:
            return int(idx[rng.integers(idx.size)])
    raise InvalidValueError("cannot place a structure inside an empty region; use a larger phantom shape")


def draw_lesion_counts(rng: np.random.Generator, minimum: Optional[Mapping[str, int]] = None) -> Dict[str, int]:
    """0, 1 or 2 lesions of each kind (mostly 1), raised to ``minimum[kind]`` where given."""
    counts = {k: int(rng.choice(3, p=DEFAULT_LESION_PROBS)) for k in LESIONS}
    for k, m in (minimum or {}).items():
        if k not in LESIONS:
            raise MissingEntryError(f"unknown lesion kind {k!r}; known kinds: {sorted(LESIONS)}")
        counts[k] = max(counts[k], int(m))
    return counts


def make_phantom(shape: Tuple[int, int, int] = (24, 64, 64), seed: SeedLike = 0,
                 lesion_counts: Optional[Mapping[str, int]] = None, fov: FieldOfView = FULL_BODY,
                 flips: Optional[Tuple[bool, bool]] = None,
                 lesion_radius: Optional[Mapping[str, Tuple[float, float]]] = None,
                 tissue_hu: Optional[Mapping[str, Tuple[float, float]]] = None) -> Phantom:
    """Draw one abdominal CT phantom.

    Args:
        shape: ``(z, y, x)`` voxels, at least :data:`MIN_SHAPE`.
        seed: int, SeedSequence or Generator; the same seed gives the same phantom.
        lesion_counts: lesions per kind of :data:`LESIONS`; kinds left out are drawn with
            :data:`DEFAULT_LESION_PROBS`. Every requested lesion is non-empty and lies inside its organ.
        fov: the part of the patient the scan covers (:data:`FULL_BODY`, :data:`ABDOMEN`, :data:`CHEST`);
            lesions of organs outside the view are not drawn.
        flips: ``(x, y)`` in-plane storage flips (LPS vs RAS order); None draws them per case. A real dataset
            stores all its scans one way, and nnU-Net learns in array space, so datasets fix them.
        lesion_radius: per lesion kind, a (low, high) normalised radius replacing :data:`LESIONS`' range.
        tissue_hu: per tissue, a (low, high) HU range replacing :data:`TISSUE_HU`'s.
            Both change values only, never the number of random draws: the anatomy of a seed stays the same.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] < MIN_SHAPE[0] or min(shape[1:]) < MIN_SHAPE[1]:
        raise InvalidValueError(f"phantom shape must be (z, y, x) with z >= {MIN_SHAPE[0]} and y, x >= {MIN_SHAPE[1]} "
                                f"voxels (smaller grids miss the small organs), got {shape}")
    for name, table in (("lesion kind", lesion_radius or {}), ("tissue", tissue_hu or {})):
        known = LESIONS if name == "lesion kind" else TISSUE_HU
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise InvalidValueError(f"unknown {name} {unknown}; known: {sorted(known)}")
    radius_range = {k: tuple((lesion_radius or {}).get(k, spec.radius)) for k, spec in LESIONS.items()}
    rng = _rng(seed)
    counts = draw_lesion_counts(rng)
    for k, v in (lesion_counts or {}).items():
        if k not in LESIONS:
            raise MissingEntryError(f"unknown lesion kind {k!r}; known kinds: {sorted(LESIONS)}")
        counts[k] = int(v)

    drawn = (bool(rng.integers(2)), bool(rng.integers(2)))  # drawn either way: a seed gives the same anatomy
    flips = drawn if flips is None else (bool(flips[0]), bool(flips[1]))
    geometry = random_geometry(shape, rng, flips, fov)
    g = _Grid(shape, *flips, fov)
    hu = {k: float(rng.uniform(*(tissue_hu or {}).get(k, low_high))) for k, low_high in TISSUE_HU.items()}

    # --- organs, painted in priority order into a tissue map (later overwrites earlier) ---
    body_c = _jitter(rng, (0.0, 0.05), 0.3)
    body_r = _jitter(rng, (0.90, 0.72), 0.04)
    body = np.broadcast_to(((g.y - body_c[1]) / body_r[1]) ** 2 + ((g.x - body_c[0]) / body_r[0]) ** 2 <= 1.0,
                           shape)
    inner = np.broadcast_to(((g.y - body_c[1]) / (body_r[1] - 0.08)) ** 2
                            + ((g.x - body_c[0]) / (body_r[0] - 0.08)) ** 2 <= 1.0, shape)
    lungs = (g.ellipsoid(_jitter(rng, (0.0, 0.05, -0.45)), _jitter(rng, (0.35, 0.5, 0.33)))
             | g.ellipsoid(_jitter(rng, (0.0, 0.05, 0.45)), _jitter(rng, (0.35, 0.5, 0.33)))) & inner
    spine_r = float(rng.uniform(0.11, 0.14))
    spine_d2 = np.broadcast_to((g.y - 0.55) ** 2 + (g.x - 0.0) ** 2, shape)
    bone = spine_d2 <= spine_r ** 2
    colon_path = np.sqrt((g.x / 0.62) ** 2 + ((g.y + 0.05) / 0.45) ** 2)
    colon_z = (g.z >= rng.uniform(0.64, 0.7)) & (g.z <= 0.97)
    colon_d = np.abs(colon_path - 1.0) * 0.5
    colon = (colon_d <= 0.05) & colon_z & (g.y < 0.25) & inner
    colon_lumen = (colon_d <= 0.028) & colon
    liver = g.ellipsoid(_jitter(rng, (0.38, -0.05, -0.38)), _jitter(rng, (0.30, 0.45, 0.40))) & inner
    spleen = g.ellipsoid(_jitter(rng, (0.36, 0.22, 0.52)), _jitter(rng, (0.18, 0.23, 0.19))) & inner
    kid_r_c, kid_l_c = _jitter(rng, (0.64, 0.38, -0.33)), _jitter(rng, (0.60, 0.38, 0.33))
    kid_radii = _jitter(rng, (0.18, 0.16, 0.13))
    kidney_right = g.ellipsoid(kid_r_c, kid_radii) & inner
    kidney_left = g.ellipsoid(kid_l_c, kid_radii) & inner
    medulla = g.ellipsoid(kid_r_c, kid_radii * 0.5) | g.ellipsoid(kid_l_c, kid_radii * 0.5)
    pan_c = _jitter(rng, (0.52, 0.12, 0.05))
    pan_tilt = float(rng.uniform(-0.2, -0.1))
    # thin organ: at least ~one voxel thick on coarse grids so that it is never missed
    pan_rz, pan_ry = max(0.075, 0.75 / (shape[0] - 1)), max(0.075, 1.5 / (shape[1] - 1))
    pancreas = ((((g.z - pan_c[0]) / pan_rz) ** 2 + ((g.y - pan_c[1] - pan_tilt * (g.x - pan_c[2])) / pan_ry) ** 2
                 + ((g.x - pan_c[2]) / 0.36) ** 2) <= 1.0) & inner

    tissue = np.zeros(shape, dtype=np.uint8)
    order = [("body", body), ("lungs", lungs), ("bone", bone), ("colon", colon), ("liver", liver),
             ("spleen", spleen), ("pancreas", pancreas), ("kidney_right", kidney_right),
             ("kidney_left", kidney_left)]
    for i, (_, m) in enumerate(order, start=1):
        tissue[m] = i
    masks: Dict[str, np.ndarray] = {name: tissue == i for i, (name, _) in enumerate(order, start=1)}
    masks["body"] = np.array(body)
    masks["kidneys"] = masks["kidney_right"] | masks["kidney_left"]
    for name in fov.organs:
        if not masks[name].any():
            raise InvalidValueError(f"phantom organ {name!r} is empty for shape {shape}; use a larger shape")
    for kind, spec in LESIONS.items():  # a view without the organ shows none of its (randomly drawn) lesions
        if counts[kind] and not masks[spec.organ].any():
            if kind in (lesion_counts or {}):
                raise InvalidValueError(f"{kind} requested, but organ {spec.organ!r} is outside the field of view "
                                        f"{fov}; use a view that shows it")
            counts[kind] = 0

    # --- hepatic vessels: tubes from a hilum point to random liver voxels ---
    vessels = np.zeros(shape, dtype=bool)
    if masks["liver"].any():
        liver_core = ndimage.binary_erosion(masks["liver"], iterations=2)
        hilum = g.point(_pick_voxel(rng, liver_core if liver_core.any() else masks["liver"]))
        vessel_r = float(rng.uniform(0.035, 0.05))
        liver_inner = ndimage.binary_erosion(masks["liver"])
        for _ in range(int(rng.integers(3, 5))):
            end = g.point(_pick_voxel(rng, masks["liver"], interior=liver_inner))
            vessels |= g.segment_distance(hilum, end) <= vessel_r
        vessels &= masks["liver"]
    masks["hepatic_vessel"] = vessels

    # --- lesions: ellipsoids centred on a voxel of their organ, clipped to it (never empty) ---
    instances: Dict[str, List[np.ndarray]] = {"kidney": [masks["kidney_right"], masks["kidney_left"]]}
    for kind, spec in LESIONS.items():
        organ = masks[spec.organ]
        organ_inner = ndimage.binary_erosion(organ) if counts[kind] else organ
        taken = np.zeros(shape, dtype=bool)
        for other in instances:
            if other in LESIONS and LESIONS[other].organ == spec.organ:
                for m in instances[other]:
                    taken |= m
        instances[kind] = []
        for _ in range(counts[kind]):
            centre = g.point(_pick_voxel(rng, organ, avoid=taken, interior=organ_inner))
            r = float(rng.uniform(*radius_range[kind]))
            radii = np.array([0.6 * r, r, r]) * _jitter(rng, (1.0, 1.0, 1.0), 0.2)
            lesion = g.ellipsoid(centre, radii) & organ
            taken |= lesion
            instances[kind].append(lesion)
        union = np.zeros(shape, dtype=bool)
        for m in instances[kind]:
            union |= m
        masks[kind] = union

    # --- intensities ---
    img = np.full(shape, hu["air"], dtype=np.float32)
    img[body] = hu["fat"]  # subcutaneous fat ring
    img[inner] = hu["muscle"]  # abdominal wall
    viscera = np.broadcast_to(((g.y - body_c[1]) / (body_r[1] - 0.15)) ** 2
                              + ((g.x - body_c[0]) / (body_r[0] - 0.15)) ** 2 <= 1.0, shape)
    img[viscera] = np.where(_smooth_field(rng, shape, coarse=(6, 8, 8)) > 0.3, hu["fat"], hu["bowel"])[viscera]
    img[masks["lungs"]] = hu["lungs"]
    img[masks["bone"]] = hu["bone_marrow"]
    img[masks["bone"] & (spine_d2 >= (spine_r - 0.035) ** 2)] = hu["bone_cortex"]
    img[masks["colon"]] = hu["colon_wall"]
    img[masks["colon"] & colon_lumen] = hu["colon_lumen"]
    for organ in ("liver", "spleen", "pancreas"):
        img[masks[organ]] = hu[organ]
    img[masks["kidneys"]] = hu["kidney_cortex"]
    img[masks["kidneys"] & medulla] = hu["kidney_medulla"]
    img[vessels] = hu["hepatic_vessel"]
    texture = rng.normal(0.0, 6.0, size=shape).astype(np.float32)
    for kind in _PAINT_ORDER:
        m = masks[kind]
        img[m] = hu[kind] + texture[m]
    img = ndimage.gaussian_filter(img, sigma=(0.3, 0.45, 0.45))  # partial volume
    img += rng.normal(0.0, rng.uniform(*NOISE_SIGMA_HU), size=shape).astype(np.float32)
    image = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
    return Phantom(image=image, masks=masks, instances=instances, geometry=geometry, tissue_hu=hu)
