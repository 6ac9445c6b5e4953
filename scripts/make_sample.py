"""Rebuild the embedded sample ``data/sample`` from the full dataset (run by hand, not by DVC).

Picks whole subjects (every image of a pregnancy), deterministically: all subjects with several
images among the first candidates, plus single-image subjects spread evenly over the range of the
reference head circumference, so the sample covers small and large heads.

    python scripts/make_sample.py ../shared/data/fetal-head data/sample --n-images 48 \
        --late-src ../shared/data/hc18-late --n-late 8

``--late-src``: also copy ``--n-late`` single-image subjects of the later-gestation dataset (masks,
spacing and HC, no landmarks), spread evenly over its HC range, into ``<dst>/hc18-late/``: the
sample's second data source.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pandas as pd

ATTRIBUTION = """# Embedded sample of the fetal-head dataset

{n} images ({s} subjects, whole subjects only) copied by `scripts/make_sample.py` from the
project's development dataset, so that `dvc repro` runs out of the box.

| path | what |
| --- | --- |
| `images/NNN_HC.png` | 8-bit grayscale ultrasound image |
| `landmarks.csv` | `image_name,ofd_1_x,...,bpd_2_y`: an independent landmark annotation (noisy: see the audit) |
| `masks/NNN_HC.png` | 0/255 filled skull ellipse (HC18 reference annotation, flood-filled) |
| `hc18_reference.csv` | `image_name,pixel_size_mm,hc_mm` |
| `hc18-late/` | the second source: later-gestation images, masks only (its own README) |

`params.yaml` reads this folder as two data sources (`data.sources`): `fetal-head: .` and
`hc18-late: hc18-late`.

## Attribution and licence
Images, masks, pixel sizes and head circumferences come from the HC18 grand challenge training
set (Radboud UMC; T. L. A. van den Heuvel, D. de Bruijn, C. L. de Korte, B. van Ginneken,
"Automated measurement of fetal head circumference using 2D ultrasound images", PLOS ONE 2018,
doi:10.1371/journal.pone.0200412; data doi:10.5281/zenodo.1327317), licensed CC BY 4.0
(https://creativecommons.org/licenses/by/4.0/). Masks are the HC18 outline annotations,
flood-filled. The landmark CSV is a separate, independent annotation of the same images,
distributed with a public fetal-biometry landmark challenge.
"""


LATE_ATTRIBUTION = """# Embedded sample of the later-gestation dataset (hc18-late)

{n} images of {n} pregnancies (one image each, spread over HC {lo:.0f}-{hi:.0f} mm) copied by
`scripts/make_sample.py` from `hc18-late`, the project's later-gestation source: skull masks,
pixel size and the sonographer's HC, **no landmarks**, so the default `dvc repro` and the tests
exercise mask-only rows.

| path | what |
| --- | --- |
| `images/NNN_HC.png` | 8-bit grayscale ultrasound image |
| `masks/NNN_HC.png` | 0/255 filled skull ellipse (HC18 reference annotation, flood-filled) |
| `hc18_reference.csv` | `image_name,pixel_size_mm,hc_mm` |

## Attribution and licence
Images, masks, pixel sizes and head circumferences come from the HC18 grand challenge training
set (Radboud UMC; T. L. A. van den Heuvel, D. de Bruijn, C. L. de Korte, B. van Ginneken,
"Automated measurement of fetal head circumference using 2D ultrasound images", PLOS ONE 2018,
doi:10.1371/journal.pone.0200412; data doi:10.5281/zenodo.1327317), licensed CC BY 4.0
(https://creativecommons.org/licenses/by/4.0/). Masks are the HC18 outline annotations,
flood-filled.
"""


def copy_late(src: Path, dst: Path, n: int) -> None:
    """``n`` single-image subjects of a masks-only source, evenly over its HC range."""
    ref = pd.read_csv(src / "hc18_reference.csv")
    ref["subject"] = ref["image_name"].map(subject_of)
    single = ref[ref["subject"].map(ref["subject"].value_counts()) == 1].sort_values("hc_mm").reset_index(drop=True)
    idx = sorted({round(i * (len(single) - 1) / max(1, n - 1)) for i in range(n)})
    pick = single.iloc[idx]
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    for name in pick["image_name"]:
        shutil.copy2(src / "images" / name, dst / "images" / name)
        shutil.copy2(src / "masks" / name, dst / "masks" / name)
    pick.drop(columns="subject").to_csv(dst / "hc18_reference.csv", index=False)
    (dst / "README.md").write_text(LATE_ATTRIBUTION.format(n=len(pick), lo=pick["hc_mm"].min(), hi=pick["hc_mm"].max()))
    print(f"wrote {len(pick)} later-gestation images to {dst}")


def subject_of(name: str) -> str:
    m = re.match(r"^(\d+)_", name)
    if not m:
        raise ValueError(f"cannot read a subject id from {name!r}")
    return m.group(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--n-images", type=int, default=48)
    ap.add_argument("--n-multi-subjects", type=int, default=8)
    ap.add_argument("--late-src", type=Path, default=None, help="the later-gestation (masks-only) dataset")
    ap.add_argument("--n-late", type=int, default=8)
    args = ap.parse_args()

    lm = pd.read_csv(args.src / "landmarks.csv")
    ref = pd.read_csv(args.src / "hc18_reference.csv")
    lm["subject"] = lm["image_name"].map(subject_of)
    per_subject = lm.groupby("subject")["image_name"].apply(list)
    multi = [s for s, names in per_subject.items() if len(names) > 1]
    # every k-th multi-image subject, so near-duplicate pairs and triples are represented
    step = max(1, len(multi) // args.n_multi_subjects)
    chosen = multi[::step][: args.n_multi_subjects]
    n_left = args.n_images - sum(len(per_subject[s]) for s in chosen)
    singles = ref.assign(subject=ref["image_name"].map(subject_of))
    singles = singles[singles["subject"].map(lambda s: len(per_subject[s]) == 1)].sort_values("hc_mm")
    idx = [round(i * (len(singles) - 1) / max(1, n_left - 1)) for i in range(n_left)]
    chosen += list(singles.iloc[sorted(set(idx))]["subject"])
    names = sorted(n for s in chosen for n in per_subject[s])

    if args.dst.exists():
        shutil.rmtree(args.dst)
    (args.dst / "images").mkdir(parents=True)
    (args.dst / "masks").mkdir()
    for n in names:
        shutil.copy2(args.src / "images" / n, args.dst / "images" / n)
        shutil.copy2(args.src / "masks" / n, args.dst / "masks" / n)
    lm[lm["image_name"].isin(names)].drop(columns="subject").to_csv(args.dst / "landmarks.csv", index=False)
    ref[ref["image_name"].isin(names)].to_csv(args.dst / "hc18_reference.csv", index=False)
    (args.dst / "README.md").write_text(ATTRIBUTION.format(n=len(names), s=len(chosen)))
    print(f"wrote {len(names)} images of {len(chosen)} subjects to {args.dst}")
    if args.late_src is not None:
        copy_late(args.late_src, args.dst / "hc18-late", args.n_late)


if __name__ == "__main__":
    main()
