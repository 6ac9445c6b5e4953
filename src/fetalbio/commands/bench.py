"""Command ``bench`` (not a DVC stage: timings differ between runs): time prediction and training."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

from fetalbio.commands._common import friendly_errors, plural

app = typer.Typer(add_completion=False)
# the project's sample images, found from the package (an editable install in its repository)
SAMPLE_DIR = Path(__file__).resolve().parents[3] / "data" / "sample"


def default_images(scratch: Path) -> tuple[list[Path], str]:
    """Images to time on when ``--images`` is not given: the project's sample images (the largest
    ``images/`` folder under data/sample), wherever the command runs from; else synthetic 800x540
    heads written to ``scratch``. Returns them and a line saying which."""
    folders = sorted(SAMPLE_DIR.rglob("images"), key=lambda d: (-len(list(d.glob("*.png"))), str(d))) if SAMPLE_DIR.is_dir() else []
    found = sorted(folders[0].glob("*.png")) if folders else []
    if found:
        return found, f"the project's sample images ({folders[0]})"
    from fetalbio.data.synthetic import make_challenge_dataset

    make_challenge_dataset(scratch, n_subjects=16, images_per_subject=(1,), size=(800, 540))
    return sorted((scratch / "images").iterdir()), "synthetic 800x540 images (no sample images found next to the package)"


@app.command()
@friendly_errors(ValueError, FileNotFoundError)
def main(
    model: list[Path] = typer.Option(..., help="Model file exported by the final stage (or its ONNX form X.onnx); repeat to time several side by side."),
    images: Optional[Path] = typer.Option(None, help="Folder of images to time on (default: the project's sample images, found from anywhere; synthetic ones without them)."),
    n_images: int = typer.Option(16, min=1, help="How many of its images (sorted by name)."),
    threads: int = typer.Option(2, min=1, help="CPU threads for torch and ONNX Runtime."),
    runtime: str = typer.Option("both", help="both (torch and, where the model has its ONNX form, ONNX Runtime) | torch | onnx."),
    rounds: int = typer.Option(3, min=1, help="Rounds over the images; the entries are interleaved in each."),
    batch_sizes: str = typer.Option("1,4,8,16", help="Batch sizes for the throughput figure."),
    train: bool = typer.Option(True, help="Also time a training step (torch)."),
    cuda: bool = typer.Option(True, help="Also time torch on CUDA when present."),
    out: Optional[Path] = typer.Option(None, help="Output JSON (default: none, the summary lines only; the project's own figures are --out metrics/bench.json)."),
) -> None:
    """Time predict on the CPU (N threads): every model on torch and ONNX Runtime, interleaved on
    the same images; ONNX Runtime / torch ratios per model; the GPU (torch) when present."""
    from fetalbio.inference.bench import run_bench
    from fetalbio.inference.predictor import collect_images
    from fetalbio.io import write_json

    try:
        sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--batch-sizes must be comma-separated integers, got {batch_sizes!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--batch-sizes must be positive, got {batch_sizes!r}")
    if len(set(model)) != len(model):
        raise ValueError(f"a --model is given twice: {', '.join(map(str, model))}")
    with tempfile.TemporaryDirectory(prefix="fetalbio-bench-") as scratch:
        if images is None:
            paths, said = default_images(Path(scratch))
            typer.echo(f"bench: timing on {said}", err=True)
        else:
            paths, _ = collect_images([images])
        result = run_bench(model, paths[:n_images], threads, sizes, cuda, runtime=runtime, rounds=rounds, train=train,
                           on_note=lambda s: typer.secho(f"note: {s}", fg=typer.colors.YELLOW, err=True))
    if out is not None:
        write_json(out, result)
    for row in result["models"]:
        parts = []
        for rt, f in row["runtimes"].items():
            parts.append(f"{rt} {f['model_ms_per_image_batch1']:.1f} ms/image (forward {f['forward_ms_batch1']:.1f} + post {f['postprocess_ms_batch1']:.1f}), "
                         f"best {f['best_images_per_s']:.1f} img/s at batch {f['best_batch']}")
        ratio = row.get("onnx_over_torch")
        tail = f"; ONNX Runtime / torch: forward {ratio['forward_ms_batch1']:.2f}x, per image {ratio['model_ms_per_image_batch1']:.2f}x" if ratio else ""
        gpu = f"; GPU {row['cuda']['model_ms_per_image_batch1']:.1f} ms/image" if row.get("cuda") else ""
        typer.echo(f"bench {row['model']} ({row['method']}), CPU x{threads}, batch 1: " + "; ".join(parts) + tail + gpu)
    typer.echo(f"bench: {plural(len(result['models']), 'model')}, {plural(result['n_images'], 'image')} x {plural(rounds, 'round')} -> "
               + (str(out) if out is not None else "not saved (--out FILE writes the full JSON)"))
